"""Fault suite: TFRecord frames with crafted lengths, long GZIP frames, truncated inputs, compression mismatches, one file twice, a corrupt base under an overlay, symlinked shards, featureless records."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import resource
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from tests import faults
from tests import helpers
from tests.faults import FaultCase
from tfds_builders.augmented import Builder as AugmentedBuilder
from tfds_builders.augmented import BuilderConfig as AugmentedConfig
from tfds_builders.augmented import load_augmented
from tfds_builders.concatenated import Builder as ConcatenatedBuilder
from tfds_builders.concatenated import BuilderConfig as ConcatenatedConfig
from tfds_builders.core import errors
from tfds_builders.core import tfrecord_io
from tfds_builders.core.fast import crc32c
from tfds_builders.core.fast import record_index
from tfds_builders.cross_product import Builder as CrossProductBuilder
from tfds_builders.cross_product import BuilderConfig as CrossProductConfig

tfds.disable_progress_bar()

SourceError, ConfigError, SchemaError = errors.SourceError, errors.ConfigError, errors.SchemaError
CommandFailed = faults.CommandFailed
HEADER, CRC = 12, 4
REGENERATE = "[Rr]egenerate or re-download"


# ----------------------------------------------------------------- inputs --


def example(index: int) -> bytes:
  """Record `index` of every input: an `id` (the join key) and a `text`."""
  return tf.train.Example(features=tf.train.Features(feature={
      "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"text %d" % index])),
  })).SerializeToString()


RECORDS = [example(index) for index in range(3)]
# Where each record's frame starts in a file of RECORDS.
OFFSETS = [sum(len(record) + HEADER + CRC for record in RECORDS[:index]) for index in range(len(RECORDS))]
_END = OFFSETS[2] + HEADER + len(RECORDS[2]) + CRC  # the size of a file of RECORDS


def inputs(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """`a.tfrecord` (a source, a left input, a raw base), `b.tfrecord` (a right input) and labels.csv."""
  (root / "raw").mkdir(parents=True)
  (root / "labels.csv").write_text("id,label\n" + "".join(f"{i},{i * 10}\n" for i in range(8)))
  return {"a": helpers.write_records(root / "raw" / "a.tfrecord", RECORDS),
          "b": helpers.write_records(root / "raw" / "b.tfrecord", RECORDS),
          "labels": root / "labels.csv"}


def header(length: int) -> bytes:
  """A frame header whose length CRC is valid, whatever the length."""
  length_bytes = struct.pack("<Q", length)
  return length_bytes + struct.pack("<I", crc32c.masked_crc32c(np.frombuffer(length_bytes, np.uint8), 0, 8))


def craft_length(path: pathlib.Path, length: int, index: int = 2) -> None:
  """Record `index`'s header claims `length` bytes, with a valid header CRC; the file keeps its size."""
  data = bytearray(path.read_bytes())
  data[OFFSETS[index]:OFFSETS[index] + HEADER] = header(length)
  path.write_bytes(bytes(data))


def flip_data_byte(path: pathlib.Path, index: int) -> None:
  """A byte inside record `index`'s `text` value: its frame is intact, its data CRC no longer matches."""
  data = bytearray(path.read_bytes())
  data[OFFSETS[index] + HEADER + len(RECORDS[index]) - 2] ^= 0x20
  path.write_bytes(bytes(data))


class Restorable:
  """Files whose bytes a fault changes and `restore` puts back."""

  def __init__(self, *paths: pathlib.Path):
    self._saved = {path: path.read_bytes() for path in paths}

  def restore(self) -> None:
    for path, data in self._saved.items():
      path.write_bytes(data)


def prepared_base(root: pathlib.Path) -> pathlib.Path:
  """A prepared TFDS dataset of RECORDS' features (train: one shard of 4); returns its version directory."""
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name="records_base", version="1.0.0",
      features=tfds.features.FeaturesDict({"id": np.int64, "text": tfds.features.Text()}),
      split_datasets={"train": [(i, {"id": i, "text": f"text {i}"}) for i in range(4)]},
      data_dir=str(root / "prepared"), disable_shuffling=True,
  )
  return pathlib.Path(builder.data_path)


def shard_of(version_dir: pathlib.Path) -> pathlib.Path:
  (shard,) = version_dir.glob("records_base-train.tfrecord-*")
  return shard


# ------------------------------------------------------------------ runs --
# Each builds one builder over the inputs and returns something whose values a test checks.


