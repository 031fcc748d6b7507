"""Tests of the augmented builder: both modes, both field sources, every policy and error, the overlay loader."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pathlib
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders
from tfds_builders.augmented import Builder
from tfds_builders.augmented import BuilderConfig
from tfds_builders.augmented import augmented_dataset_builder as builder_lib
from tfds_builders.augmented import fields
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import serialization

tfds.core.utils.gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
tfds.disable_progress_bar()

REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY_DATA = REPO / "dummy_data" / "augmented"
BUILDER_DIR = REPO / "tfds_builders" / "augmented"
THIS_MODULE = pathlib.Path(__file__).stem  # user functions below are referenced as f"{THIS_MODULE}:name"


# ------------------------------------------------------- user functions --


def score_and_words(example: dict[str, Any]) -> dict[str, Any]:
  return {"double_score": float(example["score"]) * 2, "words": example["text"].split()}


def type_changes_at_five(example: dict[str, Any]) -> dict[str, Any]:
  return {"flag": "five" if example["id"] == 105 else int(example["id"])}


def type_changes_at_ten(example: dict[str, Any]) -> dict[str, Any]:
  return {"flag": "ten" if example["id"] == 110 else int(example["id"])}


def raises_at_nine(example: dict[str, Any]) -> dict[str, Any]:
  if example["id"] == 109:
    raise ZeroDivisionError("no score for 109")
  return {"flag": 1}


def drops_a_field_at_nine(example: dict[str, Any]) -> dict[str, Any]:
  return {"flag": 1} if example["id"] == 109 else {"flag": 1, "other": 2}


def returns_a_list(example: dict[str, Any]) -> list[int]:
  return [int(example["id"])]


def new_score(example: dict[str, Any]) -> dict[str, Any]:
  return {"score": np.float32(-example["score"])}


def caption_length(example: dict[str, Any]) -> dict[str, Any]:
  return {"caption_length": len(example["caption"]), "mean_pixel": float(np.mean(example["image"]))}


# -------------------------------------------------------------- helpers --


def example_bytes(**features: Iterable[Any]) -> bytes:
  """A tf.train.Example from name -> list of ints, floats or bytes."""
  proto = {}
  for name, values in features.items():
    values = list(values)
    if values and isinstance(values[0], bytes):
      proto[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    elif values and isinstance(values[0], float):
      proto[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    else:
      proto[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  return tf.train.Example(features=tf.train.Features(feature=proto)).SerializeToString()


def write_records(path: pathlib.Path, records: Iterable[bytes], compression: str = "") -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type=compression)) as writer:
    for record in records:
      writer.write(record)
  return path


def read_records(paths: Iterable[Any]) -> list[bytes]:
  return [record.numpy() for record in tf.data.TFRecordDataset([str(p) for p in paths])]


def frames_of(paths: Iterable[Any]) -> list[tuple[int, int]]:
  """(length, stored masked CRC) of every record, parsed here with struct: the overlay's fingerprint oracle."""
  frames = []
  for path in paths:
    data = pathlib.Path(path).read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack_from("<Q", data, offset)
      (crc,) = struct.unpack_from("<I", data, offset + 12 + length)
      frames.append((length, crc))
      offset += 16 + length
  return frames


def raw_base(root: pathlib.Path, counts: Mapping[str, list[int]] | None = None) -> dict[str, list[str]]:
  """A raw base: per split, files of records with id, text, score, tokens."""
  counts = counts or {"train": [4, 3], "test": [3]}
  sources, next_id = {}, 100
  for split, per_file in counts.items():
    sources[split] = []
    for index, count in enumerate(per_file):
      path = write_records(root / f"{split}-{index}.tfrecord", (
          example_bytes(id=[next_id + i], text=[f"word{next_id + i} more".encode()],
                        score=[(next_id + i) / 4], tokens=list(range((next_id + i) % 3 + 1)))
          for i in range(count)
      ))
      next_id += count
      sources[split].append(str(path))
  return sources


