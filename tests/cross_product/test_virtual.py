"""VirtualPairs: the builder's examples by index over ArrayRecord inputs, the exact-size sample, and its refusals."""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from tfds_builders.core import errors
from tfds_builders.core.fast import permutation
from tfds_builders.cross_product import Builder
from tfds_builders.cross_product import BuilderConfig
from tfds_builders.cross_product import PairSpace
from tfds_builders.cross_product import VirtualPairs
from tfds_builders.cross_product import pair_is_sampled

from tests import helpers
from tests.cross_product import test_cross_product as cases


def write_array_record(path: pathlib.Path, rows: Sequence[Mapping[str, Any]]) -> pathlib.Path:
  """An ArrayRecord file of the rows as serialized tf.train.Example."""
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  for row in rows:
    writer.write(cases.to_example(row))
  writer.close()
  return path


def array_inputs(tmp_path: pathlib.Path, num_left: int, num_right: int) -> dict[str, list[str]]:
  """The test's left rows in two ArrayRecord files (so that rows count across files), and its right rows."""
  rows = cases.left_rows(num_left)
  half = num_left // 2
  left = [str(write_array_record(tmp_path / "in" / f"left-{part}.array_record", chunk))
          for part, chunk in enumerate((rows[:half], rows[half:]))]
  right = [str(write_array_record(tmp_path / "in" / "right.array_record", cases.right_rows(num_right)))]
  return {"left": left, "right": right}


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
  """Equal values of equal types (NumPy arrays: dtype, shape and items), nested dicts alike."""
  assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
  if isinstance(expected, dict):
    assert actual.keys() == expected.keys(), where
    for key in expected:
      assert_same(actual[key], expected[key], f"{where}/{key}")
  elif isinstance(expected, np.ndarray):
    assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
    assert actual.tolist() == expected.tolist(), where
  else:
    assert actual == expected, where


# --------------------------------------------------------- the sample --


@pytest.mark.parametrize("size", [*range(1, 70), 255, 256, 257, 1000])
def test_permutation_is_a_bijection(size):
  for seed in (0, 1, 2**64 - 1):
    perm = permutation.Permutation(size, seed)
    images = perm(np.arange(size))
    assert sorted(images.tolist()) == list(range(size))
    assert perm.inverse(images).tolist() == list(range(size))
    assert [perm(t) for t in range(min(size, 5))] == images[:5].tolist()  # scalars alike


def test_permutation_depends_on_the_seed_and_refuses_values_outside():
  assert permutation.Permutation(1000, 1)(np.arange(20)).tolist() != permutation.Permutation(1000, 2)(
      np.arange(20)).tolist()
  assert permutation.Permutation(1000, 1)(7) == permutation.Permutation(1000, 1)(7)
  with pytest.raises(ValueError, match=r"\[0, 10\)"):
    permutation.Permutation(10)(10)
  with pytest.raises(ValueError, match="size=0"):
    permutation.Permutation(0)


@pytest.mark.parametrize("rate, size, expected", [(0.5, 7, 4), (0.3, 500, 150), (0.25, 2, 1), (1e-9, 12, 0),
                                                  (0.999, 10, 10), (0.6, 21, 13)])
def test_sample_count_is_the_rate_times_the_pairs_rounded(rate, size, expected):
  space = PairSpace("combinations", 7, 7, rate) if size == 21 else PairSpace("product", 1, size, rate)
  assert space.sample_count == expected
  assert sum(pair_is_sampled(space, i, j) for i in range(space.num_left)
             for j in range(space.first_right(i), space.num_right)) == expected


@pytest.mark.parametrize("mode, num_left, num_right", [("product", 7, 5), ("product", 1, 9), ("combinations", 2, 2),
                                                       ("combinations", 9, 9)])
def test_candidate_numbers_run_over_the_pairs_in_order(mode, num_left, num_right):
  space = PairSpace(mode, num_left, num_right)
  pairs = [(i, j) for i in range(num_left) for j in range(space.first_right(i), num_right)]
  assert [space.pair(p) for p in range(space.size)] == pairs
  assert [space.index(i, j) for i, j in pairs] == list(range(space.size))
  rows, columns = space.pairs_of(np.arange(space.size))
  assert list(zip(rows.tolist(), columns.tolist())) == pairs