def concatenated(files: Sequence[pathlib.Path | str], data_dir: pathlib.Path, **source: Any) -> int:
  builder = ConcatenatedBuilder(config=ConcatenatedConfig(
      name="c", sources=[{"name": "a", "tfrecords": [str(file) for file in files], **source}]), data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder.info.splits["train"].num_examples


def cross_product(left: Sequence[pathlib.Path | str], right: Sequence[pathlib.Path | str], data_dir: pathlib.Path,
                  **config: Any) -> int:
  builder = CrossProductBuilder(config=CrossProductConfig(
      name="p", left=[str(file) for file in left], right=[str(file) for file in right], **config), data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder.info.splits["train"].num_examples


def augmented(labels: pathlib.Path, data_dir: pathlib.Path, mode: str = "materialize", **config: Any) -> int:
  builder = AugmentedBuilder(config=AugmentedConfig(
      name=f"aug_{mode}", side_table=str(labels), join_key="id", mode=mode, **config), data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder.info.splits["train"].num_examples


def scanned(path: pathlib.Path) -> int:
  return sum(len(block) for block in record_index.scan(tfrecord_io.RecordFile(epath.Path(path), "")))


# --------------------------------------------- class 2: crafted lengths --
# A frame whose 8-byte length has a valid header CRC crashed the process
# (SIGSEGV) in the compiled walk and in TensorFlow's reader. Every case runs
# in a subprocess: one interpreter runs the whole table (imports cost ~8 s),
# each case through faults.check_fault, and reports each case's outcome.

LENGTHS = {
    "3e10": 30_000_000_000,
    "2^40": 2**40,
    "2^63-1": 2**63 - 1,
    "2^63": 2**63,
    "2^64-1": 2**64 - 1,
    "past_end_by_1": len(RECORDS[2]) + 1,  # data and CRC need one byte more than the file has
}


def _crafted(target: str, length_name: str, name: str) -> Any:
  length = LENGTHS[length_name]
  fragments = [rf"{name}: record 2\b", rf"at byte {OFFSETS[2]}\b", rf"header gives {length} bytes of data",
               rf"ends {len(RECORDS[2]) + CRC} bytes after the header", REGENERATE]
  return FaultCase(f"{target}-{length_name}", SourceError, fragments).param(target, length_name)


CRAFTED_CASES = [
    *[_crafted("scan", length_name, "a.tfrecord") for length_name in LENGTHS],
    _crafted("concatenated", "2^40", "a.tfrecord"),
    _crafted("concatenated", "past_end_by_1", "a.tfrecord"),
    _crafted("cross_product_left", "3e10", "a.tfrecord"),
    _crafted("cross_product_right", "2^63-1", "b.tfrecord"),
    _crafted("augmented_materialize", "2^63", "a.tfrecord"),
    _crafted("augmented_overlay", "2^64-1", "a.tfrecord"),
    _crafted("augmented_overlay", "3e10", "a.tfrecord"),
    _crafted("load_augmented", "2^40", "a.tfrecord"),
]


def _target_run(target: str, files: dict[str, pathlib.Path], data_dir: pathlib.Path) -> Callable[[], Any]:
  a, b, labels = files["a"], files["b"], files["labels"]
  return {
      "scan": lambda: scanned(a),
      "concatenated": lambda: concatenated([a], data_dir),
      "cross_product_left": lambda: cross_product([a], [b], data_dir),
      "cross_product_right": lambda: cross_product([a], [b], data_dir),
      "augmented_materialize": lambda: augmented(labels, data_dir, base_records={"train": [str(a)]}),
      "augmented_overlay": lambda: augmented(labels, data_dir, "overlay", base_records={"train": [str(a)]}),
  }[target]


def run_crafted_cases(root: str) -> dict[str, str]:
  """Runs CRAFTED_CASES in this process: case id -> "ok", or what failed. Called in a subprocess."""
  import traceback  # pylint: disable=import-outside-toplevel

  outcomes = {}
  for param in CRAFTED_CASES:
    case, target, length_name = param.values
    print(f"crafted case {case.id}", file=sys.stderr, flush=True)  # the last one named, if the process dies
    case_root = pathlib.Path(root) / case.id
    files = inputs(case_root)
    crafted = files["b" if target == "cross_product_right" else "a"]
    try:
      outcomes[case.id] = _check_crafted(case, target, length_name, files, crafted, case_root / "tfds")
    except BaseException:  # pylint: disable=broad-except  # reported as the case's failure
      outcomes[case.id] = traceback.format_exc()[-3000:]
  return outcomes


def _check_crafted(case: FaultCase, target: str, length_name: str, files: dict[str, pathlib.Path],
                   crafted: pathlib.Path, data_dir: pathlib.Path) -> str:
  original = Restorable(crafted)
  if target == "load_augmented":
    # An overlay built over the intact base; the base is then rewritten in place (same size).
    overlay_dir = data_dir / "overlay"
    builder = AugmentedBuilder(config=AugmentedConfig(
        name="o", mode="overlay", base_records={"train": [str(crafted)]}, side_table=str(files["labels"]),
        join_key="id"), data_dir=str(overlay_dir))
    builder.download_and_prepare()
    craft_length(crafted, LENGTHS[length_name])
    loaded = faults.check_fault(case, lambda: [int(e["label"]) for e in tfds.as_numpy(
        load_augmented(builder.data_dir, split="train"))], original.restore, [crafted], None)
    assert loaded == [0, 10, 20], loaded
    return "ok"
  craft_length(crafted, LENGTHS[length_name])
  run = _target_run(target, files, data_dir)
  count = faults.check_fault(case, run, original.restore, [crafted.parent, files["labels"]],
                             None if target == "scan" else data_dir)
  assert count == (9 if target.startswith("cross_product") else 3), count
  return "ok"


@pytest.fixture(scope="module")
def crafted_outcomes(tmp_path_factory) -> dict[str, str]:
  """The outcomes of CRAFTED_CASES and LONG_FRAME_CASES, run in one subprocess."""
  root = tmp_path_factory.mktemp("crafted")
  result = faults.run_python(f"""
      import json, sys
      sys.path.insert(0, {str(faults.REPO)!r})
      from tests import test_faults_records
      outcomes = test_faults_records.run_crafted_cases({str(root)!r})
      outcomes.update(test_faults_records.run_long_frame_cases({str(root)!r}))
      print("OUTCOMES " + json.dumps(outcomes))
  """, timeout=600)
  (line,) = [line for line in result.stdout.splitlines() if line.startswith("OUTCOMES ")]
  return json.loads(line[len("OUTCOMES "):])


@pytest.mark.slow
@pytest.mark.parametrize("case, target, length_name", CRAFTED_CASES)
def test_crafted_length_in_a_subprocess(crafted_outcomes, case: FaultCase, target: str, length_name: str):
  del target, length_name  # run in the subprocess, by case id
  assert crafted_outcomes[case.id] == "ok", crafted_outcomes[case.id]


CRAFTED_CLI_CASES = [
    FaultCase("concatenated_tfds_build-2^64-1", CommandFailed, [
        "SourceError", "source 'a'", r"a\.tfrecord: record 2\b", rf"at byte {OFFSETS[2]}\b",
        rf"header gives {2**64 - 1} bytes of data", REGENERATE]).param("concatenated", 2**64 - 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, folder, length", CRAFTED_CLI_CASES)
def test_crafted_length_through_tfds_build(tmp_path, case: FaultCase, folder: str, length: int):
  files = inputs(tmp_path)
  original = Restorable(files["a"])
  craft_length(files["a"], length)
  config = {"name": "c", "sources": [{"name": "a", "tfrecords": str(files["a"])}]}

  def run() -> int:
    faults.tfds_build(folder, config, tmp_path / "tfds")
    return tfds.builder_from_directory(str(tmp_path / "tfds" / "concatenated" / "c" / "1.0.0")).info.splits[
        "train"].num_examples

  assert faults.check_fault(case, run, original.restore, [files["a"].parent], tmp_path / "tfds") == 3


# ------------------------------------- class 2: a long frame in a GZIP file --
# 3 records, then a header with a valid CRC claiming 2**30 bytes, 2**30 zero
# bytes and a wrong data CRC, gzipped to ~5 MB: the stream was held whole
# (twice) before its CRC was checked, +2 GB of peak RSS. A frame longer than
# a window is now checked on a copy of the stream, holding none of it, and
# one over MAX_RECORD_BYTES is refused unread. Run in the crafted cases'
# subprocess, each measuring how much the failed run raised the peak RSS.

_CLAIM = 2**30
# What the design holds at most while checking a long frame: two 16 MiB windows, 1 MiB parts, zlib's state.
_RSS_GROWTH_BOUND_MIB = 64
_FRAME_CRC = r"do not match their checksum \(masked CRC32C\)"
_LONG_FRAMES: dict[tuple[int, int], bytes] = {}  # (claim, data bytes) -> the GZIP file, made once


def write_long_frame(path: pathlib.Path, claim: int, data_bytes: int) -> None:
  """RECORDS, then a frame claiming `claim` bytes followed by `data_bytes` zero bytes and a wrong CRC, as GZIP."""
  records = path.read_bytes()
  assert len(records) == _END, "write_long_frame appends to a file of RECORDS"
  if (claim, data_bytes) not in _LONG_FRAMES:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(16 << 20)
    parts = [compressor.compress(records + header(claim))]
    for start in range(0, data_bytes, len(zeros)):
      parts.append(compressor.compress(zeros[:min(len(zeros), data_bytes - start)]))
    _LONG_FRAMES[(claim, data_bytes)] = b"".join([*parts, compressor.compress(b"\x01\x02\x03\x04"), compressor.flush()])
  path.write_bytes(_LONG_FRAMES[(claim, data_bytes)])


_SHORT = 32 << 20  # zero bytes after a header whose claim the stream does not hold


def _long_frame(target: str, claim: int = _CLAIM, data_bytes: int = _CLAIM) -> Any:
  fragments = [r"a\.tfrecord: record 3 is corrupt or truncated", rf"at byte {_END}\b", REGENERATE]
  if claim > record_index.MAX_RECORD_BYTES:
    fragments.append(rf"header gives {claim} bytes of data, more than the {record_index.MAX_RECORD_BYTES} any record")
  elif data_bytes < claim:
    fragments.append(rf"header gives {claim} bytes of data, and the file ends {data_bytes + CRC} bytes after the header")
  else:
    fragments.append(rf"its {claim} bytes of data {_FRAME_CRC}")
  name = target + ("" if claim == _CLAIM else f"-claim_{claim:#x}") + ("" if data_bytes == claim else "-short")
  return FaultCase(f"long_frame-{name}", SourceError, fragments).param(target, claim, data_bytes)


LONG_FRAME_CASES = [
    _long_frame("read_records"),
    _long_frame("checked_frames"),  # no bytes needed: the frame is checked and skipped, never held
    _long_frame("concatenated"),
    _long_frame("cross_product_left"),
    _long_frame("augmented_overlay"),
    _long_frame("read_records", _CLAIM, _SHORT),  # the stream ends first
    _long_frame("read_records", 2**40, _SHORT),  # refused before any of it is decompressed
]


def _long_frame_run(target: str, files: dict[str, pathlib.Path], data_dir: pathlib.Path) -> Callable[[], int]:
  first = lambda: tfrecord_io.expand([str(files["a"])])[0]  # compression detected: GZIP, and plain once repaired
  return {
      "read_records": lambda: sum(1 for _ in record_index.read_records(first())),
      "checked_frames": lambda: sum(len(block) for block in record_index.scan(first(), check_data=True)),
  }.get(target) or _target_run(target, files, data_dir)


def run_long_frame_cases(root: str) -> dict[str, str]:
  """Runs LONG_FRAME_CASES in this process (after the crafted ones: everything is imported and compiled)."""
  import traceback  # pylint: disable=import-outside-toplevel

  outcomes = {}
  for param in LONG_FRAME_CASES:
    case, target, claim, data_bytes = param.values
    print(f"long frame case {case.id}", file=sys.stderr, flush=True)
    case_root = pathlib.Path(root) / case.id
    files = inputs(case_root)
    try:
      outcomes[case.id] = _check_long_frame(case, target, claim, data_bytes, files, case_root / "tfds")
    except BaseException:  # pylint: disable=broad-except  # reported as the case's failure
      outcomes[case.id] = traceback.format_exc()[-3000:]
  return outcomes


_TARGET_BUILDS = ("concatenated", "cross_product_left", "cross_product_right", "augmented_materialize",
                  "augmented_overlay")


def _reset_peak_rss() -> None:
  """Lowers this process's peak RSS to its current RSS (Linux 4.0+), so that each case is measured alone."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
      clear_refs.write("5")
  except OSError:  # the peak so far stays: a later case's growth may be hidden, never invented
    pass


def _check_long_frame(case: FaultCase, target: str, claim: int, data_bytes: int, files: dict[str, pathlib.Path],
                      data_dir: pathlib.Path) -> str:
  original = Restorable(files["a"])
  write_long_frame(files["a"], claim, data_bytes)
  run, growth_mib = _long_frame_run(target, files, data_dir), []

  def measured() -> int:
    _reset_peak_rss()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    try:
      return run()
    finally:
      growth_mib.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)

  count = faults.check_fault(case, measured, original.restore, [files["a"].parent, files["labels"]],
                             data_dir if target in _TARGET_BUILDS else None)
  assert growth_mib[0] < _RSS_GROWTH_BOUND_MIB, f"the failed run raised the peak RSS by {growth_mib[0]:.0f} MiB"
  assert count == (9 if target.startswith("cross_product") else 3), count
  return "ok"


@pytest.mark.slow
@pytest.mark.parametrize("case, target, claim, data_bytes", LONG_FRAME_CASES)
def test_long_gzip_frame_in_a_subprocess(crafted_outcomes, case: FaultCase, target: str, claim: int, data_bytes: int):
  del target, claim, data_bytes  # run in the subprocess, by case id
  assert crafted_outcomes[case.id] == "ok", crafted_outcomes[case.id]


LONG_FRAME_CLI_CASES = [
    FaultCase("cross_product_tfds_build-long_gzip_frame", CommandFailed, [
        "SourceError", r"left input \(`left`\)", r"a\.tfrecord: record 3 is corrupt or truncated",
        rf"at byte {_END}\b", rf"its {_CLAIM} bytes of data {_FRAME_CRC}", REGENERATE]).param("cross_product"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, folder", LONG_FRAME_CLI_CASES)
def test_long_gzip_frame_through_tfds_build(tmp_path, case: FaultCase, folder: str):
  """The red team's `tfds build` of a 2**30 claim peaked at 3.1 GB, a normal build at 1.0 GB."""
  files = inputs(tmp_path)
  original = Restorable(files["a"])
  write_long_frame(files["a"], _CLAIM, _CLAIM)
  config = {"name": "p", "left": [str(files["a"])], "right": [str(files["b"])]}
  children_peaks_mib = []

  def run() -> int:
    try:
      faults.tfds_build(folder, config, tmp_path / "tfds")
    finally:  # the largest peak RSS of any child so far: no tfds build may hold the claimed gigabyte
      children_peaks_mib.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return tfds.builder_from_directory(str(tmp_path / "tfds" / folder / "p" / "1.1.0")).info.splits["train"].num_examples

  assert faults.check_fault(case, run, original.restore, [files["a"].parent], tmp_path / "tfds") == 9
  own_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # TF imported, as in every child
  assert children_peaks_mib[0] < own_peak_mib + 512, (children_peaks_mib, own_peak_mib)


def test_the_compiled_parsers_refuse_lengths_past_their_bounds():
  """Varint lengths up to 2**64 - 1 inside a record: the layout check and key read refuse, never read past."""
  layout = record_index.ExampleLayout.of({"id": "int64_list"})

  def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
      out.append(value & 0x7F | 0x80)
      value >>= 7
    return bytes([*out, value])

  for length in (2**31, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1):
    for record in (b"\x0a" + varint(length) + b"\x0a\x02id",  # Example.features
                   b"\x0a\x08\x0a" + varint(length) + b"\x0a\x02id"):  # a map entry inside it
      buf = np.frombuffer(record + b"\0" * 8, np.uint8)
      conforms, counts = layout.check(buf, np.array([0]), np.array([len(record)]))
      assert conforms.tolist() == [False], (length, record)
      state = record_index.KeyState.zeros(1)
      record_index._key_values(buf, 0, len(record), np.frombuffer(b"id", np.uint8), 3, state, 0)  # pylint: disable=protected-access
      assert state.value_count[0] == record_index.MALFORMED, (length, record)
  with pytest.raises(ValueError, match="outside the buffer"):
    layout.check(np.zeros(8, np.uint8), np.array([0]), np.array([9]))
  assert crc32c.masked_crc32c(np.zeros(8, np.uint8), 4, 2**62) == -1
  assert crc32c.masked_crc32c(np.zeros(8, np.uint8), -1, 4) == -1


# ------------------------------------------------------ class 5: truncation --
# A file cut short was built with fewer examples; each is now a SourceError naming the file and offset.


def _cut_at(offset: int) -> Callable[[pathlib.Path], None]:
  def cut(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[:offset])
  return cut


def _gzip(cut_bytes: int = 0, fraction: float | None = None) -> Callable[[pathlib.Path], None]:
  """The file GZIP-compressed, then cut: its last `cut_bytes`, or all after `fraction` of it."""
  def compress(path: pathlib.Path) -> None:
    data = gzip.compress(path.read_bytes(), mtime=0)
    path.write_bytes(data[:int(len(data) * fraction)] if fraction else data[:len(data) - cut_bytes])
  return compress


def _shard_with(records: Callable[[list[bytes]], list[bytes]]) -> Callable[[pathlib.Path], None]:
  def rewrite(shard: pathlib.Path) -> None:
    helpers.write_records(shard, records(list(tf.compat.v1.io.tf_record_iterator(str(shard)))))
  return rewrite


_SHARD = r"records_base-train\.tfrecord-00000-of-00001"
_REBUILD = "rebuild the dataset, or re-fetch its files"

TRUNCATION_CASES = [
    FaultCase("concatenated_cut_in_header", SourceError, [
        "source 'a'", r"a\.tfrecord: record 2\b", rf"at byte {OFFSETS[2]}\b", "the file ends 5 bytes into its 12-byte header",
        REGENERATE]).param("concatenated", _cut_at(OFFSETS[2] + 5)),
    FaultCase("cross_product_left_cut_in_data", SourceError, [
        r"a\.tfrecord: record 2\b", rf"at byte {OFFSETS[2]}\b", rf"header gives {len(RECORDS[2])} bytes of data",
        "ends 7 bytes after the header", REGENERATE]).param("cross_product_left", _cut_at(OFFSETS[2] + HEADER + 7)),
    FaultCase("augmented_materialize_cut_in_footer", SourceError, [
        r"a\.tfrecord: record 2\b", rf"at byte {OFFSETS[2]}\b", rf"ends {len(RECORDS[2]) + 2} bytes after the header",
        rf"need {len(RECORDS[2]) + CRC}", REGENERATE]).param("augmented_materialize", _cut_at(_END - 2)),
    FaultCase("augmented_overlay_cut_in_footer", SourceError, [
        r"a\.tfrecord: record 2\b", rf"at byte {OFFSETS[2]}\b", r"is truncated",
        rf"ends {len(RECORDS[2]) + 3} bytes after the header", REGENERATE]).param("augmented_overlay", _cut_at(_END - 1)),
    FaultCase("concatenated_gzip_without_trailer", SourceError, [
        "source 'a'", r"a\.tfrecord", "truncated GZIP stream", "end-of-stream marker", rf"after {_END} uncompressed bytes",
        "cut short"]).param("concatenated", _gzip(cut_bytes=8)),
    FaultCase("cross_product_right_gzip_cut_midway", SourceError, [
        r"b\.tfrecord: record \d", "truncated GZIP stream", "cut short"]).param("cross_product_right", _gzip(fraction=0.6)),
    FaultCase("augmented_gzip_base_cut_midway", SourceError, [
        r"a\.tfrecord: record \d", "truncated GZIP stream", "cut short"]).param("augmented_overlay", _gzip(fraction=0.6)),
    FaultCase("prepared_base_shard_fewer_materialize", SourceError, [
        _SHARD, "holds 3 records", r"its dataset_info\.json \(shard_lengths\) says 4", _REBUILD,
    ]).param("prepared_materialize", _shard_with(lambda records: records[:3])),
    FaultCase("prepared_base_shard_more_overlay", SourceError, [
        _SHARD, "holds 5 records", r"its dataset_info\.json \(shard_lengths\) says 4", _REBUILD,
    ]).param("prepared_overlay", _shard_with(lambda records: [*records, records[0]])),
    FaultCase("prepared_base_shard_fewer_overlay", SourceError, [
        _SHARD, "holds 2 records", r"says 4", _REBUILD]).param("prepared_overlay", _shard_with(lambda records: records[:2])),
]


def _build_run(target: str, files: dict[str, pathlib.Path], data_dir: pathlib.Path, base_dir: pathlib.Path | None,
               **options: Any) -> Callable[[], int]:
  a, b, labels = files["a"], files["b"], files["labels"]
  if target.startswith("prepared"):
    mode = target.split("_")[1]
    return lambda: augmented(labels, data_dir, mode, base=str(base_dir), **options)
  return {
      "concatenated": lambda: concatenated([a], data_dir, **options),
      "cross_product_left": lambda: cross_product([a], [b], data_dir, **options),
      "cross_product_right": lambda: cross_product([a], [b], data_dir, **options),
      "augmented_materialize": lambda: augmented(labels, data_dir, base_records={"train": [str(a)]}, **options),
      "augmented_overlay": lambda: augmented(labels, data_dir, "overlay", base_records={"train": [str(a)]}, **options),
  }[target]


def _faulted_file(target: str, files: dict[str, pathlib.Path], base_dir: pathlib.Path | None) -> pathlib.Path:
  if target.startswith("prepared"):
    return shard_of(base_dir)
  return files["b" if target.endswith("right") else "a"]


@pytest.mark.parametrize("case, target, fault", TRUNCATION_CASES)
def test_truncated_inputs(tmp_path, case: FaultCase, target: str, fault: Callable[[pathlib.Path], None]):
  files = inputs(tmp_path)
  base_dir = prepared_base(tmp_path) if target.startswith("prepared") else None
  faulted = _faulted_file(target, files, base_dir)
  original = Restorable(faulted)
  fault(faulted)
  run = _build_run(target, files, tmp_path / "tfds", base_dir)
  sources = [files["a"].parent, files["labels"], *([base_dir] if base_dir else [])]
  expected = {"cross_product_left": 9, "cross_product_right": 9}.get(target, 4 if base_dir else 3)
  assert faults.check_fault(case, run, original.restore, sources, tmp_path / "tfds") == expected


# ---------------------------------------- class 6: compression mismatches --
# GZIP read as plain, or plain read as GZIP, names the config field to check;
# a ZLIB file (TF's options="ZLIB"), which is not supported, says so and what to do.

_CHECK = "[Cc]heck `{}`"  # concatenated names the source's field: `sources[0].compression`

COMPRESSION_CASES = [
    FaultCase("concatenated_gzip_read_as_plain", SourceError, [
        r"a\.tfrecord starts with the GZIP magic bytes \(1f 8b\) but is read as an uncompressed TFRecord file",
        _CHECK.format(r"sources\[0\]\.compression"), "'gzip'"]).param("concatenated", "gzip", {"compression": "none"}),
    FaultCase("cross_product_plain_read_as_gzip", SourceError, [  # `compression` applies to both: left is read first
        r"left input \(`left`\): \S+a\.tfrecord is read as GZIP but is not GZIP-compressed",
        _CHECK.format("compression"), "'none'"]).param("cross_product_left", "plain", {"compression": "gzip"}),
    FaultCase("augmented_gzip_base_read_as_plain", SourceError, [
        r"a\.tfrecord starts with the GZIP magic bytes", _CHECK.format("base_compression")],
    ).param("augmented_overlay", "gzip", {"base_compression": "none"}),
    FaultCase("augmented_plain_base_read_as_gzip", SourceError, [
        r"a\.tfrecord is read as GZIP but is not GZIP-compressed", _CHECK.format("base_compression")],
    ).param("augmented_materialize", "plain", {"base_compression": "gzip"}),
    FaultCase("concatenated_zlib_read_as_plain", SourceError, [  # `auto`: no GZIP magic, so read as plain
        "source 'a'", r"a\.tfrecord starts like a ZLIB stream \(78 9c\) and is read as an uncompressed TFRecord file",
        "its length does not match its checksum", "ZLIB-compressed TFRecord files are not supported",
        _CHECK.format(r"sources\[0\]\.compression"), "recompress the file as GZIP"]).param("concatenated", "zlib", {}),
    FaultCase("augmented_zlib_base_read_as_gzip", SourceError, [
        r"a\.tfrecord is read as GZIP but is ZLIB-compressed: it starts like a ZLIB stream \(78 9c\)",
        _CHECK.format("base_compression"), "recompress the file as GZIP"],
    ).param("augmented_overlay", "zlib", {"base_compression": "gzip"}),
    FaultCase("cross_product_zlib_configured", ConfigError, [
        "compression='zlib': ZLIB-compressed TFRecord files are not supported", "Recompress them as GZIP"],
    ).param("cross_product_right", "plain", {"compression": "zlib"}),
]


@pytest.mark.parametrize("case, target, stored, options", COMPRESSION_CASES)
def test_compression_mismatch(tmp_path, case: FaultCase, target: str, stored: str, options: dict[str, str]):
  files = inputs(tmp_path)
  faulted = _faulted_file(target, files, None)
  if stored == "gzip":
    _gzip()(faulted)
  if stored == "zlib":
    helpers.write_records(faulted, RECORDS, compression="ZLIB")
  config = dict(options)
  run_with = lambda: _build_run(target, files, tmp_path / "tfds", None, **config)()  # pylint: disable=unnecessary-lambda

  def repair() -> None:
    """By the config: `auto` detects each file's compression; a ZLIB file as the message says, recompressed as GZIP."""
    config.update({field: "auto" for field in options})
    if stored == "zlib":
      helpers.write_records(faulted, RECORDS, compression="GZIP")
  expected = 9 if target.startswith("cross_product") else 3
  assert faults.check_fault(case, run_with, repair, [files["a"].parent, files["labels"]], tmp_path / "tfds") == expected


# ----------------------------------------------- class 8: one file twice --
# Two spellings of one file read every record twice; the file list is refused, naming both.

TWICE = "its records would be read twice"

SPELLING_CASES = [
    FaultCase("concatenated_dot_dot", ConfigError, [
        r"raw/a\.tfrecord and \S*raw/\.\./raw/a\.tfrecord are the same file", TWICE, "List each file once"],
    ).param("concatenated", lambda root: [root / "raw" / "a.tfrecord", root / "raw" / ".." / "raw" / "a.tfrecord"]),
    FaultCase("cross_product_symlink", ConfigError, [
        r"raw/a\.tfrecord and \S*raw/link\.tfrecord are the same file", TWICE],
    ).param("cross_product_left", lambda root: [root / "raw" / "a.tfrecord", root / "raw" / "link.tfrecord"]),
    FaultCase("augmented_glob_and_name", ConfigError, [
        r"raw/a\.tfrecord is matched twice, by '\S*raw/a\*\.tfrecord' and '\S*raw/a\.tfrecord'", TWICE],
    ).param("augmented_materialize", lambda root: [root / "raw" / "a*.tfrecord", root / "raw" / "a.tfrecord"]),
]


@pytest.mark.parametrize("case, target, spellings", SPELLING_CASES)
def test_one_file_twice(tmp_path, case: FaultCase, target: str, spellings: Callable[[pathlib.Path], list[pathlib.Path]]):
  files = inputs(tmp_path)
  os.symlink("a.tfrecord", tmp_path / "raw" / "link.tfrecord")
  listed = [str(path) for path in spellings(tmp_path)]
  data_dir = tmp_path / "tfds"
  runs = {
      "concatenated": lambda: concatenated(listed, data_dir),
      "cross_product_left": lambda: cross_product(listed, [files["b"]], data_dir),
      "augmented_materialize": lambda: augmented(files["labels"], data_dir, base_records={"train": listed}),
  }
  repair = lambda: listed.__setitem__(slice(None), listed[:1])  # the file once
  expected = 9 if target.startswith("cross_product") else 3
  assert faults.check_fault(case, runs[target], repair, [files["a"].parent, files["labels"]], data_dir) == expected


def test_expand_keeps_distinct_files_in_the_order_given(tmp_path):
  files = inputs(tmp_path)
  found = tfrecord_io.expand([str(files["b"]), str(files["a"])])
  assert [record_file.path.name for record_file in found] == ["b.tfrecord", "a.tfrecord"]
  with pytest.raises(ConfigError, match=r"b\.tfrecord is matched twice, by '\S+b\.tfrecord' and '\S+raw'"):
    tfrecord_io.expand([str(files["b"]), str(tmp_path / "raw")])
  os.link(files["a"], tmp_path / "raw" / "hard.tfrecord")  # a hard link is the same file too
  with pytest.raises(ConfigError, match=r"a\.tfrecord and \S+hard\.tfrecord are the same file"):
    tfrecord_io.expand([str(tmp_path / "raw" / "*.tfrecord")])


# --------------------------- class 10: a corrupt base under an overlay --
# An overlay joined from a side table reads only frames and keys; it now checks
# every frame's data CRC as it walks, so a corrupt base fails the build, naming
# the file and record, instead of failing the user's training run later.

_DATA_CRC = r"do not match their checksum \(masked CRC32C\)"

OVERLAY_CASES = [
    FaultCase("raw_base_walk", SourceError, [
        r"a\.tfrecord: record 1 is corrupt", rf"at byte {OFFSETS[1]}\b", _DATA_CRC, REGENERATE]).param("raw"),
    FaultCase("prepared_base_keys_only", SourceError, [
        rf"{_SHARD}: record 3 is corrupt", _DATA_CRC, REGENERATE]).param("prepared"),
    FaultCase("raw_base_tfds_build", CommandFailed, [
        "SourceError", r"a\.tfrecord: record 1 is corrupt", rf"at byte {OFFSETS[1]}\b", _DATA_CRC]).param("cli"),
]


@pytest.mark.parametrize("case, base", OVERLAY_CASES)
def test_overlay_over_a_corrupt_base(tmp_path, case: FaultCase, base: str):
  files = inputs(tmp_path)
  data_dir = tmp_path / "tfds"
  if base == "prepared":
    base_dir = prepared_base(tmp_path)
    faulted, config = shard_of(base_dir), {"base": str(base_dir)}
    data = bytearray(faulted.read_bytes())
    data[data.rindex(b"text 3") + 5] ^= 0x20  # inside the last record's text, not its join key
    original = Restorable(faulted)
    faulted.write_bytes(bytes(data))
  else:
    faulted, config = files["a"], {"base_records": {"train": [str(files["a"])]}}
    original = Restorable(faulted)
    flip_data_byte(faulted, 1)

  def run() -> int:
    if base == "cli":
      faults.tfds_build("augmented", {"name": "o", "mode": "overlay", "side_table": str(files["labels"]),
                                      "join_key": "id", **config}, data_dir)
      return tfds.builder_from_directory(str(data_dir / "augmented" / "o" / "1.0.0")).info.splits["train"].num_examples
    return augmented(files["labels"], data_dir, "overlay", **config)

  sources = [faulted.parent, files["labels"]]
  assert faults.check_fault(case, run, original.restore, sources, data_dir) == (4 if base == "prepared" else 3)


# ------------------------- class 11: a prepared dataset's shard is a symlink --
# A shard that dataset_info.json names was followed through a symlink to
# wherever it pointed. Paths taken from metadata are now refused if they are
# symlinks (as the registry refuses them), naming the shard and the remedy.
# Config paths the user typed (`tfrecords`, `base_records`) may be symlinks.

_LINKED = r"records_base-train\.tfrecord-00000-of-00001 is a symlink \(to '\S+elsewhere\S+'\)"
_COPY_IN = r"Copy the real file in its place, or rebuild the dataset"

SYMLINK_CASES = [
    FaultCase("concatenated_dataset_dir", SourceError, [
        "source 'a'", r"records_base/1\.0\.0 at \S+: shard", _LINKED, _COPY_IN]).param("concatenated"),
    FaultCase("augmented_overlay_base", SourceError, [_LINKED, _COPY_IN]).param("prepared_overlay"),
    FaultCase("augmented_materialize_base", SourceError, [_LINKED, _COPY_IN]).param("prepared_materialize"),
    FaultCase("load_augmented_base", SourceError, [_LINKED, _COPY_IN]).param("load_augmented"),
]


@pytest.mark.parametrize("case, target", SYMLINK_CASES)
def test_symlinked_shard_of_a_prepared_dataset(tmp_path, case: FaultCase, target: str):
  files = inputs(tmp_path)
  base_dir = prepared_base(tmp_path)
  data_dir = tmp_path / "tfds"
  if target == "load_augmented":  # an overlay built over the intact base; its shard is then swapped for a link
    builder = AugmentedBuilder(config=AugmentedConfig(
        name="o", mode="overlay", base=str(base_dir), side_table=str(files["labels"]), join_key="id"),
        data_dir=str(data_dir / "overlay"))
    builder.download_and_prepare()
    run = lambda: [int(e["label"]) for e in tfds.as_numpy(load_augmented(builder.data_dir, split="train"))]
    data_dir = None  # loading writes nothing
  elif target == "concatenated":
    run = lambda: _built(ConcatenatedBuilder(config=ConcatenatedConfig(
        name="c", sources=[{"name": "a", "dataset_dir": str(base_dir)}]), data_dir=str(data_dir)))
  else:
    run = _build_run(target, files, data_dir, base_dir)
  shard = shard_of(base_dir)
  elsewhere = tmp_path / "elsewhere" / shard.name  # the same bytes: only the link is wrong
  elsewhere.parent.mkdir()
  shard.rename(elsewhere)
  shard.symlink_to(elsewhere)

  def repair() -> None:
    shard.unlink()
    elsewhere.rename(shard)

  rerun = faults.check_fault(case, run, repair, [base_dir, elsewhere.parent, files["labels"]], data_dir)
  assert rerun == ([0, 10, 20, 30] if target == "load_augmented" else 4)


def _built(builder: tfds.core.DatasetBuilder) -> int:
  builder.download_and_prepare()
  return builder.info.splits["train"].num_examples


def test_shard_names_from_metadata_are_checked_before_they_are_joined(tmp_path):
  (tmp_path / "real.tfrecord").write_bytes(b"")
  assert tfrecord_io.shard_path(tmp_path, "real.tfrecord", "d") == epath.Path(tmp_path) / "real.tfrecord"
  assert tfrecord_io.shard_path(tmp_path, "missing.tfrecord", "d") == epath.Path(tmp_path) / "missing.tfrecord"
  with pytest.raises(SourceError, match=r"d at \S+: a shard its dataset_info\.json names: path '\.\.' has a '\.\.' "
                                        r"component\. .*rebuild the dataset"):
    tfrecord_io.shard_path(tmp_path, "..", "d")
  os.mkfifo(tmp_path / "fifo.tfrecord")
  with pytest.raises(SourceError, match=r"shard \S+fifo\.tfrecord is a FIFO, not a regular file\. Copy the real file"):
    tfrecord_io.shard_path(tmp_path, "fifo.tfrecord", "d")


# ------------------------------------------- class 12: featureless records --
# A 0-byte record (or an Example without features) first set an empty schema,
# and the error then blamed the next good record ("extra feature 'id'"). Both
# records are now named, the featureless one as such.

EMPTY_EXAMPLE = b"\x0a\x00"  # features {}: a valid tf.train.Example without features
_NO_FEATURES = r"has no features \(a 0-byte record or an empty tf\.train\.Example\)"
_HAS = r"has features \['id', 'text'\]"
_REMOVE = "remove the records without features, or regenerate them"

FEATURELESS_CASES = [
    FaultCase("cross_product_combinations_empty_file_first", SchemaError, [
        r"left input \(`left`\)", rf"e\.tfrecord: record 0 {_NO_FEATURES}", rf"while \S+a\.tfrecord: record 0 {_HAS}",
        _REMOVE]).param("cross_product_combinations", [b""]),
    FaultCase("concatenated_empty_example_first", SchemaError, [
        "source 'a'", rf"e\.tfrecord: record 0 {_NO_FEATURES}", rf"while \S+e\.tfrecord: record 1 {_HAS}", _REMOVE,
    ]).param("concatenated", [EMPTY_EXAMPLE, *RECORDS]),
    FaultCase("augmented_empty_record_last", SchemaError, [
        rf"e\.tfrecord: record 3 {_NO_FEATURES}", rf"while \S+e\.tfrecord: record 0 {_HAS}", _REMOVE,
    ]).param("augmented_materialize", [*RECORDS, b""]),
]


@pytest.mark.parametrize("case, target, records", FEATURELESS_CASES)
def test_featureless_records_are_named(tmp_path, case: FaultCase, target: str, records: list[bytes]):
  files = inputs(tmp_path)
  faulted = helpers.write_records(files["a"].with_name("e.tfrecord"), records)
  data_dir = tmp_path / "tfds"
  runs = {
      "cross_product_combinations": lambda: _built(CrossProductBuilder(config=CrossProductConfig(
          name="p", mode="combinations", left=[str(faulted), str(files["a"])]), data_dir=str(data_dir))),
      "concatenated": lambda: concatenated([faulted], data_dir),
      "augmented_materialize": lambda: augmented(files["labels"], data_dir, base_records={"train": [str(faulted)]}),
  }
  repair = lambda: helpers.write_records(faulted, [record for record in records if record not in (b"", EMPTY_EXAMPLE)] or RECORDS)
  expected = {"cross_product_combinations": 15}.get(target, 3)  # combinations: the pairs i < j of 6 records
  assert faults.check_fault(case, runs[target], repair, [files["a"].parent, files["labels"]], data_dir) == expected


# ------------------------------------------------ the shared count check --


def test_counted_yields_every_record_then_names_both_counts():
  assert list(tfrecord_io.counted(iter("abc"), 3, "f.tfrecord", "its index")) == ["a", "b", "c"]
  with pytest.raises(SourceError, match=r"f\.tfrecord holds 2 records, but its index says 3\. .*rebuild"):
    list(tfrecord_io.counted(iter("ab"), 3, "f.tfrecord", "its index"))
  seen = []
  with pytest.raises(SourceError, match=r"f\.tfrecord holds 5 records, but its index says 3"):
    for item in tfrecord_io.counted(iter("abcde"), 3, "f.tfrecord", "its index"):
      seen.append(item)
  assert seen == ["a", "b", "c"]  # none past the expected count is yielded


def test_read_records_equals_tensorflow_and_checks_every_crc(tmp_path):
  rng = np.random.default_rng(0)
  records = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in (0, 1, 100, 70_000, 5)]
  for compression in ("", "GZIP"):
    path = helpers.write_records(tmp_path / f"r{compression}.tfrecord", records, compression)
    record_file = tfrecord_io.RecordFile(epath.Path(path), compression)
    assert list(record_index.read_records(record_file)) == records
  path = tmp_path / "r.tfrecord"
  data = bytearray(path.read_bytes())
  offset = sum(len(record) + HEADER + CRC for record in records[:3])
  data[offset + HEADER + 50_000] ^= 1
  path.write_bytes(bytes(data))
  with pytest.raises(SourceError, match=rf"r\.tfrecord: record 3 is corrupt or truncated \(at byte {offset}: its 70000 bytes"):
    list(record_index.read_records(tfrecord_io.RecordFile(epath.Path(path), "")))