def write_csv(path: pathlib.Path, header: list[str], rows: Iterable[Iterable[Any]]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def labels_csv(path: pathlib.Path, ids: Iterable[int]) -> pathlib.Path:
  return write_csv(path, ["id", "label", "weight"], ([i, i % 3, i / 8] for i in ids))


def weights_csv(path: pathlib.Path, ids: Iterable[int]) -> pathlib.Path:
  return write_csv(path, ["id", "weight"], ([i, i / 8] for i in ids))


def make_builder(tmp_path: pathlib.Path, name: str = "t", data_dir: str = "tfds", **config) -> Builder:
  return Builder(config=BuilderConfig(name=name, **config), data_dir=str(tmp_path / data_dir))


def build(tmp_path: pathlib.Path, name: str = "t", data_dir: str = "tfds", **config) -> Builder:
  builder = make_builder(tmp_path, name, data_dir, **config)
  builder.download_and_prepare()
  return builder


def stored(builder: tfds.core.DatasetBuilder, split: str = "train") -> list[bytes]:
  """The stored records of a split, in order."""
  return read_records(builder.info.splits[split].filepaths)


def examples(dataset: tf.data.Dataset) -> list[dict[str, Any]]:
  return list(tfds.as_numpy(dataset))


def assert_examples_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
  assert len(got) == len(want)
  for left, right in zip(got, want):
    assert left.keys() == right.keys()
    for name in left:
      np.testing.assert_array_equal(left[name], right[name], err_msg=name)
      assert np.asarray(left[name]).dtype == np.asarray(right[name]).dtype, name


def file_hashes(root: pathlib.Path) -> dict[str, tuple[str, int]]:
  return {
      str(path): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
      for path in sorted(root.rglob("*")) if path.is_file()
  }


def features_of(record: bytes) -> dict[str, tf.train.Feature]:
  return dict(tf.train.Example.FromString(record).features.feature)


def values_of(feature: tf.train.Feature) -> list[Any]:
  kind = feature.WhichOneof("kind")
  return list(getattr(feature, kind).value) if kind else []


def assert_nothing_loadable(data_dir: pathlib.Path) -> None:
  assert not list(data_dir.rglob("dataset_info.json")), list(data_dir.rglob("dataset_info.json"))
  assert not list(data_dir.rglob("*.tfrecord*"))


# ------------------------------------------------------ a prepared base --


class AugmentedTestBase(tfds.core.GeneratorBasedBuilder):
  """A small prepared TFDS dataset with TFDS features (Image, ClassLabel, Text)."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.2.0": "Test base."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "image": tfds.features.Image(shape=(4, 4, 1)),
            "label": tfds.features.ClassLabel(names=["cat", "dog", "bird"]),
            "caption": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    shift = 0 if str(self.version) == "1.2.0" else 50
    return {"train": self._generate_examples(shift, 12), "test": self._generate_examples(shift + 12, 4)}

  def _generate_examples(self, start: int, count: int):
    for index in range(start, start + count):
      yield index, {
          "id": index,
          "image": np.full((4, 4, 1), index, np.uint8),
          "label": index % 3,
          "caption": "x" * (index % 5 + 1),
      }


class AugmentedTestBaseOld(AugmentedTestBase, skip_registration=True):
  """The same dataset at an older version, with other examples."""

  name = "augmented_test_base"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "Older test base."}


@pytest.fixture(scope="module")
def prepared_base(tmp_path_factory) -> pathlib.Path:
  """AugmentedTestBase 1.2.0 (train in 3 shards) and 1.1.0, under one data_dir."""
  data_dir = tmp_path_factory.mktemp("prepared")
  for builder_class in (AugmentedTestBase, AugmentedTestBaseOld):
    builder = builder_class(data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
  return data_dir


def prepared_dir(data_dir: pathlib.Path, version: str = "1.2.0") -> pathlib.Path:
  return data_dir / "augmented_test_base" / version


# ---------------------------------------------- TFDS's own builder tests --


class AugmentedDemoTest(tfds.testing.DatasetBuilderTestCase):
  """The default `demo` config: raw TFRecords + labels.csv, materialized."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["demo"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 10, "test": 4}
  SKIP_CHECKSUMS = True


class AugmentedDemoOverlayTest(tfds.testing.DatasetBuilderTestCase):
  """The `demo_overlay` config: the same join, new fields only."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["demo_overlay"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 10, "test": 4}
  SKIP_CHECKSUMS = True


class AugmentedDemoFunctionTest(tfds.testing.DatasetBuilderTestCase):
  """The `demo_function` config: fields computed by a bundled function."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["demo_function"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 10, "test": 4}
  SKIP_CHECKSUMS = True


# -------------------------------------------------------------- bundled --


def test_demo_materialize_copies_base_bytes_and_adds_the_csv_columns(tmp_path):
  builder = tfds.builder("augmented/demo", data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.version == "1.0.0"
  features = builder.info.features
  assert set(features) == {"id", "text", "score", "tokens", "label", "weight", "note"}
  assert features["label"].np_dtype == np.int64
  assert features["weight"].np_dtype == np.float64
  assert features["note"].np_dtype == np.object_
  assert features["tokens"].shape == (None,)
  with open(DUMMY_DATA / "labels.csv", newline="") as file:
    table = {int(row["id"]): row for row in csv.DictReader(file)}
  for split, pattern in {"train": "train-*", "test": "test-*"}.items():
    base_records = read_records(sorted((DUMMY_DATA / "base").glob(f"{pattern}.tfrecord")))
    output = stored(builder, split)
    assert len(output) == len(base_records)
    for base_record, record in zip(base_records, output):
      assert record.startswith(base_record)  # base bytes copied as they are
      added = features_of(record[len(base_record):])
      row = table[values_of(features_of(base_record)["id"])[0]]
      assert values_of(added["label"]) == [int(row["label"])]
      assert np.frombuffer(values_of(added["weight"])[0], "<f8")[0] == float(row["weight"])
      assert values_of(added["note"]) == [row["note"].encode()]
    decoded = examples(builder.as_dataset(split=split))
    assert [e["weight"] for e in decoded] == [float(table[e["id"]]["weight"]) for e in decoded]


def test_demo_function_adds_inferred_fields(tmp_path):
  builder = tfds.builder("augmented/demo_function", data_dir=str(tmp_path))
  builder.download_and_prepare()
  features = builder.info.features
  assert features["text_length"].np_dtype == np.int64
  assert features["num_words"].np_dtype == np.int32  # the function's own dtype
  assert features["first_word"].np_dtype == np.object_
  for example in examples(builder.as_dataset(split="train")):
    text = example["text"].decode()
    assert example["text_length"] == len(text)
    assert example["num_words"] == len(text.split())
    assert example["first_word"] == text.split()[0].encode()


def test_registered_by_name_and_default_config(tmp_path):
  assert "augmented" in tfds.list_builders(with_community_datasets=False)
  assert Builder.BUILDER_CONFIGS[0].name == "demo"
  dataset = tfds.load("augmented", split="test", data_dir=str(tmp_path))
  assert len(examples(dataset)) == 4


# ---------------------------------------------------------- materialize --


def test_materialize_prepared_base_new_version_release_notes_and_provenance(tmp_path, prepared_base):
  base_dir = prepared_dir(prepared_base)
  table = weights_csv(tmp_path / "weights.csv", range(16))
  builder = build(tmp_path, base=str(base_dir), side_table=str(table), join_key="id",
                  function=f"{THIS_MODULE}:caption_length")
  assert str(builder.version) == "1.3.0"  # the minor version after the base's 1.2.0
  assert builder.data_dir.endswith("augmented/t/1.3.0")
  notes = builder.info.release_notes["1.3.0"]
  assert "Adds to augmented_test_base 1.2.0 (materialize)" in notes
  for fragment in ("weight (float64) from side table",
                   f"caption_length (int64) from function {THIS_MODULE}:caption_length",
                   "mean_pixel (float64)"):
    assert fragment in notes
  reloaded = tfds.builder_from_directory(builder.data_dir)
  assert reloaded.info.release_notes["1.3.0"] == notes
  # Base features keep their TFDS types; new ones are added beside them.
  features = reloaded.info.features
  assert isinstance(features["image"], tfds.features.Image)
  assert features["label"].names == ["cat", "dog", "bird"]
  assert set(features) == {"id", "image", "label", "caption", "weight", "caption_length", "mean_pixel"}
  base_builder = tfds.builder_from_directory(str(base_dir))
  for split in ("train", "test"):
    base_examples = examples(base_builder.as_dataset(split=split, shuffle_files=False))
    got = examples(reloaded.as_dataset(split=split))
    assert len(got) == len(base_examples)
    for base_example, example in zip(base_examples, got):
      for name in base_example:
        np.testing.assert_array_equal(example[name], base_example[name])
      assert example["weight"] == base_example["id"] / 8
      assert example["caption_length"] == len(base_example["caption"])
      assert example["mean_pixel"] == float(base_example["id"])
    base_raw = read_records(base_builder.info.splits[split].filepaths)
    assert all(record.startswith(raw) for raw, record in zip(base_raw, stored(reloaded, split), strict=True))
  record = reloaded.info.metadata["provenance"]
  assert record["builder"] == "augmented"
  assert record["base"]["name"] == "augmented_test_base"
  assert record["base"]["version"] == "1.2.0"
  assert record["base"]["path"] == str(base_dir)
  assert record["base"]["splits"] == {"train": 12, "test": 4}
  assert record["function"] == f"{THIS_MODULE}:caption_length"
  assert record["side_table"]["source"] == str(table)
  assert record["side_table"]["sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
  assert record["side_table"]["rows"] == 16
  assert record["side_table"]["columns"] == ["weight"]
  assert record["new_fields"]["weight"] == {"dtype": "float64", "shape": [], "source": f"side table {table}", "declared": False}
  assert builder.info.features["weight"].doc.desc == f"Added from side table {table}."
  assert provenance.read_provenance(builder.data_dir) == record


def test_a_label_collides_with_the_base_unless_overwritten(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  with pytest.raises(errors.ConfigError, match=r"New field 'label' \(from side table .*\) already exists in the base .*overwrite_fields"):
    make_builder(tmp_path, base=str(prepared_dir(prepared_base)), side_table=str(table), join_key="id")


def test_materialize_overwrite_replaces_the_base_feature(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  builder = build(tmp_path, base=str(prepared_dir(prepared_base)), side_table=str(table), join_key="id",
                  overwrite_fields=["label"])
  assert builder.info.features["label"].np_dtype == np.int64
  assert not isinstance(builder.info.features["label"], tfds.features.ClassLabel)
  for record in stored(builder):
    # The base's `label` is dropped before the merge: one value, the new one.
    assert values_of(features_of(record)["label"]) == [values_of(features_of(record)["id"])[0] % 3]
  got = examples(builder.as_dataset(split="train"))
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]


def test_materialize_chains_a_materialized_dataset_as_base(tmp_path):
  first = build(tmp_path, "first", base_records=raw_base(tmp_path / "raw"), side_table=str(labels_csv(tmp_path / "l.csv", range(100, 110))), join_key="id")
  assert str(first.version) == "1.0.0"
  second = build(tmp_path, "second", base=first.data_dir, function=f"{THIS_MODULE}:score_and_words",
                 features={"words": "string[None]"})
  assert str(second.version) == "1.1.0"
  got = examples(second.as_dataset(split="train"))
  assert [e["double_score"] for e in got] == [e["score"] * 2 for e in got]
  assert [list(e["words"]) for e in got] == [e["text"].split() for e in got]
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]


def test_config_version_overrides_the_derived_one(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  builder = make_builder(tmp_path, base=str(prepared_dir(prepared_base)), side_table=str(table), join_key="id",
                         overwrite_fields=["label"], version="7.0.0")
  assert str(builder.version) == "7.0.0"


def test_a_subset_of_splits(tmp_path, prepared_base):
  sources = raw_base(tmp_path / "raw")
  sources["validation"] = [str(tmp_path / "not-read-*.tfrecord")]  # never opened
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  builder = build(tmp_path, base_records=sources, splits=["test"], side_table=table, join_key="id")
  assert list(builder.info.splits) == ["test"]
  with pytest.raises(errors.ConfigError, match=r"splits \['dev'\] are not in base_records"):
    make_builder(tmp_path, "u", base_records=sources, splits=["dev"], side_table=table, join_key="id")
  overlay = build(tmp_path, "p", mode="overlay", base=str(prepared_dir(prepared_base)), splits=["test"],
                  side_table=str(labels_csv(tmp_path / "p.csv", range(16))), join_key="id", overwrite_fields=["label"])
  assert list(overlay.info.splits) == ["test"]
  got = examples(load_augmented(overlay.data_dir, split="test"))
  assert sorted(e["id"] for e in got) == [12, 13, 14, 15]
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]


def test_gzip_raw_base(tmp_path):
  records = [example_bytes(id=[i], text=[b"t"]) for i in range(5)]
  path = write_records(tmp_path / "base.tfrecord.gz", records, compression="GZIP")
  builder = build(tmp_path, base_records={"train": [str(path)]},
                  side_table=str(labels_csv(tmp_path / "l.csv", range(5))), join_key="id")
  got = stored(builder)
  assert [record[:len(raw)] for raw, record in zip(records, got)] == records


# -------------------------------------------------------------- overlay --


@pytest.mark.parametrize("split", ["train", "test", "train[2:6]", "train[:50%]+test", "test[-2:]", "train[1:2]"])
def test_overlay_load_equals_materialize(tmp_path, split):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  config = dict(base_records=sources, side_table=table, join_key="id", function=f"{THIS_MODULE}:score_and_words",
                features={"words": "string[None]"})
  materialized = build(tmp_path, "full", **config)
  overlay = build(tmp_path, "over", mode="overlay", **config)
  want = examples(materialized.as_dataset(split=split))
  got = load_augmented(overlay.data_dir, split=split)
  assert_examples_equal(examples(got), want)
  # By name too, and a list of splits gives a list of datasets.
  by_name = load_augmented("augmented/over", split=[split, "test"], data_dir=str(tmp_path / "tfds"))
  assert_examples_equal(examples(by_name[0]), want)
  assert len(examples(by_name[1])) == 3


def test_overlay_holds_only_the_new_fields_and_alignment(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  assert set(overlay.info.features) == {"label", "weight", "_base_index", "_base_fingerprint"}
  base_records = read_records(sources["train"])
  frames = frames_of(sources["train"])
  for index, (record, raw, (length, crc)) in enumerate(zip(stored(overlay), base_records, frames, strict=True)):
    assert set(features_of(record)) == {"label", "weight", "_base_index", "_base_fingerprint"}
    decoded = overlay.info.features.deserialize_example_np(record)
    assert decoded["_base_index"] == index
    assert length == len(raw)
    assert decoded["_base_fingerprint"] == (length << 32 | crc)
  metadata = overlay.info.metadata["augmented"]
  assert metadata["mode"] == "overlay"
  assert metadata["base"]["kind"] == "records"
  assert metadata["base"]["splits"]["train"] == [["train-0.tfrecord", "", 4, os.path.getsize(sources["train"][0])],
                                                 ["train-1.tfrecord", "", 3, os.path.getsize(sources["train"][1])]]
  assert metadata["missing"] == {"train": 0, "test": 0}


def test_overlay_of_a_prepared_base_with_shard_slices(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  overlay = build(tmp_path, mode="overlay", base=str(prepared_dir(prepared_base)), side_table=str(table),
                  join_key="id", overwrite_fields=["label"])
  base_builder = tfds.builder_from_directory(str(prepared_dir(prepared_base)))
  base_examples = examples(base_builder.as_dataset(split="train", shuffle_files=False))
  got = examples(load_augmented(overlay.data_dir, split="train"))
  assert [e["id"] for e in got] == [e["id"] for e in base_examples]
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]  # overwritten
  np.testing.assert_array_equal([e["image"] for e in got], [e["image"] for e in base_examples])
  # `shard` slices count the base's shards, as for the base itself.
  shard_lengths = base_builder.info.splits["train"].shard_lengths
  assert len(shard_lengths) == 3
  sliced = examples(load_augmented(overlay.data_dir, split="train[1shard:2shard]"))
  assert [e["id"] for e in sliced] == [e["id"] for e in base_examples[shard_lengths[0]:sum(shard_lengths[:2])]]
  with pytest.raises(errors.ConfigError, match="does not apply to the overlay's splits"):
    load_augmented(overlay.data_dir, split="validation")
  # Decoders reach the base features; the slice's cardinality is known.
  undecoded = load_augmented(overlay.data_dir, split="test[:3]", decoders={"image": tfds.decode.SkipDecoding()})
  assert int(undecoded.cardinality()) == 3
  assert all(e["image"].startswith(b"\x89PNG") for e in examples(undecoded))


def test_overlay_rejects_another_base(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  overlay = build(tmp_path, mode="overlay", base=str(prepared_dir(prepared_base)), side_table=str(table),
                  join_key="id", overwrite_fields=["label"])
  # Another version of the base, by directory and by name.
  with pytest.raises(errors.SourceError, match=r"built from another base .*version is '1.1.0', the overlay was built from '1.2.0'"):
    load_augmented(overlay.data_dir, split="train", base=str(prepared_dir(prepared_base, "1.1.0")))
  with pytest.raises(errors.SourceError, match="version is '1.1.0'"):
    load_augmented(overlay.data_dir, split="train", base="augmented_test_base:1.1.0", base_data_dir=str(prepared_base))
  # Another dataset altogether.
  other = build(tmp_path, "other", base_records=raw_base(tmp_path / "raw"), side_table=str(labels_csv(tmp_path / "o.csv", range(100, 110))), join_key="id")
  with pytest.raises(errors.SourceError, match="name is 'augmented/other', the overlay was built from 'augmented_test_base'"):
    load_augmented(overlay.data_dir, split="train", base=other.data_dir)
  # The right base, by name, loads.
  assert len(examples(load_augmented(overlay.data_dir, split="test", base="augmented_test_base:1.2.0", base_data_dir=str(prepared_base)))) == 4


def test_overlay_rejects_raw_files_that_differ(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  other = raw_base(tmp_path / "other", {"train": [4, 4], "test": [3]})
  with pytest.raises(errors.SourceError, match=r"not those the overlay was built from: train-1.tfrecord is \d+ bytes"):
    load_augmented(overlay.data_dir, split="train", base=other)
  with pytest.raises(errors.ConfigError, match="built from raw TFRecord files; pass them as base="):
    load_augmented(overlay.data_dir, split="train", base=str(tmp_path / "raw"))
  with pytest.raises(errors.SourceError, match="1 files, the overlay's base had 2"):
    load_augmented(overlay.data_dir, split="train", base={"train": sources["train"][:1], "test": sources["test"]})
  # The same files moved elsewhere load when passed explicitly.
  moved = tmp_path / "moved"
  shutil.copytree(tmp_path / "raw", moved)
  shutil.rmtree(tmp_path / "raw")
  with pytest.raises(errors.SourceError, match="No TFRecord file found"):
    load_augmented(overlay.data_dir, split="train")
  got = examples(load_augmented(overlay.data_dir, split="train", base={"train": str(moved / "train-*"), "test": str(moved / "test-*")}))
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]


def test_overlay_detects_a_base_rewritten_in_place(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  # Record 5 of train (second file, index 1) gets other text of the same length:
  # the files keep their names, sizes and counts, only the content differs.
  second = pathlib.Path(sources["train"][1])
  records = read_records([second])
  changed = records[1].replace(b"word105", b"WORD105")
  assert len(changed) == len(records[1]) and changed != records[1]
  write_records(second, [records[0], changed, records[2]])
  assert len(examples(load_augmented(overlay.data_dir, split="train[:5]"))) == 5  # before it: fine
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"does not match its base at base example.*\b5\b"):
    examples(load_augmented(overlay.data_dir, split="train"))
  with pytest.raises(tf.errors.InvalidArgumentError, match="does not match its base"):
    examples(load_augmented(overlay.data_dir, split="train[5:6]"))


def test_overlay_detects_misaligned_overlay_records(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  shard = overlay.info.splits["train"].filepaths[0]
  records = read_records([shard])
  write_records(pathlib.Path(shard), [records[1], records[0], *records[2:]])  # two overlay examples swapped
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"misaligned with its base.*base example.*\b0\b.*holds base index.*\b1\b"):
    examples(load_augmented(overlay.data_dir, split="train"))


def test_overlay_detects_a_base_with_fewer_records_than_recorded(tmp_path):
  sources = raw_base(tmp_path / "raw", {"train": [4]})
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 104))), join_key="id")
  # The last record is dropped and the one before grows by as many bytes, so
  # the file keeps its name and size: only the loader's checks can tell.
  path = pathlib.Path(sources["train"][0])
  size = path.stat().st_size
  records = read_records([path])
  for pad in range(len(records[3]), len(records[3]) + 32):
    grown = example_bytes(id=[102], text=[b"x" * pad], score=[1.0], tokens=[0])
    write_records(path, [*records[:2], grown])
    if path.stat().st_size == size:
      break
  assert path.stat().st_size == size
  assert len(examples(load_augmented(overlay.data_dir, split="train[:2]"))) == 2
  with pytest.raises(tf.errors.InvalidArgumentError, match="does not match its base at base example"):
    examples(load_augmented(overlay.data_dir, split="train"))
  with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 1 element but contained only 0"):
    examples(load_augmented(overlay.data_dir, split="train[3:]"))


def test_load_augmented_refuses_what_is_not_an_overlay(tmp_path):
  materialized = build(tmp_path, base_records=raw_base(tmp_path / "raw"),
                       side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  with pytest.raises(errors.SourceError, match="mode='materialize': it already holds the base features"):
    load_augmented(materialized.data_dir, split="train")
  other = tfds.builder("numpy_arrays/demo", data_dir=str(tmp_path / "np"))
  other.download_and_prepare()
  with pytest.raises(errors.SourceError, match="is not an overlay"):
    load_augmented(other.data_dir, split="train")
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset"):
    load_augmented(str(tmp_path / "nowhere"), split="train")


def test_the_package_level_loader_delegates_to_the_overlay_loader(tmp_path):
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset"):
    tfds_builders.load_augmented(str(tmp_path / "nowhere"), split="train")


# ------------------------------------------------------------- function --


def test_declared_features_override_inference(tmp_path):
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), function=f"{THIS_MODULE}:score_and_words",
                  features={"double_score": "float32", "words": {"dtype": "string", "shape": [None]}})
  assert builder.info.features["double_score"].np_dtype == np.float32
  assert builder.info.features["words"].shape == (None,)
  provenance_fields = builder.info.metadata["provenance"]["new_fields"]
  assert provenance_fields["double_score"]["declared"] is True
  got = examples(builder.as_dataset(split="train"))
  assert [e["double_score"] for e in got] == [np.float32(e["score"] * 2) for e in got]