def test_combinations_pairs_are_exact_past_int64_products():
  space = PairSpace("combinations", 2**32, 2**32)  # m(m+1) of the last rows overflows int64
  numbers = [0, 1, space.size // 3, space.size - 2, space.size - 1]
  rows, columns = space.pairs_of(np.array(numbers))
  assert list(zip(rows.tolist(), columns.tolist())) == [space.pair(p) for p in numbers]
  assert space.pair(0) == (0, 1) and space.pair(space.size - 1) == (2**32 - 2, 2**32 - 1)


def test_a_numpy_seed_is_the_same_seed(tmp_path):
  inputs = array_inputs(tmp_path, 3, 4)
  plain = VirtualPairs({**inputs, "sample_rate": 0.5, "sample_seed": 5})
  numpy_seed = VirtualPairs({**inputs, "sample_rate": 0.5, "sample_seed": np.int64(5)})
  assert [plain.pair(k) for k in range(len(plain))] == [numpy_seed.pair(k) for k in range(len(numpy_seed))]


def test_combinations_pairs_are_exact_at_a_billion_records():
  space = PairSpace("combinations", 10**9, 10**9)
  numbers = [0, 1, 10**9 - 2, 10**9 - 1, space.size // 3, space.size - 2, space.size - 1]
  rows, columns = space.pairs_of(np.array(numbers))
  assert list(zip(rows.tolist(), columns.tolist())) == [space.pair(p) for p in numbers]
  assert space.pair(space.size - 1) == (10**9 - 2, 10**9 - 1) and space.pair(10**9 - 1) == (1, 2)
  assert [space.index(*space.pair(p)) for p in numbers] == numbers


# --------------------------------------------- equal to the builder --


_EQUALITY = {
    "product-prefix": {},
    "product-left-wins-sampled": {"collision_policy": "left_wins", "sample_rate": 0.4, "sample_seed": 5},
    "combinations-prefix-sampled": {"mode": "combinations", "sample_rate": 0.7, "sample_seed": 2},
    "combinations-right-wins": {"mode": "combinations", "collision_policy": "right_wins"},
}


@pytest.mark.parametrize("case", sorted(_EQUALITY))
def test_every_example_equals_the_builders_example_of_the_same_pair(tmp_path, case):
  config = _EQUALITY[case]
  sides = array_inputs(tmp_path, 60, 50)  # 3,000 pairs, or 1,770 under combinations
  if config.get("mode") == "combinations":
    del sides["right"]
  builder = Builder(config=BuilderConfig(name="eq", **sides, **config), data_dir=str(tmp_path / "tfds"),
                    file_format="array_record")
  builder.download_and_prepare()
  built = {(example["left_index"], example["right_index"]): example
           for example in builder.as_data_source(split="train")}
  pairs = VirtualPairs({**sides, **config})
  space = PairSpace(config.get("mode", "product"), 60, 50 if "right" in sides else 60,
                    config.get("sample_rate", 1.0), config.get("sample_seed", 0))
  assert len(pairs) == len(built) == space.sample_count
  assert builder.info.splits["train"].num_examples == len(pairs)
  examples = pairs.__getitems__(range(len(pairs)))
  assert {(ex["left_index"], ex["right_index"]) for ex in examples} == set(built)
  for index, example in enumerate(examples):
    assert_same(example, built[pairs.pair(index)], f"{case}[{index}]")
  for index in (0, 17, len(pairs) - 1, -1):
    assert_same(pairs[index], examples[index], f"{case}[{index}]")
  if "sample_rate" not in config:  # unsampled: the builder's (i, j) order
    assert [pairs.pair(k) for k in range(len(pairs))] == sorted(built)


def test_builder_reads_array_record_inputs_as_it_reads_tfrecord(tmp_path):
  """The same rows as TFRecord and as ArrayRecord inputs build the same bytes (one config drives both)."""
  sides = array_inputs(tmp_path, 6, 5)
  left_tf, right_tf = cases.make_inputs(tmp_path / "tf", cases.left_rows(6), cases.right_rows(5))
  options = {"sample_rate": 0.5, "sample_seed": 1, "collision_policy": "left_wins"}
  from_array = helpers.build(Builder, tmp_path / "a", **sides, **options)
  from_tfrecord = helpers.build(Builder, tmp_path / "b", left=left_tf, right=right_tf, **options)
  assert cases.stored_records(from_array) == cases.stored_records(from_tfrecord)
  assert len(cases.stored_records(from_array)) == 15


def test_a_prepared_array_record_dataset_is_an_input(tmp_path):
  sides = array_inputs(tmp_path, 4, 3)
  genotypes = helpers.make_builder(Builder, tmp_path, name="left_side", left=sides["left"], mode="combinations")
  genotypes = Builder(config=genotypes.builder_config, data_dir=str(tmp_path / "tfds"), file_format="array_record")
  genotypes.download_and_prepare()  # 6 pairs, a dataset folder of ArrayRecord shards
  pairs = VirtualPairs({"left": [str(genotypes.data_dir)], "right": sides["right"], "collision_policy": "prefix"})
  assert len(pairs) == 18
  example = pairs[4]
  assert (example["left_index"], example["right_index"]) == (1, 1)
  assert example["left"]["left/name"] == b"L0" and example["left"]["right/name"] == b"L2"
  assert example["right"]["name"] == b"R1"


# ------------------------------------------------------- as a source --


def test_index_protocol(tmp_path):
  pairs = VirtualPairs(array_inputs(tmp_path, 3, 4))
  assert len(pairs) == 12 and pairs.pair(5) == (1, 1) and pairs.pair(-1) == (2, 3)
  assert pairs[np.int64(5)]["left_index"] == 1
  assert [ex["right_index"] for ex in pairs][:5] == [0, 1, 2, 3, 0]
  assert pairs.__getitems__([]) == []
  assert [ex["left_index"] for ex in pairs.__getitems__([11, -12, 4])] == [2, 0, 1]
  for bad in (12, -13):
    with pytest.raises(IndexError, match=f"index {bad} is out of range.*holds 12 pairs"):
      pairs[bad]  # pylint: disable=pointless-statement
  with pytest.raises(IndexError, match="index 99 is out of range"):
    pairs.__getitems__([0, 99])
  with pytest.raises(IndexError, match=f"index {2**63} is out of range"):  # no int64 holds it
    pairs.__getitems__([0, 2**63])
  with pytest.raises(TypeError):
    pairs[1:3]  # pylint: disable=pointless-statement
  assert "VirtualPairs(config='virtual', mode='product', left=3, right=4, pairs=12)" == repr(pairs)


def test_pair_is_sampled_refuses_what_is_no_pair():
  with pytest.raises(errors.ConfigError,
                     match=r"\(2, 1\) is no pair of combinations over 3 x 3 records; use 0 <= i < 3 and i < j < 3"):
    pair_is_sampled(PairSpace("combinations", 3, 3, 0.5), 2, 1)


def test_a_source_survives_pickling_for_grain_workers(tmp_path):
  pairs = VirtualPairs({**array_inputs(tmp_path, 3, 4), "sample_rate": 0.5})
  again = pickle.loads(pickle.dumps(pairs))
  assert len(again) == 6 and [again.pair(k) for k in range(6)] == [pairs.pair(k) for k in range(6)]
  assert_same(again[5], pairs[5])


def test_shared_arrays_are_read_only_and_dicts_are_fresh(tmp_path):
  pairs = VirtualPairs(array_inputs(tmp_path, 3, 4))
  first = pairs[0]
  with pytest.raises(ValueError, match="read-only"):
    first["left"]["vec"][0] = 9.0
  first["left"]["name"] = b"changed"
  assert pairs[1]["left"]["name"] == b"L0"


def test_grain_shuffles_and_loads_every_pair(tmp_path):
  pairs = VirtualPairs({**array_inputs(tmp_path, 5, 4), "sample_rate": 0.5, "sample_seed": 3})
  assert len(pairs) == 10
  everything = {pairs.pair(k) for k in range(len(pairs))}
  shuffled = grain.MapDataset.source(pairs).shuffle(seed=0)
  seen = [(shuffled[k]["left_index"], shuffled[k]["right_index"]) for k in range(len(pairs))]
  assert set(seen) == everything and len(seen) == 10
  loader = grain.DataLoader(
      data_source=pairs,
      sampler=grain.samplers.IndexSampler(num_records=len(pairs), shuffle=True, seed=0, num_epochs=1),
      worker_count=0,
  )
  assert {(ex["left_index"], ex["right_index"]) for ex in loader} == everything


# ----------------------------------------------------------- refusals --


def test_tfrecord_inputs_are_refused_naming_the_file(tmp_path):
  left, right = cases.make_inputs(tmp_path)
  sides = array_inputs(tmp_path, 3, 4)
  with pytest.raises(errors.SourceError) as excinfo:
    VirtualPairs({"left": sides["left"], "right": [str(right)]})
  message = str(excinfo.value)
  assert f"right input (`right`): {right} is not an ArrayRecord file" in message
  assert "--file_format array_record" in message and "cross_product builder" in message
  with pytest.raises(errors.SourceError, match="left input"):
    VirtualPairs({"left": [str(left)], "mode": "combinations"})
  with pytest.raises(errors.SourceError, match="is not an ArrayRecord file"):
    VirtualPairs("product")  # the bundled configs are TFRecord


@pytest.mark.parametrize("config, error_type, fragments", [
    ("nope", errors.ConfigError, ["no cross_product config named 'nope'", "'combinations', 'product'"]),
    ({"lefts": ["x"]}, errors.ConfigError, ["unknown cross_product config fields ['lefts']"]),
    (3, errors.ConfigError, ["config is a int"]),
    ({"mode": "all"}, errors.ConfigError, ["mode='all'"]),
    ({"sample_rate": 1e-9}, errors.SourceError, ["kept none of the 12 pairs", "Raise sample_rate"]),
    ({"collision_policy": "error"}, errors.SchemaError, ["features ['name']", "collision_policy='error'"]),
    ({"max_pairs": 11}, errors.ConfigError, ["N × M = 3 × 4 = 12 pairs, over max_pairs=11"]),
    ({"sample_seed": 1.5}, errors.ConfigError, ["sample_seed=1.5; use an integer"]),
    ({"sample_seed": "7"}, errors.ConfigError, ["sample_seed='7'; use an integer"]),
])
def test_refusals_name_what_to_do(tmp_path, config, error_type, fragments):
  if isinstance(config, dict):
    config = {**array_inputs(tmp_path, 3, 4), **config}
  with pytest.raises(error_type) as excinfo:
    VirtualPairs(config)
  for fragment in fragments:
    assert fragment in str(excinfo.value)


def test_corrupt_and_off_schema_inputs_are_refused_as_the_builder_refuses_them(tmp_path):
  sides = array_inputs(tmp_path, 3, 4)
  broken = tmp_path / "in" / "broken.array_record"
  broken.write_bytes(b"not an array record")
  with pytest.raises(errors.SourceError, match=f"{broken}: not a readable ArrayRecord file"):
    VirtualPairs({**sides, "right": [str(broken)]})
  truncated = write_array_record(tmp_path / "in" / "cut.array_record", cases.right_rows(4))
  truncated.write_bytes(truncated.read_bytes()[:-20])
  for make in (lambda: VirtualPairs({**sides, "right": [str(truncated)]}),
               lambda: helpers.make_builder(Builder, tmp_path, left=sides["left"], right=[str(truncated)])):
    with pytest.raises(errors.SourceError, match=f"right input .*{truncated}: not a readable ArrayRecord file"):
      make()
  odd = write_array_record(tmp_path / "in" / "odd.array_record", [*cases.right_rows(2), {"name": b"x", "score": 1}])
  for make in (lambda: VirtualPairs({**sides, "right": [str(odd)]}),
               lambda: helpers.make_builder(Builder, tmp_path, left=sides["left"], right=[str(odd)])):
    with pytest.raises(errors.SchemaError, match=f"{odd}: record 2"):
      make()


def test_data_root_resolves_relative_inputs(tmp_path):
  array_inputs(tmp_path, 3, 4)
  pairs = VirtualPairs({"left": ["left-*.array_record"], "right": ["right.array_record"]},
                       data_root=str(tmp_path / "in"))
  assert len(pairs) == 12 and pairs[0]["left"]["name"] == b"L0"
  assert isinstance(pairs.features, tfds.features.FeaturesDict)
