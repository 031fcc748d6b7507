"""The fuzzers of scripts/fuzz.py with a fixed seed, their oracles, and the bugs they found, pinned."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from tests import faults
from tests.faults import FaultCase
from tfds_builders import archive
from tfds_builders.augmented import side_table
from tfds_builders.core import errors
from tfds_builders.core import tfrecord_io
from tfds_builders.core.fast import record_index
from tfds_builders.numpy_arrays import npy_files


FUZZ = faults.REPO / "scripts" / "fuzz.py"
# Inputs per parser in CI: all six run in about a minute of CPU on two cores. Long runs: scripts/fuzz.py.
CI_COUNT = int(os.environ.get("TFDS_BUILDERS_FUZZ_COUNT", "10000"))
PARSERS = ("walk", "layout", "keys", "npy", "csv", "manifest")


def _load_fuzz_module():
  spec = importlib.util.spec_from_file_location("tfds_builders_fuzz", FUZZ)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up by name
  spec.loader.exec_module(module)
  return module


fuzz = _load_fuzz_module()


def run_fuzz(*args: str, timeout: float = 900) -> tuple[int, dict]:
  """`python scripts/fuzz.py ARGS` as typed on a shell: (exit code, its one-line JSON summary)."""
  result = subprocess.run([sys.executable, str(FUZZ), *args], env=faults.ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)
  assert result.returncode in (0, 1), f"fuzz.py exited {result.returncode}:\n{result.stderr[-3000:]}"
  return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ci_run() -> dict:
  """All six fuzzers, CI_COUNT inputs each from seed 0, two workers at a time; each worker a subprocess."""
  code, summary = run_fuzz("all", "--count", str(CI_COUNT), "--seed", "0", "--jobs", "2")
  assert code == (0 if summary["ok"] else 1)
  return summary


def describe(findings: list[dict]) -> str:
  """Hard findings as a reader needs them to reproduce one: kind, detail, input and the replay command."""
  lines = []
  for finding in (finding for finding in findings if finding["kind"] in fuzz.HARD):
    meta = json.dumps(finding.get("meta", {}))
    replay = f"scripts/fuzz.py {finding['parser']} --replay {finding.get('input_hex', '')} --meta '{meta}'"
    lines.append(f"- {finding['kind']} at input {finding['index']}: {finding['detail'][:600]}\n  {replay[:900]}")
  return "\n".join(lines)


@pytest.mark.parametrize("parser", PARSERS)
def test_fuzzer_finds_no_crash_hang_undocumented_error_or_wrong_answer(ci_run, parser):
  result = ci_run["parsers"][parser]
  assert result["inputs"] == CI_COUNT
  assert result["hard_findings"] == 0, f"{parser}: {result['by_kind']}\n{describe(result['findings'])}"
  assert result["ok"]
  # Neither trivially rejected nor trivially accepted: the inputs reach both sides of the parser.
  assert result["accepted"] > CI_COUNT // 20 and result["rejected"] > CI_COUNT // 20, result


# The structured mutations each parser's inputs must have had, at least this often.
REQUIRED_MUTATIONS = {
    "walk": ["length_recrc", "length_int64_wrap", "length_uint64_top", "length_special", "length_huge",
             "length_past_end", "length_near", "payload_recrc", "varint_overflow", "truncate_boundary", "cut_at_0",
             "cut_at_8", "cut_at_12", "cut_at_inside", "data_crc", "bitflip", "insert", "delete"],
    "layout": ["varint_overflow", "eleven_byte_varint", "ten_byte_varint", "non_minimal_length", "split_value",
               "truncate", "bitflip", "insert", "delete", "layout_same", "layout_drop"],
    "keys": ["varint_overflow", "eleven_byte_varint", "split_value", "field_zero", "bad_utf8_name", "group",
             "duplicate_entry", "truncate", "bitflip", "insert", "delete"],
    "npy": ["header_length", "header_descr", "header_shape", "header_version", "header_padding", "truncate", "bitflip",
            "insert", "delete"],
    "csv": ["key_cell", "drop_cell", "blank_line", "duplicate_key", "column_named_twice", "huge_cell", "truncate",
            "bitflip", "insert", "delete", "token"],
    "manifest": ["manifest_path", "manifest_member", "manifest_field_type", "manifest_json_text", "zip_encrypted",
                 "zip_method", "zip_truncate_boundary", "truncate", "bitflip", "insert", "delete"],
}


@pytest.mark.parametrize("parser", PARSERS)
def test_fuzzer_exercises_the_required_mutations(ci_run, parser):
  mutations = ci_run["parsers"][parser]["mutations"]
  made = {name: mutations.get(name, 0) for name in REQUIRED_MUTATIONS[parser]}
  rare = {name: count for name, count in made.items() if count < CI_COUNT // 500}
  assert not rare, f"{parser}: mutations seldom or never made: {rare}"


def test_the_second_oracles_are_consulted(ci_run):
  # TF's reader, np.load, the row-by-row side table, import_: each checks what the first oracle let through.
  assert ci_run["parsers"]["walk"]["counters"]["tf_compared"] > CI_COUNT // 2
  assert ci_run["parsers"]["npy"]["counters"]["arrays_compared"] > CI_COUNT // 5
  assert ci_run["parsers"]["csv"]["counters"]["tables_compared"] > CI_COUNT // 5
  assert ci_run["parsers"]["manifest"]["counters"]["imports"] > CI_COUNT // 50


def test_the_harness_reports_crashes_hangs_undocumented_errors_and_wrong_answers():
  # The canary parser segfaults on "c", sleeps on "h", raises KeyError on "x" and answers wrongly on "a".
  code, summary = run_fuzz("canary", "--count", "300", "--seed", "0", "--timeout", "1", timeout=300)
  result = summary["parsers"]["canary"]
  assert code == 1 and not summary["ok"]
  assert result["inputs"] == 300
  for kind in ("crash", "hang", "undocumented_exception", "accepted_invalid"):
    assert result["by_kind"].get(kind, 0) >= 1, (kind, result["by_kind"])
  assert result["restarts"] == result["by_kind"]["crash"] + result["by_kind"]["hang"]
  first = {finding["kind"]: finding for finding in reversed(result["findings"])}
  assert first["crash"]["input_hex"] == b"c".hex() and "signal 11" in first["crash"]["detail"]
  assert first["hang"]["input_hex"] == b"h".hex() and "ran over 1.0 s" in first["hang"]["detail"]
  assert "KeyError" in first["undocumented_exception"]["detail"]


@pytest.mark.parametrize("parser", PARSERS)
def test_the_same_seed_gives_the_same_inputs(tmp_path, parser):
  fuzzer = fuzz.FUZZERS[parser](tmp_path)

  def digest(seed: int) -> str:
    rng = np.random.default_rng([seed, 0, 0])
    cases = [fuzzer.generate(rng) for _ in range(100)]
    return hashlib.sha256(b"".join(case.data + json.dumps(case.meta).encode() for case in cases)).hexdigest()

  assert digest(3) == digest(3) != digest(4)


# ------------------------------------------------------------- the oracles --


def frame(record: bytes, length: int | None = None) -> bytes:
  return fuzz.frame_header(len(record) if length is None else length) + record + struct.pack(
      "<I", fuzz.masked_crc(record))


def test_reference_walk_equals_what_tensorflow_writes_and_names_each_kind_of_bad_frame(tmp_path):
  path = tmp_path / "r.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in (b"", b"a", b"xyz" * 100):
      writer.write(record)
  data = path.read_bytes()
  walk = fuzz.reference_walk(data)
  assert [(offset, length) for offset, length, _ in walk.frames] == [(0, 0), (16, 1), (33, 300)]
  assert walk.error is None and walk.longest == 300
  assert fuzz.reference_walk(data + b"\0" * 5).error == ("short_header", 3, 349)
  assert fuzz.reference_walk(data[:20] + bytes([data[20] ^ 1]) + data[21:]).error == ("header", 1, 16)
  assert fuzz.reference_walk(data[:-1]).error == ("truncated", 2, 33)
  huge = fuzz.reference_walk(frame(b"abcd", 2**63 - 1))
  assert huge.error == ("truncated", 0, 0) and huge.longest == 2**63 - 1


def test_walk_oracle_wants_the_frames_and_a_message_naming_the_record_and_byte(tmp_path):
  path = tmp_path / "w.tfrecord"
  walk = fuzz.Walk([(0, 3, 1)], ("truncated", 1, 19), 3)

  def verdict(got, raised):
    return [kind for kind, _ in fuzz.WalkFuzzer._scan_agrees(path, got, raised, walk)]  # pylint: disable=protected-access

  assert verdict([(0, 3, 1)], errors.SourceError(f"{path}: record 1 (at byte 19) is truncated")) == []
  assert verdict([(0, 3, 1)], errors.SourceError(f"{path}: a record is truncated")) == ["wrong_result"]
  assert verdict([], errors.SourceError(f"{path}: record 1 (at byte 19) is truncated")) == ["wrong_result"]
  assert verdict([(0, 3, 1)], None) == ["accepted_invalid"]


def example(*entries: bytes) -> bytes:
  return fuzz.delimited(1, b"".join(entries))


def entry(name: bytes, *values: bytes) -> bytes:
  return fuzz.delimited(1, fuzz.delimited(1, name) + b"".join(fuzz.delimited(2, value) for value in values))


def int64s(*values: int) -> bytes:
  return fuzz.delimited(3, fuzz.delimited(1, b"".join(map(fuzz.varint, values))) if values else b"")


LAYOUT = [("id", "int64_list"), ("image", "bytes_list")]
IMAGE = fuzz.delimited(1, fuzz.delimited(1, b"png") + fuzz.delimited(1, b""))


@pytest.mark.parametrize("record, counts", [
    (example(entry(b"id", int64s(5, -1)), entry(b"image", IMAGE)), [2, 2]),
    (example(entry(b"image", IMAGE), entry(b"id", int64s())), [0, 2]),
    (example(entry(b"id", fuzz.delimited(3, b"\x08\x05")), entry(b"image", IMAGE)), None),  # unpacked
    (example(entry(b"id", int64s(5)), entry(b"image", IMAGE), entry(b"x", int64s(1))), None),  # another feature
    (example(entry(b"id", int64s(5)), entry(b"id", int64s(6)), entry(b"image", IMAGE)), None),  # a name twice
    (example(entry(b"id", fuzz.delimited(3, fuzz.delimited(1, b"\xff" * 10 + b"\x01"))), entry(b"image", IMAGE)), None),
    (example(entry(b"id", fuzz.delimited(1, b"")), entry(b"image", IMAGE)), None),  # another kind
])
def test_reference_conforms_follows_the_layout_docstring(record, counts):
  assert fuzz.reference_conforms(record, LAYOUT) == counts
  parsed = fuzz.protobuf_features(tf.train.Example, record)
  if counts is not None:
    assert [len(parsed[name][1]) for name, _ in LAYOUT] == counts


@pytest.mark.parametrize("record, want", [
    (example(entry(b"id", int64s(7, 8))), (2, 8)),
    (example(entry(b"id", fuzz.delimited(1, fuzz.delimited(1, b"x")))), (0, None)),  # another kind: no values
    (example(entry(b"id", int64s(7))) + b"\x1b\x1c", None),  # a group: TF's parser refuses it, protobuf not
    (example(entry(b"id", int64s(1), int64s(2))), None),  # a repeated map value: TF refuses, protobuf merges
    (b"\xff\xff", None),
])
def test_tf_example_view_reads_keys_as_tf_io_parse_example(record, want):
  assert fuzz.tf_example_view(tf, record, "id", "int64_list") == want


def test_numpy_header_oracle_refuses_object_arrays_as_allow_pickle_false_does():
  out = io.BytesIO()
  np.save(out, np.array([None, 1], dtype=object), allow_pickle=True)
  assert fuzz.NpyFuzzer.numpy_header(out.getvalue()) is None
  out = io.BytesIO()
  np.save(out, np.zeros((2, 3), ">i2"))
  assert fuzz.NpyFuzzer.numpy_header(out.getvalue()) == ((2, 3), False, np.dtype(">i2"), 128)


# ------------------------------------------- what the fuzzers found, pinned --
#
# Each input below is the fuzzers' minimal reproducer of a bug. Those in
# record_index, npy_files and archive are fixed (or being fixed) there; the
# fuzz tests above fail while one is open.


def test_walk_wrapping_length_with_a_valid_header_crc_is_named_not_a_segfault(tmp_path):
  # 16 bytes: length 2**63 - 1 (offset + 16 + length wrapped int64 in the compiled walk), CRC recomputed.
  path = tmp_path / "wrap.tfrecord"
  path.write_bytes(bytes.fromhex("ffffffffffffff7ffa7f028461626364"))
  case = FaultCase("wrapping_length", faults.CommandFailed,
                   [r"SourceError", r"wrap\.tfrecord: record 0 \(at byte 0\)", r"Regenerate or re-download"])
  code = f"""
      from etils import epath
      from tfds_builders.core import tfrecord_io
      from tfds_builders.core.fast import record_index
      blocks = record_index.scan(tfrecord_io.RecordFile(epath.Path({str(path)!r}), ""))
      print(sum(len(block) for block in blocks))
  """
  repaired = faults.check_fault(case, lambda: faults.run_python(code), lambda: path.write_bytes(frame(b"abcd")),
                                [path], None)
  assert repaired.stdout.split() == ["1"]


def scanned_keys(tmp_path: pathlib.Path, record: bytes, key: str = "id") -> tuple[int, object]:
  """(count, last value) of the key as scan(..., key=) reads it from a file of this one record."""
  path = tmp_path / "k.tfrecord"
  path.write_bytes(frame(record))
  block, = record_index.scan(tfrecord_io.RecordFile(epath.Path(path), ""), key=key)
  return int(block.key_counts[0]), block.keys[0].item()


@pytest.mark.parametrize("record", [
    # Two Feature values in one map entry: protobuf merges them (id has 1, 2), TF's parser refuses the record.
    pytest.param(example(entry(b"id", int64s(1), int64s(2))), id="map_value_twice"),
    # A map entry with a field besides key and value: protobuf drops the entry, TF's parser refuses the record.
    pytest.param(example(fuzz.delimited(1, fuzz.delimited(1, b"id") + fuzz.delimited(2, int64s(7)) + b"\x18\x01")),
                 id="map_entry_unknown_field"),
    # Field number 0 or 2**29 and more, a name not UTF-8: protobuf refuses these, TF's parser reads id = 7.
    pytest.param(example(entry(b"id", int64s(7))) + b"\x02\x00", id="field_number_zero"),
    pytest.param(example(entry(b"id", int64s(7))) + b"\x80\x80\x80\x80\x10\x00", id="field_number_too_big"),
    pytest.param(example(entry(b"id", int64s(7)), entry(b"\xff\xfe", int64s())), id="name_not_utf8"),
    # A group: protobuf reads id = 7, TF's parser refuses the record.
    pytest.param(example(entry(b"id", int64s(7))) + b"\x1b\x1c", id="group"),
])
def test_key_scan_reads_keys_as_protobuf_or_tensorflow_does(tmp_path, record):
  protobuf = fuzz.KeysFuzzer(tmp_path)._protobuf_view(record, "id", "int64_list")  # pylint: disable=protected-access
  tensorflow = fuzz.tf_example_view(tf, record, "id", "int64_list")
  malformed = (record_index.MALFORMED, None)
  count, last = scanned_keys(tmp_path, record)
  assert (count, last if count > 0 else None) in {protobuf or malformed, tensorflow or malformed}


def npy_bytes(array: np.ndarray, **options) -> bytes:
  out = io.BytesIO()
  np.lib.format.write_array(out, array, **options)
  return out.getvalue()


NPY_CASES = [
    # numpy's own header parser raises tokenize.TokenError on this one (an unclosed bracket).
    FaultCase("npy_unclosed_bracket", errors.SourceError, [r"bad\.npy", r"np\.save"]).param(
        b"\x93NUMPY\x01\x00\x36\x00{" + b" " * 52 + b"\n"),
    FaultCase("npy_object_dtype", errors.SchemaError, [r"bad\.npy", "object arrays", "never read"]).param(
        npy_bytes(np.array([None, 1], dtype=object), allow_pickle=True)),
]


@pytest.mark.parametrize("case, data", NPY_CASES)
def test_npy_header_numpy_refuses_is_refused(tmp_path, case, data):
  path = tmp_path / "bad.npy"
  path.write_bytes(data)

  def run():
    with path.open("rb") as stream:
      return npy_files.read_header(stream, str(path))

  header = faults.check_fault(case, run, lambda: path.write_bytes(npy_bytes(np.arange(3.0))), [path], None)
  assert (header.shape, header.dtype) == ((3,), np.dtype("<f8"))


def test_csv_cell_over_the_csv_modules_field_limit_reads_on_both_paths(tmp_path):
  long_text = "x" * 200_000  # the csv module's default limit is 131072
  for name, body in (("plain.csv", f"id,note\n1,{long_text}\n2,b\n"),  # pyarrow's columnar path
                     ("quoted.csv", f'id,note\n1,"{long_text}"\n2,"b"\n')):  # quotes: Python's csv module
    path = tmp_path / name
    path.write_text(body)
    table = side_table.read_file(epath.Path(path), table_format="csv", key_column="id", columns=[],
                                 key_kind="int64_list", declared={})
    entries = table.entries.item(int(table.index.rows([1])[0]))
    assert fuzz.protobuf_features(tf.train.Example, fuzz.delimited(1, entries)) == {
        "note": ("bytes_list", [long_text.encode()])}, name


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory) -> pathlib.Path:
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name="fuzz_demo", version="1.0.0", data_dir=str(tmp_path_factory.mktemp("data")),
      features=tfds.features.FeaturesDict({"x": tfds.features.Scalar(dtype=np.int64)}),
      split_datasets={"train": [(i, {"x": i}) for i in range(3)]}, disable_shuffling=True,
  )
  return pathlib.Path(archive.export(builder.data_path, tmp_path_factory.mktemp("zip") / "good.zip"))


def with_manifest(good: pathlib.Path, out: pathlib.Path, text: bytes) -> pathlib.Path:
  with zipfile.ZipFile(good) as source, zipfile.ZipFile(out, "w") as target:
    for info in source.infolist():
      target.writestr(info, text if info.filename == archive.MANIFEST_NAME else source.read(info))
  return out


def test_import_of_a_manifest_nested_too_deep_is_named_on_the_command_line(good_archive, tmp_path):
  # json.loads raised RecursionError (not a ValueError) out of read_manifest.
  bad = with_manifest(good_archive, tmp_path / "deep.zip", b"[" * 5000 + b"]" * 5000)
  data_dir = tmp_path / "data"
  case = FaultCase("manifest_deep_json", faults.CommandFailed, [r"deep\.zip", r"tfds_builders_archive\.json"])
  faults.check_fault(case, lambda: faults.tfds_builders_cli("import", str(bad), str(data_dir)),
                     lambda: shutil.copyfile(good_archive, bad), [good_archive], data_dir)
  assert faults.loadable_dirs(data_dir) == [data_dir / "fuzz_demo" / "1.0.0"]



def test_a_member_with_an_empty_name_is_refused(good_archive, tmp_path):
  # zipfile.ZipInfo.is_dir() raised IndexError on the empty name, out of read_manifest.
  bad = tmp_path / "empty.zip"
  with zipfile.ZipFile(good_archive) as source, zipfile.ZipFile(bad, "w") as target:
    manifest = json.loads(source.read(archive.MANIFEST_NAME))
    for info in source.infolist():
      if info.filename != archive.MANIFEST_NAME:
        target.writestr(info, source.read(info))
    target.writestr(zipfile.ZipInfo(""), b"x")
    manifest["files"].append({"name": "", "size": 1, "crc32": target.getinfo("").CRC})
    target.writestr(archive.MANIFEST_NAME, json.dumps(manifest))
  case = FaultCase("member_empty_name", errors.SourceError, [r"empty\.zip"])
  faults.check_fault(case, lambda: archive.read_manifest(bad), lambda: shutil.copyfile(good_archive, bad),
                     [good_archive], None)


# The CSV reader (augmented/side_table.py): a header naming two columns alike became two features of one name.
LABELS = faults.REPO / "dummy_data" / "augmented" / "labels.csv"
SIDE_TABLE_CASES = [
    FaultCase("column_named_twice", errors.SourceError,
              [r"dup\.csv has column\(s\) \['label'\] more than once", r"Rename the columns"]).param(
                  "id,label,label,note", []),
    FaultCase("key_column_named_twice", errors.SourceError,
              [r"dup\.csv has column\(s\) \['id'\] more than once"]).param("id,label,id,note", ["label"]),
    FaultCase("column_listed_twice", errors.ConfigError, [r"side_table_columns lists \['note'\] more than once"]).param(
        "id,label,weight,note", ["note", "note"]),
]


@pytest.mark.parametrize("case, header, columns", SIDE_TABLE_CASES)
def test_side_table_names_are_unambiguous(tmp_path, case, header, columns):
  path = tmp_path / "dup.csv"
  rows = LABELS.read_text().splitlines()[1:]
  path.write_text("\n".join([header, *rows]) + "\n")
  chosen = list(columns)

  def run():
    return side_table.read_file(epath.Path(path), table_format="csv", key_column="id", columns=chosen,
                                key_kind="int64_list", declared={})

  def repair():
    path.write_text(LABELS.read_text())
    chosen[:] = dict.fromkeys(columns)

  table = faults.check_fault(case, run, repair, [LABELS], None)
  assert [spec.name for spec in table.specs] == (list(dict.fromkeys(columns)) or ["label", "weight", "note"])
  assert len(table) == len(rows)


def test_tfds_build_names_a_side_table_column_named_twice(tmp_path):
  side = tmp_path / "dup.csv"
  side.write_text(LABELS.read_text().replace("id,label,weight,note", "id,label,label,note", 1))
  base = faults.REPO / "dummy_data" / "augmented" / "base" / "train-00000.tfrecord"
  config = {"name": "dup", "mode": "overlay", "side_table": str(side), "join_key": "id",
            "base_records": {"train": [str(base)]}}
  data_dir = tmp_path / "tfds"
  case = FaultCase("cli_column_named_twice", faults.CommandFailed,
                   [r"SourceError", r"dup\.csv has column\(s\) \['label'\] more than once", r"Rename the columns"])
  faults.check_fault(case, lambda: faults.tfds_build("augmented", config, data_dir),
                     lambda: shutil.copyfile(LABELS, side), [base], data_dir)
  assert faults.loadable_dirs(data_dir) == [data_dir / "augmented" / "dup" / "1.0.0"]


def test_a_corrupt_lzma_manifest_is_named(good_archive, tmp_path):
  # The manifest stored with LZMA (method 14), one byte of its stream changed: lzma.LZMAError escaped read_manifest.
  bad = tmp_path / "lzma.zip"
  with zipfile.ZipFile(good_archive) as source, zipfile.ZipFile(bad, "w") as target:
    for info in source.infolist():
      target.writestr(info, source.read(info), zipfile.ZIP_LZMA if info.filename == archive.MANIFEST_NAME else None)
  with zipfile.ZipFile(bad) as written:
    info = written.getinfo(archive.MANIFEST_NAME)
  data = bytearray(bad.read_bytes())
  name_size, extra_size = struct.unpack_from("<HH", data, info.header_offset + 26)
  data[info.header_offset + 30 + name_size + extra_size + 16] ^= 0xFF  # inside the LZMA stream, past its header
  bad.write_bytes(bytes(data))
  case = FaultCase("manifest_lzma_corrupt", errors.SourceError, [r"lzma\.zip", r"tfds_builders_archive\.json"])
  faults.check_fault(case, lambda: archive.read_manifest(bad), lambda: shutil.copyfile(good_archive, bad),
                     [good_archive], None)