def test_inferred_shape_must_hold_for_every_example(tmp_path):
  # `words` has 2 values in every example here, so it is inferred as string[2].
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), function=f"{THIS_MODULE}:score_and_words")
  assert builder.info.features["words"].shape == (2,)
  assert builder.info.features["double_score"].np_dtype == np.float64


def test_inconsistent_type_names_the_example_and_field(tmp_path):
  with pytest.raises(errors.SchemaError, match=r"Example train/000000010: field 'flag' from function .*type_changes_at_ten: 'ten' is string, but the feature is int64\. The feature is int64 \(inferred from the first examples\)"):
    build(tmp_path, base_records=raw_base(tmp_path / "raw", {"train": [12]}), function=f"{THIS_MODULE}:type_changes_at_ten")
  assert_nothing_loadable(tmp_path / "tfds")


def test_inconsistent_type_within_the_first_examples(tmp_path):
  with pytest.raises(errors.SchemaError, match="Field 'flag' from function .* has values of different types"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw", {"train": [8]}),
                 function=f"{THIS_MODULE}:type_changes_at_five")


def test_a_field_missing_on_one_example(tmp_path):
  with pytest.raises(errors.SchemaError, match=r"returned fields \['flag'\] on example train/000000009 .*the first examples returned \['flag', 'other'\]"):
    build(tmp_path, base_records=raw_base(tmp_path / "raw", {"train": [12]}), function=f"{THIS_MODULE}:drops_a_field_at_nine")


