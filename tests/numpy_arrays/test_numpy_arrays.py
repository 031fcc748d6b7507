"""Tests of the numpy_arrays builder: exact round trips, shapes, splits, errors, provenance."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tensorflow_datasets.core.dataset_info import DatasetInfoFileError

import tfds_builders
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.numpy_arrays import Builder
from tfds_builders.numpy_arrays import BuilderConfig
from tfds_builders.numpy_arrays import npy_files
from tfds_builders.numpy_arrays import to_numpy

from tests import helpers

DUMMY_DATA = helpers.REPO / "dummy_data" / "numpy_arrays"
BUILDER_DIR = helpers.REPO / "tfds_builders" / "numpy_arrays"

DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
    "uint64", "float16", "float32", "float64", "complex64", "complex128",
)
# Every dtype in native order, and the multi-byte ones in big-endian too.
DTYPE_ORDERS = [
    pytest.param(
        np.dtype(name).newbyteorder(order), id=name if order == "<" else f"{name}-big-endian"
    )
    for name in DTYPES
    for order in ("<", ">")
    if order == "<" or np.dtype(name).itemsize > 1
]
# Bit patterns of special floats: NaNs with payloads and sign, -0.0, infs,
# the smallest subnormal and the largest finite value.
_SPECIAL_BITS = {
    2: [0x7E01, 0xFE01, 0x7C01, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x7BFF],
    4: [0x7FC00001, 0xFFC0ABCD, 0x7F800001, 0x80000000, 0x7F800000,
        0xFF800000, 0x00000001, 0x7F7FFFFF],
    8: [0x7FF8000000000001, 0xFFF8DEADBEEF0000, 0x7FF0000000000001,
        0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
        0x0000000000000001, 0x7FEFFFFFFFFFFFFF],
}


# ----------------------------------------------------------------- helpers --


def values(dtype: np.dtype | str, shape: Sequence[int], seed: int = 0) -> np.ndarray:
  """Deterministic test values of `dtype` covering its extremes and specials."""
  dtype = np.dtype(dtype)
  native = dtype.newbyteorder("=")
  size = int(np.prod(shape, dtype=np.int64))
  rng = np.random.default_rng(seed)
  if native.kind == "b":
    flat = rng.integers(0, 2, size).astype(bool)
  elif native.kind in "iu":
    info = np.iinfo(native)
    flat = rng.integers(info.min, info.max, size, dtype=native, endpoint=True)
    flat[: min(size, 2)] = [info.min, info.max][: min(size, 2)]
  else:
    real = np.dtype(f"f{native.itemsize // 2}") if native.kind == "c" else native
    specials = np.array(_SPECIAL_BITS[real.itemsize], f"u{real.itemsize}").view(real)
    parts = rng.standard_normal(size * (2 if native.kind == "c" else 1))
    parts = parts.astype(real)
    count = min(len(parts), len(specials))
    parts[:count] = specials[:count]
    flat = parts.view(native) if native.kind == "c" else parts
  return flat.reshape(shape).astype(dtype)


def native(array: np.ndarray) -> np.ndarray:
  """`array` with the same values in native byte order and C layout."""
  # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
  return array.astype(array.dtype.newbyteorder("="), order="C")


def assert_bit_exact(actual: Any, expected: np.ndarray) -> None:
  """Same native dtype, same shape, same bytes (NaN payloads and -0.0 too)."""
  expected = native(np.asarray(expected))
  assert actual.dtype == expected.dtype
  assert actual.dtype.isnative
  assert np.shape(actual) == expected.shape
  assert actual.tobytes() == expected.tobytes()


def save(path: pathlib.Path, array: np.ndarray, **kwargs) -> pathlib.Path:
  """`np.save` to `path` (parents created); returns the path."""
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, array, **kwargs)
  return path


def savez(path: pathlib.Path, compressed: bool = False, **arrays: np.ndarray) -> pathlib.Path:
  """`np.savez` (or `np.savez_compressed`) to `path`; returns the path."""
  path.parent.mkdir(parents=True, exist_ok=True)
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  return path


make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)
assert_build_fails = functools.partial(helpers.assert_build_fails, Builder)


def examples(builder: tfds.core.DatasetBuilder, split: str = "train") -> list[dict]:
  """The examples of a split as NumPy, in stored (= generation) order."""
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def column(builder: tfds.core.DatasetBuilder, feature: str = "array", split: str = "train") -> list:
  """One feature's values over a split, in stored order."""
  return [example[feature] for example in examples(builder, split)]


def raw_feature_keys(builder: tfds.core.DatasetBuilder, split: str = "train") -> set[str]:
  """The feature names actually present in the stored tf.train.Examples."""
  files = tf.io.gfile.glob(f"{builder.data_dir}/*-{split}.tfrecord-*")
  keys: set[str] = set()
  for record in tf.data.TFRecordDataset(files):
    keys |= set(tf.train.Example.FromString(record.numpy()).features.feature)
  return keys


