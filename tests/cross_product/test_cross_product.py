"""Tests of the cross_product builder: pairs equal to TFDS's own encoding, modes, policies, errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core.dataset_info import DatasetInfoFileError

import tfds_builders
from tfds_builders.core import errors
from tfds_builders.core import example_schema
from tfds_builders.core import provenance
from tfds_builders.core import shard_writer
from tfds_builders.cross_product import Builder
from tfds_builders.cross_product import PairSpace
from tfds_builders.cross_product import pair_is_sampled
from tfds_builders.cross_product import spill

from tests import helpers

DUMMY_DATA = helpers.REPO / "dummy_data" / "cross_product"

Values = dict[str, Any]  # feature -> scalar (one value) or list

# ----------------------------------------------------------------- helpers --


_EMPTY_LIST_KINDS = {"tags": bytes}  # the value kind of features that may be empty


def to_example(values: Values) -> bytes:
  """A serialized tf.train.Example; scalars become one-value lists."""
  features = {}
  for name, value in values.items():
    items = value if isinstance(value, list) else [value]
    kind = type(items[0]) if items else _EMPTY_LIST_KINDS[name]
    if kind is bytes:
      features[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=items))
    elif kind is float:
      features[name] = tf.train.Feature(float_list=tf.train.FloatList(value=items))
    else:
      features[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=items))
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_examples(path: pathlib.Path, rows: Sequence[Values], compression: str = "") -> pathlib.Path:
  return helpers.write_records(path, [to_example(row) for row in rows], compression)


def left_rows(count: int = 3) -> list[Values]:
  """Left records: a shared `name`, a varying-length `tags`, a fixed float vector, a `/` name."""
  return [
      {"name": f"L{i}".encode(), "id": 100 + i, "vec": [i + 0.5, -i * 0.25],
       "tags": [f"t{k}".encode() for k in range(i)], "geo/lat": 50.0 + i}
      for i in range(count)
  ]


def right_rows(count: int = 4) -> list[Values]:
  """Right records: `name` collides with the left side."""
  return [{"name": f"R{j}".encode(), "score": j * 1.5, "count": [j, -j, 2**40]} for j in range(count)]


def make_inputs(tmp_path: pathlib.Path, left: Sequence[Values] | None = None, right: Sequence[Values] | None = None):
  left = left_rows() if left is None else left
  right = right_rows() if right is None else right
  return (
      write_examples(tmp_path / "in" / "left.tfrecord", left),
      write_examples(tmp_path / "in" / "right.tfrecord", right),
  )


make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)
assert_build_fails = functools.partial(helpers.assert_build_fails, Builder)


def stored_records(builder: tfds.core.DatasetBuilder) -> list[bytes]:
  """The stored records in order."""
  files = [str(builder.data_path / name) for name in builder.info.splits["train"].filenames]
  return [record.numpy() for record in tf.data.TFRecordDataset(files)]


def loaded(builder: tfds.core.DatasetBuilder) -> list[dict]:
  return list(tfds.as_numpy(builder.as_dataset(split="train")))


def index_pairs(builder: tfds.core.DatasetBuilder) -> list[tuple[int, int]]:
  return [(int(ex["left_index"]), int(ex["right_index"])) for ex in loaded(builder)]


def slow_pair(features: tfds.features.FeaturesDict, left: Values, right: Values, i: int, j: int, policy: str) -> bytes:
  """Pair (i, j) the slow way: a dict through TFDS's encode_example and ExampleSerializer."""
  if policy == "prefix":
    value = {"left": left, "right": right}
  elif policy == "left_wins":
    value = {**right, **left}
  else:  # right_wins, or no collision at all
    value = {**left, **right}
  value = {**value, "left_index": i, "right_index": j}
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  return serializer.serialize_example(features.encode_example(value))


def assert_nested_equal(actual: Any, expected: Any) -> None:
  if isinstance(expected, Mapping):
    assert set(actual) == set(expected)
    for key in expected:
      assert_nested_equal(actual[key], expected[key])
  else:
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
    assert np.asarray(actual).dtype == np.asarray(expected).dtype


def assert_nothing_prepared(tmp_path: pathlib.Path) -> None:
  """No dataset, shard or incomplete build directory under the test's data_dir."""
  found = [str(path) for path in (tmp_path / "tfds").rglob("*")]
  assert not [path for path in found if path.endswith("dataset_info.json")]
  assert not [path for path in found if "incomplete" in path or ".tfrecord-" in path]