def test_a_function_returning_no_dict(tmp_path):
  with pytest.raises(errors.SchemaError, match=r"on example train/000000000 .* returned list \[100\], not a dict"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), function=f"{THIS_MODULE}:returns_a_list")


@pytest.mark.parametrize("reference, fragment", [
    ("no_such_module_xyz:f", "Cannot import module 'no_such_module_xyz'"),
    (f"{THIS_MODULE}:no_such_function", f"Module '{THIS_MODULE}' has no 'no_such_function'"),
    ("just_a_name", "is not a reference; write 'package.module:function'"),
])
def test_a_function_that_cannot_be_imported(tmp_path, reference, fragment):
  with pytest.raises(errors.ConfigError, match=fragment) as raised:
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), function=reference)
  if reference.startswith("no_such_module"):
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_a_raising_function_names_the_example_and_chains_the_error(tmp_path):
  sources = raw_base(tmp_path / "raw", {"train": [12]})
  with pytest.raises(errors.SourceError, match=r"raised on example train/000000009 \(record 9 of train-0.tfrecord\): ZeroDivisionError: no score for 109") as raised:
    build(tmp_path, base_records=sources, function=f"{THIS_MODULE}:raises_at_nine")
  assert isinstance(raised.value.__cause__, ZeroDivisionError)
  assert_nothing_loadable(tmp_path / "tfds")


def test_workers_give_the_serial_output_and_name_failures(tmp_path):
  sources = raw_base(tmp_path / "raw", {"train": [150, 140], "test": [5]})  # several batches
  config = dict(base_records=sources, function="tfds_builders.augmented.example_functions:text_statistics",
                side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 395, 2))), join_key="id")
  serial = build(tmp_path, "serial", missing_policy="skip", **config)
  parallel = build(tmp_path, "parallel", missing_policy="skip", num_workers=2, **config)
  for split in ("train", "test"):
    assert stored(parallel, split) == stored(serial, split)
  assert len(stored(serial)) == 145
  # A failure in a worker names the example and chains the original exception.
  with pytest.raises(errors.SourceError, match=r"raised on example train/000000009") as raised:
    build(tmp_path, "fails", base_records=sources, function=f"{THIS_MODULE}:raises_at_nine", num_workers=2)
  assert isinstance(raised.value.__cause__, ZeroDivisionError)
  assert any("raises_at_nine" in note for note in raised.value.__cause__.__notes__)


def test_function_on_a_prepared_base_gets_decoded_numpy_values(tmp_path, prepared_base):
  builder = build(tmp_path, base=str(prepared_dir(prepared_base)), function=f"{THIS_MODULE}:caption_length", mode="overlay")
  got = examples(load_augmented(builder.data_dir, split="test"))
  assert [e["caption_length"] for e in got] == [len(e["caption"]) for e in got]
  assert [e["mean_pixel"] for e in got] == [float(e["id"]) for e in got]


# ---------------------------------------------------------- side tables --


def test_parquet_side_table_with_typed_and_list_columns_on_a_string_key(tmp_path):
  sources = raw_base(tmp_path / "raw")
  texts = [f"word{i} more" for i in range(100, 110)]
  table = pa.table({
      "text": texts,
      "rank": pa.array(range(10), pa.int16()),
      "ratio": pa.array([i / 3 for i in range(10)], pa.float32()),
      "tags": [[f"t{i}", "x"][: 1 + i % 2] for i in range(10)],
      "good": [i % 2 == 0 for i in range(10)],
  })
  pq.write_table(table, tmp_path / "side.parquet")
  builder = build(tmp_path, base_records=sources, side_table="side.parquet", data_root=str(tmp_path), join_key="text")
  features = builder.info.features
  assert features["rank"].np_dtype == np.int16
  assert features["ratio"].np_dtype == np.float32
  assert features["tags"].shape == (None,)
  assert features["good"].np_dtype == np.bool_
  got = examples(builder.as_dataset(split="train")) + examples(builder.as_dataset(split="test"))
  for example in got:
    i = texts.index(example["text"].decode())
    assert example["rank"] == i and example["ratio"] == np.float32(i / 3) and example["good"] == (i % 2 == 0)
    assert list(example["tags"]) == [f"t{i}".encode(), b"x"][: 1 + i % 2]


def test_csv_declared_types_and_column_choice(tmp_path):
  table = write_csv(tmp_path / "t.csv", ["key", "a", "b", "c"], ([i, i, "yes" if i % 2 else "no", "z"] for i in range(100, 110)))
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                  side_table_key="key", side_table_columns=["a", "b"], features={"a": "int16", "b": "bool"})
  assert set(builder.info.features) == {"id", "text", "score", "tokens", "a", "b"}
  got = examples(builder.as_dataset(split="train"))
  assert [e["b"] for e in got] == [bool(e["id"] % 2) for e in got]
  assert got[0]["a"].dtype == np.int16