# ------------------------------------------------ TFDS's own builder tests --


class NumpyArraysDemoTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled `demo` config: .npz images and labels, rows layout."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["demo"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 8, "test": 2}
  SKIP_CHECKSUMS = True


class NumpyArraysVariableShapesTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled `variable_shapes` config: one .npy per example."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["variable_shapes"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 3}
  SKIP_CHECKSUMS = True


# ------------------------------------------------------- bundled configs --


def test_demo_equals_bundled_npz_bit_exact(tmp_path):
  builder = tfds.builder("numpy_arrays/demo", data_dir=str(tmp_path))
  builder.download_and_prepare()
  features = builder.info.features
  assert set(features) == {"image", "label"}
  assert features["image"].shape == (4, 4, 3)
  assert features["image"].np_dtype == np.uint8
  assert features["label"].shape == ()
  assert features["label"].np_dtype == np.int64
  for split, files in {"train": ["site_a", "site_b"], "test": ["site_c"]}.items():
    sources = [np.load(DUMMY_DATA / split / f"{name}.npz") for name in files]
    expected = {
        key: np.concatenate([source[key] for source in sources])
        for key in ("image", "label")
    }
    got = to_numpy(builder.as_dataset(split=split))
    assert set(got) == {"image", "label"}
    for key in expected:
      assert_bit_exact(got[key], expected[key])
  assert builder.info.splits["train"].num_examples == 5 + 3


def test_variable_shapes_config_infers_none_dim_and_round_trips(tmp_path):
  builder = tfds.builder("numpy_arrays/variable_shapes", data_dir=str(tmp_path))
  builder.download_and_prepare()
  feature = builder.info.features["points"]
  assert feature.shape == (None, 2)
  assert feature.np_dtype == np.float32
  got = to_numpy(builder.as_dataset(split="train"))["points"]
  assert isinstance(got, list)
  assert [a.shape for a in got] == [(3, 2), (5, 2), (1, 2)]
  for index, array in enumerate(got):
    assert_bit_exact(array, np.load(DUMMY_DATA / "variable" / f"points_{index}.npy"))


# ------------------------------------------------ bit-exact round trips --


@pytest.mark.parametrize("dtype", DTYPE_ORDERS)
def test_rows_round_trip_every_dtype(tmp_path, dtype):
  c_order = values(dtype, (4, 2, 3), seed=1)
  f_order = np.asfortranarray(values(dtype, (3, 2, 3), seed=2))
  assert f_order.flags.f_contiguous and not f_order.flags.c_contiguous
  sources = [save(tmp_path / "a.npy", c_order), save(tmp_path / "b.npy", f_order)]
  # The inputs on disk really have the byte order and layout under test.
  headers = [npy_files.ArraySource(path).header for path in sources]
  assert [h.dtype.str for h in headers] == [dtype.str, dtype.str]
  assert [h.fortran_order for h in headers] == [False, True]
  builder = build(tmp_path, splits={"train": sources})
  feature = builder.info.features["array"]
  assert feature.shape == (2, 3)
  assert feature.np_dtype == dtype.newbyteorder("=")
  got = column(builder)
  assert len(got) == 7
  for actual, expected in zip(got, [*c_order, *f_order], strict=True):
    assert_bit_exact(actual, expected)


@pytest.mark.parametrize("dtype", DTYPE_ORDERS)
def test_files_round_trip_every_dtype(tmp_path, dtype):
  arrays = [values(dtype, (2, 3), seed=3), np.asfortranarray(values(dtype, (2, 3), seed=4))]
  _assert_files_round_trip(tmp_path, arrays, (2, 3))


@pytest.mark.parametrize("dtype", DTYPE_ORDERS)
def test_zero_d_arrays_under_files(tmp_path, dtype):
  arrays = [values(dtype, (), seed=seed) for seed in range(3)]
  assert all(a.ndim == 0 for a in arrays)
  _assert_files_round_trip(tmp_path, arrays, ())


def _assert_files_round_trip(tmp_path, arrays: list[np.ndarray], shape: tuple[int, ...]) -> None:
  """One .npy file an example (layout files): the feature has the arrays' shape and every value is bit-exact."""
  builder = build(
      tmp_path,
      splits={"train": [save(tmp_path / f"{i}.npy", a) for i, a in enumerate(arrays)]},
      layout="files",
  )
  assert builder.info.features["array"].shape == shape
  got = column(builder)
  assert len(got) == len(arrays)
  for actual, expected in zip(got, arrays, strict=True):
    assert_bit_exact(actual, expected)


@pytest.mark.parametrize("dtype", DTYPE_ORDERS)
def test_one_dim_rows_become_scalars(tmp_path, dtype):
  array = values(dtype, (9,), seed=5)
  builder = build(tmp_path, splits={"train": [save(tmp_path / "a.npy", array)]})
  assert builder.info.features["array"].shape == ()
  got = column(builder)
  assert len(got) == 9
  for actual, expected in zip(got, array, strict=True):
    assert_bit_exact(actual, expected)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", ">f8", "complex64", ">c16"])
