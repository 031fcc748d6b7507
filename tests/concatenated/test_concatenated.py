"""Tests of the concatenated builder: order, provenance, schema agreement, mixing, compression, errors."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_info import DatasetInfoFileError

from tfds_builders.concatenated import Builder
from tfds_builders.concatenated import BuilderConfig
from tfds_builders.concatenated import schedule
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import shard_writer

from tests import helpers

DUMMY_DATA = helpers.REPO / "dummy_data" / "concatenated"
BUILDER_DIR = helpers.REPO / "tfds_builders" / "concatenated"


# ----------------------------------------------------------------- helpers --


def feature(value) -> tf.train.Feature:
  """A tf.train.Feature from bytes, a list of ints or a list of floats."""
  if isinstance(value, bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  if all(isinstance(v, int) for v in value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=value))
  return tf.train.Feature(float_list=tf.train.FloatList(value=value))


def record(**values) -> bytes:
  return tf.train.Example(
      features=tf.train.Features(feature={k: feature(v) for k, v in values.items()})
  ).SerializeToString()


def site(path: pathlib.Path, first: int, count: int, lengths=(2,)) -> pathlib.Path:
  """A raw source of `count` examples: id, tokens (cycling lengths), name."""
  return helpers.write_records(path, [
      record(id=[first + i], tokens=list(range(lengths[i % len(lengths)])), name=f"n{first + i}".encode())
      for i in range(count)
  ])


def prepared(tmp_path: pathlib.Path, name: str, features: dict, splits: dict[str, list[dict]],
             version: str = "1.0.0") -> str:
  """A prepared TFDS dataset (written by TFDS itself); returns its directory."""
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version=version, features=tfds.features.FeaturesDict(features),
      split_datasets={split: list(enumerate(rows)) for split, rows in splits.items()},
      data_dir=str(tmp_path / "prepared"), disable_shuffling=True,
  )
  return str(builder.data_path)


make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)
assert_build_fails = functools.partial(helpers.assert_build_fails, Builder)


def examples(builder, split: str = "train") -> list[dict]:
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def stored_records(builder, split: str = "train") -> list[bytes]:
  files = [str(builder.data_path / name) for name in builder.info.splits[split].filenames]
  return [r for f in files for r in tf.compat.v1.io.tf_record_iterator(f)]


def source_records(*paths: pathlib.Path) -> list[bytes]:
  return [r for p in paths for r in tf.compat.v1.io.tf_record_iterator(str(p))]


def no_dataset_written(tmp_path: pathlib.Path) -> bool:
  return not list((tmp_path / "tfds").rglob("dataset_info.json")) and not list(
      (tmp_path / "tfds").rglob("*.tfrecord*"))


def two_sites(tmp_path: pathlib.Path) -> list[dict]:
  a = site(tmp_path / "a/train.tfrecord", 0, 3, lengths=(2,))
  b = site(tmp_path / "b/train.tfrecord", 100, 4, lengths=(1, 3, 0, 5))
  return [{"name": "a", "tfrecords": str(a)}, {"name": "b", "tfrecords": str(b)}]


# ------------------------------------------------ TFDS's own builder tests --


class ConcatenatedDemoTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled `demo` config: two raw sites, one with variable-length tokens."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["demo"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 9, "test": 3}
  SKIP_CHECKSUMS = True


class ConcatenatedInterleavedTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled `interleaved` config: the same sites mixed 1:2, every example once."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["interleaved"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 9, "test": 3}
  SKIP_CHECKSUMS = True


# -------------------------------------------------------- order, content --


def test_demo_is_the_sources_in_order_with_bytes_unchanged(tmp_path):
  builder = tfds.builder("concatenated/demo", data_dir=str(tmp_path))
  builder.download_and_prepare()
  features = builder.info.features
  assert features["tokens"].shape == (None,)  # fixed 3 in site_a, 1..5 in site_b
  assert features["source"].names == ["site_a", "site_b"]
  sources = [DUMMY_DATA / "site_a/train.tfrecord",
             *sorted((DUMMY_DATA / "site_b").glob("train-*.tfrecord"))]
  originals = source_records(*sources)
  stored = stored_records(builder)
  assert len(stored) == len(originals) == 9
  for kept, original in zip(stored, originals, strict=True):
    assert kept.startswith(original)  # the source's bytes, then the provenance
  got = examples(builder)
  assert [e["source"] for e in got] == [0] * 4 + [1] * 5
  assert [e["source_key"].decode() for e in got] == [
      *(f"site_a/train.tfrecord:{i}" for i in range(4)),
      *(f"site_b/train-00000-of-00002.tfrecord:{i}" for i in range(3)),
      *(f"site_b/train-00001-of-00002.tfrecord:{i}" for i in range(2)),
  ]
  for example, original in zip(got, originals, strict=True):
    parsed = tf.train.Example.FromString(original).features.feature
    np.testing.assert_array_equal(example["tokens"], parsed["tokens"].int64_list.value)
    assert example["tokens"].dtype == np.int64
    assert example["image"] == parsed["image"].bytes_list.value[0]
  assert [len(e["tokens"]) for e in got] == [3, 3, 3, 3, 1, 4, 2, 5, 3]  # ragged, never padded


def test_keys_are_unique_across_sources_and_not_paths(tmp_path):
  config = two_sites(tmp_path)
  builder = make_builder(tmp_path, sources=config, splits="a:train + b:train -> train")
  stream = builder._split_streams(None, None)["train"]  # pylint: disable=protected-access
  keys = [key for key, _ in shard_writer.unblocked(stream)]
  assert keys == [f"a:train:{i}" for i in range(3)] + [f"b:train:{i}" for i in range(4)]
  assert not any(str(tmp_path) in key for key in keys)


def test_provenance_can_be_switched_off(tmp_path):
  config = two_sites(tmp_path)
  builder = build(tmp_path, sources=config, per_example_provenance=False)
  assert set(builder.info.features) == {"id", "tokens", "name"}
  assert stored_records(builder) == source_records(tmp_path / "a/train.tfrecord", tmp_path / "b/train.tfrecord")


def test_dataset_level_provenance_lists_sources_versions_and_counts(tmp_path):
  raw = site(tmp_path / "raw.tfrecord", 0, 2)
  tfds_dir = prepared(tmp_path, "typed", {"id": np.int64, "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int64), "name": tfds.features.Text()},
                      {"train": [{"id": 7, "tokens": [1], "name": "x"}] * 3}, version="2.1.0")
  builder = build(tmp_path, name="prov", sources=[
      {"name": "raw", "tfrecords": str(raw)}, {"name": "typed", "dataset_dir": tfds_dir}])
  record_ = provenance.read_provenance(builder.data_dir)
  assert record_["builder"] == "concatenated"
  assert record_["config"]["name"] == "prov"
  raw_entry, typed_entry = record_["sources"]
  assert raw_entry["kind"] == "tfrecord" and raw_entry["num_examples"] == {"train": 2}
  assert raw_entry["files"] == {"train": ["raw.tfrecord"]}
  assert typed_entry["kind"] == "tfds" and typed_entry["version"] == "2.1.0"
  assert typed_entry["dataset"] == "typed/2.1.0"
  assert typed_entry["num_examples"] == {"train": 3}
  assert record_["split_mapping"] == {"train": ["raw:train", "typed:train"]}
  assert record_["examples_per_source"] == {"train": {"raw": 2, "typed": 3}}


# ---------------------------------------------------------- TFDS sources --


def tfds_site(tmp_path, name: str, ids: list[int], version: str = "1.0.0", **extra) -> str:
  features = {"id": tfds.features.Tensor(shape=(), dtype=np.int64),
              "label": tfds.features.ClassLabel(names=["cat", "dog"]),
              "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int64), **extra}
  rows = [{"id": i, "label": i % 2, "tokens": list(range(i % 4))} for i in ids]
  return prepared(tmp_path, name, features, {"train": rows[:-1], "test": rows[-1:]}, version)


def test_prepared_sources_by_directory_and_by_name_and_version(tmp_path):
  first = tfds_site(tmp_path, "north", [1, 2, 3])
  tfds_site(tmp_path, "south", [10, 11, 12, 13], version="3.0.0")
  builder = build(tmp_path, sources=[
      {"name": "north", "dataset_dir": first},
      {"name": "south", "dataset": "south:3.0.0", "data_dir": str(tmp_path / "prepared")},
  ])
  assert builder.info.features["label"].names == ["cat", "dog"]  # the declared type is kept
  got = examples(builder)
  assert [e["id"] for e in got] == [1, 2, 10, 11, 12]
  assert [e["label"] for e in got] == [1, 0, 0, 1, 0]
  assert [list(e["tokens"]) for e in got] == [[0], [0, 1], [0, 1], [0, 1, 2], []]
  assert [e["source_key"].decode() for e in got] == [
      "train[0:1]", "train[1:2]", "train[0:1]", "train[1:2]", "train[2:3]"]
  # A source_key is a TFDS split slice: it loads exactly that example again.
  again = tfds.load("south:3.0.0", split="train[2:3]", data_dir=str(tmp_path / "prepared"))
  assert [int(e["id"]) for e in tfds.as_numpy(again)] == [12]
  assert [e["id"] for e in examples(builder, "test")] == [3, 13]


def test_raw_and_prepared_sources_mix(tmp_path):
  raw = helpers.write_records(tmp_path / "raw.tfrecord", [record(id=[5], label=[1], tokens=[9, 9, 9])])
  typed = tfds_site(tmp_path, "typed", [1, 2, 3])
  builder = build(tmp_path, sources=[{"name": "raw", "tfrecords": str(raw)},
                                     {"name": "typed", "dataset_dir": typed}],
                  splits={"train": ["raw", "typed"]})
  assert isinstance(builder.info.features["label"], tfds.features.ClassLabel)
  got = examples(builder)
  assert [(e["id"], e["label"], len(e["tokens"])) for e in got] == [(5, 1, 3), (1, 1, 1), (2, 0, 2)]


# --------------------------------------------------------- split mapping --


def _three_splits_of_b(tmp: pathlib.Path) -> list[dict]:
  """Source `a` (ids 0, 1) and source `b` with train (10-12), validation (20) and test (30, 31)."""
  b = {split: str(site(tmp / f"b_{split}.tfrecord", first, count))
       for split, first, count in (("train", 10, 3), ("validation", 20, 1), ("test", 30, 2))}
  return [{"name": "a", "tfrecords": str(site(tmp / "a.tfrecord", 0, 2))}, {"name": "b", "tfrecords": b}]


_MAPPED = {"train": [0, 1, 20], "extra": [10, 11, 12]}
SPLIT_CASES = [  # splits (None: the default mapping) -> ids per output split
    pytest.param("a:train + b:validation -> train; b:train -> extra", _MAPPED, id="string"),
    pytest.param(["a:train + b:validation -> train", "b:train -> extra"], _MAPPED, id="rules"),
    pytest.param({"train": ["a:train", "b:validation"], "extra": "b:train"}, _MAPPED, id="dict"),
    pytest.param({"train": "a + b:validation", "extra": ["b:train"]}, _MAPPED, id="bare-names"),
    # The default sends each split to its name.
    pytest.param(None, {"train": [0, 1, 10, 11, 12], "validation": [20], "test": [30, 31]}, id="default"),
]


@pytest.mark.parametrize("splits, expected", SPLIT_CASES)
def test_split_mapping(tmp_path, splits, expected):
  config = {"splits": splits} if splits is not None else {}
  builder = build(tmp_path, sources=_three_splits_of_b(tmp_path), **config)
  assert {split: [e["id"] for e in examples(builder, split)] for split in builder.info.splits} == expected
  assert set(builder.info.splits) == set(expected)


# ------------------------------------------------------- schema agreement --


def test_schema_mismatch_lists_every_difference_before_writing(tmp_path):
  a = helpers.write_records(tmp_path / "a.tfrecord", [record(id=[1], score=[0.5], tokens=[1, 2])])
  b = helpers.write_records(tmp_path / "b.tfrecord", [record(id=[0.5], tokens=[1, 2], extra=b"x")])
  message = assert_build_fails(
      tmp_path, errors.SchemaError,
      "nothing was written",
      "feature 'id' differs: int64 () (raw) in 'a', float32 () (raw) in 'b'",
      "feature 'score' is missing in 'b' (float32 () (raw) in 'a')",
      "feature 'extra' is extra in 'b' (string () (raw) in 'b'), not in 'a'",
      sources=[{"name": "a", "tfrecords": str(a)}, {"name": "b", "tfrecords": str(b)}])
  assert "tokens" not in message
  assert no_dataset_written(tmp_path)


def test_declared_mismatch_names_dtype_shape_and_source(tmp_path):
  first = prepared(tmp_path, "p1", {"x": tfds.features.Tensor(shape=(3,), dtype=np.int32),
                                    "label": tfds.features.ClassLabel(names=["a", "b"])},
                   {"train": [{"x": [1, 2, 3], "label": 0}]})
  second = prepared(tmp_path, "p2", {"x": tfds.features.Tensor(shape=(4,), dtype=np.int64),
                                     "label": tfds.features.ClassLabel(names=["b", "a"])},
                    {"train": [{"x": [1, 2, 3, 4], "label": 0}]})
  assert_build_fails(
      tmp_path, errors.SchemaError,
      "feature 'x' differs: int32 (3,) in 'p1', int64 (4,) in 'p2'",
      "enable promotions ['integers', 'shapes']",
      "feature 'label' differs: ClassLabel(names=['a', 'b']) in 'p1', ClassLabel(names=['b', 'a']) in 'p2'",
      "only plain tfds.features.Tensor features",
      sources=[{"name": "p1", "dataset_dir": first}, {"name": "p2", "dataset_dir": second}])
  assert no_dataset_written(tmp_path)


def test_opt_in_promotions_widen_dtypes_and_shapes(tmp_path):
  first = prepared(tmp_path, "p1", {"x": tfds.features.Tensor(shape=(3,), dtype=np.int32),
                                    "f": tfds.features.Tensor(shape=(), dtype=np.float32)},
                   {"train": [{"x": [1, -2, 2**31 - 1], "f": 0.1}]})
  second = prepared(tmp_path, "p2", {"x": tfds.features.Tensor(shape=(2,), dtype=np.int64),
                                     "f": tfds.features.Tensor(shape=(), dtype=np.float64)},
                    {"train": [{"x": [2**40, 5], "f": 0.25}]})
  config = {"sources": [{"name": "p1", "dataset_dir": first}, {"name": "p2", "dataset_dir": second}]}
  assert_build_fails(tmp_path, errors.SchemaError, "['floats']", "['integers', 'shapes']", **config)
  builder = build(tmp_path, promotions=["integers", "floats", "shapes"], **config)
  assert builder.info.features["x"].shape == (None,)
  assert builder.info.features["x"].np_dtype == np.int64
  assert builder.info.features["f"].np_dtype == np.float64
  got = examples(builder)
  assert [list(e["x"]) for e in got] == [[1, -2, 2**31 - 1], [2**40, 5]]
  assert [e["f"] for e in got] == [np.float64(np.float32(0.1)), 0.25]  # float32 values, exactly
  applied = provenance.read_provenance(builder.data_dir)["promotions_applied"]
  assert applied["x"] == "int32 (3,) / int64 (2,) -> int64 (None,)"


def test_raw_lengths_are_inferred_together_but_declared_shapes_need_promotion(tmp_path):
  raw = helpers.write_records(tmp_path / "raw.tfrecord", [record(v=[1, 2]), record(v=[1, 2, 3])])
  typed = prepared(tmp_path, "fixed", {"v": tfds.features.Tensor(shape=(2,), dtype=np.int64)},
                   {"train": [{"v": [7, 8]}]})
  config = {"sources": [{"name": "typed", "dataset_dir": typed}, {"name": "raw", "tfrecords": str(raw)}]}
  assert_build_fails(tmp_path, errors.SchemaError, "feature 'v' differs", "['shapes']", **config)
  builder = build(tmp_path, promotions=["shapes"], **config)
  assert [list(e["v"]) for e in examples(builder)] == [[7, 8], [1, 2], [1, 2, 3]]


def test_provenance_feature_clash_is_reported(tmp_path):
  path = helpers.write_records(tmp_path / "a.tfrecord", [record(source=[1])])
  assert_build_fails(tmp_path, errors.SchemaError, "['source']", "provenance_feature",
                     sources=[{"name": "a", "tfrecords": str(path)}])
  builder = build(tmp_path, sources=[{"name": "a", "tfrecords": str(path)}], provenance_feature="origin")
  assert set(builder.info.features) == {"source", "origin", "origin_key"}


# ------------------------------------------------------------ compression --


def test_zlib_features_store_tfds_zlib_encoding(tmp_path):
  path = helpers.write_records(tmp_path / "a.tfrecord", [
      record(seq=[7] * n, label=[n]) for n in (0, 1, 500, 1000)])
  builder = build(tmp_path, sources=[{"name": "a", "tfrecords": str(path)}], zlib_features=["seq"])
  assert builder.info.features["seq"].to_json()["content"]["encoding"] == "zlib"
  got = examples(builder)
  assert [list(e["seq"]) for e in got] == [[7] * n for n in (0, 1, 500, 1000)]
  assert [e["label"] for e in got] == [0, 1, 500, 1000]
  plain = build(tmp_path / "plain", sources=[{"name": "a", "tfrecords": str(path)}])
  assert builder.info.splits["train"].num_bytes < plain.info.splits["train"].num_bytes / 3


def test_array_record_file_format(tmp_path):
  config = two_sites(tmp_path)
  reference = build(tmp_path / "ref", sources=config)
  builder = Builder(config=BuilderConfig(name="t", sources=config), data_dir=str(tmp_path / "ar"),
                    file_format="array_record")
  builder.download_and_prepare()
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  source = builder.as_data_source(split="train")
  got = [source[i] for i in range(len(source))]
  expected = examples(reference)
  assert [g["id"] for g in got] == [e["id"] for e in expected]
  assert all(np.array_equal(g["tokens"], e["tokens"]) for g, e in zip(got, expected))


# ----------------------------------------------------------------- mixing --


def test_schedule_follows_hugging_face_round_robin():
  # The interleave_datasets docstring examples, as source indexes.
  values = [[0, 1, 2], [10, 11, 12, 13], [20, 21, 22, 23, 24]]
  positions = [0, 0, 0]

  def run(strategy):
    out, positions[:] = [], [0, 0, 0]
    for source in schedule([3, 4, 5], None, 0, strategy):
      out.append(values[source][positions[source] % len(values[source])])
      positions[source] += 1
    return out

  assert run("first_exhausted") == [0, 10, 20, 1, 11, 21, 2, 12, 22]
  assert run("all_exhausted") == [0, 10, 20, 1, 11, 21, 2, 12, 22, 0, 13, 23, 1, 10, 24]
  assert run("all_exhausted_without_replacement") == [0, 10, 20, 1, 11, 21, 2, 12, 22, 13, 23, 24]


def test_weighted_schedule_is_deterministic_and_follows_weights():
  draws = list(schedule([10_000, 10_000], [1, 3], 42, "first_exhausted"))
  assert draws == list(schedule([10_000, 10_000], [1, 3], 42, "first_exhausted"))
  assert draws != list(schedule([10_000, 10_000], [1, 3], 43, "first_exhausted"))
  assert draws.count(1) == 10_000  # the heavier source ran out first, ending the mix
  assert 0.22 < draws.count(0) / len(draws) < 0.28
  every = list(schedule([5, 50], [1, 1], 0, "all_exhausted_without_replacement"))
  assert (every.count(0), every.count(1)) == (5, 50)
  over = list(schedule([5, 50], [1, 1], 0, "all_exhausted"))
  assert over.count(1) == 50 and over.count(0) > 5  # the short source repeated


def test_interleave_builds_the_schedule_order(tmp_path):
  config = two_sites(tmp_path)
  builder = build(tmp_path, sources=config, mixing="interleave", weights={"a": 1, "b": 2}, seed=3,
                  stopping_strategy="all_exhausted_without_replacement")
  order = list(schedule([3, 4], [1.0, 2.0], 3, "all_exhausted_without_replacement"))
  ids = {0: iter([0, 1, 2]), 1: iter([100, 101, 102, 103])}
  got = examples(builder)
  assert [e["id"] for e in got] == [next(ids[s]) for s in order]
  assert [e["source"] for e in got] == order
  counts = provenance.read_provenance(builder.data_dir)["examples_per_source"]
  assert counts == {"train": {"a": 3, "b": 4}}


def test_all_exhausted_repeats_with_unique_keys(tmp_path):
  config = two_sites(tmp_path)
  builder = make_builder(tmp_path, sources=config, mixing="interleave", stopping_strategy="all_exhausted")
  stream = builder._split_streams(None, None)["train"]  # pylint: disable=protected-access
  keys = [key for key, _ in shard_writer.unblocked(stream)]
  assert keys == ["a:train:0", "b:train:0", "a:train:1", "b:train:1", "a:train:2", "b:train:2",
                  "a:train:0#pass1", "b:train:3"]
  builder.download_and_prepare()
  assert [e["id"] for e in examples(builder)] == [0, 100, 1, 101, 2, 102, 0, 103]


# -------------------------------------------------------------- bad input --


# Each callable `config` writes its inputs under tmp_path and returns the config.


def _two_sites_and(**config) -> Callable[[pathlib.Path], dict]:
  return lambda tmp: {"sources": two_sites(tmp), **config}


def _one_source(**entry) -> dict:
  return {"sources": [entry]}


def _records_that_disagree(tmp: pathlib.Path) -> dict:
  path = helpers.write_records(tmp / "a.tfrecord", [record(x=[1]), record(x=[1]), record(y=[1])])
  return {"sources": [{"name": "a", "tfrecords": str(path)}]}


def _zlib_of_a_string(tmp: pathlib.Path) -> dict:
  path = helpers.write_records(tmp / "a.tfrecord", [record(name=b"x")])
  return {"sources": [{"name": "a", "tfrecords": str(path)}], "zlib_features": ["name"]}


def _empty_source(tmp: pathlib.Path) -> dict:
  empty = helpers.write_records(tmp / "empty.tfrecord", [])
  full = site(tmp / "full.tfrecord", 0, 2)
  return {"sources": [{"name": "f", "tfrecords": str(full)}, {"name": "e", "tfrecords": str(empty)}]}


def _corrupt_last_record(tmp: pathlib.Path) -> dict:
  path = site(tmp / "cut.tfrecord", 0, 5)
  path.write_bytes(path.read_bytes()[:-7])
  return {"sources": [{"name": "a", "tfrecords": str(path)}]}


def _duplicate(what: str) -> Callable[[pathlib.Path], dict]:
  def config(tmp: pathlib.Path) -> dict:
    path, other = site(tmp / "a.tfrecord", 0, 2), site(tmp / "b.tfrecord", 0, 2)
    second = {"name": "a", "tfrecords": str(other)} if what == "name" else {"name": "b", "tfrecords": str(path)}
    return {"sources": [{"name": "a", "tfrecords": str(path)}, second]}
  return config


Failure = helpers.Failure
FAILURES = [
    # split mapping
    pytest.param(Failure(errors.ConfigError, ["names source 'c'", "['a', 'b']"],
                         _two_sites_and(splits="a:train + c:train -> train")), id="mapping-unknown-source"),
    pytest.param(Failure(errors.ConfigError, ["source 'b' has no split 'test'", "['train']"],
                         _two_sites_and(splits="a:train + b:test -> train")), id="mapping-unknown-split"),
    pytest.param(Failure(errors.ConfigError, ["lists ['a:train'] more than once", "duplicate source"],
                         _two_sites_and(splits="a:train + a:train -> train")), id="mapping-twice"),
    pytest.param(Failure(errors.ConfigError, ["malformed", "a:train + b:validation -> train"],
                         _two_sites_and(splits="a:train, b:train")), id="mapping-malformed"),
    pytest.param(Failure(errors.ConfigError, ["Sources ['b'] are not used"],
                         _two_sites_and(splits="a:train -> train")), id="mapping-unused-source"),
    # mixing, promotions
    pytest.param(Failure(errors.ConfigError, ["mixing='shuffle'", "'concatenate', 'interleave'"],
                         _two_sites_and(mixing="shuffle")), id="mixing"),
    pytest.param(Failure(errors.ConfigError, ["weights only apply with mixing='interleave'"],
                         _two_sites_and(weights={"a": 1, "b": 1})), id="weights-without-interleave"),
    pytest.param(Failure(errors.ConfigError, ["give every source a weight"],
                         _two_sites_and(mixing="interleave", weights={"a": 1})), id="weights-missing"),
    pytest.param(Failure(errors.ConfigError, ["must all be positive"],
                         _two_sites_and(mixing="interleave", weights={"a": 1, "b": 0})), id="weights-zero"),
    pytest.param(Failure(errors.ConfigError, ["stopping_strategy='never'"],
                         _two_sites_and(mixing="interleave", stopping_strategy="never")), id="stopping-strategy"),
    pytest.param(Failure(errors.ConfigError, ["unknown promotions ['strings']"],
                         _two_sites_and(promotions=["strings"])), id="promotions"),
    pytest.param(Failure(errors.ConfigError, ["'name'", "numeric Tensor"], _zlib_of_a_string),
                 id="zlib-features-must-be-numeric-tensors"),
    # source entries
    pytest.param(Failure(errors.ConfigError, ["has name None"], _one_source(tfrecords="x")), id="entry-no-name"),
    pytest.param(Failure(errors.ConfigError, ["has name 'a b'"], _one_source(name="a b", tfrecords="x")),
                 id="entry-bad-name"),
    pytest.param(Failure(errors.ConfigError, ["exactly one of"], _one_source(name="a", tfrecords="x", dataset="y")),
                 id="entry-two-kinds"),
    pytest.param(Failure(errors.ConfigError, ["unknown keys ['data_dir']"],
                         _one_source(name="a", tfrecords="x", data_dir="y")), id="entry-unknown-key"),
    pytest.param(Failure(errors.ConfigError, ["Duplicate source name 'a'"], _duplicate("name")),
                 id="duplicate-name"),
    pytest.param(Failure(errors.ConfigError, ["{tmp}/a.tfrecord is read by both a:train and b:train"],
                         _duplicate("files")), id="duplicate-files"),
    # sources that are missing, empty or corrupt
    pytest.param(Failure(errors.SourceError, ["'missing/*.tfrecord'", "Check the path"],
                         lambda tmp: {**_one_source(name="a", tfrecords="missing/*.tfrecord"), "data_root": str(tmp)}),
                 id="missing-tfrecords"),
    pytest.param(Failure(errors.SourceError, ["source 'b'", "No prepared TFDS dataset at 'nope:1.0.0'"],
                         lambda tmp: _one_source(name="b", dataset="nope:1.0.0", data_dir=str(tmp))),
                 id="missing-dataset"),
    pytest.param(Failure(errors.SourceError, ["No prepared TFDS dataset"],
                         lambda tmp: _one_source(name="c", dataset_dir=str(tmp / "nowhere"))),
                 id="missing-dataset-dir"),
    pytest.param(Failure(errors.SourceError, ["source 'e'", "the source is empty"], _empty_source),
                 id="empty-source"),
    pytest.param(Failure(errors.SourceError, ["source 'a'", "{tmp}/cut.tfrecord", "record 4", "corrupt or truncated"],
                         _corrupt_last_record), id="corrupt-tfrecord"),
    pytest.param(Failure(errors.SchemaError, ["source 'a'", "{tmp}/a.tfrecord", "record 2"], _records_that_disagree),
                 id="records-that-disagree-within-a-source"),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_build_fails(tmp_path, failure):
  helpers.assert_fails_as(Builder, tmp_path, failure)
  assert no_dataset_written(tmp_path)


def test_failed_build_leaves_no_dataset_and_rerun_succeeds(tmp_path):
  good = helpers.write_records(tmp_path / "data/a.tfrecord", [record(id=[i], label=[0], tokens=[i]) for i in range(3)])
  typed = tfds_site(tmp_path, "typed", [1, 2, 3])
  shard = next(pathlib.Path(typed).glob("*-train.tfrecord-*"))
  intact = shard.read_bytes()
  shard.write_bytes(intact[:-3])  # prepared sources are read only while writing
  config = {"name": "mine", "sources": [{"name": "a", "tfrecords": str(good)},
                                        {"name": "typed", "dataset_dir": typed}],
            "splits": "a:train + typed:train -> train"}
  assert_build_fails(tmp_path, errors.SourceError, "source 'typed'", str(shard), "record 1", **config)
  dataset_dir = tmp_path / "tfds/concatenated/mine/1.0.0"
  assert not (dataset_dir / "dataset_info.json").exists()
  with pytest.raises(DatasetInfoFileError, match=r"Could not read dataset info from .*/mine/1\.0\.0/dataset_info\.json"):
    tfds.builder_from_directory(str(dataset_dir))
  assert not list((tmp_path / "tfds").rglob("*.tfrecord*"))
  shard.write_bytes(intact)
  builder = build(tmp_path, **config)
  assert [e["id"] for e in examples(builder)] == [0, 1, 2, 1, 2]


def test_sources_are_never_modified(tmp_path):
  config = two_sites(tmp_path)
  before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*.tfrecord")}
  build(tmp_path, sources=config, zlib_features=["tokens"])
  assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*.tfrecord") if "tfds" not in p.parts} == before


def test_gzip_sources_are_read(tmp_path):
  path = tmp_path / "a.tfrecord.gz"
  with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
    writer.write(record(id=[4]))
  builder = build(tmp_path, sources=[{"name": "a", "tfrecords": str(path)}])
  assert [e["id"] for e in examples(builder)] == [4]


# ---------------------------------------------------------------- tfds CLI --


@pytest.mark.slow
def test_tfds_build_cli_with_json_config(tmp_path):
  config = json.dumps({"name": "mine", "sources": two_sites(tmp_path),
                       "splits": "a:train + b:train -> train"})
  tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
  result = subprocess.run(
      [str(tfds_cli), "build", str(BUILDER_DIR), "--data_dir", str(tmp_path / "tfds"), "--config", config],
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  builder = tfds.builder_from_directory(str(tmp_path / "tfds/concatenated/mine/1.0.0"))
  assert [int(e["id"]) for e in tfds.as_numpy(builder.as_dataset(split="train"))] == [0, 1, 2, 100, 101, 102, 103]
