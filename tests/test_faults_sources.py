"""Fault suite: sources that lose records silently or fail unnamed (concatenated, cross_product, load_augmented)."""

from __future__ import annotations

import csv
import functools
import gzip
import pathlib
import struct
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import faults
from tests import helpers
from tests.faults import FaultCase
from tfds_builders.augmented import Builder as AugmentedBuilder
from tfds_builders.augmented import BuilderConfig as AugmentedConfig
from tfds_builders.augmented import load_augmented
from tfds_builders.concatenated import Builder as ConcatenatedBuilder
from tfds_builders.concatenated import BuilderConfig as ConcatenatedConfig
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import wire
from tfds_builders.core.fast import crc32c
from tfds_builders.cross_product import Builder as CrossProductBuilder
from tfds_builders.cross_product import BuilderConfig as CrossProductConfig


SourceError, SchemaError, CommandFailed = errors.SourceError, errors.SchemaError, faults.CommandFailed
_FRAME_HEADER = wire.FRAME_HEADER_BYTES


# ----------------------------------------------------------------- inputs --


def example(**values: int | bytes | Sequence[int]) -> bytes:
  """A serialized tf.train.Example: bytes, one int or a list of ints per feature."""
  feature = {}
  for name, value in values.items():
    if isinstance(value, bytes):
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    else:
      ints = [value] if isinstance(value, int) else list(value)
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=ints))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def read_records(path: pathlib.Path) -> list[bytes]:
  return list(tf.compat.v1.io.tf_record_iterator(str(path)))


def record_offset(path: pathlib.Path, index: int) -> int:
  """The byte offset of record `index`'s frame in an uncompressed TFRecord file."""
  return sum(len(record) + wire.FRAME_BYTES for record in read_records(path)[:index])


def flip_byte(path: pathlib.Path, offset: int) -> None:
  data = bytearray(path.read_bytes())
  data[offset] ^= 0xFF
  path.write_bytes(bytes(data))