def test_special_floats_keep_their_bits(tmp_path, dtype):
  dtype = np.dtype(dtype)
  real_size = dtype.itemsize // (2 if dtype.kind == "c" else 1)
  bits = np.array(_SPECIAL_BITS[real_size], f"u{real_size}")
  # Byte-swapping a native array keeps bit patterns (no float conversion).
  array = bits.view(dtype.newbyteorder("=")).astype(dtype)
  builder = build(tmp_path, splits={"train": [save(tmp_path / "s.npy", array)]}, layout="files")
  (got,) = column(builder)
  assert_bit_exact(got, array)
  # Each NaN payload, -0.0 and inf came back as the very same bit pattern.
  stored = got.view(f"f{real_size}").view(f"u{real_size}")
  assert stored.tolist() == bits.tolist()


def test_big_endian_and_little_endian_files_share_one_feature(tmp_path):
  little = values("<i4", (3, 2), seed=6)
  big = values(">i4", (2, 2), seed=7)
  builder = build(
      tmp_path,
      splits={"train": [save(tmp_path / "le.npy", little), save(tmp_path / "be.npy", big)]},
  )
  assert builder.info.features["array"].np_dtype == np.int32
  got = to_numpy(builder.as_dataset(split="train"))["array"]
  assert_bit_exact(got, np.concatenate([little, native(big)]))


# ------------------------------------------------------- variable shapes --


def test_one_varying_dim_under_files(tmp_path):
  arrays = [values("int16", (n, 3), seed=n) for n in (2, 7, 1)]
  builder = build(
      tmp_path,
      splits={"train": [save(tmp_path / f"{i}.npy", a) for i, a in enumerate(arrays)]},
      layout="files",
  )
  assert builder.info.features["array"].shape == (None, 3)
  assert raw_feature_keys(builder) == {"array"}
  for actual, expected in zip(column(builder), arrays, strict=True):
    assert_bit_exact(actual, expected)


@pytest.mark.parametrize("dtype", ["float32", ">c16", "uint64", "bool", "int8"])
def test_several_varying_dims_store_shape_and_value(tmp_path, dtype):
  arrays = [values(dtype, shape, seed=i) for i, shape in enumerate([(2, 3), (4, 1), (1, 5)])]
  builder = build(
      tmp_path,
      splits={"train": [save(tmp_path / f"{i}.npy", a) for i, a in enumerate(arrays)]},
      layout="files",
  )
  assert builder.info.features["array"].shape == (None, None)
  assert raw_feature_keys(builder) == {"array/shape", "array/value"}
  for actual, expected in zip(column(builder), arrays, strict=True):
    assert_bit_exact(actual, expected)


def test_varying_dims_under_rows(tmp_path):
  one = [values("float64", (2, n, 4), seed=n) for n in (3, 5)]
  builder = build(tmp_path / "one", splits={
      "train": [save(tmp_path / f"one/{i}.npy", a) for i, a in enumerate(one)]})
  assert builder.info.features["array"].shape == (None, 4)
  for actual, expected in zip(column(builder), [*one[0], *one[1]], strict=True):
    assert_bit_exact(actual, expected)

  many = [values("int16", shape, seed=7) for shape in [(2, 3, 4), (3, 5, 6)]]
  builder = build(tmp_path / "many", splits={
      "train": [save(tmp_path / f"many/{i}.npy", a) for i, a in enumerate(many)]})
  assert builder.info.features["array"].shape == (None, None)
  for actual, expected in zip(column(builder), [*many[0], *many[1]], strict=True):
    assert_bit_exact(actual, expected)


@pytest.mark.parametrize(
    "shapes, feature_shape",
    [([(2, 2), (0, 2), (1, 2)], (None, 2)), ([(2, 3), (0, 1), (1, 0)], (None, None))],
    ids=["one-varying", "two-varying"],
)
def test_empty_example_arrays_round_trip(tmp_path, shapes, feature_shape):
  arrays = [values("float32", shape, seed) for seed, shape in enumerate(shapes)]
  builder = build(
      tmp_path,
      splits={"train": [save(tmp_path / f"{i}.npy", a) for i, a in enumerate(arrays)]},
      layout="files",
  )
  assert builder.info.features["array"].shape == feature_shape
  for actual, expected in zip(column(builder), arrays, strict=True):
    assert_bit_exact(actual, expected)


def test_rows_of_zero_size(tmp_path):
  array = np.zeros((3, 0), np.int16)
  builder = build(tmp_path, splits={"train": [save(tmp_path / "a.npy", array)]})
  assert builder.info.features["array"].shape == (0,)
  got = column(builder)
  assert len(got) == 3
  for actual in got:
    assert_bit_exact(actual, np.zeros(0, np.int16))


