"""Overlays over an ArrayRecord base: built like over TFRecord, read by index (`augmented_source`), through Grain."""

from __future__ import annotations

import functools
import pathlib
import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders
from tfds_builders.augmented import Builder
from tfds_builders.augmented import BuilderConfig
from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tests import helpers
from tests.augmented.common import FUNCTIONS
from tests.augmented.common import examples
from tests.augmented.common import frames_of
from tests.augmented.common import labels_csv
from tests.augmented.common import stored
from tests.augmented.conftest import AugmentedTestBase
from tests.augmented.conftest import AugmentedTestBaseOld

build = functools.partial(helpers.build, Builder)
FORMATS = ("tfrecord", "array_record")
# Each overlay, built over both builds of the base. Ids 0-13 have a row: test ids 14 and 15 are left out.
OVERLAYS = {
    "side": dict(mode="overlay", join_key="id", missing_policy="skip", overwrite_fields=["label"]),
    "function": dict(mode="overlay", function=f"{FUNCTIONS}:caption_length"),
    "materialized": dict(join_key="id", missing_policy="skip", overwrite_fields=["label"]),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> pathlib.Path:
  """AugmentedTestBase 1.2.0 as TFRecord and as ArrayRecord (3 train shards each), and OVERLAYS over each."""
  root = tmp_path_factory.mktemp("random_access")
  table = labels_csv(root / "labels.csv", range(14))
  for file_format in FORMATS:
    AugmentedTestBase(data_dir=str(root / file_format), file_format=file_format).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=3))
    for name, config in OVERLAYS.items():
      side = {"side_table": str(table)} if "join_key" in config else {}
      build(root, f"{name}_{file_format}", base=str(_base_dir(root, file_format)), **config, **side)
  return root


def _base_dir(root: pathlib.Path, file_format: str) -> pathlib.Path:
  return root / file_format / "augmented_test_base" / "1.2.0"


def _overlay(root: pathlib.Path, name: str) -> str:
  return str(next((root / "tfds" / "augmented" / name).iterdir()))


def _assert_same(got: dict, want: dict, where: str) -> None:
  """Equal keys, values, types and dtypes (a scalar is a NumPy scalar of its dtype, as tf.data gives it)."""
  assert sorted(got) == sorted(want), where
  for name, value in want.items():
    assert type(got[name]) is type(value), f"{where} {name}: {type(got[name])} != {type(value)}"
    assert np.asarray(got[name]).dtype == np.asarray(value).dtype, f"{where} {name}"
    np.testing.assert_array_equal(got[name], value, err_msg=f"{where} {name}")


# ------------------------------------------------------------ building --


def test_an_array_record_base_gives_the_same_overlays_and_materialized_records(built):
  for name in OVERLAYS:
    over_tfrecord = tfds.builder_from_directory(_overlay(built, f"{name}_tfrecord"))
    over_array_record = tfds.builder_from_directory(_overlay(built, f"{name}_array_record"))
    for split in ("train", "test"):
      assert stored(over_array_record, split) == stored(over_tfrecord, split), (name, split)
  # The fingerprint of an ArrayRecord record is what the TFRecord frame of the same bytes stores.
  tfrecord_base = tfds.builder_from_directory(str(_base_dir(built, "tfrecord")))
  frames = frames_of(tfrecord_base.info.splits["train"].filepaths)
  records = [record for path in tfds.builder_from_directory(str(_base_dir(built, "array_record"))).info.splits[
      "train"].filepaths for record in _array_records(path)]
  assert base_lib.fingerprints(records).tolist() == [length << 32 | crc for length, crc in frames]
  # The identity records the format: the two builds have different digests.
  metadata = {fmt: tfds.builder_from_directory(_overlay(built, f"side_{fmt}")).info.metadata["augmented"]
              for fmt in FORMATS}
  assert metadata["array_record"]["base"]["file_format"] == "array_record"
  assert "file_format" not in metadata["tfrecord"]["base"]  # TFRecord identities (and digests) as before
  assert metadata["array_record"]["base"]["digest"] != metadata["tfrecord"]["base"]["digest"]
  assert metadata["array_record"]["base"]["splits"]["train"][0][0] == "augmented_test_base-train.array_record-00000-of-00003"