def test_missing_policy_error_names_the_key(tmp_path):
  table = labels_csv(tmp_path / "labels.csv", [i for i in range(100, 110) if i != 104])
  with pytest.raises(errors.SourceError, match=r"train-1.tfrecord record 0 has id=104, which side table .* does not have.*missing_policy"):
    build(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id")
  assert_nothing_loadable(tmp_path / "tfds")


def test_missing_policy_skip_drops_and_counts(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", [100, 102, 104, 107, 108]))
  materialized = build(tmp_path, "m", base_records=sources, side_table=table, join_key="id", missing_policy="skip")
  assert [e["id"] for e in examples(materialized.as_dataset(split="train"))] == [100, 102, 104]
  assert [e["id"] for e in examples(materialized.as_dataset(split="test"))] == [107, 108]
  assert materialized.info.metadata["augmented"]["missing"] == {"train": 4, "test": 1}
  overlay = build(tmp_path, "o", mode="overlay", base_records=sources, side_table=table, join_key="id", missing_policy="skip")
  assert overlay.info.splits["train"].num_examples == 7  # aligned 1:1 with the base
  assert overlay.info.metadata["augmented"]["missing"] == {"train": 4, "test": 1}
  assert_examples_equal(examples(load_augmented(overlay.data_dir, split="train")),
                        examples(materialized.as_dataset(split="train")))
  assert [e["id"] for e in examples(load_augmented(overlay.data_dir, split="train[1:5]"))] == [102, 104]


def test_missing_policy_default(tmp_path):
  table = labels_csv(tmp_path / "labels.csv", [100, 101])
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                  missing_policy="default", missing_defaults={"label": -1, "weight": 0.0})
  got = examples(builder.as_dataset(split="train"))
  assert [e["label"] for e in got] == [1, 2, -1, -1, -1, -1, -1]
  assert [e["weight"] for e in got] == [100 / 8, 101 / 8, 0, 0, 0, 0, 0]
  with pytest.raises(errors.ConfigError, match=r"needs missing_defaults for every side-table column: missing \['weight'\]"):
    make_builder(tmp_path, "d2", base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                 missing_policy="default", missing_defaults={"label": -1})
  with pytest.raises(errors.ConfigError, match="missing_defaults: 'x' is string, but the feature is int64"):
    make_builder(tmp_path, "d3", base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                 missing_policy="default", missing_defaults={"label": "x", "weight": 0.0})


def test_duplicate_side_table_keys(tmp_path):
  table = write_csv(tmp_path / "dup.csv", ["id", "label"], [[100, 1], [101, 2], [100, 3]])
  with pytest.raises(errors.SourceError, match=r"has join key 100 twice \(line 2 and line 4\)"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id")


def test_join_key_missing_from_the_base(tmp_path):
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  with pytest.raises(errors.ConfigError, match=r"join_key 'uid' is not a feature of the base .*\['id', 'score', 'text', 'tokens'\]"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="uid")
  with pytest.raises(errors.ConfigError, match=r"join_key 'tokens' is int64_list\[\*\] in the base"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="tokens")


@pytest.mark.parametrize("content, fragment", [
    ("id,label\n100,1\nx,2\n", "join key 'x' in column 'id' is not an integer"),
    ("id,label\n100,1\n101\n", "line 3 has 1 cells, the header has 2"),
    ("label\n1\n", "has no key column 'id'"),
    ("", "is empty; it needs a header row"),
])
def test_bad_csv_side_tables(tmp_path, content, fragment):
  (tmp_path / "bad.csv").write_text(content)
  with pytest.raises((errors.SourceError, errors.ConfigError, errors.SchemaError), match=fragment):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(tmp_path / "bad.csv"), join_key="id")


def test_declared_csv_column_with_an_empty_cell(tmp_path):
  table = write_csv(tmp_path / "t.csv", ["id", "label"], [[100, 1], [101, ""]])
  with pytest.raises(errors.SourceError, match="line 3, column 'label' is empty"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                 features={"label": "int64"})


def test_sqlite_side_table(tmp_path):
  database = tmp_path / "labels.db"
  with sqlite3.connect(database) as connection:
    connection.execute("CREATE TABLE labels (id INTEGER, label INTEGER, name TEXT)")
    connection.executemany("INSERT INTO labels VALUES (?, ?, ?)", [(i, i % 3, f"n{i}") for i in range(100, 110)])
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), join_key="id",
                  side_table_sql="SELECT id, label, name FROM labels",
                  side_table_connection={"driver": "sqlite", "sqlite_path": "labels.db"}, data_root=str(tmp_path))
  got = examples(builder.as_dataset(split="train"))
  assert [(e["label"], e["name"]) for e in got] == [(e["id"] % 3, f"n{e['id']}".encode()) for e in got]
  assert builder.info.metadata["provenance"]["side_table"]["source"].startswith("SQL query on SQLite")


def test_postgresql_side_table(tmp_path, postgres_connection, postgres_dsn):
  with postgres_connection.cursor() as cursor:
    cursor.execute("DROP TABLE IF EXISTS augmented_labels")
    cursor.execute("CREATE TABLE augmented_labels (id bigint, label integer, weight double precision, tag text)")
    cursor.executemany("INSERT INTO augmented_labels VALUES (%s, %s, %s, %s)",
                       [(i, i % 3, i / 8, f"t{i}") for i in range(100, 110)])
  postgres_connection.commit()
  try:
    os.environ["AUGMENTED_TEST_DSN"] = postgres_dsn
    builder = build(tmp_path, mode="overlay", base_records=raw_base(tmp_path / "raw"), join_key="id",
                    side_table_sql="SELECT id, label, weight, tag FROM augmented_labels",
                    side_table_connection={"driver": "postgresql", "dsn_env": "AUGMENTED_TEST_DSN"})
    got = examples(load_augmented(builder.data_dir, split="train"))
    assert [(e["label"], e["weight"], e["tag"]) for e in got] == [(e["id"] % 3, e["id"] / 8, f"t{e['id']}".encode()) for e in got]
    assert "password" not in json.dumps(builder.info.metadata["provenance"]).replace("***", "")
  finally:
    del os.environ["AUGMENTED_TEST_DSN"]
    with postgres_connection.cursor() as cursor:
      cursor.execute("DROP TABLE augmented_labels")
    postgres_connection.commit()


# ------------------------------------------------------ errors and faults --


def test_a_base_that_does_not_exist(tmp_path):
  table = str(labels_csv(tmp_path / "labels.csv", range(3)))
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset at"):
    make_builder(tmp_path, base=str(tmp_path / "missing"), side_table=table, join_key="id")
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset at 'no_such_dataset_xyz'"):
    make_builder(tmp_path, base="no_such_dataset_xyz", side_table=table, join_key="id")
  with pytest.raises(errors.SourceError, match="No TFRecord file found at"):
    make_builder(tmp_path, base_records={"train": [str(tmp_path / "none-*.tfrecord")]}, side_table=table, join_key="id")
  assert not (tmp_path / "tfds").exists() or not list((tmp_path / "tfds").rglob("*"))


def test_a_corrupt_raw_base_record_is_named(tmp_path):
  sources = raw_base(tmp_path / "raw")
  path = pathlib.Path(sources["train"][1])
  data = bytearray(path.read_bytes())
  first_length = len(read_records([path])[0])
  data[12 + first_length + 4 + 12 + 5] ^= 0xFF  # inside record 1's payload (12-byte header, 4-byte CRC)
  path.write_bytes(bytes(data))
  with pytest.raises(errors.SourceError, match=r"train-1.tfrecord: record 1 is corrupt or truncated"):
    make_builder(tmp_path, base_records=sources, side_table=str(labels_csv(tmp_path / "l.csv", range(100, 110))), join_key="id")


def test_a_corrupt_prepared_base_fails_the_build_cleanly_and_a_rerun_succeeds(tmp_path, prepared_base):
  base_dir = tmp_path / "base"
  shutil.copytree(prepared_dir(prepared_base), base_dir)
  shard = tfds.builder_from_directory(str(base_dir)).info.splits["train"].filepaths[1]
  original = pathlib.Path(shard).read_bytes()
  data = bytearray(original)
  data[-10] ^= 0xFF  # inside the last record
  pathlib.Path(shard).write_bytes(bytes(data))
  config = dict(base=str(base_dir), side_table=str(labels_csv(tmp_path / "l.csv", range(16))), join_key="id",
                overwrite_fields=["label"])
  last = tfds.builder_from_directory(str(base_dir)).info.splits["train"].shard_lengths[1] - 1
  with pytest.raises(errors.SourceError, match=rf"{pathlib.Path(shard).name}: record {last} is corrupt or truncated"):
    build(tmp_path, "c", **config)
  assert_nothing_loadable(tmp_path / "tfds")
  with pytest.raises(ValueError, match="BuilderConfig c not found"):
    tfds.load("augmented/c", data_dir=str(tmp_path / "tfds"), download=False)
  pathlib.Path(shard).write_bytes(original)  # repaired
  builder = build(tmp_path, "c", **config)
  assert builder.info.splits["train"].num_examples == 12
  assert len(examples(tfds.load("augmented/c", split="train", data_dir=str(tmp_path / "tfds")))) == 12


def test_a_failed_overlay_build_leaves_nothing_the_loader_accepts(tmp_path):
  sources = raw_base(tmp_path / "raw", {"train": [12]})
  with pytest.raises(errors.SourceError, match="raised on example train/000000009"):
    build(tmp_path, "o", mode="overlay", base_records=sources, function=f"{THIS_MODULE}:raises_at_nine")
  assert_nothing_loadable(tmp_path / "tfds")
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset"):
    load_augmented("augmented/o", split="train", data_dir=str(tmp_path / "tfds"))