def test_uint32_keeps_full_range_with_one_varying_dim(tmp_path):
  arrays = [np.array([[0, 2**32 - 1]], np.uint32), np.array([[7, 8], [2**31, 1]], ">u4")]
  builder = build(
      tmp_path,
      splits={"train": [save(tmp_path / f"{i}.npy", a) for i, a in enumerate(arrays)]},
      layout="files",
  )
  assert builder.info.features["array"].shape == (None, 2)
  assert builder.info.features["array"].np_dtype == np.uint32
  for actual, expected in zip(column(builder), arrays, strict=True):
    assert_bit_exact(actual, expected)


# ------------------------------------------------------------- npz modes --


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_npz_members_as_features_rows(tmp_path, compressed):
  first = {"x": values(">f4", (4, 3), 1), "y": values("int64", (4,), 2),
           "z": np.asfortranarray(values("complex64", (4, 2, 2), 3))}
  second = {"x": values("float32", (2, 3), 4), "y": values(">i8", (2,), 5),
            "z": values("complex64", (2, 2, 2), 6)}
  builder = build(tmp_path, splits={"train": [
      savez(tmp_path / "a.npz", compressed, **first), savez(tmp_path / "b.npz", compressed, **second)]})
  features = builder.info.features
  assert set(features) == {"x", "y", "z"}
  assert (features["x"].shape, features["y"].shape, features["z"].shape) == ((3,), (), (2, 2))
  got = to_numpy(builder.as_dataset(split="train"))
  for name in "xyz":
    assert_bit_exact(got[name], np.concatenate([native(first[name]), native(second[name])]))


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_npz_members_as_features_files(tmp_path, compressed):
  archives = [{"image": values("uint8", (2, 2), i), "mask": values("bool", (2, 2), i + 9)}
              for i in range(2)]
  builder = build(
      tmp_path,
      splits={"train": [savez(tmp_path / f"{i}.npz", compressed, **a) for i, a in enumerate(archives)]},
      layout="files",
  )
  got = examples(builder)
  assert len(got) == 2
  for example, archive in zip(got, archives, strict=True):
    assert set(example) == {"image", "mask"}
    for name in archive:
      assert_bit_exact(example[name], archive[name])


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_npz_members_as_examples(tmp_path, compressed):
  members = {"p": values("float64", (3, 2), 1), "q": values(">f8", (5, 2), 2)}
  archive = savez(tmp_path / "pts.npz", compressed, **members)
  files = build(tmp_path / "files", splits={"train": [archive]}, layout="files",
                npz_members="examples", feature_name="points")
  assert files.info.features["points"].shape == (None, 2)
  got = column(files, "points")
  assert len(got) == 2
  for actual, expected in zip(got, members.values(), strict=True):
    assert_bit_exact(actual, expected)

  rows = build(tmp_path / "rows", splits={"train": [archive]}, npz_members="examples",
               feature_name="points")
  assert rows.info.features["points"].shape == (2,)
  got = column(rows, "points")
  assert len(got) == 8
  for actual, expected in zip(got, [*members["p"], *members["q"]], strict=True):
    assert_bit_exact(actual, expected)


def test_npz_fortran_member_larger_than_a_chunk_stays_row_aligned(tmp_path):
  # A Fortran-ordered member is read whole while a C-ordered one is read in
  # CHUNK_BYTES blocks: rows of both must still pair up.
  width = 4096
  rows = npy_files.CHUNK_BYTES // (width * 8) + 3
  wide = np.asfortranarray(np.arange(rows * width, dtype=np.float64).reshape(rows, width))
  ids = np.arange(rows, dtype=np.int64)
  builder = build(tmp_path, splits={"train": [savez(tmp_path / "a.npz", wide=wide, ids=ids)]})
  got = to_numpy(builder.as_dataset(split="train"))
  assert_bit_exact(got["ids"], ids)
  assert_bit_exact(got["wide"], wide)


# ---------------------------------------------------------------- splits --


def test_splits_mapping_and_order(tmp_path):
  a, b, c = (values("int32", (n, 2), n) for n in (3, 4, 2))
  builder = build(tmp_path, splits={
      "train": [save(tmp_path / "a.npy", a)],
      "validation": [save(tmp_path / "b.npy", b), save(tmp_path / "c.npy", c)],
  })
  assert {name: info.num_examples for name, info in builder.info.splits.items()} == {
      "train": 3, "validation": 6}
  assert_bit_exact(to_numpy(builder.as_dataset(split="train"))["array"], a)
  assert_bit_exact(to_numpy(builder.as_dataset(split="validation"))["array"],
                   np.concatenate([b, c]))


def _fraction_ids(tmp_path: pathlib.Path, seed: int, tag: str) -> dict[str, list[int]]:
  builder = build(
      tmp_path / tag,
      paths=[tmp_path / "data"],
      split_fractions={"train": 0.7, "test": 0.3},
      split_seed=seed,
  )
  return {
      split: [int(v) for v in column(builder, split=split)]
      for split in ("train", "test")
  }


