"""The augmented card: bundled configs, materialized versions, config checks, faults, Beam and the CLI."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.augmented import Builder
from tfds_builders.augmented import BuilderConfig
from tfds_builders.augmented import augmented_dataset_builder as card
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tests import helpers
from tests.augmented.common import BUILDER_DIR
from tests.augmented.common import DUMMY_DATA
from tests.augmented.common import FUNCTIONS
from tests.augmented.common import assert_nothing_loadable
from tests.helpers import example_bytes
from tests.augmented.common import examples
from tests.augmented.common import features_of
from tests.augmented.common import labels_csv
from tests.augmented.common import prepared_dir
from tests.augmented.common import raw_base
from tests.augmented.common import read_records
from tests.augmented.common import stored
from tests.augmented.common import values_of
from tests.augmented.common import weights_csv
from tests.helpers import write_csv

make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)


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
                  function=f"{FUNCTIONS}:caption_length")
  assert str(builder.version) == "1.3.0"  # the minor version after the base's 1.2.0
  assert builder.data_dir.endswith("augmented/t/1.3.0")
  notes = builder.info.release_notes["1.3.0"]
  assert "Adds to augmented_test_base 1.2.0 (materialize)" in notes
  for fragment in ("weight (float64) from side table",
                   f"caption_length (int64) from function {FUNCTIONS}:caption_length",
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
  assert record["function"] == f"{FUNCTIONS}:caption_length"
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
  second = build(tmp_path, "second", base=first.data_dir, function=f"{FUNCTIONS}:score_and_words",
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
  path = helpers.write_records(tmp_path / "base.tfrecord.gz", records, compression="GZIP")
  builder = build(tmp_path, base_records={"train": [str(path)]},
                  side_table=str(labels_csv(tmp_path / "l.csv", range(5))), join_key="id")
  got = stored(builder)
  assert [record[:len(raw)] for raw, record in zip(records, got)] == records


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
    build(tmp_path, "o", mode="overlay", base_records=sources, function=f"{FUNCTIONS}:raises_at_nine")
  assert_nothing_loadable(tmp_path / "tfds")
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset"):
    load_augmented("augmented/o", split="train", data_dir=str(tmp_path / "tfds"))


def test_raw_records_that_disagree_and_fields_from_two_sources(tmp_path):
  path = helpers.write_records(tmp_path / "raw" / "mixed.tfrecord", [example_bytes(id=[1]), example_bytes(id=[b"two"])])
  with pytest.raises(errors.SchemaError, match=r"mixed.tfrecord: record 1 does not match the schema .*feature 'id' is bytes_list\[1\], expected int64_list\[1\]"):
    make_builder(tmp_path, base_records={"train": [str(path)]}, function=f"{FUNCTIONS}:label_from_function")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  with pytest.raises(errors.ConfigError, match=r"Field 'label' comes from both the side table and function"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw2"), side_table=table, join_key="id",
                 function=f"{FUNCTIONS}:label_from_function")


def test_records_that_are_not_examples(tmp_path):
  path = helpers.write_records(tmp_path / "raw" / "bad.tfrecord", [example_bytes(id=[1]), b"\xff\xff not a proto"])
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
    card._check_config(BuilderConfig(name="bad", **config))  # pylint: disable=protected-access


def test_overwrite_fields_must_name_a_base_feature_and_a_new_field(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  with pytest.raises(errors.ConfigError, match="overwrite_fields lists 'nope', which is not a base feature"):
    make_builder(tmp_path, base_records=sources, side_table=table, join_key="id", overwrite_fields=["nope"])
  with pytest.raises(errors.ConfigError, match="overwrite_fields lists 'text', which no new field provides"):
    make_builder(tmp_path, base_records=sources, side_table=table, join_key="id", overwrite_fields=["text"])
  builder = build(tmp_path, base_records=sources, function=f"{FUNCTIONS}:new_score", overwrite_fields=["score"])
  got = examples(builder.as_dataset(split="train"))
  assert [e["score"] for e in got] == [np.float32(-e["id"] / 4) for e in got]


def test_reserved_and_declared_but_unprovided_names(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = write_csv(tmp_path / "t.csv", ["id", "_base_index"], [[i, 1] for i in range(100, 110)])
  with pytest.raises(errors.ConfigError, match="'_base_index' .* uses a reserved name"):
    make_builder(tmp_path, base_records=sources, side_table=str(table), join_key="id")
  with pytest.raises(errors.ConfigError, match=r"features declares \['nothing'\]"):
    make_builder(tmp_path, base_records=sources, function=f"{FUNCTIONS}:new_score", overwrite_fields=["score"],
                 features={"nothing": "int64"})
  with pytest.raises(errors.ConfigError, match="unsupported dtype 'complex64'"):
    make_builder(tmp_path, base_records=sources, function=f"{FUNCTIONS}:new_score", overwrite_fields=["score"],
                 features={"score": "complex64"})


# --------------------------------------------------------------- safety --


def test_bases_are_never_modified(tmp_path, prepared_base):
  inputs = tmp_path / "inputs"
  sources = raw_base(inputs / "raw")
  table = labels_csv(inputs / "labels.csv", range(100, 110))
  prepared_table = labels_csv(inputs / "prepared_labels.csv", range(16))
  before = {**helpers.file_hashes(inputs), **helpers.file_hashes(prepared_dir(prepared_base))}
  assert len(before) == 3 + 2 + len(list(prepared_dir(prepared_base).iterdir()))
  for mode in ("materialize", "overlay"):
    build(tmp_path, f"raw_{mode}", mode=mode, base_records=sources, side_table=str(table), join_key="id",
          function=f"{FUNCTIONS}:score_and_words")
    overlay = build(tmp_path, f"prepared_{mode}", mode=mode, base=str(prepared_dir(prepared_base)),
                    side_table=str(prepared_table), join_key="id", overwrite_fields=["label"])
  examples(load_augmented(overlay.data_dir, split="train"))
  assert {**helpers.file_hashes(inputs), **helpers.file_hashes(prepared_dir(prepared_base))} == before


@pytest.mark.slow
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