def label_from_function(example: dict[str, Any]) -> dict[str, Any]:
  return {"label": 1}


def test_raw_records_that_disagree_and_fields_from_two_sources(tmp_path):
  path = write_records(tmp_path / "raw" / "mixed.tfrecord", [example_bytes(id=[1]), example_bytes(id=[b"two"])])
  with pytest.raises(errors.SchemaError, match=r"mixed.tfrecord: record 1 does not match the schema .*feature 'id' is bytes_list\[1\], expected int64_list\[1\]"):
    make_builder(tmp_path, base_records={"train": [str(path)]}, function=f"{THIS_MODULE}:label_from_function")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  with pytest.raises(errors.ConfigError, match=r"Field 'label' comes from both the side table and function"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw2"), side_table=table, join_key="id",
                 function=f"{THIS_MODULE}:label_from_function")


def test_records_that_are_not_examples(tmp_path):
  path = write_records(tmp_path / "raw" / "bad.tfrecord", [example_bytes(id=[1]), b"\xff\xff not a proto"])
  with pytest.raises(errors.SchemaError, match=r"bad.tfrecord: record 1 is not a tf.train.Example"):
    make_builder(tmp_path, base_records={"train": [str(path)]}, side_table=str(labels_csv(tmp_path / "l.csv", [1])), join_key="id")


@pytest.mark.parametrize("config, fragment", [
    (dict(side_table="x.csv", join_key="id"), "give either `base`"),
    (dict(base="b", base_records={"train": ["x"]}, side_table="x.csv", join_key="id"), "give either `base`"),
    (dict(base="b"), "where the new fields come from"),
    (dict(base="b", side_table="x.csv"), "a side table needs `join_key`"),
    (dict(base="b", function="m:f", join_key="id"), "`join_key` only applies with a side table"),
    (dict(base="b", side_table="x.csv", join_key="id", mode="rewrite"), "mode='rewrite'"),
    (dict(base="b", side_table="x.csv", join_key="id", missing_policy="ignore"), "missing_policy='ignore'"),
    (dict(base="b", side_table="x.csv", join_key="id", missing_defaults={"a": 1}), "missing_defaults only applies"),
    (dict(base="b", function="m:f", num_workers=0), "num_workers=0"),
    (dict(base="b", side_table="x.csv", side_table_sql="SELECT 1", join_key="id"), "not both"),
    (dict(base="b", side_table_sql="SELECT 1", join_key="id"), "go together"),
])
def test_invalid_configs(tmp_path, config, fragment):
  with pytest.raises(errors.ConfigError, match=fragment):
    builder_lib._Plan.from_config(BuilderConfig(name="bad", **config))  # pylint: disable=protected-access


def test_overwrite_fields_must_name_a_base_feature_and_a_new_field(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  with pytest.raises(errors.ConfigError, match="overwrite_fields lists 'nope', which is not a base feature"):
    make_builder(tmp_path, base_records=sources, side_table=table, join_key="id", overwrite_fields=["nope"])
  with pytest.raises(errors.ConfigError, match="overwrite_fields lists 'text', which no new field provides"):
    make_builder(tmp_path, base_records=sources, side_table=table, join_key="id", overwrite_fields=["text"])
  builder = build(tmp_path, base_records=sources, function=f"{THIS_MODULE}:new_score", overwrite_fields=["score"])
  got = examples(builder.as_dataset(split="train"))
  assert [e["score"] for e in got] == [np.float32(-e["id"] / 4) for e in got]


def test_reserved_and_declared_but_unprovided_names(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = write_csv(tmp_path / "t.csv", ["id", "_base_index"], [[i, 1] for i in range(100, 110)])
  with pytest.raises(errors.ConfigError, match="'_base_index' .* uses a reserved name"):
    make_builder(tmp_path, base_records=sources, side_table=str(table), join_key="id")
  with pytest.raises(errors.ConfigError, match=r"features declares \['nothing'\]"):
    make_builder(tmp_path, base_records=sources, function=f"{THIS_MODULE}:new_score", overwrite_fields=["score"],
                 features={"nothing": "int64"})
  with pytest.raises(errors.ConfigError, match="unsupported dtype 'complex64'"):
    make_builder(tmp_path, base_records=sources, function=f"{THIS_MODULE}:new_score", overwrite_fields=["score"],
                 features={"score": "complex64"})


# --------------------------------------------------------------- safety --


def test_bases_are_never_modified(tmp_path, prepared_base):
  inputs = tmp_path / "inputs"
  sources = raw_base(inputs / "raw")
  table = labels_csv(inputs / "labels.csv", range(100, 110))
  prepared_table = labels_csv(inputs / "prepared_labels.csv", range(16))
  before = {**file_hashes(inputs), **file_hashes(prepared_dir(prepared_base))}
  assert len(before) == 3 + 2 + len(list(prepared_dir(prepared_base).iterdir()))
  for mode in ("materialize", "overlay"):
    build(tmp_path, f"raw_{mode}", mode=mode, base_records=sources, side_table=str(table), join_key="id",
          function=f"{THIS_MODULE}:score_and_words")
    overlay = build(tmp_path, f"prepared_{mode}", mode=mode, base=str(prepared_dir(prepared_base)),
                    side_table=str(prepared_table), join_key="id", overwrite_fields=["label"])
  examples(load_augmented(overlay.data_dir, split="train"))
  assert {**file_hashes(inputs), **file_hashes(prepared_dir(prepared_base))} == before


def test_beam_overlay_equals_local_and_counts_skipped(tmp_path):
  sources = raw_base(tmp_path / "raw")
  config = BuilderConfig(name="beam", mode="overlay", base_records=sources, missing_policy="skip",
                         side_table=str(labels_csv(tmp_path / "labels.csv", [100, 103, 108])), join_key="id")
  local = Builder(config=config, data_dir=str(tmp_path / "local"))
  local.download_and_prepare()
  on_beam = Builder(config=config, data_dir=str(tmp_path / "beam"))
  on_beam.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_runner="DirectRunner"))
  for split in ("train", "test"):
    assert stored(on_beam, split) == stored(local, split)
  assert on_beam.info.metadata["augmented"]["missing"] == {"train": 5, "test": 2}
  assert [e["id"] for e in examples(load_augmented(on_beam.data_dir, split="train"))] == [100, 103]


def test_tfds_build_cli_with_json_config(tmp_path):
  sources = raw_base(tmp_path / "raw")
  config = json.dumps({
      "name": "cli", "base_records": sources, "mode": "overlay",
      "function": "tfds_builders.augmented.example_functions:text_statistics",
  })
  result = subprocess.run(
      [str(pathlib.Path(sys.executable).parent / "tfds"), "build", str(BUILDER_DIR),
       "--data_dir", str(tmp_path / "tfds"), "--config", config],
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  got = examples(load_augmented(str(tmp_path / "tfds/augmented/cli/1.0.0"), split="train"))
  assert [e["text_length"] for e in got] == [len(e["text"]) for e in got]


# ------------------------------------------------------- field encoding --


@pytest.mark.parametrize("spec_text, value", [
    ("bool", True), ("int8", -128), ("int16", 300), ("int32", -(2**31)), ("int64", 2**63 - 1),
    ("uint8", 255), ("uint16", 65535), ("uint32", 2**32 - 1), ("float16", 0.5), ("float32", 1.25),
    ("float64", 0.1), ("string", "é"), ("int64[3]", [1, -2, 3]), ("float32[None]", [0.5, 2.0]),
    ("float64[2,2]", [[0.1, 0.2], [1e300, -0.0]]), ("string[None]", ["a", "bé"]), ("int64[None]", []),
    ("uint8[2,None]", [[1, 2, 3], [4, 5, 6]]),
])
def test_field_encoding_matches_tfds(spec_text, value):
  spec = fields.parse_declared("f", spec_text, "test")
  ours = serialization.example([fields.FieldCodec(spec).encode(value)])
  features = tfds.features.FeaturesDict({"f": spec.feature()})
  theirs = features.serialize_example({"f": value})
  assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)
  decoded = features.deserialize_example_np(ours)["f"]
  np.testing.assert_array_equal(decoded, features.deserialize_example_np(theirs)["f"])
  if spec.shape and spec.dtype != "string":
    assert decoded.dtype == np.dtype(spec.dtype)