def test_split_fractions_are_deterministic_disjoint_and_complete(tmp_path):
  save(tmp_path / "data/a.npy", np.arange(0, 60, dtype=np.int64))
  save(tmp_path / "data/sub/b.npy", np.arange(60, 100, dtype=np.int64))
  first = _fraction_ids(tmp_path, seed=0, tag="first")
  again = _fraction_ids(tmp_path, seed=0, tag="again")
  assert first == again
  train, test = set(first["train"]), set(first["test"])
  assert len(first["train"]) == len(train) and len(first["test"]) == len(test)
  assert not train & test
  assert train | test == set(range(100))
  assert len(train) + len(test) == 100
  assert 50 <= len(train) <= 90  # 0.7 of 100, hash-distributed
  other = _fraction_ids(tmp_path, seed=1, tag="other")
  assert other != first
  assert set(other["train"]) | set(other["test"]) == set(range(100))


def test_directories_globs_and_data_root(tmp_path):
  data = tmp_path / "data"
  a = save(data / "x/a.npy", values("uint16", (2, 2), 1))
  b = save(data / "x/deep/b.npy", values("uint16", (3, 2), 2))
  c = save(data / "y/c.npy", values("uint16", (1, 2), 3))
  (data / "x/notes.txt").write_text("not an array")
  builder = build(tmp_path, data_root=str(data), splits={
      "dir": ["x"],            # recursive, .npy only, sorted
      "glob": ["*/c.npy"],     # glob relative to data_root
      "abs": [str(c)],         # absolute path ignores data_root
  })
  counts = {name: info.num_examples for name, info in builder.info.splits.items()}
  assert counts == {"dir": 5, "glob": 1, "abs": 1}
  assert_bit_exact(to_numpy(builder.as_dataset(split="dir"))["array"],
                   np.concatenate([np.load(a), np.load(b)]))
  assert_bit_exact(to_numpy(builder.as_dataset(split="glob"))["array"], np.load(c))


def test_example_keys_are_unique_for_same_named_files(tmp_path):
  save(tmp_path / "data/x/p.npy", np.arange(3))
  save(tmp_path / "data/y/p.npy", np.arange(3, 6))
  builder = make_builder(tmp_path, splits={"train": [tmp_path / "data"]})
  keys = [key for key, _ in builder._split_streams(None, None)["train"]]  # pylint: disable=protected-access
  assert len(keys) == 6
  assert len(set(keys)) == 6, keys


def test_relative_paths_default_to_the_working_directory(tmp_path, monkeypatch):
  array = values("int8", (3,), 1)
  save(tmp_path / "rel/a.npy", array)
  monkeypatch.chdir(tmp_path)
  builder = build(tmp_path, splits={"train": "rel/a.npy"})
  assert_bit_exact(to_numpy(builder.as_dataset(split="train"))["array"], array)


# ---------------------------------------------------------------- errors --


@pytest.mark.parametrize(
    "array, fragments",
    [
        pytest.param(np.array([{"a": 1}, None], dtype=object),
                     ["'|O'", "object arrays", "never read", "convert them to a numeric dtype"], id="object"),
        pytest.param(np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
                     ["structured", "save each field as its own array"], id="structured"),
        pytest.param(np.array(["ab", "c"]), ["unicode string", "encode them to uint8"],
                     id="unicode"),
        pytest.param(np.array([b"ab", b"c"]), ["byte-string", "store them as uint8"],
                     id="bytes"),
        pytest.param(np.array(["2024-01-01"], dtype="datetime64[D]"),
                     ["datetime64", "a.view('int64')", "record the unit"], id="datetime64"),
        pytest.param(np.array([5], dtype="timedelta64[s]"),
                     ["timedelta64", "a.view('int64')"], id="timedelta64"),
    ],
)
def test_unsupported_dtypes_are_refused_naming_the_file(tmp_path, array, fragments):
  path = save(tmp_path / "bad.npy", array, allow_pickle=True)
  feature = [] if array.dtype.hasobject else ["'array'"]  # object headers are refused before features exist
  assert_build_fails(tmp_path, errors.SchemaError, str(path), *feature, *fragments,
                     splits={"train": [path]}, layout="files")


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="longdouble is float64 here")
@pytest.mark.parametrize("dtype", [np.longdouble, np.clongdouble], ids=["float128", "complex256"])
def test_extended_precision_is_refused(tmp_path, dtype):
  path = save(tmp_path / "long.npy", np.ones(3, dtype))
  assert_build_fails(tmp_path, errors.SchemaError, str(path), "TensorFlow cannot hold",
                     "cast explicitly", splits={"train": [path]})


def test_pickle_renamed_npy_is_refused_without_unpickling(tmp_path):
  path = tmp_path / "evil.npy"
  marker = tmp_path / "unpickled"

  path.write_bytes(pickle.dumps(_Touch(str(marker))))
  assert_build_fails(tmp_path, errors.SourceError, str(path), "not a valid .npy array",
                     "np.save", splits={"train": [path]})
  assert not marker.exists()


