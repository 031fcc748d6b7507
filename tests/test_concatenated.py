"""Tests of the concatenated builder: order, provenance, schema agreement, mixing, compression, errors."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

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

tfds.core.utils.gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access

REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY_DATA = REPO / "dummy_data" / "concatenated"
BUILDER_DIR = REPO / "tfds_builders" / "concatenated"


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


def write_records(path: pathlib.Path, records: list[bytes]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for serialized in records:
      writer.write(serialized)
  return path


def site(path: pathlib.Path, first: int, count: int, lengths=(2,)) -> pathlib.Path:
  """A raw source of `count` examples: id, tokens (cycling lengths), name."""
  return write_records(path, [
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


def make_builder(tmp_path: pathlib.Path, name: str = "t", **config) -> Builder:
  return Builder(config=BuilderConfig(name=name, **config), data_dir=str(tmp_path / "tfds"))


def build(tmp_path: pathlib.Path, name: str = "t", **config) -> Builder:
  builder = make_builder(tmp_path, name, **config)
  builder.download_and_prepare()
  return builder


def examples(builder, split: str = "train") -> list[dict]:
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def stored_records(builder, split: str = "train") -> list[bytes]:
  files = [str(builder.data_path / name) for name in builder.info.splits[split].filenames]
  return [r for f in files for r in tf.compat.v1.io.tf_record_iterator(f)]


def source_records(*paths: pathlib.Path) -> list[bytes]:
  return [r for p in paths for r in tf.compat.v1.io.tf_record_iterator(str(p))]


def assert_build_fails(tmp_path, error_type, *fragments, **config) -> str:
  with pytest.raises(error_type) as raised:
    build(tmp_path, **config)
  message = str(raised.value)
  for fragment in fragments:
    assert fragment in message, f"{fragment!r} not in {message!r}"
  return message


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
  keys = [key for key, _ in builder._generate_examples(split="train")]  # pylint: disable=protected-access
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
  raw = write_records(tmp_path / "raw.tfrecord", [record(id=[5], label=[1], tokens=[9, 9, 9])])
  typed = tfds_site(tmp_path, "typed", [1, 2, 3])
  builder = build(tmp_path, sources=[{"name": "raw", "tfrecords": str(raw)},
                                     {"name": "typed", "dataset_dir": typed}],
                  splits={"train": ["raw", "typed"]})
  assert isinstance(builder.info.features["label"], tfds.features.ClassLabel)
  got = examples(builder)
  assert [(e["id"], e["label"], len(e["tokens"])) for e in got] == [(5, 1, 3), (1, 1, 1), (2, 0, 2)]


# --------------------------------------------------------- split mapping --


@pytest.mark.parametrize("splits", [
    "a:train + b:validation -> train; b:train -> extra",
    ["a:train + b:validation -> train", "b:train -> extra"],
    {"train": ["a:train", "b:validation"], "extra": "b:train"},
    {"train": "a + b:validation", "extra": ["b:train"]},
], ids=["string", "rules", "dict", "bare-names"])
def test_split_mapping_forms(tmp_path, splits):
  a = site(tmp_path / "a.tfrecord", 0, 2)
  b_train = site(tmp_path / "b_train.tfrecord", 10, 3)
  b_val = site(tmp_path / "b_val.tfrecord", 20, 1)
  builder = build(tmp_path, splits=splits, sources=[
      {"name": "a", "tfrecords": str(a)},
      {"name": "b", "tfrecords": {"train": str(b_train), "validation": str(b_val)}}])
  assert [e["id"] for e in examples(builder, "train")] == [0, 1, 20]
  assert [e["id"] for e in examples(builder, "extra")] == [10, 11, 12]
  assert set(builder.info.splits) == {"train", "extra"}


def test_default_mapping_sends_each_split_to_its_name(tmp_path):
  a = site(tmp_path / "a.tfrecord", 0, 2)
  b_train, b_test = site(tmp_path / "bt.tfrecord", 10, 1), site(tmp_path / "bs.tfrecord", 20, 2)
  builder = build(tmp_path, sources=[
      {"name": "a", "tfrecords": str(a)},
      {"name": "b", "tfrecords": {"train": str(b_train), "test": str(b_test)}}])
  assert [e["id"] for e in examples(builder, "train")] == [0, 1, 10]
  assert [e["id"] for e in examples(builder, "test")] == [20, 21]


@pytest.mark.parametrize("splits, fragments", [
    ("a:train + c:train -> train", ["names source 'c'", "['a', 'b']"]),
    ("a:train + b:test -> train", ["source 'b' has no split 'test'", "['train']"]),
    ("a:train + a:train -> train", ["lists ['a:train'] more than once", "duplicate source"]),
    ("a:train, b:train", ["malformed", "a:train + b:validation -> train"]),
    ("a:train -> train", ["Sources ['b'] are not used"]),
])
def test_split_mapping_errors(tmp_path, splits, fragments):
  assert_build_fails(tmp_path, errors.ConfigError, *fragments, sources=two_sites(tmp_path), splits=splits)


# ------------------------------------------------------- schema agreement --


def test_schema_mismatch_lists_every_difference_before_writing(tmp_path):
  a = write_records(tmp_path / "a.tfrecord", [record(id=[1], score=[0.5], tokens=[1, 2])])
  b = write_records(tmp_path / "b.tfrecord", [record(id=[0.5], tokens=[1, 2], extra=b"x")])
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
  raw = write_records(tmp_path / "raw.tfrecord", [record(v=[1, 2]), record(v=[1, 2, 3])])
  typed = prepared(tmp_path, "fixed", {"v": tfds.features.Tensor(shape=(2,), dtype=np.int64)},
                   {"train": [{"v": [7, 8]}]})
  config = {"sources": [{"name": "typed", "dataset_dir": typed}, {"name": "raw", "tfrecords": str(raw)}]}
  assert_build_fails(tmp_path, errors.SchemaError, "feature 'v' differs", "['shapes']", **config)
  builder = build(tmp_path, promotions=["shapes"], **config)
  assert [list(e["v"]) for e in examples(builder)] == [[7, 8], [1, 2], [1, 2, 3]]


def test_raw_records_that_disagree_within_a_source_name_file_and_record(tmp_path):
  path = write_records(tmp_path / "a.tfrecord", [record(x=[1]), record(x=[1]), record(y=[1])])
  assert_build_fails(tmp_path, errors.SchemaError, "source 'a'", str(path), "record 2",
                     sources=[{"name": "a", "tfrecords": str(path)}])


def test_provenance_feature_clash_is_reported(tmp_path):
  path = write_records(tmp_path / "a.tfrecord", [record(source=[1])])
  assert_build_fails(tmp_path, errors.SchemaError, "['source']", "provenance_feature",
                     sources=[{"name": "a", "tfrecords": str(path)}])
  builder = build(tmp_path, sources=[{"name": "a", "tfrecords": str(path)}], provenance_feature="origin")
  assert set(builder.info.features) == {"source", "origin", "origin_key"}


# ------------------------------------------------------------ compression --


def test_zlib_features_store_tfds_zlib_encoding(tmp_path):
  path = write_records(tmp_path / "a.tfrecord", [
      record(seq=[7] * n, label=[n]) for n in (0, 1, 500, 1000)])
  builder = build(tmp_path, sources=[{"name": "a", "tfrecords": str(path)}], zlib_features=["seq"])
  assert builder.info.features["seq"].to_json()["content"]["encoding"] == "zlib"
  got = examples(builder)
  assert [list(e["seq"]) for e in got] == [[7] * n for n in (0, 1, 500, 1000)]
  assert [e["label"] for e in got] == [0, 1, 500, 1000]
  plain = build(tmp_path / "plain", sources=[{"name": "a", "tfrecords": str(path)}])
  assert builder.info.splits["train"].num_bytes < plain.info.splits["train"].num_bytes / 3


def test_zlib_features_must_be_numeric_tensors(tmp_path):
  path = write_records(tmp_path / "a.tfrecord", [record(name=b"x")])
  assert_build_fails(tmp_path, errors.ConfigError, "'name'", "numeric Tensor",
                     sources=[{"name": "a", "tfrecords": str(path)}], zlib_features=["name"])


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
  keys = [key for key, _ in builder._generate_examples(split="train")]  # pylint: disable=protected-access
  assert keys == ["a:train:0", "b:train:0", "a:train:1", "b:train:1", "a:train:2", "b:train:2",
                  "a:train:0#pass1", "b:train:3"]
  builder.download_and_prepare()
  assert [e["id"] for e in examples(builder)] == [0, 100, 1, 101, 2, 102, 0, 103]


@pytest.mark.parametrize("config, fragments", [
    ({"mixing": "shuffle"}, ["mixing='shuffle'", "'concatenate', 'interleave'"]),
    ({"weights": {"a": 1, "b": 1}}, ["weights only apply with mixing='interleave'"]),
    ({"mixing": "interleave", "weights": {"a": 1}}, ["give every source a weight"]),
    ({"mixing": "interleave", "weights": {"a": 1, "b": 0}}, ["must all be positive"]),
    ({"mixing": "interleave", "stopping_strategy": "never"}, ["stopping_strategy='never'"]),
    ({"promotions": ["strings"]}, ["unknown promotions ['strings']"]),
])
def test_invalid_configs(tmp_path, config, fragments):
  assert_build_fails(tmp_path, errors.ConfigError, *fragments, sources=two_sites(tmp_path), **config)


# -------------------------------------------------------------- bad input --


def test_missing_sources_are_named(tmp_path):
  assert_build_fails(tmp_path, errors.SourceError, "'missing/*.tfrecord'", "Check the path",
                     sources=[{"name": "a", "tfrecords": "missing/*.tfrecord"}], data_root=str(tmp_path))
  assert_build_fails(tmp_path, errors.SourceError, "source 'b'", "No prepared TFDS dataset at 'nope:1.0.0'",
                     sources=[{"name": "b", "dataset": "nope:1.0.0", "data_dir": str(tmp_path)}])
  assert_build_fails(tmp_path, errors.SourceError, "No prepared TFDS dataset",
                     sources=[{"name": "c", "dataset_dir": str(tmp_path / "nowhere")}])


def test_empty_source_is_named(tmp_path):
  empty = write_records(tmp_path / "empty.tfrecord", [])
  full = site(tmp_path / "full.tfrecord", 0, 2)
  assert_build_fails(tmp_path, errors.SourceError, "source 'e'", "the source is empty",
                     sources=[{"name": "f", "tfrecords": str(full)}, {"name": "e", "tfrecords": str(empty)}])
  assert no_dataset_written(tmp_path)


def test_corrupt_tfrecord_names_source_file_and_record(tmp_path):
  path = site(tmp_path / "cut.tfrecord", 0, 5)
  data = path.read_bytes()
  path.write_bytes(data[:-7])
  assert_build_fails(tmp_path, errors.SourceError, "source 'a'", str(path), "record 4", "corrupt or truncated",
                     sources=[{"name": "a", "tfrecords": str(path)}])
  assert no_dataset_written(tmp_path)


@pytest.mark.parametrize("duplicate", ["name", "files"])
def test_duplicate_sources_are_refused(tmp_path, duplicate):
  path = site(tmp_path / "a.tfrecord", 0, 2)
  other = site(tmp_path / "b.tfrecord", 0, 2)
  second = {"name": "a" if duplicate == "name" else "b",
            "tfrecords": str(other if duplicate == "name" else path)}
  fragment = "Duplicate source name 'a'" if duplicate == "name" else f"{path} is read by both a:train and b:train"
  assert_build_fails(tmp_path, errors.ConfigError, fragment,
                     sources=[{"name": "a", "tfrecords": str(path)}, second])


@pytest.mark.parametrize("entry, fragment", [
    ({"tfrecords": "x"}, "has name None"),
    ({"name": "a b", "tfrecords": "x"}, "has name 'a b'"),
    ({"name": "a", "tfrecords": "x", "dataset": "y"}, "exactly one of"),
    ({"name": "a", "tfrecords": "x", "data_dir": "y"}, "unknown keys ['data_dir']"),
])
def test_malformed_source_entries(tmp_path, entry, fragment):
  assert_build_fails(tmp_path, errors.ConfigError, fragment, sources=[entry])


def test_failed_build_leaves_no_dataset_and_rerun_succeeds(tmp_path):
  good = write_records(tmp_path / "data/a.tfrecord", [record(id=[i], label=[0], tokens=[i]) for i in range(3)])
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
  with pytest.raises(DatasetInfoFileError):
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
