"""Fault suite of numpy_arrays: hostile .npy headers, damaged .npz archives, mispaired files."""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import re
import struct
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.numpy_arrays import Builder
from tfds_builders.numpy_arrays import BuilderConfig
from tfds_builders.numpy_arrays import to_numpy

from tests import faults
from tests.faults import FaultCase


GOOD = np.arange(6, dtype="<f8").reshape(2, 3)
F8 = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"
# Fragment placeholders: the hostile file's path, and `archive[x.npy]` for a member.
SRC = "{src}"
MEMBER = "{src}\\[x\\.npy\\]"
MARKER_NAME = "unpickled"


# ----------------------------------------------------------- hand-made files --


def npy(header: str, data: bytes = GOOD.tobytes(), version: tuple[int, int] = (1, 0),
        header_len: int | None = None) -> bytes:
  """An .npy file written by hand: magic, version, header_len and the header text."""
  text = header.encode("latin1")
  text += b" " * (-(len(text) + 11) % 64) + b"\n"  # pad to 64 bytes as np.save does
  length_format = "<H" if version == (1, 0) else "<I"
  declared = len(text) if header_len is None else header_len
  return b"\x93NUMPY" + bytes(version) + struct.pack(length_format, declared) + text + data


_ZERO_WIDTH_HEADER = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000000000, 0), }\n"
ZERO_WIDTH = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(_ZERO_WIDTH_HEADER)) + _ZERO_WIDTH_HEADER  # unpadded, as the red team wrote it


def good_npy(array: np.ndarray = GOOD) -> bytes:
  stream = io.BytesIO()
  np.save(stream, array)
  return stream.getvalue()


def npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
  stream = io.BytesIO()
  with zipfile.ZipFile(stream, "w", compression) as archive:
    for name, content in members.items():
      archive.writestr(name, content)
  return stream.getvalue()


def _central_entry(archive: bytes) -> int:
  return archive.index(b"PK\x01\x02")


def flip_last_data_byte(archive: bytes) -> bytes:
  """A stored member whose last data byte changed: only its CRC tells."""
  data = bytearray(archive)
  data[_central_entry(archive) - 1] ^= 0xFF
  return bytes(data)


def garble_deflate(archive: bytes) -> bytes:
  """A deflated member whose compressed stream is garbage after its first bytes."""
  data = bytearray(archive)
  name_len, extra_len = struct.unpack("<HH", archive[26:30])
  start = 30 + name_len + extra_len + 40
  data[start:_central_entry(archive) - 8] = b"\xff" * (_central_entry(archive) - 8 - start)
  return bytes(data)


def declare_size(archive: bytes, size: int) -> bytes:
  """The member's uncompressed size, as the central directory declares it, forged."""
  data = bytearray(archive)
  struct.pack_into("<I", data, _central_entry(archive) + 24, size)
  return bytes(data)


def mark_encrypted(archive: bytes) -> bytes:
  data = bytearray(archive)
  for flags_at in (6, _central_entry(archive) + 8):
    data[flags_at] |= 0x01
  return bytes(data)


class _Touch:
  """Creates a file when unpickled: proves a loader unpickled it."""

  def __init__(self, path: str):
    self.path = path

  def __reduce__(self):
    return (pathlib.Path.touch, (pathlib.Path(self.path),))


def pickled_object_npy(marker: pathlib.Path) -> bytes:
  payload = pickle.dumps(np.array([_Touch(str(marker)), None], dtype=object))
  return npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", payload)


# ------------------------------------------------------------------ the table --