class _Touch:
  """Creates a file when unpickled: proves a loader unpickled it."""

  def __init__(self, path: str):
    self.path = path

  def __reduce__(self):
    return (pathlib.Path.touch, (pathlib.Path(self.path),))


# Each row's `config` writes its inputs under tmp_path and returns the config.


def _dtype_mismatch(tmp: pathlib.Path) -> dict:
  a = save(tmp / "a.npy", np.zeros((2, 3), np.float32))
  b = save(tmp / "b.npy", np.zeros((2, 3), np.float64))
  return {"splits": {"train": [a, b]}}


def _rank_mismatch(tmp: pathlib.Path) -> dict:
  a = save(tmp / "a.npy", np.zeros((2, 3), np.int8))
  b = save(tmp / "b.npy", np.zeros((2, 3, 1), np.int8))
  return {"splits": {"train": [a, b]}}


def _npz_member_sets(tmp: pathlib.Path) -> dict:
  a = savez(tmp / "a.npz", x=np.zeros(2), y=np.zeros(2))
  b = savez(tmp / "b.npz", x=np.zeros(2), w=np.zeros(2))
  return {"splits": {"train": [a, b]}, "data_root": str(tmp)}


def _unequal_first_axes(tmp: pathlib.Path) -> dict:
  return {"splits": {"train": [savez(tmp / "a.npz", x=np.zeros((3, 2)), y=np.zeros(2))]}}


def _zero_d_under_rows(tmp: pathlib.Path) -> dict:
  return {"splits": {"train": [save(tmp / "scalar.npy", np.float32(1.5))]}}


def _uint32_two_varying_dims(tmp: pathlib.Path) -> dict:
  paths = [save(tmp / f"{i}.npy", np.zeros(shape, np.uint32)) for i, shape in enumerate([(2, 3), (3, 2)])]
  return {"splits": {"train": paths}, "layout": "files"}


def _missing(pattern: str) -> Callable[[pathlib.Path], dict]:
  return lambda tmp: {"splits": {"train": [pattern]}, "data_root": str(tmp)}


def _directory_without_arrays(tmp: pathlib.Path) -> dict:
  (tmp / "empty").mkdir()
  (tmp / "empty/readme.txt").write_text("no arrays")
  return {"splits": {"train": ["empty"]}, "data_root": str(tmp)}


def _truncated_npz_member(tmp: pathlib.Path) -> dict:
  full = save(tmp / "full.npy", values("int32", (4, 3))).read_bytes()
  with zipfile.ZipFile(tmp / "cut.npz", "w") as zf:
    zf.writestr("x.npy", full[:-4])
  return {"splits": {"train": [tmp / "cut.npz"]}, "layout": "files"}


def _not_a_zip(tmp: pathlib.Path) -> dict:
  (tmp / "fake.npz").write_bytes(b"not a zip archive")
  return {"splits": {"train": [tmp / "fake.npz"]}}


def _split_with_zero_examples(tmp: pathlib.Path) -> dict:
  a = save(tmp / "a.npy", np.zeros((2, 3), np.float32))
  empty = save(tmp / "empty.npy", np.zeros((0, 3), np.float32))
  return {"splits": {"train": [a], "test": [empty]}}


def _split_fraction_with_zero_examples(tmp: pathlib.Path) -> dict:
  return {"paths": [save(tmp / "one.npy", np.zeros((1, 3), np.float32))],
          "split_fractions": {"train": 0.5, "test": 0.5}}