@pytest.mark.parametrize("spec_text, value, fragment", [
    ("int64", 1.5, "1.5 is float64, but the feature is int64"),
    ("int8", 300, "300 is out of the range of int8"),
    ("bool", 1, "1 is int64, but the feature is bool"),
    ("float32[2]", [1.0, 2.0, 3.0], r"has shape \(3,\), but the feature is float32\[2\]"),
    ("string", 5, "5 is int64, but the feature is string"),
])
def test_field_values_that_do_not_fit(spec_text, value, fragment):
  with pytest.raises(fields.FieldValueError, match=fragment):
    fields.FieldCodec(fields.parse_declared("f", spec_text, "test")).encode(value)


# ------------------------------------------------ the overlay's sparse read --


@pytest.mark.parametrize("missing_policy", ["error", "skip"])
def test_overlay_reading_frames_equals_one_reading_every_record(tmp_path, missing_policy):
  sources = raw_base(tmp_path / "raw")
  kept = [i for i in range(100, 110) if missing_policy == "error" or i % 4]
  config = dict(base_records=sources, side_table=str(labels_csv(tmp_path / "l.csv", kept)), join_key="id",
                mode="overlay", missing_policy=missing_policy)
  sparse = build(tmp_path, "sparse", **config)
  verified = build(tmp_path, "verified", verify_base=True, **config)
  for split in ("train", "test"):
    assert stored(sparse, split) == stored(verified, split)
  assert_examples_equal(examples(load_augmented(sparse.data_dir, split="train")),
                        examples(load_augmented(verified.data_dir, split="train")))
  # The sparse overlay learned the raw base's schema (tokens: lengths 1 to 3) and counts in its own walk.
  assert sparse.info.metadata["augmented"]["base"] == verified.info.metadata["augmented"]["base"]
  assert sparse.info.metadata["augmented"]["base"]["features"]["content"]["features"]["tokens"]["tensor"]["shape"] == {"dimensions": ["-1"]}
  assert provenance_of(sparse)["base"] == provenance_of(verified)["base"]