HOSTILE_NPY = [
    FaultCase("negative-dim", errors.SourceError, [SRC, r"shape \(-1, 3\) has a negative dimension", "np.save"]).param(
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 3), }")),
    FaultCase("dims-overflow-int64", errors.SourceError, [SRC, r"\(1099511627776, 1099511627776\)", "more than any array can address", "np.save"]).param(
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }")),
    FaultCase("shape-larger-than-file", errors.SourceError, [SRC, "truncated", "bytes on disk", "header needs", "copy or save it again"]).param(
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000, 3), }")),
    FaultCase("shape-smaller-than-data", errors.SourceError, [SRC, "24 trailing bytes", r"shape \(1, 3\)", "accounts for 24", "np.save"]).param(
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 3), }")),
    FaultCase("header-not-a-dict", errors.SourceError, [SRC, "header is a list, not a dict", "np.save"]).param(
        npy("[1, 2, 3]")),
    FaultCase("header-len-past-end", errors.SourceError, [SRC, "header_len 5000 runs past the end", "np.save"]).param(
        npy(F8, b"", header_len=5000)),
    FaultCase("header-len-over-limit", errors.SourceError, [SRC, "header_len 2147483648 is over the 10000-byte limit"]).param(
        npy(F8, version=(2, 0), header_len=2**31)),
    FaultCase("version-9", errors.SourceError, [SRC, r"unsupported \.npy format version 9\.0", "np.save"]).param(
        npy(F8, version=(9, 0))),
    FaultCase("version-1.1", errors.SourceError, [SRC, r"unsupported \.npy format version 1\.1"]).param(
        npy(F8, version=(1, 1))),
    FaultCase("cut-in-length-field", errors.SourceError, [SRC, "truncated inside the .npy header length field"]).param(
        b"\x93NUMPY\x01\x00\x10"),
    FaultCase("not-npy-magic", errors.SourceError, [SRC, "does not start with the NumPy magic", "np.save"]).param(
        b"PK\x03\x04 not an array at all"),
    FaultCase("header-not-a-literal", errors.SourceError, [SRC, "header is not a Python literal", "np.save"]).param(
        npy("{'descr': '<f8', 'shape': __import__('os').getpid()}")),
    FaultCase("header-nesting-bomb", errors.SourceError, [SRC, "header is not a Python literal"]).param(
        npy("-" * 9000 + "1")),
    FaultCase("header-keys", errors.SourceError, [SRC, r"header keys are \['descr', 'shape'\]", "'fortran_order'"]).param(
        npy("{'descr': '<f8', 'shape': (2, 3)}")),
    FaultCase("shape-not-ints", errors.SourceError, [SRC, r"shape \(True, 3\) is not a tuple of ints"]).param(
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (True, 3), }")),
    FaultCase("too-many-dims", errors.SourceError, [SRC, "65 dimensions, more than NumPy's 64"]).param(
        npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,) * 65, }".replace("(1,) * 65", repr((1,) * 65)))),
    FaultCase("fortran-order-not-bool", errors.SourceError, [SRC, "fortran_order 'yes' is not True or False"]).param(
        npy("{'descr': '<f8', 'fortran_order': 'yes', 'shape': (2, 3), }")),
    FaultCase("descr-not-a-dtype", errors.SourceError, [SRC, "descr '<q99' is not a NumPy dtype"]).param(
        npy("{'descr': '<q99', 'fortran_order': False, 'shape': (2, 3), }")),
    FaultCase("subarray-descr-overflow", errors.SourceError, [SRC, "is not a NumPy dtype"]).param(
        npy("{'descr': [('a', '<f8', (1099511627776,))], 'fortran_order': False, 'shape': (2,), }")),
    FaultCase("object-dtype-pickle", errors.SchemaError, [SRC, "'\\|O'", "object arrays", "never read", "convert them to a numeric dtype"]).param(
        None),  # made per test: its pickle names the marker file of that test
    FaultCase("structured-dtype", errors.SchemaError, [SRC, "structured or void", r"np\.savez\(path"]).param(
        npy("{'descr': [('a', '<i4'), ('b', '<f8')], 'fortran_order': False, 'shape': (2,), }", b"\0" * 24)),
    FaultCase("unicode-dtype", errors.SchemaError, [SRC, "'<U4'", "encode them to uint8"]).param(
        npy("{'descr': '<U4', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 96)),
    FaultCase("datetime-dtype", errors.SchemaError, [SRC, "datetime64", r"a\.view\('int64'\)"]).param(
        npy("{'descr': '<M8[s]', 'fortran_order': False, 'shape': (2, 3), }")),
    # 10**18 empty examples from a 128-byte file: no data backs rows of zero bytes.
    FaultCase("zero-width-rows", errors.SourceError, [
        SRC, r"shape \(1000000000000000000, 0\) of \|u1 declares 1000000000000000000 rows of 0 bytes",
        "more than the 2147483648 empty examples", "corrupt or forged", "np.save"]).param(ZERO_WIDTH),
    FaultCase("zero-width-rows-fortran", errors.SourceError, [SRC, "rows of 0 bytes", "layout='files'"]).param(
        npy("{'descr': '<f8', 'fortran_order': True, 'shape': (4294967296, 3, 0), }", b"")),
    FaultCase("rows-over-2**40", errors.SourceError, [
        SRC, r"declares 2199023255552 rows, more than the 1099511627776 examples", "Split the array"]).param(
            npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2199023255552,), }", b"")),
]