_CONFIG = "numpy_arrays config 't'"  # every ConfigError names the config
Failure = helpers.Failure
FAILURES = [
    pytest.param(Failure(errors.SchemaError, ["'array'", "float32", "float64", "{tmp}/a.npy", "{tmp}/b.npy",
                                              "never cast"], _dtype_mismatch), id="dtype-mismatch-between-files"),
    pytest.param(Failure(errors.SchemaError, ["'array'", "1 dims", "2 in", "{tmp}/a.npy", "{tmp}/b.npy", "Reshape"],
                         _rank_mismatch), id="rank-mismatch-between-files"),
    pytest.param(Failure(errors.SchemaError, ["b.npz", "a.npz", "missing ['y']", "extra ['w']",
                                              "npz_members='examples'"], _npz_member_sets),
                 id="npz-with-different-member-sets"),
    pytest.param(Failure(errors.SchemaError, ["a.npz", "'x': 3", "'y': 2", "layout='files'"], _unequal_first_axes),
                 id="rows-layout-needs-equal-first-axes"),
    pytest.param(Failure(errors.SchemaError, ["{tmp}/scalar.npy", "0-d", "layout='files'"], _zero_d_under_rows),
                 id="zero-d-array-under-rows"),
    pytest.param(Failure(errors.SchemaError, ["'array'", "uint32", "(None, None)", "uint64", "pad to fixed shapes"],
                         _uint32_two_varying_dims), id="uint32-with-two-varying-dims"),
    pytest.param(Failure(errors.SourceError, ["'missing.npy'", "{tmp}", "Check the path"], _missing("missing.npy")),
                 id="missing-path"),
    pytest.param(Failure(errors.SourceError, ["'nothing/*.npy'", "{tmp}", "Check the path"],
                         _missing("nothing/*.npy")), id="empty-glob"),
    pytest.param(Failure(errors.SourceError, ["'empty'", ".npy/.npz"], _directory_without_arrays),
                 id="directory-without-arrays"),
    pytest.param(Failure(errors.SourceError, ["{tmp}/cut.npz[x.npy]", "truncated", f"expected {4 * 3 * 4} data bytes"],
                         _truncated_npz_member), id="truncated-npz-member"),
    pytest.param(Failure(errors.SourceError, ["{tmp}/fake.npz", "not a valid .npz"], _not_a_zip),
                 id="not-a-zip-npz"),
    pytest.param(Failure(errors.SourceError, ["'test'", "no examples"], _split_with_zero_examples),
                 id="split-with-zero-examples"),
    pytest.param(Failure(errors.SourceError, ["no examples"], _split_fraction_with_zero_examples),
                 id="split-fraction-with-zero-examples"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "layout='columns'", "'rows', 'files'"],
                         {"splits": {"train": ["x"]}, "layout": "columns"}), id="layout"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "npz_members='arrays'", "'features', 'examples'"],
                         {"splits": {"train": ["x"]}, "npz_members": "arrays"}), id="npz_members"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "either `splits`", "not both or neither"],
                         {"splits": {"train": ["x"]}, "paths": ["x"], "split_fractions": {"train": 1.0}}), id="both"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "either `splits`", "not both or neither"], {}), id="neither"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "sum to 1", "0.9"],
                         {"paths": ["x"], "split_fractions": {"train": 0.5, "test": 0.4}}), id="fractions-sum"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "split_fractions", "must be given"], {"paths": ["x"]}),
                 id="fractions-missing"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "split_fractions only applies with `paths`"],
                         {"splits": {"train": ["x"]}, "split_fractions": {"train": 1.0}}), id="fractions-with-splits"),
    pytest.param(Failure(errors.ConfigError, [_CONFIG, "splits ['test'] list no paths"],
                         {"splits": {"train": ["x"], "test": []}}), id="empty-split"),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_build_fails(tmp_path, failure):
  helpers.assert_fails_as(Builder, tmp_path, failure)


def truncate(path: pathlib.Path, drop: int = 5) -> int:
  """Drops the last `drop` bytes of `path`; returns its new size."""
  data = path.read_bytes()
  path.write_bytes(data[:-drop])
  return len(data) - drop


@pytest.mark.parametrize("layout", ["rows", "files"])
def test_truncated_npy(tmp_path, layout):
  path = save(tmp_path / "cut.npy", values("float64", (4, 3)))
  size = truncate(path)
  assert_build_fails(tmp_path, errors.SourceError, str(path), "truncated",
                     f"{size} bytes on disk", f"needs {size + 5}",
                     splits={"train": [path]}, layout=layout)


# ---------------------------------------------------------------- safety --


def test_sources_are_never_modified(tmp_path):
  data = tmp_path / "data"
  save(data / "a.npy", values(">f8", (5, 2)))
  save(data / "f.npy", np.asfortranarray(values("<f8", (3, 2))))
  savez(data / "z.npz", True, array=values("float64", (2, 2)))
  before = helpers.file_hashes(data)
  assert len(before) == 3
  build(tmp_path, splits={"train": [data / "a.npy", data / "f.npy"], "test": [data / "z.npz"]},
        npz_members="examples")
  assert helpers.file_hashes(data) == before


def test_failed_build_leaves_no_dataset_and_rerun_succeeds(tmp_path):
  good = values("float32", (3, 4), 1)
  bad = values("float32", (2, 4), 2)
  first = save(tmp_path / "data/0.npy", good)
  second = save(tmp_path / "data/1.npy", bad)
  truncate(second)
  config = {"splits": {"train": [first, second]}, "name": "mine"}
  data_dir = tmp_path / "tfds"
  dataset_dir = data_dir / "numpy_arrays" / "mine" / "1.0.0"

  # Headers are intact, so planning succeeds and the cut shows up while the
  # first file's examples are already being written.
  assert make_builder(tmp_path, **config).info.features["array"].shape == (4,)
  assert_build_fails(tmp_path, errors.SourceError, str(second), "truncated", **config)
  assert not (dataset_dir / "dataset_info.json").exists()
  with pytest.raises(DatasetInfoFileError, match="dataset_info.json"):
    tfds.builder_from_directory(str(dataset_dir))
  # The same call succeeds after the rerun below.
  with pytest.raises(ValueError, match="BuilderConfig mine not found"):
    tfds.load("numpy_arrays/mine", data_dir=str(data_dir), download=False)
  leftovers = list(data_dir.rglob("*.tfrecord*"))
  assert not leftovers, leftovers

  save(second, bad)  # repaired
  builder = build(tmp_path, **config)
  assert builder.info.splits["train"].num_examples == 5
  reloaded = tfds.builder_from_directory(str(dataset_dir))
  assert_bit_exact(to_numpy(reloaded.as_dataset(split="train"))["array"],
                   np.concatenate([good, bad]))
  loaded = tfds.load("numpy_arrays/mine", data_dir=str(data_dir), download=False, split="train")
  assert_bit_exact(to_numpy(loaded)["array"], np.concatenate([good, bad]))