def raises(tmp_path: pathlib.Path, error_type: type[Exception], fragments: Sequence[str], **config) -> str:
  """`assert_build_fails`, then checks that nothing is prepared."""
  message = assert_build_fails(tmp_path, error_type, *fragments, **config)
  assert_nothing_prepared(tmp_path)
  return message


# ------------------------------------------------ TFDS's own builder tests --


class CrossProductProductTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled `product` config: 5 genotypes × 4 environments (GZIP)."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["product"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 20}
  SKIP_CHECKSUMS = True


class CrossProductCombinationsTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled `combinations` config: pairs i < j of 5 genotypes."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["combinations"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 10}
  SKIP_CHECKSUMS = True


# ------------------------------------------------------- bundled configs --


def _bundled_values(path: pathlib.Path, compression: str = "") -> list[tf.train.Example]:
  return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path), compression)]


def test_bundled_product_is_every_genotype_with_every_environment(tmp_path):
  builder = tfds.builder("cross_product/product", data_dir=str(tmp_path))
  builder.download_and_prepare()
  features = builder.info.features
  assert set(features) == {"left", "right", "left_index", "right_index"}
  assert set(features["left"]) == {"name", "genotype_id", "markers", "traits"}
  assert set(features["right"]) == {"name", "environment_id", "temperature_c", "rainfall_mm", "soil"}
  assert features["left"]["markers"].shape == (4,)
  assert features["left"]["traits"].shape == (None,)
  assert features["right"]["name"].shape == ()
  genotypes = _bundled_values(DUMMY_DATA / "genotypes.tfrecord")
  environments = _bundled_values(DUMMY_DATA / "environments.tfrecord.gz", "GZIP")
  got = list(tfds.as_numpy(tfds.load("cross_product/product", split="train", data_dir=str(tmp_path))))
  assert [(int(e["left_index"]), int(e["right_index"])) for e in got] == [(i, j) for i in range(5) for j in range(4)]
  for example in got:
    genotype = genotypes[example["left_index"]].features.feature
    environment = environments[example["right_index"]].features.feature
    assert example["left"]["name"] == genotype["name"].bytes_list.value[0]
    assert example["right"]["name"] == environment["name"].bytes_list.value[0]
    assert example["left"]["traits"].tolist() == list(genotype["traits"].bytes_list.value)
    assert example["right"]["soil"] == environment["soil"].bytes_list.value[0]
  assert builder.info.metadata["provenance"]["collisions"] == ["name"]