def provenance_of(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  return builder.info.metadata[provenance.PROVENANCE_KEY]


def _flip_a_byte_of_record_1(path: pathlib.Path, records: list[bytes]) -> None:
  data = bytearray(write_records(path, records).read_bytes())
  data[12 + len(records[0]) + 4 + 12 + 5] ^= 0xFF  # inside record 1's Example (12-byte header, 4-byte CRC)
  path.write_bytes(bytes(data))


def _truncate(path: pathlib.Path, records: list[bytes]) -> None:
  path.write_bytes(write_records(path, records).read_bytes()[:-3])


def _replace_record_1(record: bytes):
  return lambda path, records: write_records(path, [records[0], record] + records[2:])


# Ways to damage a base file of 3 records: each writes the damaged file.
BAD_SECOND_FILES = {
    "corrupt": _flip_a_byte_of_record_1,
    "truncated": _truncate,
    "other-kind": _replace_record_1(example_bytes(id=[b"two"], text=[b"t"], score=[1.0], tokens=[1])),
    "not-an-example": _replace_record_1(b"\xff\xff not a proto"),
    "extra-feature": _replace_record_1(example_bytes(id=[1], text=[b"t"], score=[1.0], tokens=[1], x=[2])),
}


@pytest.mark.parametrize("damage", sorted(BAD_SECOND_FILES))
def test_a_walked_overlay_names_a_bad_base_record_as_a_first_read_does(tmp_path, damage):
  """An overlay learns a raw base's schema in its walk: a bad record fails the build with the first read's error."""
  sources = raw_base(tmp_path / "raw")
  path = pathlib.Path(sources["train"][1])
  original = path.read_bytes()
  BAD_SECOND_FILES[damage](path, read_records([path]))
  table = str(labels_csv(tmp_path / "l.csv", range(100, 110)))
  with pytest.raises((errors.SourceError, errors.SchemaError)) as first_read:
    make_builder(tmp_path, base_records=sources, side_table=table, join_key="id")  # materialize: read first
  with pytest.raises(first_read.type) as walked:
    build(tmp_path, "o", mode="overlay", base_records=sources, side_table=table, join_key="id")
  bad = f"{path}: record {2 if damage == 'truncated' else 1} "  # the last record is truncated
  assert bad in str(walked.value) and bad in str(first_read.value)
  if damage != "truncated":  # the frame walk words a truncated record its own way
    assert str(walked.value) == str(first_read.value)
  assert_nothing_loadable(tmp_path / "tfds")
  path.write_bytes(original)  # repaired: a rerun succeeds
  builder = build(tmp_path, "o", mode="overlay", base_records=sources, side_table=table, join_key="id")
  assert builder.info.splits["train"].num_examples == 7


def test_a_walked_overlay_cut_short_still_records_the_whole_base(tmp_path):
  sources = raw_base(tmp_path / "raw")
  config = dict(mode="overlay", base_records=sources, side_table=str(labels_csv(tmp_path / "l.csv", range(100, 110))),
                join_key="id")
  whole = build(tmp_path, "whole", **config)
  cut = make_builder(tmp_path, "cut", **config)
  cut.download_and_prepare(download_config=tfds.download.DownloadConfig(max_examples_per_split=2))
  assert cut.info.splits["train"].num_examples == 2
  assert cut.info.metadata["augmented"]["base"] == whole.info.metadata["augmented"]["base"]


def test_a_walked_overlay_skips_empty_files_and_refuses_an_empty_split(tmp_path):
  sources = raw_base(tmp_path / "raw")
  empty = tmp_path / "raw" / "empty.tfrecord"
  empty.write_bytes(b"")
  table = str(labels_csv(tmp_path / "l.csv", range(100, 110)))
  builder = build(tmp_path, "o", mode="overlay", base_records={"train": [str(empty)] + sources["train"]},
                  side_table=table, join_key="id")
  assert builder.info.metadata["augmented"]["base"]["splits"]["train"][0] == ["empty.tfrecord", "", 0, 0]
  assert [e["id"] for e in examples(load_augmented(builder.data_dir, split="train"))] == list(range(100, 107))
  with pytest.raises(errors.SourceError, match=r"Base split\(s\) \['test'\] hold no records"):
    make_builder(tmp_path, "e", mode="overlay", base_records={"train": sources["train"], "test": [str(empty)]},
                 side_table=table, join_key="id")
  with pytest.raises(errors.SourceError, match=r"hold no records\. Give files with at least one"):
    make_builder(tmp_path, "n", mode="overlay", base_records={"train": [str(empty)]}, side_table=table, join_key="id")


def test_verify_base_applies_to_overlays_only(tmp_path):
  with pytest.raises(errors.ConfigError, match="verify_base only applies with mode='overlay'"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table="x.csv", join_key="id", verify_base=True)


def _with_two_ids(record: bytes) -> bytes:
  example = tf.train.Example.FromString(record)
  example.features.feature["id"].int64_list.value.append(7)
  return example.SerializeToString()


def _prepared_copy_with(tmp_path: pathlib.Path, prepared_base: pathlib.Path, replace) -> tuple[pathlib.Path, str, int]:
  """A copy of the prepared base whose second train shard has its record 1 replaced (`replace(record)`)."""
  base_dir = tmp_path / "base"
  shutil.copytree(prepared_dir(prepared_base), base_dir)
  shard = tfds.builder_from_directory(str(base_dir)).info.splits["train"].filepaths[1]
  records = read_records([shard])
  records[1] = replace(records[1])
  write_records(pathlib.Path(shard), records)
  return base_dir, pathlib.Path(shard).name, 1


@pytest.mark.parametrize("replace, message", [
    (lambda record: _with_two_ids(record), r"record 1 has 2 values of join key 'id'"),
    (lambda record: b"\xff\xff not a proto", r"record 1 is not a tf.train.Example"),
])
def test_overlay_names_the_record_whose_join_key_it_cannot_read(tmp_path, prepared_base, replace, message):
  base_dir, shard_name, _ = _prepared_copy_with(tmp_path, prepared_base, replace)
  with pytest.raises(errors.SchemaError, match=rf"{shard_name}: {message}"):
    build(tmp_path, "o", mode="overlay", base=str(base_dir), side_table=str(labels_csv(tmp_path / "l.csv", range(16))),
          join_key="id", overwrite_fields=["label"])
  assert_nothing_loadable(tmp_path / "tfds")


def test_an_overlay_checks_record_data_when_building_and_when_loaded(tmp_path, prepared_base):
  base_dir, shard_name, _ = _prepared_copy_with(tmp_path, prepared_base, lambda record: record)
  shard = base_dir / shard_name
  config = dict(mode="overlay", base=str(base_dir), side_table=str(labels_csv(tmp_path / "l.csv", range(16))),
                join_key="id", overwrite_fields=["label"])
  overlay = build(tmp_path, "before", **config)  # built on the intact base
  data = bytearray(shard.read_bytes())
  # Inside the last record's PNG: not its join key, wherever protobuf put the map entries.
  data[data.rindex(b"\x89PNG") + 20] ^= 0xFF
  shard.write_bytes(bytes(data))
  last = tfds.builder_from_directory(str(base_dir)).info.splits["train"].shard_lengths[1] - 1
  corrupt = rf"{shard_name}: record {last} is corrupt or truncated \(at byte \d+: its \d+ bytes of data do not match"
  for name, options in (("verified", {"verify_base": True}), ("sparse", {})):
    with pytest.raises(errors.SourceError, match=corrupt):
      build(tmp_path, name, **options, **config)
  assert not list((tmp_path / "tfds" / "augmented").glob("verified/*/dataset_info.json"))
  assert not list((tmp_path / "tfds" / "augmented").glob("sparse/*/dataset_info.json"))
  # The overlay built before the damage: the loader names the base file and record.
  with pytest.raises(errors.SourceError, match=rf"cannot be read from base example train\[\d+\] on: .*{shard_name}: record {last}"):
    examples(load_augmented(overlay.data_dir, split="train"))


def test_an_overlay_names_a_record_whose_header_is_corrupt(tmp_path, prepared_base):
  base_dir, shard_name, _ = _prepared_copy_with(tmp_path, prepared_base, lambda record: record)
  shard = base_dir / shard_name
  offset = 16 + len(read_records([shard])[0])  # record 1's header
  data = bytearray(shard.read_bytes())
  data[offset + 1] ^= 0xFF  # its length
  shard.write_bytes(bytes(data))
  with pytest.raises(errors.SourceError, match=rf"{shard_name}: record 1 \(at byte {offset}\) has a corrupt header"):
    build(tmp_path, "o", mode="overlay", base=str(base_dir), side_table=str(labels_csv(tmp_path / "l.csv", range(16))),
          join_key="id", overwrite_fields=["label"])
  assert_nothing_loadable(tmp_path / "tfds")


# -- the columnar side-table path agrees with the row-by-row path -------------

from etils import epath  # noqa: E402  # pylint: disable=g-import-not-at-top
from tfds_builders.augmented import side_table as side_table_lib  # noqa: E402  # pylint: disable=g-import-not-at-top

COLUMNAR_TABLES = {
    "numbers and words": "id,label,weight,name,neg\n" + "".join(
        f"{i},{i % 10},{i / 7!r},w{i}é,{-i * 1000003}\n" for i in range(300)),
    "decimal forms": "id,x\n1,5.\n2,.5\n3,-1e5\n4,2.5E-3\n5,7\n6,0.1\n",
    "tsv windows lines": "id\tlabel\r\n1\tcat\r\n2\tdog\r\n",
    "empty strings": "id,name\n1,\n2,x\n",
    "an empty cell makes numbers text": "id,x\n1,\n2,3\n",
    "hex is text": "id,x\n1,0x1F\n2,0x20\n",
    "bom and padded header": "\ufeff id , name \n1,a\n2,b\n",
}
ROW_PATH_TABLES = {  # read (or refused) only by the row-by-row path, which decides
    "quoted": 'id,name\n1,"a,b"\n2,"c"\n',
    "spaces around numbers": "id,x\n1, 5\n2,6\n",
    "underscores": "id,x\n1,1_000\n2,2\n",
    "inf": "id,x\n1,inf\n2,1.5\n",
    "plus sign key": "id,x\n+1,a\n2,b\n",
    "huge int": "id,x\n1,99999999999999999999\n",
    "duplicate key": "id,x\n1,a\n1,b\n",
    "short row": "id,x\n1\n2,3\n",
    "lone carriage returns": "id,x\r1,a\r2,b\r",
}


def read_side_table(path: pathlib.Path, columnar: bool, monkeypatch, **options) -> Any:
  with monkeypatch.context() as patch:
    if not columnar:
      patch.setattr(side_table_lib, "_columnar", lambda *args: None)
    options = {"table_format": "auto", "key_column": "id", "columns": [], "key_kind": "int64_list", "declared": {}, **options}
    return side_table_lib.read_file(epath.Path(path), **options)


def side_table_view(table: Any, keys: list[Any]) -> tuple:
  rows = table.index.rows(np.array(keys, np.int64) if keys and isinstance(keys[0], int) else keys)
  return table.specs, [None if row < 0 else table.entries.item(row) for row in rows.tolist()]


@pytest.mark.parametrize("name", sorted(COLUMNAR_TABLES))
def test_columnar_csv_tables_equal_the_row_by_row_path(tmp_path, monkeypatch, name):
  path = tmp_path / ("t.tsv" if "tsv" in name else "t.csv")
  path.write_bytes(COLUMNAR_TABLES[name].encode())
  data = path.read_bytes()
  assert side_table_lib._columnar(data, str(path), "csv", "id", [], "int64_list", {}, "") is not None
  keys = list(range(-2, 305))
  fast, slow = (read_side_table(path, columnar, monkeypatch) for columnar in (True, False))
  assert side_table_view(fast, keys) == side_table_view(slow, keys)
  assert len(fast) == len(slow) and fast.sha256 == slow.sha256


@pytest.mark.parametrize("name", sorted(ROW_PATH_TABLES))
def test_csv_tables_the_columnar_path_declines_read_as_before(tmp_path, monkeypatch, name):
  path = tmp_path / "t.csv"
  path.write_bytes(ROW_PATH_TABLES[name].encode())
  assert side_table_lib._columnar(path.read_bytes(), str(path), "csv", "id", [], "int64_list", {}, "") is None
  outcomes = []
  for columnar in (True, False):
    try:
      outcomes.append(side_table_view(read_side_table(path, columnar, monkeypatch), [1, 2]))
    except errors.TfdsBuildersError as error:
      outcomes.append(str(error))
  assert outcomes[0] == outcomes[1]


def test_columnar_declared_types_string_keys_and_parquet_equal_the_row_by_row_path(tmp_path, monkeypatch):
  csv_path = tmp_path / "t.csv"
  csv_path.write_text("id,small,ratio,text\n" + "".join(f"k{i},{i % 100},{i / 3!r},{i}\n" for i in range(50)))
  declared = {"small": fields.parse_declared("small", "int8", ""), "ratio": fields.parse_declared("ratio", "float32", ""),
              "text": fields.parse_declared("text", "string", "")}
  keys = [f"k{i}".encode() for i in range(-1, 52)]
  fast, slow = (read_side_table(csv_path, columnar, monkeypatch, key_kind="bytes_list", declared=declared)
                for columnar in (True, False))
  assert side_table_view(fast, keys) == side_table_view(slow, keys)
  parquet_path = tmp_path / "t.parquet"
  pq.write_table(pa.table({
      "id": pa.array(range(40), pa.int32()), "f": pa.array(np.arange(40) / 9, pa.float32()),
      "flag": pa.array([i % 3 == 0 for i in range(40)]), "name": pa.array([f"n{i}" for i in range(40)]),
      "blob": pa.array([bytes([i]) * i for i in range(40)], pa.binary()),
  }), parquet_path)
  assert side_table_lib._columnar(parquet_path.read_bytes(), str(parquet_path), "parquet", "id", [], "int64_list", {}, "")
  fast, slow = (read_side_table(parquet_path, columnar, monkeypatch) for columnar in (True, False))
  assert side_table_view(fast, list(range(-1, 42))) == side_table_view(slow, list(range(-1, 42)))


def test_declared_int_out_of_range_is_named_by_row(tmp_path, monkeypatch):
  path = tmp_path / "t.csv"
  path.write_text("id,small\n1,5\n2,300\n")
  with pytest.raises(errors.SchemaError, match=r"t.csv: line 3, column 'small': 300 is out of the range of int8"):
    read_side_table(path, True, monkeypatch, declared={"small": fields.parse_declared("small", "int8", "")})


@pytest.mark.parametrize("keys", [list(range(0, 100, 3)), [5, -2**63, 2**63 - 1, 0]])
def test_key_index_finds_dense_and_sparse_int_keys(keys):
  index = side_table_lib.KeyIndex(np.array(keys, np.int64))
  probes = keys + [1, -1, 2**62, -(2**63) + 1, 101]
  expected = [keys.index(key) if key in keys else -1 for key in probes]
  assert index.rows(np.array(probes, np.int64)).tolist() == expected
  assert len(index) == len(keys)