HOSTILE_NPZ = [
    FaultCase("npz-bad-crc", errors.SourceError, [MEMBER, "Bad CRC-32", "damaged", "python -m zipfile -t"]).param(
        flip_last_data_byte(npz({"x.npy": good_npy()}))),
    FaultCase("npz-garbled-deflate", errors.SourceError, [MEMBER, "damaged", "np.savez"]).param(
        garble_deflate(npz({"x.npy": good_npy(np.arange(512, dtype="<f8").reshape(2, 256))}, zipfile.ZIP_DEFLATED))),
    FaultCase("npz-cut-archive", errors.SourceError, [SRC, r"not a valid \.npz \(zip\) archive", "np.savez"]).param(
        npz({"x.npy": good_npy()})[:-30]),
    FaultCase("npz-bomb-declared-size", errors.SourceError, [MEMBER, "the archive declares 4000000000 data bytes", "accounts for 48"]).param(
        declare_size(npz({"x.npy": good_npy()}), 4_000_000_000 + len(good_npy()) - 48)),
    FaultCase("npz-member-shorter-than-header", errors.SourceError, [MEMBER, "truncated: expected 48 data bytes, found 40"]).param(
        npz({"x.npy": good_npy()[:-8]})),
    FaultCase("npz-member-negative-dim", errors.SourceError, [MEMBER, "negative dimension"]).param(
        npz({"x.npy": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, -3), }")})),
    FaultCase("npz-member-header-len-past-end", errors.SourceError, [MEMBER, "runs past the end"]).param(
        npz({"x.npy": npy(F8, b"", header_len=900)})),
    FaultCase("npz-member-encrypted", errors.SourceError, [MEMBER, "encrypted", "damaged"]).param(
        mark_encrypted(npz({"x.npy": good_npy()}))),
    FaultCase("npz-duplicate-member", errors.SourceError, [SRC, r"members \['x\.npy'\] more than once", "np.savez"]).param(
        None),  # made per test: zipfile warns when it writes a duplicate
    FaultCase("npz-not-arrays", errors.SourceError, [SRC, r"members that are not \.npy arrays: \['notes\.txt'\]", "np.savez"]).param(
        npz({"x.npy": good_npy(), "notes.txt": b"hello"})),
    # Member names become feature names, and an export's file names: `train/a/../../b.npy`.
    FaultCase("npz-member-name-dotdot", errors.SchemaError, [
        SRC + r"\['a/\.\./\.\./b\.npy'\]", r"feature name 'a/\.\./\.\./b' is not a valid",
        r"Rename the array: np\.savez\(path, name=array\)"]).param(npz({"a/../../b.npy": good_npy()})),
    FaultCase("npz-member-name-control-chars", errors.SchemaError, [
        SRC + r"\['c d\\n\.npy'\]", r"feature name 'c d\\n' is not a valid", "letters, digits and _.-",
        "npz_members='examples'"]).param(npz({"c d\n.npy": good_npy()})),
]


def duplicate_member_npz() -> bytes:
  stream = io.BytesIO()
  with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(stream, "w") as archive:
    archive.writestr("x.npy", good_npy())
    archive.writestr("x.npy", good_npy(GOOD * 2))
  return stream.getvalue()


# ---------------------------------------------------------------- the checks --


def _resolve(case: FaultCase, source: pathlib.Path) -> FaultCase:
  """The case with `{src}` in its fragments replaced by the escaped source path."""
  fragments = [fragment.replace("{src}", re.escape(str(source))) for fragment in case.fragments]
  return FaultCase(case.id, case.error, fragments)


def _build(data_dir: pathlib.Path, splits: dict, **config) -> Builder:
  builder = Builder(config=BuilderConfig(name="hostile", splits=splits, **config), data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


# The data-size checks run on both read paths: row blocks, and whole arrays.
_BOTH_LAYOUTS = {"shape-larger-than-file", "shape-smaller-than-data", "npz-bad-crc", "npz-bomb-declared-size"}
HOSTILE = [
    pytest.param(*param.values, layout, id=f"{param.id}-{layout}")
    for param in HOSTILE_NPY + HOSTILE_NPZ
    for layout in ("rows", "files")
    if layout == "rows" or param.id in _BOTH_LAYOUTS
]


@pytest.mark.parametrize("case, content, layout", HOSTILE)
def test_hostile_array_file(tmp_path, case, content, layout):
  suffix = ".npz" if case.id.startswith("npz-") else ".npy"
  sources = tmp_path / "sources"
  sources.mkdir()
  source = sources / f"hostile{suffix}"
  marker = tmp_path / MARKER_NAME
  if case.id == "object-dtype-pickle":
    content = pickled_object_npy(marker)
  elif case.id == "npz-duplicate-member":
    content = duplicate_member_npz()
  source.write_bytes(content)
  data_dir = tmp_path / "tfds"

  def repair() -> None:
    source.write_bytes(npz({"x.npy": good_npy()}) if suffix == ".npz" else good_npy())

  rebuilt = faults.check_fault(
      _resolve(case, source),
      lambda: _build(data_dir, {"train": [str(source)]}, layout=layout),
      repair, [sources], data_dir,
  )
  assert not marker.exists(), "a pickle in the source was loaded"
  feature = "x" if suffix == ".npz" else "array"
  expected = GOOD if layout == "rows" else [GOOD]
  got = to_numpy(rebuilt.as_dataset(split="train"))[feature]
  np.testing.assert_array_equal(got, expected)
  assert rebuilt.info.splits["train"].num_examples == (2 if layout == "rows" else 1)


# Each `tfds build` costs ~8 s of imports: one case, the one that names an archive and its member.
CLI_CASES = [
    FaultCase("cli-npz-bad-crc", errors.SourceError, ["SourceError", MEMBER, "Bad CRC-32"]).param(
        "hostile.npz", flip_last_data_byte(npz({"x.npy": good_npy()}))),
    FaultCase("cli-zero-width-rows", errors.SourceError, ["SourceError", SRC, "rows of 0 bytes", "corrupt or forged"]).param(
        "zero.npy", ZERO_WIDTH),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, name, content", CLI_CASES)
def test_hostile_array_file_through_tfds_build(tmp_path, case, name, content):
  sources = tmp_path / "sources"
  sources.mkdir()
  source = sources / name
  source.write_bytes(content)
  data_dir = tmp_path / "tfds"
  config = {"name": "hostile", "splits": {"train": [str(source)]}}

  def repair() -> None:
    source.write_bytes(npz({"x.npy": good_npy()}) if name.endswith(".npz") else good_npy())

  case = FaultCase(case.id, faults.CommandFailed, _resolve(case, source).fragments)
  faults.check_fault(case, lambda: faults.tfds_build("numpy_arrays", config, data_dir),
                     repair, [sources], data_dir)
  built = tfds.builder_from_directory(str(data_dir / "numpy_arrays/hostile/1.0.0"))
  assert built.info.splits["train"].num_examples == 2


# ------------------------------------------------------------------- pairing --


def test_paired_files_are_features_of_the_same_examples(tmp_path):
  images = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2)
  labels = np.array([3, 1, 4, 1, 5], np.int64)
  np.save(tmp_path / "X_train.npy", images)
  np.save(tmp_path / "y_train.npy", labels)
  np.save(tmp_path / "X_test.npy", images[:2])
  np.save(tmp_path / "y_test.npy", labels[:2])
  builder = _build(tmp_path / "tfds", {
      "train": {"image": "X_train.npy", "label": "y_train.npy"},
      "test": {"image": ["X_test.npy"], "label": ["y_test.npy"]},
  }, data_root=str(tmp_path))
  assert builder.info.features["image"].shape == (2, 2)
  assert builder.info.features["label"].shape == ()
  train = to_numpy(builder.as_dataset(split="train"))
  np.testing.assert_array_equal(train["image"], images)
  np.testing.assert_array_equal(train["label"], labels)
  assert train["label"].dtype == np.int64
  assert builder.info.splits["test"].num_examples == 2
  assert builder.info.metadata["provenance"]["sources"]["train"] == [
      str(tmp_path / "X_train.npy"), str(tmp_path / "y_train.npy")]


def test_paired_globs_pair_in_sorted_order_and_split_fractions(tmp_path):
  for part in range(3):
    np.save(tmp_path / f"x_{part}.npy", np.full((4, 2), part, np.float32))
    np.save(tmp_path / f"y_{part}.npy", np.full(4, part, np.int32))
  builder = Builder(config=BuilderConfig(
      name="fractions", paths={"x": "x_*.npy", "y": "y_*.npy"}, data_root=str(tmp_path),
      split_fractions={"train": 0.5, "test": 0.5}), data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare()
  rows = [example for split in ("train", "test") for example in tfds.as_numpy(builder.as_dataset(split=split))]
  assert len(rows) == 12
  assert all(row["x"][0] == row["y"] for row in rows)  # paired by file position


def test_paired_files_with_layout_files(tmp_path):
  np.save(tmp_path / "a_0.npy", np.zeros((2, 3), np.float32))
  np.save(tmp_path / "a_1.npy", np.ones((4, 3), np.float32))
  np.save(tmp_path / "b_0.npy", np.int64(7))
  np.save(tmp_path / "b_1.npy", np.int64(8))
  builder = _build(tmp_path / "tfds", {"train": {"points": "a_*.npy", "label": "b_*.npy"}},
                   data_root=str(tmp_path), layout="files")
  got = to_numpy(builder.as_dataset(split="train"))
  assert [a.shape for a in got["points"]] == [(2, 3), (4, 3)]
  assert got["label"].tolist() == [7, 8]


PAIRING_CASES = [
    FaultCase("paired-row-counts", errors.SchemaError, [
        r"X\.npy \(3 rows\)", r"y\.npy \(2 rows\)", "'image': 3, 'label': 2",
        r"same examples in the same order \(X\[i\] with y\[i\]\)"]).param(
            {"image": "X.npy", "label": "y.npy"}, {"X.npy": np.zeros((3, 2)), "y.npy": np.zeros(2)},
            "y.npy", np.zeros(3)),
    FaultCase("paired-file-counts", errors.SourceError, [
        r"different numbers of files \{'image': 2, 'label': 1\}", r"X_1\.npy", "pair up in sorted order"]).param(
            {"image": "X_*.npy", "label": "y_*.npy"},
            {"X_0.npy": np.zeros((3, 2)), "X_1.npy": np.zeros((3, 2)), "y_0.npy": np.zeros(3)},
            "y_1.npy", np.zeros(3)),
    FaultCase("listed-together-dtype", errors.SchemaError, [
        "'array' is float64", r"X\.npy", r"y\.npy", "never cast silently",
        r"splits=\{'train': \{'image': 'X\.npy', 'label': 'y\.npy'\}\}", r"np\.savez\(path, image=X, label=y\)"]).param(
            ["X.npy", "y.npy"], {"X.npy": np.zeros((3, 2)), "y.npy": np.zeros(3, np.int64)},
            "y.npy", np.zeros((3, 2))),
]


@pytest.mark.parametrize("case, split, arrays, repaired_name, repaired", PAIRING_CASES)
def test_mispaired_files(tmp_path, case, split, arrays, repaired_name, repaired):
  sources = tmp_path / "sources"
  sources.mkdir()
  for name, array in arrays.items():
    np.save(sources / name, array)
  data_dir = tmp_path / "tfds"
  rebuilt = faults.check_fault(
      case, lambda: _build(data_dir, {"train": split}, data_root=str(sources)),
      lambda: np.save(sources / repaired_name, repaired), [sources], data_dir,
  )
  assert rebuilt.info.splits["train"].num_examples > 0


@pytest.mark.parametrize(
    "splits, fragments",
    [
        pytest.param({"train": {"image": "X.npy"}, "test": ["X.npy"]}, ["not a mix"], id="mixed"),
        pytest.param({"train": {"a/b": "X.npy"}}, ["feature name 'a/b'", "without '/'"], id="slash"),
        pytest.param({"train": {"c d": "X.npy"}}, ["feature name 'c d' is not a valid", "letters, digits and _.-"],
                     id="space"),
        pytest.param({"train": {"image": []}}, ["feature 'image' lists no files"], id="empty"),
        pytest.param({"train": {"image": "z.npz"}}, ["'image' lists", "z.npz", "list it without a mapping"],
                     id="npz-in-mapping"),
    ],
)
def test_invalid_feature_mappings(tmp_path, splits, fragments):
  np.save(tmp_path / "X.npy", GOOD)
  np.savez(tmp_path / "z.npz", x=GOOD)
  with pytest.raises(errors.ConfigError) as raised:
    _build(tmp_path / "tfds", splits, data_root=str(tmp_path))
  faults.assert_message(raised.value, [re.escape(fragment) for fragment in fragments])
  faults.assert_nothing_loadable(tmp_path / "tfds")


@pytest.mark.parametrize("shape", [(5, 0), (3, 0, 4)], ids=["5x0", "3x0x4"])
def test_zero_width_arrays_with_a_modest_row_count_build(tmp_path, shape):
  np.save(tmp_path / "empty.npy", np.zeros(shape, np.float32))
  builder = _build(tmp_path / "tfds", {"train": ["empty.npy"]}, data_root=str(tmp_path))
  assert builder.info.splits["train"].num_examples == shape[0]
  got = to_numpy(builder.as_dataset(split="train"))["array"]
  assert got.shape == shape and got.dtype == np.float32


def test_feature_name_config_is_checked(tmp_path):
  np.save(tmp_path / "X.npy", GOOD)
  with pytest.raises(errors.ConfigError, match=r"numpy_arrays config 'hostile': feature_name: feature name "
                                               r"'\.\./x' is not a valid TFDS feature name"):
    _build(tmp_path / "tfds", {"train": ["X.npy"]}, data_root=str(tmp_path), feature_name="../x")
  faults.assert_nothing_loadable(tmp_path / "tfds")


def test_doc_example_runs(tmp_path, monkeypatch):
  """The pairing example of docs/numpy_arrays.md, as written there."""
  doc = (faults.REPO / "docs" / "numpy_arrays.md").read_text()
  example = re.search(r"```python\n(# Pairing.*?)```", doc, re.S).group(1)
  monkeypatch.chdir(tmp_path)
  namespace: dict = {}
  exec(compile(example, "docs/numpy_arrays.md", "exec"), namespace)  # pylint: disable=exec-used
  assert json.loads(json.dumps(namespace["config"].splits))["train"] == {"image": "X_train.npy", "label": "y_train.npy"}
  assert namespace["train"]["label"].tolist() == namespace["y_train"].tolist()