def prepared(root: pathlib.Path, name: str, ids: Sequence[int], num_shards: int = 1) -> pathlib.Path:
  """A prepared TFDS dataset (written by TFDS) of `id` and `tokens`; returns its version directory."""
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version="1.0.0",
      features=tfds.features.FeaturesDict({
          "id": np.int64, "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int64)}),
      split_datasets={"train": [(i, {"id": i, "tokens": list(range(i % 3))}) for i in ids]},
      data_dir=str(root), disable_shuffling=True,
      download_config=tfds.download.DownloadConfig(num_shards=num_shards),
  )
  return pathlib.Path(builder.data_path)


def shards(version_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(version_dir.glob("*-train.tfrecord-*"))


class Restorable:
  """Files whose bytes a fault changes and `restore` puts back."""

  def __init__(self, *paths: pathlib.Path):
    self._saved = {path: path.read_bytes() if path.exists() else None for path in paths}

  def restore(self) -> None:
    for path, data in self._saved.items():
      if data is None:
        path.unlink(missing_ok=True)
      else:
        path.write_bytes(data)


# ----------------------------------------------- concatenated, prepared --

# A raw source `a` (2 records) and a prepared source `typed` (one shard of 4).
_SHARD = r"typed-train\.tfrecord-00000-of-00001"


def _fewer(shard: pathlib.Path) -> None:
  """Drops the shard's last record, leaving whole frames."""
  helpers.write_records(shard, read_records(shard)[:-1])


def _more(shard: pathlib.Path) -> None:
  records = read_records(shard)
  helpers.write_records(shard, [*records, records[0]])


def _missing(shard: pathlib.Path) -> None:
  shard.unlink()


_FEWER = [r"source 'typed'", _SHARD + r" holds 3 records", r"dataset_info\.json \(shard_lengths\) says 4",
          r"rebuild the dataset, or re-fetch"]
_MORE = [r"source 'typed'", _SHARD + r" holds 5 records", r"dataset_info\.json \(shard_lengths\) says 4",
         r"rebuild the dataset, or re-fetch"]

CONCATENATED_CASES = [
    FaultCase("prepared_shard_fewer", SourceError, _FEWER).param(_fewer, {}),
    FaultCase("prepared_shard_more", SourceError, _MORE).param(_more, {}),
    # Interleaved, the stream stops at the expected count: the extra record is found by reading on.
    FaultCase("prepared_shard_more_interleaved", SourceError, _MORE).param(
        _more, {"mixing": "interleave", "stopping_strategy": "all_exhausted_without_replacement"}),
    FaultCase("prepared_shard_fewer_interleaved", SourceError, _FEWER).param(
        _fewer, {"mixing": "interleave", "stopping_strategy": "all_exhausted_without_replacement"}),
    FaultCase("prepared_shard_fewer_on_beam", SourceError, _FEWER).param(_fewer, {"use_beam": True}),
    FaultCase("prepared_shard_missing", SourceError, [
        r"source 'typed'", r"split 'train' of typed/1\.0\.0: shard .*" + _SHARD + " is missing",
        "rebuild it, or fetch it again"]).param(_missing, {}),
    FaultCase("prepared_shard_fewer_tfds_build", CommandFailed, [r"SourceError", *_FEWER]).param(_fewer, "cli"),
]


@pytest.mark.parametrize("case, fault, options", CONCATENATED_CASES)
def test_concatenated_prepared_counts(tmp_path, case: FaultCase, fault: Callable, options: dict | str):
  raw = helpers.write_records(tmp_path / "raw" / "a.tfrecord", [example(id=i, tokens=[i]) for i in (100, 101)])
  typed = prepared(tmp_path / "prepared", "typed", range(4))
  shard = shards(typed)[0]
  original = Restorable(shard)
  config = {"name": "mine", "sources": [{"name": "a", "tfrecords": str(raw)}, {"name": "typed", "dataset_dir": str(typed)}]}
  data_dir = tmp_path / "tfds"
  fault(shard)

  run = functools.partial(faults.build_in_process_or_cli, ConcatenatedBuilder, config, options, data_dir)
  builder = faults.check_fault(case, run, original.restore, [raw.parent, typed], data_dir)
  ids = sorted(int(e["id"]) for e in tfds.as_numpy(builder.as_dataset(split="train")))
  assert ids == [0, 1, 2, 3, 100, 101]
  record = provenance.read_provenance(builder.data_dir)
  assert record["examples_per_source"] == {"train": {"a": 2, "typed": 4}}
  assert record["sources"][1]["num_examples"] == {"train": 4}


# --------------------------------------------- cross_product, both sides --


def _left_rows() -> list[bytes]:
  return [example(name=f"L{i}".encode(), id=i) for i in range(3)]


def _right_rows() -> list[bytes]:
  return [example(name=f"R{j}".encode(), score=[j, j]) for j in range(4)]


def _rewrite(records: Callable[[], list[bytes]]) -> Callable[[pathlib.Path], None]:
  return lambda path: helpers.write_records(path, records())


def _corrupt_data(index: int) -> Callable[[pathlib.Path], None]:
  """Flips a payload byte of record `index`: its data CRC no longer matches."""
  return lambda path: flip_byte(path, record_offset(path, index) + _FRAME_HEADER + 3)


def _cut(count: int) -> Callable[[pathlib.Path], None]:
  return lambda path: path.write_bytes(path.read_bytes()[:-count])


def _gzip(path: pathlib.Path) -> None:
  path.write_bytes(gzip.compress(path.read_bytes()))


def _off_schema(path: pathlib.Path) -> None:
  helpers.write_records(path, [_right_rows()[0], example(name=b"R1", score=[1, 1, 1]), *_right_rows()[2:]])


CROSS_PRODUCT_CASES = [
    FaultCase("right_missing", SourceError, [
        r"right input \(`right`\)", "No TFRecord file found", r"right\.tfrecord", "Check the path"],
    ).param("right", lambda path: path.unlink(), {}),
    FaultCase("left_empty", SourceError, [
        "The left input holds no records", r"left\.tfrecord", "not empty"]).param("left", _rewrite(list), {}),
    FaultCase("right_not_an_example", SchemaError, [
        r"right input \(`right`\)", r"right\.tfrecord: record 1 is not a tf\.train\.Example"],
    ).param("right", _rewrite(lambda: [_right_rows()[0], b"hello, world", *_right_rows()[2:]]), {}),
    FaultCase("left_data_crc", SourceError, [
        r"left input \(`left`\)", r"left\.tfrecord: record 2\b", "corrupt"]).param("left", _corrupt_data(2), {}),
    FaultCase("right_truncated", SourceError, [
        r"right input \(`right`\)", r"right\.tfrecord: record 3\b", "truncated"]).param("right", _cut(5), {}),
    FaultCase("right_off_declared_schema", SchemaError, [
        r"right input \(`right`\)", r"right\.tfrecord: record 1 does not match the schema",
        "feature 'score' has 3 values, expected 2"],
    ).param("right", _off_schema, {"right_schema": {"name": "bytes_list[1]", "score": "int64_list[2]"}}),
    FaultCase("left_gzip_read_as_plain", SourceError, [
        r"left input \(`left`\)", r"left\.tfrecord", r"[Cc]heck `compression`"]).param("left", _gzip, {"compression": "none"}),
    FaultCase("right_data_crc_tfds_build", CommandFailed, [
        r"SourceError", r"right input \(`right`\)", r"right\.tfrecord: record 1\b"],
    ).param("right", _corrupt_data(1), "cli"),
]


@pytest.mark.parametrize("case, side, fault, options", CROSS_PRODUCT_CASES)
def test_cross_product_inputs(tmp_path, case: FaultCase, side: str, fault: Callable, options: dict | str):
  paths = {
      "left": helpers.write_records(tmp_path / "in" / "left.tfrecord", _left_rows()),
      "right": helpers.write_records(tmp_path / "in" / "right.tfrecord", _right_rows()),
  }
  original = Restorable(paths[side])
  fault(paths[side])
  config = {"name": "pairs", "left": [str(paths["left"])], "right": [str(paths["right"])]}
  data_dir = tmp_path / "tfds"

  run = functools.partial(faults.build_in_process_or_cli, CrossProductBuilder, config, options, data_dir)
  builder = faults.check_fault(case, run, original.restore, [tmp_path / "in"], data_dir)
  assert builder.info.splits["train"].num_examples == 12
  assert provenance.read_provenance(builder.data_path)["records"] == {"left": 3, "right": 4}


def test_cross_product_prepared_shard_with_fewer_records(tmp_path):
  """A TFDS shard given as an input is held to its dataset_info.json's count."""
  case = FaultCase("left_prepared_shard_fewer", SourceError, [
      r"left input \(`left`\)", r"numbers-train\.tfrecord-00001-of-00002 holds 1 records",
      r"dataset_info\.json beside it \(shard_lengths\) says 2", r"rebuild the dataset, or re-fetch"])
  numbers = prepared(tmp_path / "prepared", "numbers", range(4), num_shards=2)
  last = shards(numbers)[1]
  original = Restorable(last)
  _fewer(last)
  right = helpers.write_records(tmp_path / "in" / "right.tfrecord", _right_rows())
  data_dir = tmp_path / "tfds"

  def run():
    config = CrossProductConfig(name="p", left=str(numbers / "*-train.tfrecord-*"), right=[str(right)])
    builder = CrossProductBuilder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder

  builder = faults.check_fault(case, run, original.restore, [numbers, right], data_dir)
  assert builder.info.splits["train"].num_examples == 16


@pytest.mark.parametrize("case, gzipped, configured", [
    FaultCase("source_plain_read_as_gzip", SourceError, [
        r"source 'a'", r"a\.tfrecord", r"[Cc]heck `sources\[1\]\.compression`"]).param(False, "gzip"),
    FaultCase("source_gzip_read_as_plain", SourceError, [
        r"source 'a'", r"a\.tfrecord", r"[Cc]heck `sources\[1\]\.compression`"]).param(True, "none"),
])
def test_concatenated_compression_mismatch_names_the_field(tmp_path, case: FaultCase, gzipped: bool, configured: str):
  other = helpers.write_records(tmp_path / "raw" / "b.tfrecord", [example(id=i) for i in range(2)])
  path = helpers.write_records(tmp_path / "raw" / "a.tfrecord", [example(id=i) for i in range(3)])
  if gzipped:
    _gzip(path)
  data_dir = tmp_path / "tfds"
  compression = [configured]  # the repair is to the config: `auto` detects GZIP

  def run():
    sources = [{"name": "b", "tfrecords": str(other)},
               {"name": "a", "tfrecords": str(path), "compression": compression[0]}]
    builder = ConcatenatedBuilder(config=ConcatenatedConfig(name="c", sources=sources), data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder

  builder = faults.check_fault(case, run, lambda: compression.__setitem__(0, "auto"), [path.parent], data_dir)
  assert builder.info.splits["train"].num_examples == 5


# ------------------------------------------------------- load_augmented --


def _labels(path: pathlib.Path, ids: Sequence[int]) -> pathlib.Path:
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["id", "label"])
    writer.writerows([i, i % 3] for i in ids)
  return path


def _raw_base(root: pathlib.Path, compression: str = "") -> dict[str, list[str]]:
  """train: two files of 4 and 3 records (ids 100-106)."""
  suffix = ".gz" if compression else ""
  return {"train": [
      str(helpers.write_records(root / f"train-{n}.tfrecord{suffix}",
                        [example(id=i, text=b"w" * (i % 7 + 20)) for i in ids], compression))
      for n, ids in enumerate((range(100, 104), range(104, 107)))
  ]}


def _overlay(tmp_path: pathlib.Path, **base) -> str:
  config = AugmentedConfig(name="o", mode="overlay", side_table=str(_labels(tmp_path / "labels.csv", range(200))),
                           join_key="id", **base)
  builder = AugmentedBuilder(config=config, data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare()
  return str(builder.data_dir)


OVERLAY_CASES = [
    FaultCase("raw_base_data_crc", SourceError, [
        r"base of overlay augmented/o/1\.0\.0 cannot be read from base example train\[5\] on",
        r"train-1\.tfrecord: record 1\b", "need not be rebuilt"]).param("raw", 1, _corrupt_data(1)),
    FaultCase("raw_base_header_crc", SourceError, [
        r"base example train\[2\]", r"train-0\.tfrecord: record 2\b"],
    ).param("raw", 0, lambda path: flip_byte(path, record_offset(path, 2) + 1)),
    FaultCase("prepared_base_data_crc", SourceError, [
        r"base example train\[5\]", r"base-train\.tfrecord-00001-of-00002: record 1\b", "Regenerate"],
    ).param("prepared", 1, _corrupt_data(1)),
    FaultCase("gzip_base_damaged_stream", SourceError, [
        r"base of overlay augmented/o/1\.0\.0 cannot be read from base example train\[[4-6]\] on",
        r"train-1\.tfrecord\.gz: .*GZIP"],
    ).param("gzip", 1, lambda path: flip_byte(path, len(path.read_bytes()) // 2)),
]


@pytest.mark.parametrize("case, kind, file_index, fault", OVERLAY_CASES)
def test_load_augmented_names_a_corrupt_base_record(tmp_path, case: FaultCase, kind: str, file_index: int,
                                                    fault: Callable):
  if kind == "prepared":
    base_dir = prepared(tmp_path / "prepared", "base", range(100, 107), num_shards=2)
    files, overlay = shards(base_dir), _overlay(tmp_path, base=str(base_dir))
    assert [len(read_records(f)) for f in files] == [4, 3]  # train[5] is record 1 of the second shard
  else:
    sources = _raw_base(tmp_path / "raw", "GZIP" if kind == "gzip" else "")
    files, overlay = [pathlib.Path(p) for p in sources["train"]], _overlay(tmp_path, base_records=sources)
  target = files[file_index]
  original = Restorable(target)
  fault(target)

  def run():
    return list(tfds.as_numpy(load_augmented(overlay, split="train")))

  loaded = faults.check_fault(case, run, original.restore, [target.parent, overlay], None)
  assert [int(e["id"]) for e in loaded] == list(range(100, 107))
  assert [int(e["label"]) for e in loaded] == [i % 3 for i in range(100, 107)]


def _crafted_length(index: int, length: int) -> Callable[[pathlib.Path], None]:
  """Gives record `index` a length field of `length` with a valid header CRC: what TF's reader crashes on."""
  def fault(path: pathlib.Path) -> None:
    field = struct.pack("<Q", length)
    crc = crc32c.masked_crc32c(np.frombuffer(field, np.uint8), 0, 8)
    data = bytearray(path.read_bytes())
    offset = record_offset(path, index)
    data[offset:offset + _FRAME_HEADER] = field + struct.pack("<I", crc)
    path.write_bytes(bytes(data))
  return fault


@pytest.mark.slow
@pytest.mark.parametrize("case, length", [
    FaultCase("raw_base_crafted_length", CommandFailed, [
        r"SourceError: The base of overlay augmented/o/1\.0\.0 cannot be read from base example train\[5\] on",
        r"train-1\.tfrecord: record 1\b.*at byte \d+", "need not be rebuilt"]).param(2**63 - 1),
])
def test_load_augmented_refuses_a_crafted_length_in_a_subprocess(tmp_path, case: FaultCase, length: int):
  """A base frame whose length runs past the file is named before TensorFlow's reader could reach it."""
  sources = _raw_base(tmp_path / "raw")
  overlay = _overlay(tmp_path, base_records=sources)
  target = pathlib.Path(sources["train"][1])
  original = Restorable(target)
  _crafted_length(1, length)(target)

  def run():
    return faults.run_python(f"""
        import tensorflow_datasets as tfds
        from tfds_builders.augmented import load_augmented
        print("loaded", len(list(tfds.as_numpy(load_augmented({overlay!r}, split="train")))))
    """)

  result = faults.check_fault(case, run, original.restore, [target.parent, overlay], None)
  assert "loaded 7" in result.stdout


def test_load_augmented_slices_before_a_corrupt_record_still_load(tmp_path):
  sources = _raw_base(tmp_path / "raw")
  overlay = _overlay(tmp_path, base_records=sources)
  _corrupt_data(1)(pathlib.Path(sources["train"][1]))
  assert [int(e["id"]) for e in tfds.as_numpy(load_augmented(overlay, split="train[:5]"))] == list(range(100, 105))
  with pytest.raises(SourceError, match=r"base example train\[5\]"):
    load_augmented(overlay, split="train[5:]")
  with pytest.raises(SourceError, match=r"base example train\[5\]"):
    load_augmented(overlay, split="train[:6]")


def test_load_augmented_reads_a_base_again_once_it_changed(tmp_path):
  """The once-per-process check is keyed by size and mtime: a file corrupted after a load is read again."""
  sources = _raw_base(tmp_path / "raw")
  overlay = _overlay(tmp_path, base_records=sources)
  assert len(list(load_augmented(overlay, split="train"))) == 7
  _corrupt_data(2)(pathlib.Path(sources["train"][1]))
  with pytest.raises(SourceError, match=r"train-1\.tfrecord: record 2\b"):
    load_augmented(overlay, split="train")