def _array_records(path) -> list[bytes]:
  reader = base_lib.open_array_record(path)
  try:
    return reader.read(list(range(reader.num_records())))
  finally:
    reader.close()


# ------------------------------------------------------- random access --


@pytest.mark.parametrize("split", ["train", "test", "train[2:9]", "train[:50%]+test", "test[-3:]"])
@pytest.mark.parametrize("name", ["side", "function"])
def test_the_source_equals_load_augmented_over_the_tfrecord_build(built, name, split):
  want = examples(load_augmented(_overlay(built, f"{name}_tfrecord"), split=split))
  source = tfds_builders.augmented_source(_overlay(built, f"{name}_array_record"), split)
  assert len(source) == len(want) > 0
  for index in reversed(range(len(want))):  # out of order: by index, not a scan
    _assert_same(source[index], want[index], f"{name} {split}[{index}]")
  picks = [len(want) - 1, 0, len(want) // 2, 0]
  for index, example in zip(picks, source.__getitems__(picks)):
    _assert_same(example, want[index], f"{name} {split} batch [{index}]")
  _assert_same(source[-1], want[-1], f"{name} {split}[-1]")


def test_skip_leaves_unmatched_examples_out_of_the_length(built):
  source = tfds_builders.augmented_source("augmented/side_array_record", "test", data_dir=str(built / "tfds"))
  assert len(source) == 2  # ids 14 and 15 have no side-table row
  assert {int(example["id"]) for example in source} == {12, 13}
  assert [example["label"] for example in source] == [np.int64(int(e["id"]) % 3) for e in source]
  assert repr(source) == "AugmentedSource(overlay='augmented/side_array_record/1.3.0', split='test', examples=2, links=1)"


def test_an_index_out_of_range_is_an_index_error(built):
  source = tfds_builders.augmented_source(_overlay(built, "function_array_record"), "train[:5]")
  assert len(source) == 5
  for index in (5, -6, 100):
    with pytest.raises(IndexError, match=rf"Index {index} is out of range .* \(5 examples\)"):
      source[index]
  with pytest.raises(IndexError):
    source.__getitems__([0, 5])


def test_the_source_works_through_grain(built):
  import grain  # pylint: disable=import-outside-toplevel

  want = examples(load_augmented(_overlay(built, "side_tfrecord"), split="train"))
  source = tfds_builders.augmented_source(_overlay(built, "side_array_record"), "train")
  shuffled = grain.MapDataset.source(source).shuffle(seed=0)
  seen = sorted(int(shuffled[k]["id"]) for k in range(len(source)))
  assert seen == sorted(int(example["id"]) for example in want)
  assert [int(shuffled[k]["id"]) for k in range(len(source))] != [int(e["id"]) for e in want]  # shuffled
  loader = grain.DataLoader(
      data_source=source,
      sampler=grain.samplers.IndexSampler(num_records=len(source), shuffle=False, num_epochs=1, seed=0),
      worker_count=0,
  )
  loaded = list(loader)
  assert len(loaded) == len(want)
  for index, example in enumerate(loaded):
    _assert_same(example, want[index], f"DataLoader [{index}]")
  # Grain's worker processes get it pickled: readers and handles are opened again there.
  copied = pickle.loads(pickle.dumps(source))
  _assert_same(copied[len(want) - 1], want[-1], "unpickled")


def test_an_array_record_overlay_is_read_by_index_too_and_plain_tfds_sees_only_its_new_fields(built, tmp_path):
  config = BuilderConfig(name="side_as_array_record", base=str(_base_dir(built, "array_record")),
                         side_table=str(built / "labels.csv"), **OVERLAYS["side"])
  overlay = Builder(config=config, data_dir=str(tmp_path / "tfds"), file_format="array_record")
  overlay.download_and_prepare()
  new_fields = {"label", "weight", "_base_index", "_base_fingerprint", "_matched"}
  plain = tfds.data_source("augmented/side_as_array_record", split="train", data_dir=str(tmp_path / "tfds"))
  assert set(plain[0]) == new_fields
  loaded = tfds.load("augmented/side_tfrecord", split="train", data_dir=str(built / "tfds"))
  assert set(loaded.element_spec) == new_fields
  want = examples(load_augmented(_overlay(built, "side_tfrecord"), split="train[:50%]+test"))
  source = tfds_builders.augmented_source(str(overlay.data_path), "train[:50%]+test")
  assert len(source) == len(want) == 8
  for index in range(len(want)):
    _assert_same(source[index], want[index], f"array_record overlay [{index}]")


def test_a_chain_with_constants_equals_load_augmented_of_the_same_chain_over_tfrecord(built, tmp_path):
  """Link 1 joins the side table (skip), link 2 adds the function's fields and a constant, link 3 constants only."""
  sources = {}
  for file_format in FORMATS:
    link1 = _overlay(built, f"side_{file_format}")
    link2 = build(tmp_path, f"link2_{file_format}", mode="overlay", base=link1, function=f"{FUNCTIONS}:caption_length",
                  constant_fields={"source": "crawl-7"})
    link3 = build(tmp_path, f"link3_{file_format}", mode="overlay", base=str(link2.data_path),
                  constant_fields={"fold": {"train": 1, "test": 2}})
    sources[file_format] = str(link3.data_path)
  for split in ("train", "train[3:]+test"):
    want = examples(load_augmented(sources["tfrecord"], split=split))
    source = tfds_builders.augmented_source(sources["array_record"], split)
    assert len(source) == len(want) and repr(source).endswith("links=3)")
    for index in range(len(want)):
      _assert_same(source[index], want[index], f"chain {split}[{index}]")
    assert {"label", "weight", "caption_length", "mean_pixel", "source", "fold"} <= set(source[0])
  assert source[len(source) - 1]["fold"] == np.int64(2) and source[0]["source"] == b"crawl-7"


# ------------------------------------------------------------ refusals --


def test_a_tfrecord_base_is_refused_with_what_to_do(built):
  with pytest.raises(errors.SourceError, match=r"built over augmented_test_base 1.2.0, stored as TFRecord .*"
                     r"--file_format array_record.*or read this overlay with tfds_builders.load_augmented"):
    tfds_builders.augmented_source(_overlay(built, "side_tfrecord"), "train")
  # The ArrayRecord overlay pointed at the TFRecord build of its base.
  with pytest.raises(errors.SourceError, match=r"is stored as TFRecord. Pass the ArrayRecord build it was built from"):
    tfds_builders.augmented_source(_overlay(built, "side_array_record"), "train", base=str(_base_dir(built, "tfrecord")))
  with pytest.raises(errors.ConfigError, match=r"split='validation' does not apply to the overlay's splits \['test', 'train'\]"):
    tfds_builders.augmented_source(_overlay(built, "side_array_record"), "validation")


def _rewrite_uncompressed(path: pathlib.Path, records: list[bytes]) -> None:
  """Writes records to an ArrayRecord file uncompressed: records of the same lengths give a file of the same size."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel

  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1,uncompressed")
  for record in records:
    writer.write(record)
  writer.close()


def test_a_base_record_rewritten_in_place_is_named_never_joined(built, tmp_path):
  base_dir = tmp_path / "augmented_test_base" / "1.2.0"
  shutil.copytree(_base_dir(built, "array_record"), base_dir)
  shard = sorted(base_dir.glob("*-train.array_record-00000-of-00003"))[0]
  for path in base_dir.glob("*.array_record-*"):  # uncompressed, so that a same-length rewrite keeps the size
    _rewrite_uncompressed(path, _array_records(path))
  overlay = build(tmp_path, "over", base=str(base_dir), function=f"{FUNCTIONS}:caption_length", mode="overlay")
  source = tfds_builders.augmented_source(str(overlay.data_path), "train")
  first_shard = [int(source[index]["id"]) for index in range(4)]  # readable while unchanged
  records = _array_records(shard)
  example = tf.train.Example.FromString(records[1])
  caption = example.features.feature["caption"].bytes_list.value[0]
  example.features.feature["caption"].bytes_list.value[0] = b"y" * len(caption)
  size = shard.stat().st_size
  _rewrite_uncompressed(shard, [records[0], example.SerializeToString(), *records[2:]])
  assert shard.stat().st_size == size  # same name, size and count: the identity check cannot see it
  source = tfds_builders.augmented_source(str(overlay.data_path), "train")
  assert int(source[0]["id"]) == first_shard[0]
  with pytest.raises(errors.SourceError, match=r"does not match its base at base example train\[1\]: .*rewritten"):
    source[1]
  with pytest.raises(errors.SourceError, match=r"base example train\[1\]"):
    source.__getitems__([0, 1])


def test_misaligned_overlay_records_are_named(built, tmp_path):
  overlay_dir = tmp_path / "overlay"
  shutil.copytree(_overlay(built, "function_array_record"), overlay_dir)
  shard = sorted(overlay_dir.glob("*-train.tfrecord-00000-of-*"))[0]
  records = [record.numpy() for record in tf.data.TFRecordDataset(str(shard))]
  helpers.write_records(shard, [records[1], records[0], *records[2:]])  # same bytes, two swapped
  source = tfds_builders.augmented_source(str(overlay_dir), "train")
  with pytest.raises(errors.SourceError, match=r"misaligned with its base: the overlay record read for base example "
                     r"train\[0\] holds base index 1. Rebuild the overlay"):
    source[0]
  # Another version of the base is refused when the source is made.
  AugmentedTestBaseOld(data_dir=str(tmp_path / "old"), file_format="array_record").download_and_prepare()
  with pytest.raises(errors.SourceError, match=r"built from another base .*version is '1.1.0', the overlay was built from '1.2.0'"):
    tfds_builders.augmented_source(str(overlay_dir), "train", base=str(tmp_path / "old" / "augmented_test_base" / "1.1.0"))


def test_a_base_file_holding_another_count_is_refused_when_the_source_is_made(built, tmp_path):
  base_dir = tmp_path / "augmented_test_base" / "1.2.0"
  shutil.copytree(_base_dir(built, "array_record"), base_dir)
  overlay = build(tmp_path, "over", base=str(base_dir), function=f"{FUNCTIONS}:caption_length", mode="overlay")
  shard = sorted(base_dir.glob("*-train.array_record-00002-of-00003"))[0]
  _rewrite_uncompressed(shard, _array_records(shard)[:-1])
  # ArrayRecord files are padded to whole blocks: name, size and shard_lengths all still match.
  with pytest.raises(errors.SourceError, match=r"array_record-00002-of-00003 holds 3 records, but its dataset_info.json "
                     r"\(shard_lengths\) says 4"):
    tfds_builders.augmented_source(str(overlay.data_path), "train")


def test_a_damaged_base_record_is_a_source_error_naming_the_file(built, tmp_path):
  base_dir = tmp_path / "augmented_test_base" / "1.2.0"
  shutil.copytree(_base_dir(built, "array_record"), base_dir)
  overlay = build(tmp_path, "over", base=str(base_dir), function=f"{FUNCTIONS}:caption_length", mode="overlay")
  shard = sorted(base_dir.glob("*-train.array_record-00000-of-00003"))[0]
  intact = shard.read_bytes()
  data = bytearray(intact)
  data[300] ^= 1  # in the chunk of the shard's record 1
  shard.write_bytes(bytes(data))
  source = tfds_builders.augmented_source(str(overlay.data_path), "train")
  assert source[0] and source[2]
  with pytest.raises(errors.SourceError, match=r"-train.array_record-00000-of-00003: record\(s\) 1 cannot be read "
                     r"\(Corrupted Riegeli/records file: chunk header hash mismatch"):
    source[1]
  data = bytearray(intact)
  data[100:1000] = bytes(b ^ 0xFF for b in data[100:1000])  # a small file's index (footer) is among its first bytes
  shard.write_bytes(bytes(data))
  with pytest.raises(errors.SourceError, match=r"-train.array_record-00000-of-00003: its index cannot be read "
                     r"\(Corrupted Riegeli/records file: .*\). The file is damaged: re-fetch the dataset, or rebuild it"):
    tfds_builders.augmented_source(str(overlay.data_path), "train")
  with pytest.raises(errors.SourceError, match=r"-train.array_record-00000-of-00003: its index cannot be read"):
    build(tmp_path, "again", base=str(base_dir), function=f"{FUNCTIONS}:caption_length", mode="overlay")


def test_a_parquet_base_is_refused_and_tf_data_readers_refuse_an_array_record_base(built, tmp_path):
  AugmentedTestBase(data_dir=str(tmp_path / "parquet"), file_format="parquet").download_and_prepare()
  with pytest.raises(errors.SourceError, match=r"is stored as parquet; a base is read record by record from TFRecord "
                     r"or ArrayRecord files. Rebuild it with --file_format tfrecord \(or array_record\)"):
    base_lib.open_prepared(str(tmp_path / "parquet" / "augmented_test_base" / "1.2.0"), None)
  array_record_base = base_lib.open_prepared(str(_base_dir(built, "array_record")), None)
  base_lib.check_tf_data_readable(base_lib.open_prepared(str(_base_dir(built, "tfrecord")), None), "augmented/x")
  with pytest.raises(errors.SourceError, match=r"Overlay augmented/x sits on augmented_test_base 1.2.0 at .* \(ArrayRecord\): "
                     r"load_augmented reads the base with tf.data.*tfds_builders.augmented_source"):
    base_lib.check_tf_data_readable(array_record_base, "augmented/x")


def test_load_augmented_refuses_an_array_record_base_naming_the_reader_that_reads_it(built):
  with pytest.raises(errors.SourceError, match=r"TFDS has no tf.data reader for ArrayRecord files.*"
                                                r"tfds_builders.augmented_source"):
    tfds_builders.load_augmented(_overlay(built, "side_array_record"), split="train")


def test_compacting_an_overlay_over_an_array_record_base_equals_materialize_over_it(built, tmp_path):
  from tfds_builders.augmented import compaction  # pylint: disable=import-outside-toplevel

  compacted = compaction.compact(_overlay(built, "side_array_record"), str(tmp_path / "out"), name="side_compacted")

  def records(version_dir: pathlib.Path, split: str) -> list[bytes]:
    files = sorted(str(path) for path in pathlib.Path(version_dir).glob(f"*-{split}.tfrecord-*"))
    return [record.numpy() for record in tf.data.TFRecordDataset(files)]

  for split in ("train", "test"):
    want = records(pathlib.Path(_overlay(built, "materialized_array_record")), split)
    assert want and records(pathlib.Path(compacted), split) == want


def test_an_index_that_is_no_integer_is_a_type_error(built):
  source = tfds_builders.augmented_source(_overlay(built, "side_array_record"), "train")
  for bad in (1.0, "1", None, slice(0, 2)):
    with pytest.raises(TypeError):
      source[bad]  # pylint: disable=pointless-statement


def test_link_records_decode_as_tfds_decodes_them():
  from tfds_builders.augmented import fields  # pylint: disable=import-outside-toplevel
  from tfds_builders.augmented import random_access  # pylint: disable=import-outside-toplevel
  from tfds_builders.core import serialization  # pylint: disable=import-outside-toplevel

  values = {
      "text": ("string", (), "héllo"), "words": ("string", (None,), ["a", "bb"]), "none": ("string", (None,), []),
      "flag": ("bool", (), True), "flags": ("bool", (2,), [True, False]), "small": ("uint8", (None, 2), [[1, 2]]),
      "half": ("float16", (2,), [0.5, -1.0]), "single": ("float32", (), 1.25),
      "double": ("float64", (3,), [1e-300, -0.0, 5e-324]),
      "count": ("int64", (), -7), "signed": ("int8", (None,), [-128, 127]),
  }
  specs = {name: fields.FieldSpec(name, dtype, shape, "test") for name, (dtype, shape, _) in values.items()}
  features = tfds.features.FeaturesDict({name: spec.feature() for name, spec in specs.items()})
  record = serialization.example_from_entries(
      [b"".join(b"".join(fields.FieldCodec(specs[name]).encode(value)) for name, (_, _, value) in values.items())])
  want = features.deserialize_example_np(record)
  got = random_access._TensorRecords(features, list(values))(record)  # pylint: disable=protected-access
  typed = random_access._typed  # pylint: disable=protected-access  # what the source returns of either
  for name in values:
    mine, theirs = typed(features[name], got[name]), typed(features[name], want[name])
    assert type(mine) is type(theirs), name  # pylint: disable=unidiomatic-typecheck
    if isinstance(theirs, np.ndarray) and theirs.dtype.kind == "O":
      assert mine.shape == theirs.shape and mine.tolist() == theirs.tolist(), name
    elif isinstance(theirs, (np.ndarray, np.generic)):
      assert mine.dtype == theirs.dtype and np.shape(mine) == np.shape(theirs), name
      assert np.asarray(mine).tobytes() == np.asarray(theirs).tobytes(), name
    else:
      assert mine == theirs, name