# ------------------------------------------------------------ provenance --


def test_provenance_is_recorded(tmp_path):
  a = save(tmp_path / "data/a.npy", values("uint16", (3, 2)))
  z = savez(tmp_path / "data/z.npz", array=values("uint16", (1, 2)))
  builder = build(tmp_path, name="prov", splits={"train": ["a.npy"], "test": ["z.npz"]},
                  data_root=str(tmp_path / "data"), npz_members="examples")
  record = tfds.builder_from_directory(builder.data_dir).info.metadata["provenance"]
  assert record["builder"] == "numpy_arrays"
  assert record["package_version"] == tfds_builders.__version__
  assert record["tfds_version"] == tfds.__version__
  assert record["config"]["name"] == "prov"
  assert record["config"]["splits"] == {"train": ["a.npy"], "test": ["z.npz"]}
  assert record["config"]["layout"] == "rows"
  assert record["config"]["npz_members"] == "examples"
  assert record["config"]["data_root"] == str(tmp_path / "data")
  assert record["config"]["version"] == ""  # a custom config sets no version
  assert record["sources"] == {"train": [str(a)], "test": [f"{z}[array.npy]"]}
  assert record["features"] == {"array": {"dtype": "uint16", "shape": [2]}}
  assert record["built_at"]
  assert provenance.read_provenance(builder.data_dir) == record


# ------------------------------------------------- registration and CLI --


def test_registered_by_name(tmp_path):
  assert "numpy_arrays" in tfds.list_builders(with_community_datasets=False)
  dataset = tfds.load("numpy_arrays/demo", data_dir=str(tmp_path), split="test")
  got = to_numpy(dataset)
  expected = np.load(DUMMY_DATA / "test/site_c.npz")
  assert_bit_exact(got["image"], expected["image"])
  assert_bit_exact(got["label"], expected["label"])


def test_custom_config_through_tfds_builder(tmp_path):
  array = values("complex64", (4, 2), 3)
  path = save(tmp_path / "c.npy", array)
  builder = tfds.builder(
      "numpy_arrays",
      config=BuilderConfig(name="mine", splits={"train": [str(path)]}),
      data_dir=str(tmp_path / "tfds"),
  )
  assert isinstance(builder, Builder)
  builder.download_and_prepare()
  assert builder.data_dir == str(tmp_path / "tfds/numpy_arrays/mine/1.0.0")
  assert_bit_exact(to_numpy(builder.as_dataset(split="train"))["array"], array)


@pytest.mark.slow
def test_tfds_build_cli_with_json_config(tmp_path):
  array = values(">f8", (4, 3), 11)
  path = save(tmp_path / "src/a.npy", array)
  data_dir = tmp_path / "tfds"
  config = json.dumps({"name": "mine", "splits": {"train": [str(path)]}})
  tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
  result = subprocess.run(
      [str(tfds_cli), "build", str(BUILDER_DIR), "--data_dir", str(data_dir),
       "--config", config],
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
      capture_output=True, text=True, timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  builder = tfds.builder_from_directory(str(data_dir / "numpy_arrays/mine/1.0.0"))
  assert builder.info.features["array"].np_dtype == np.float64
  assert_bit_exact(to_numpy(builder.as_dataset(split="train"))["array"], array)
  assert builder.info.metadata["provenance"]["sources"] == {"train": [str(path)]}


# ---------------------------------------------------------------- memory --


def _rss_bytes() -> int:
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_large_npy_rows_are_read_with_bounded_memory(tmp_path):
  path = tmp_path / "big.npy"
  rows, width = 200 * 1024 * 1024 // (1024 * 4), 1024
  out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
  for start in range(0, rows, 4096):
    out[start : start + 4096] = start
  out.flush()
  del out
  source = npy_files.ArraySource(path)
  assert source._is_mappable()  # pylint: disable=protected-access
  chunk_rows = npy_files.rows_per_chunk(source.header)
  assert chunk_rows * width * 4 <= npy_files.CHUNK_BYTES
  baseline = peak = _rss_bytes()
  seen = 0
  for chunk in source.iter_chunks(chunk_rows):
    # Summing reads every byte, faulting every page of the block in.
    row_sums = chunk.sum(axis=1, dtype=np.float64)
    fill = np.arange(seen, seen + len(chunk)) // 4096 * 4096
    np.testing.assert_array_equal(row_sums, fill * width)
    seen += len(chunk)
    peak = max(peak, _rss_bytes())
  assert seen == rows
  assert peak - baseline < 64 * 1024 * 1024, f"RSS grew by {(peak - baseline) >> 20} MiB"