def test_bundled_combinations_are_unordered_pairs(tmp_path):
  builder = tfds.builder("cross_product/combinations", data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert index_pairs(builder) == [(i, j) for i in range(5) for j in range(i + 1, 5)]
  assert set(builder.info.features["left"]) == set(builder.info.features["right"])


# ------------------------------------------------- fast path = slow path --

_POLICY_CASES = {
    "prefix": {},
    "left_wins": {"collision_policy": "left_wins"},
    "right_wins": {"collision_policy": "right_wins"},
    "sampled-prefix": {"sample_rate": 0.5, "sample_seed": 3},
    "blocked-prefix": {"memory_budget_bytes": 150, "left_rows_per_partition": 1},
}


@pytest.mark.parametrize("case", sorted(_POLICY_CASES))
def test_every_pair_equals_tfds_slow_path(tmp_path, case):
  config = _POLICY_CASES[case]
  left_path, right_path = make_inputs(tmp_path)
  builder = build(tmp_path, left=left_path, right=right_path, **config)
  policy = config.get("collision_policy", "prefix")
  features = builder.info.features
  space = PairSpace("product", 3, 4, config.get("sample_rate", 1.0), config.get("sample_seed", 0))
  expected_pairs = [(i, j) for i in range(3) for j in range(4) if pair_is_sampled(space, i, j)]
  assert 0 < len(expected_pairs) <= 12
  records = stored_records(builder)
  examples = loaded(builder)
  assert len(records) == len(examples) == len(expected_pairs)
  for record, example, (i, j) in zip(records, examples, expected_pairs):
    slow = slow_pair(features, left_rows()[i], right_rows()[j], i, j, policy)
    # Same Example (map order aside) ...
    assert tf.train.Example.FromString(record) == tf.train.Example.FromString(slow)
    # ... and tfds.load decodes it to what TFDS decodes from its own bytes.
    assert_nested_equal(example, tfds.as_numpy(features.deserialize_example(slow)))


def test_combinations_equal_slow_path(tmp_path):
  left_path, _ = make_inputs(tmp_path)
  builder = build(tmp_path, left=left_path, mode="combinations", memory_budget_bytes=200)
  features = builder.info.features
  expected_pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
  records = stored_records(builder)
  assert len(records) == len(expected_pairs)
  for record, (i, j) in zip(records, expected_pairs):
    slow = slow_pair(features, left_rows()[i], left_rows()[j], i, j, "prefix")
    assert tf.train.Example.FromString(record) == tf.train.Example.FromString(slow)


@pytest.mark.parametrize("policy", ["prefix", "left_wins", "right_wins"])
def test_features_json_matches_the_stored_bytes(tmp_path, policy):
  left_path, right_path = make_inputs(tmp_path)
  builder = build(tmp_path, left=left_path, right=right_path, collision_policy=policy)
  reloaded = tfds.builder_from_directory(str(builder.data_path))
  wire = example_schema.from_features(reloaded.info.features)
  for record in stored_records(builder):
    # Every stored record has exactly the features.json names and value kinds.
    assert not example_schema.diff(wire, example_schema.spec_of(tf.train.Example.FromString(record)), lengths=True)
  assert len(loaded(reloaded)) == 12


# ------------------------------------------------------ order and keys --


def test_pairs_are_in_lexicographic_order_with_traceable_indices(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  builder = build(tmp_path, left=left_path, right=right_path)
  examples = loaded(builder)
  assert index_pairs(builder) == [(i, j) for i in range(3) for j in range(4)]
  for example in examples:
    assert example["left"]["name"] == f"L{example['left_index']}".encode()
    assert example["right"]["name"] == f"R{example['right_index']}".encode()


def test_keys_come_from_i_and_j(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  builder = make_builder(tmp_path, left=left_path, right=right_path, left_rows_per_partition=2)
  builder._data_dir = str(tmp_path / "work")  # pylint: disable=protected-access
  with builder._build_context(tfds.download.DownloadConfig()) as spilled:  # pylint: disable=protected-access
    split = builder._split_streams(None, spilled)["train"]  # pylint: disable=protected-access
    assert len(split.generators) == 2
    keys = [key for key, _ in shard_writer.unblocked(split)]
    assert keys == [i * 4 + j for i in range(3) for j in range(4)]
    assert keys == [key for key, _ in shard_writer.unblocked(split)]  # the same on every run
  assert not (tmp_path / "work" / "cross_product_spill.tmp").exists()  # the context removes its spill


@pytest.mark.parametrize("mode, config", [
    ("product", {}),
    ("product", {"sample_rate": 0.6, "sample_seed": 9}),
    ("combinations", {}),
])
def test_output_does_not_depend_on_memory_budget_or_partitions(tmp_path, mode, config):
  """A right side far over the budget is read back in blocks; the bytes stay the same."""
  left_path, right_path = make_inputs(tmp_path, left_rows(6), right_rows(7))
  sides = {"left": left_path} if mode == "combinations" else {"left": left_path, "right": right_path}
  reference = build(tmp_path / "a", mode=mode, **sides, **config)
  blocked = build(
      tmp_path / "b", mode=mode, **sides, **config, memory_budget_bytes=120, left_rows_per_partition=2
  )
  layout = blocked.info.metadata["provenance"]["layout"]
  assert layout["right_blocks"] >= 5 and layout["partitions"] == 3
  assert reference.info.metadata["provenance"]["layout"]["right_blocks"] == 1
  assert stored_records(blocked) == stored_records(reference)


# -------------------------------------------------------- the spill files --


def test_spill_blocks_stay_within_the_budget_and_read_back_exactly(tmp_path, monkeypatch):
  records = [bytes([k % 251]) * (k * 7 % 50) for k in range(300)]
  spilled = spill.write(tmp_path / "side", records, block_budget_bytes=1000)
  assert spilled.num_records == 300 and spilled.num_bytes == sum(map(len, records))
  assert spilled.blocks[0][0] == 0 and spilled.blocks[-1][1] == 300
  assert all(a[1] == b[0] for a, b in zip(spilled.blocks, spilled.blocks[1:]))
  for start, stop in spilled.blocks:
    cost = sum(len(r) + spill.RECORD_OVERHEAD_BYTES for r in records[start:stop])
    assert cost <= 1000 or stop - start == 1
  monkeypatch.setattr(spill, "READ_CHUNK_BYTES", 64)  # many chunks
  with spilled.open() as reader:
    chunks = list(reader.chunks(13, 299))
    assert len(chunks) > 10
    assert [r for chunk in chunks for r in chunk] == records[13:299]
    assert reader.load(0, 300) == records


# -------------------------------------------------------- collisions --


def test_prefix_keeps_both_copies_and_reports_the_collision(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  builder = build(tmp_path, left=left_path, right=right_path)
  features = builder.info.features
  assert set(features["left"]) == {"name", "id", "vec", "tags", "geo/lat"}
  assert set(features["right"]) == {"name", "score", "count"}
  first = loaded(builder)[5]  # (1, 1)
  assert (first["left"]["name"], first["right"]["name"]) == (b"L1", b"R1")
  assert first["left"]["geo/lat"] == np.float32(51.0)
  record = provenance.read_provenance(builder.data_path)
  assert record["collisions"] == ["name"]
  assert record["collision_policy"] == "prefix"
  assert record["renamed"]["left"]["name"] == "left/name"


@pytest.mark.parametrize("policy, winner", [("left_wins", "L"), ("right_wins", "R")])
def test_wins_policies_keep_one_name_flat(tmp_path, policy, winner):
  left_path, right_path = make_inputs(tmp_path)
  builder = build(tmp_path, left=left_path, right=right_path, collision_policy=policy)
  assert set(builder.info.features) == {
      "name", "id", "vec", "tags", "geo/lat", "score", "count", "left_index", "right_index"}
  for example in loaded(builder):
    index = example["left_index"] if winner == "L" else example["right_index"]
    assert example["name"] == f"{winner}{index}".encode()
  record = provenance.read_provenance(builder.data_path)
  loser = "right" if winner == "L" else "left"
  assert record["collisions"] == ["name"]
  assert record["renamed"][loser] == {"name": None}


def test_error_policy_lists_the_colliding_names(tmp_path):
  left_path, right_path = make_inputs(
      tmp_path, left_rows(), [{**row, "id": 7, "vec": [1.0]} for row in right_rows()]
  )
  raises(
      tmp_path, errors.SchemaError, ["['id', 'name', 'vec']", "collision_policy='error'", "'prefix'"],
      left=left_path, right=right_path, collision_policy="error",
  )


def test_error_policy_without_collisions_builds_flat(tmp_path):
  left_path, right_path = make_inputs(tmp_path, right=[{"score": 1.5}, {"score": 2.5}])
  builder = build(tmp_path, left=left_path, right=right_path, collision_policy="error")
  assert "score" in builder.info.features and "name" in builder.info.features
  assert len(loaded(builder)) == 6


def test_flat_policy_refuses_a_feature_named_like_an_index(tmp_path):
  left_path, right_path = make_inputs(tmp_path, right=[{"right_index": 5}])
  raises(
      tmp_path, errors.SchemaError, ["'right_index' of right", "collision_policy='prefix'"],
      left=left_path, right=right_path, collision_policy="left_wins",
  )
  # Nested under `right/`, the same input is fine.
  builder = build(tmp_path, name="nested", left=left_path, right=right_path)
  assert loaded(builder)[0]["right"]["right_index"] == 5


# -------------------------------------------------------- combinations --


def test_combinations_count_and_order(tmp_path):
  left_path, _ = make_inputs(tmp_path, left_rows(7))
  builder = build(tmp_path, left=left_path, mode="combinations")
  assert index_pairs(builder) == [(i, j) for i in range(7) for j in range(i + 1, 7)]
  assert builder.info.splits["train"].num_examples == 21
  record = provenance.read_provenance(builder.data_path)
  assert record["pairs_considered"] == record["pairs_written"] == 21


# ------------------------------------------------------------ sampling --


def test_sampling_is_deterministic_and_follows_pair_is_sampled(tmp_path):
  left_path, right_path = make_inputs(tmp_path, left_rows(20), right_rows(25))
  first = build(tmp_path / "a", left=left_path, right=right_path, sample_rate=0.3, sample_seed=7)
  again = build(tmp_path / "b", left=left_path, right=right_path, sample_rate=0.3, sample_seed=7)
  other = build(tmp_path / "c", left=left_path, right=right_path, sample_rate=0.3, sample_seed=8)
  assert stored_records(first) == stored_records(again)
  kept = index_pairs(first)
  space = PairSpace("product", 20, 25, 0.3, 7)
  assert kept == [(i, j) for i in range(20) for j in range(25) if pair_is_sampled(space, i, j)]
  assert len(kept) == space.sample_count == 150  # exactly round(0.3 × 500)
  assert index_pairs(other) != kept
  assert first.info.metadata["provenance"]["pairs_written"] == len(kept)


def test_sample_is_exact_and_independent_of_blocking():
  space = PairSpace("product", 1, 200_000, 0.25, 1)
  whole = space.kept(0, 0, 200_000)
  pieces = np.concatenate([space.kept(0, start, min(start + 999, 200_000)) for start in range(0, 200_000, 999)])
  assert whole.tolist() == pieces.tolist()
  assert len(whole) == space.sample_count == 50_000
  # Spread over the range, not bunched: each tenth holds about a tenth of the sample.
  assert all(4_500 < count < 5_500 for count in np.bincount(whole // 20_000))


# ------------------------------------------------------- max_pairs guard --


def test_max_pairs_guard_states_the_product_size_before_writing(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  with pytest.raises(errors.ConfigError) as excinfo:
    make_builder(tmp_path, left=left_path, right=right_path, max_pairs=11)
  assert "N × M = 3 × 4 = 12 pairs, over max_pairs=11" in str(excinfo.value)
  assert not (tmp_path / "tfds").exists()
  assert len(loaded(build(tmp_path, name="ok", left=left_path, right=right_path, max_pairs=12))) == 12


# ----------------------------------------------------------- schemas --


def test_declared_schema_is_used_and_checked(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  left_schema = {"name": "bytes_list[1]", "id": "int64_list[1]", "vec": "float_list[*]",
                 "tags": "bytes_list[*]", "geo/lat": "float_list[1]"}
  builder = build(tmp_path, left=left_path, right=right_path, left_schema=left_schema)
  assert builder.info.features["left"]["vec"].shape == (None,)  # declared, though all have 2
  assert builder.info.features["right"]["count"].shape == (3,)  # inferred
  assert provenance.read_provenance(builder.data_path)["schema"]["left"]["vec"] == "float_list[*]"

  raises(tmp_path / "two", errors.SchemaError,
         [f"{left_path}: record 0 does not match the schema", "feature 'vec' has 2 values, expected 3"],
         left=left_path, right=right_path, left_schema={**left_schema, "vec": "float_list[3]"})
  raises(tmp_path / "three", errors.SchemaError,
         [f"{left_path}: record 0", "feature 'id' is int64_list[1], expected float_list[1]"],
         left=left_path, right=right_path, left_schema={**left_schema, "id": "float_list[1]"})
  raises(tmp_path / "four", errors.ConfigError, ["Feature 'id' is declared as 'int'", "KIND[LENGTH]"],
         left=left_path, right=right_path, left_schema={**left_schema, "id": "int"})


# ------------------------------------------------- files, globs, GZIP --


def test_globs_several_files_and_gzip_detection(tmp_path):
  rows = left_rows(5)
  write_examples(tmp_path / "in" / "l-0.tfrecord", rows[:2])
  write_examples(tmp_path / "in" / "l-1.tfrecord.gz", rows[2:], compression="GZIP")
  write_examples(tmp_path / "in" / "r.tfrecord.gz", right_rows(2), compression="GZIP")
  builder = build(tmp_path, left="l-*", right=["r.tfrecord.gz"], data_root=str(tmp_path / "in"))
  assert [e["left"]["name"] for e in loaded(builder)][::2] == [f"L{i}".encode() for i in range(5)]
  record = provenance.read_provenance(builder.data_path)
  assert record["sources"] == {"left": ["l-0.tfrecord", "l-1.tfrecord.gz"], "right": ["r.tfrecord.gz"]}
  assert record["records"] == {"left": 5, "right": 2}


def test_configured_gzip_compression(tmp_path):
  left_path = write_examples(tmp_path / "in" / "left.data", left_rows(), compression="GZIP")
  right_path = write_examples(tmp_path / "in" / "right.data", right_rows(), compression="GZIP")
  assert len(loaded(build(tmp_path, left=left_path, right=right_path, compression="gzip"))) == 12


# ------------------------------------------------------------ bad input --
# Each callable `config` writes its inputs under tmp_path and returns the config.


def _inputs_and(left_values: Sequence[Values] | None = None, right_values: Sequence[Values] | None = None, /,
                **config) -> Callable[[pathlib.Path], dict]:
  """Writes `make_inputs` (of these rows, if given); the config reads them, with `config` on top."""
  def inputs(tmp: pathlib.Path) -> dict:
    left_path, right_path = make_inputs(tmp, left_values, right_values)
    return {"left": left_path, "right": right_path, **config}
  return inputs


def _left_only(count: int, **config) -> Callable[[pathlib.Path], dict]:
  return lambda tmp: {"left": make_inputs(tmp, left_rows(count))[0], "mode": "combinations", **config}


def _bad_left_row(bad_row: Values) -> Callable[[pathlib.Path], dict]:
  def inputs(tmp: pathlib.Path) -> dict:
    rows = left_rows()
    left_path = write_examples(tmp / "in" / "left.tfrecord", [*rows[:2], bad_row, rows[2]])
    return {"left": left_path, "right": make_inputs(tmp / "r")[1]}
  return inputs


def _missing_left(tmp: pathlib.Path) -> dict:
  return {"left": str(tmp / "nope-*.tfrecord"), "right": make_inputs(tmp)[1]}


def _missing_right(tmp: pathlib.Path) -> dict:
  return {"left": make_inputs(tmp)[1], "right": str(tmp / "missing.tfrecord")}


def _empty_right(tmp: pathlib.Path) -> dict:
  left_path, _ = make_inputs(tmp)
  return {"left": left_path, "right": helpers.write_records(tmp / "in" / "empty.tfrecord", [])}


def _corrupt_right_record(tmp: pathlib.Path) -> dict:
  left_path, right_path = make_inputs(tmp)
  sizes = [len(to_example(row)) + 16 for row in right_rows()]
  data = bytearray(right_path.read_bytes())
  data[sizes[0] + sizes[1] + 14] ^= 0xFF  # a payload byte of record 2: CRC mismatch
  right_path.write_bytes(bytes(data))
  return {"left": left_path, "right": right_path}


def _truncated_left(tmp: pathlib.Path) -> dict:
  left_path, right_path = make_inputs(tmp)
  left_path.write_bytes(left_path.read_bytes()[:-5])
  return {"left": left_path, "right": right_path}


def _truncated_gzip_left(tmp: pathlib.Path) -> dict:
  left_path, right_path = make_inputs(tmp)
  gz_path = tmp / "in" / "left.tfrecord.gz"
  gz_path.write_bytes(gzip.compress(left_path.read_bytes())[:-12])
  return {"left": gz_path, "right": right_path}


def _text_right(tmp: pathlib.Path) -> dict:
  left_path, _ = make_inputs(tmp)
  text = helpers.write_records(tmp / "in" / "text.tfrecord", [to_example(right_rows()[0]), b"hello, world"])
  return {"left": left_path, "right": text}


def _sequence_example_right(tmp: pathlib.Path) -> dict:
  left_path, _ = make_inputs(tmp)
  sequence = tf.train.SequenceExample()
  sequence.context.feature["name"].bytes_list.value.append(b"s")
  sequence.feature_lists.feature_list["frames"].feature.add().int64_list.value.append(1)
  sequence_path = helpers.write_records(tmp / "in" / "seq.tfrecord", [sequence.SerializeToString()])
  return {"left": left_path, "right": sequence_path}


_ROW = {"name": b"x", "id": 1, "vec": [1.0, 2.0], "tags": [], "geo/lat": 1.0}  # a left row on the inferred schema
Failure = helpers.Failure
FAILURES = [
    # inputs
    pytest.param(Failure(errors.SourceError, ["No TFRecord file found at", "nope-*.tfrecord"], _missing_left),
                 id="missing-left"),
    pytest.param(Failure(errors.SourceError, ["No TFRecord file found at", "missing.tfrecord"], _missing_right),
                 id="missing-right"),
    pytest.param(Failure(errors.SourceError, ["The right input holds no records", "empty.tfrecord"], _empty_right),
                 id="empty-input"),
    pytest.param(Failure(errors.SourceError, ["{tmp}/in/right.tfrecord: record 2 is corrupt or truncated",
                                              "Regenerate"], _corrupt_right_record),
                 id="corrupt-record-names-file-and-index"),
    pytest.param(Failure(errors.SourceError, ["{tmp}/in/left.tfrecord: record 2 is corrupt or truncated"],
                         _truncated_left), id="truncated-file-names-file-and-index"),
    pytest.param(Failure(errors.SourceError, ["{tmp}/in/left.tfrecord.gz: record", "corrupt or truncated"],
                         _truncated_gzip_left), id="truncated-gzip-file"),
    pytest.param(Failure(errors.SchemaError, ["{tmp}/in/text.tfrecord: record 1 is not a tf.train.Example"],
                         _text_right), id="text-records"),
    pytest.param(Failure(errors.SchemaError, ["{tmp}/in/seq.tfrecord: record 0 is not a tf.train.Example",
                                              "SequenceExample"], _sequence_example_right), id="sequence-examples"),
    # records off the inferred schema, named by file and record
    pytest.param(Failure(errors.SchemaError, ["{tmp}/in/left.tfrecord: record 2", "extra feature 'extra'"],
                         _bad_left_row({**_ROW, "extra": 3})), id="off-schema-extra-feature"),
    pytest.param(Failure(errors.SchemaError, ["{tmp}/in/left.tfrecord: record 2", "missing feature 'id'"],
                         _bad_left_row({k: v for k, v in _ROW.items() if k != "id"})), id="off-schema-missing-feature"),
    pytest.param(Failure(errors.SchemaError, ["{tmp}/in/left.tfrecord: record 2",
                                              "feature 'id' is float_list[1], expected int64_list[1]"],
                         _bad_left_row({**_ROW, "id": 1.5})), id="off-schema-kind"),
    # pair counts
    pytest.param(Failure(errors.SourceError, ["1 × 0 / 2 = 0", "at least two records"], _left_only(1)),
                 id="combinations-of-one-record"),
    pytest.param(Failure(errors.ConfigError, ["6 × 5 / 2 = 15 pairs, over max_pairs=14"], _left_only(6, max_pairs=14)),
                 id="max-pairs-under-combinations"),
    pytest.param(Failure(errors.SourceError, ["sample_rate=1e-09", "kept none of the 1 pairs", "Raise sample_rate"],
                         _inputs_and(left_rows(1), right_rows(1), sample_rate=1e-9)), id="sampling-that-keeps-nothing"),
    # config values
    pytest.param(Failure(errors.ConfigError, ["mode='all'", "'product', 'combinations'"], _inputs_and(mode="all")),
                 id="mode"),
    pytest.param(Failure(errors.ConfigError, ["collision_policy='merge'",
                                              "'prefix', 'error', 'left_wins', 'right_wins'"],
                         _inputs_and(collision_policy="merge")), id="collision-policy"),
    pytest.param(Failure(errors.ConfigError, ["`left` lists no input"], _inputs_and(left=[])), id="no-left"),
    pytest.param(Failure(errors.ConfigError, ["`right` lists no input", "mode='combinations'"], _inputs_and(right=[])),
                 id="no-right"),
    pytest.param(Failure(errors.ConfigError, ["leave `right` and `right_schema` empty"],
                         _inputs_and(mode="combinations")), id="combinations-with-right"),
    pytest.param(Failure(errors.ConfigError, ["sample_rate=0.0", "(0, 1]"], _inputs_and(sample_rate=0.0)),
                 id="sample-rate-zero"),
    pytest.param(Failure(errors.ConfigError, ["sample_rate=1.5"], _inputs_and(sample_rate=1.5)),
                 id="sample-rate-over-one"),
    pytest.param(Failure(errors.ConfigError, ["memory_budget_bytes=0"], _inputs_and(memory_budget_bytes=0)),
                 id="memory-budget"),
    pytest.param(Failure(errors.ConfigError, ["max_pairs=0"], _inputs_and(max_pairs=0)), id="max-pairs"),
    pytest.param(Failure(errors.ConfigError, ["left_rows_per_partition=0"], _inputs_and(left_rows_per_partition=0)),
                 id="left-rows-per-partition"),
    pytest.param(Failure(errors.ConfigError, ["compression='zip'"], _inputs_and(compression="zip")), id="compression"),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_build_fails(tmp_path, failure):
  helpers.assert_fails_as(Builder, tmp_path, failure)
  assert_nothing_prepared(tmp_path)


def test_failed_build_leaves_nothing_and_rerun_succeeds(tmp_path):
  left_path, right_path = make_inputs(tmp_path, left_rows(1), right_rows(1))
  # Fails while writing (the sample is empty), inside TFDS's incomplete dir.
  with pytest.raises(errors.SourceError, match="kept none"):
    build(tmp_path, name="mine", left=left_path, right=right_path, sample_rate=1e-9)
  assert_nothing_prepared(tmp_path)
  with pytest.raises(DatasetInfoFileError, match=r"Could not read dataset info from .*/mine/1\.1\.0/dataset_info\.json"):
    tfds.builder_from_directory(str(tmp_path / "tfds" / "cross_product" / "mine" / "1.1.0"))
  builder = build(tmp_path, name="mine", left=left_path, right=right_path)
  assert len(loaded(builder)) == 1


def test_sources_are_never_modified_and_no_spill_is_left(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (left_path, right_path)}
  builder = build(tmp_path, left=left_path, right=right_path, memory_budget_bytes=100)
  assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (left_path, right_path)} == before
  assert sorted(p.name for p in pathlib.Path(builder.data_path).iterdir()) == [
      "croissant.json", "cross_product-train.tfrecord-00000-of-00001", "dataset_info.json", "features.json",
      "metadata.json"]


# ---------------------------------------------------- provenance, CLI --


def test_provenance_is_recorded(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  builder = build(tmp_path, left=left_path, right=right_path, sample_rate=0.5, data_root=str(tmp_path / "in"))
  record = provenance.read_provenance(builder.data_path)
  assert record["builder"] == "cross_product"
  assert record["sources"] == {"left": ["left.tfrecord"], "right": ["right.tfrecord"]}
  assert record["records"] == {"left": 3, "right": 4}
  assert record["mode"] == "product"
  assert record["pairs_considered"] == 12
  assert record["pairs_written"] == builder.info.splits["train"].num_examples
  assert record["sampling"] == {"rate": 0.5, "seed": 0}
  assert record["schema"]["right"] == {"count": "int64_list[3]", "name": "bytes_list[1]", "score": "float_list[1]"}
  assert record["schema"]["left"]["tags"] == "bytes_list[*]"
  assert record["layout"] == {"partitions": 1, "right_blocks": 1, "memory_budget_bytes": 256 * 1024 * 1024}


def test_registered_by_name(tmp_path):
  assert "cross_product" in tfds_builders.BUILDERS
  builder = tfds.builder("cross_product", data_dir=str(tmp_path))
  assert builder.builder_config.name == "product"
  assert isinstance(builder, Builder)


@pytest.mark.slow
def test_tfds_build_cli_with_json_config(tmp_path):
  left_path, right_path = make_inputs(tmp_path)
  config = {"name": "cli", "left": [str(left_path)], "right": [str(right_path)],
            "collision_policy": "right_wins", "mode": "product"}
  result = subprocess.run(
      [str(pathlib.Path(sys.executable).parent / "tfds"), "build", str(helpers.REPO / "tfds_builders" / "cross_product"),
       "--data_dir", str(tmp_path / "tfds"), "--config", json.dumps(config)],
      capture_output=True, text=True, check=False,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_GCE_CHECK": "true"},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  built = tfds.builder_from_directory(str(tmp_path / "tfds" / "cross_product" / "cli" / "1.1.0"))
  assert [e["name"] for e in loaded(built)][:4] == [b"R0", b"R1", b"R2", b"R3"]


# ------------------------------------------------------------------ Beam --


@pytest.mark.slow  # about 30 s: Beam DirectRunner
def test_beam_splits_the_left_side_and_matches_the_local_path(tmp_path):
  left_path, right_path = make_inputs(tmp_path, left_rows(5), right_rows(6))
  config = dict(left=left_path, right=right_path, memory_budget_bytes=150, left_rows_per_partition=2,
                sample_rate=0.7, sample_seed=2)
  local = build(tmp_path / "local", **config)
  on_beam = make_builder(tmp_path / "beam", **config)
  on_beam.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_options=PipelineOptions(
      ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])))
  assert on_beam.info.metadata["provenance"]["layout"]["partitions"] == 3
  # Three tiny partition pieces, far below TFDS's min shard size: joined into one shard.
  assert on_beam.info.splits["train"].shard_lengths == local.info.splits["train"].shard_lengths
  assert len(on_beam.info.splits["train"].shard_lengths) == 1
  assert stored_records(on_beam) == stored_records(local)
  assert on_beam.info.features.to_json() == local.info.features.to_json()
  assert not list((tmp_path / "beam").rglob("cross_product_spill*"))
