"""numpy_arrays' hash split: split_percent is the database's rule; split_fractions, deprecated, keeps its assignments."""

from __future__ import annotations

import functools
import logging
import pathlib
import sqlite3

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import database
from tfds_builders.core import errors
from tfds_builders.core import splits
from tfds_builders.numpy_arrays import Builder

from tests import helpers

build = functools.partial(helpers.build, Builder)
PERCENT = {"train": 60, "validation": 15, "test": 25}
ROWS = 300


def _ids(builder: tfds.core.DatasetBuilder) -> dict[str, list[int]]:
  """Split -> the stored ids (the `array` feature), sorted."""
  return {split: sorted(int(example["array"]) for example in tfds.as_numpy(builder.as_dataset(split=split)))
          for split in builder.info.splits}


def _keyed(tmp_path: pathlib.Path, **config) -> tuple[tfds.core.DatasetBuilder, list[str]]:
  """A built `paths` config of one `.npy` holding 0..ROWS-1, and each row's example key."""
  tmp_path.mkdir(parents=True, exist_ok=True)
  np.save(tmp_path / "ids.npy", np.arange(ROWS, dtype=np.int64))
  builder = build(tmp_path, paths=[tmp_path / "ids.npy"], **config)
  (group,) = builder._plan.groups_for("train")  # pylint: disable=protected-access
  return builder, [f"{group.key}:{row:09d}" for row in range(ROWS)]


def _by_rule(keys: list[str], ranges: dict[str, tuple[int, int]], bucket, seed: int) -> dict[str, list[int]]:
  """Split -> the ids whose key's bucket falls in its range."""
  found = {name: [] for name in ranges}
  for index, key in enumerate(keys):
    found[splits.split_of(ranges, bucket(seed, key))].append(index)
  return found


def test_split_percent_assigns_as_the_database_builder_does(tmp_path):
  builder, keys = _keyed(tmp_path / "arrays", split_percent=PERCENT, split_seed=7)
  assigned = _ids(builder)
  assert assigned == _by_rule(keys, splits.bucket_ranges(PERCENT), splits.split_bucket, 7)
  assert all(assigned.values()) and sorted(sum(assigned.values(), [])) == list(range(ROWS))
  # The database builder, given the same keys, seed and spelling, puts each key in the same split (SQL side).
  path = tmp_path / "keys.sqlite"
  with sqlite3.connect(path) as connection:
    connection.execute("CREATE TABLE k (id INTEGER, key TEXT)")
    connection.executemany("INSERT INTO k VALUES (?, ?)", enumerate(keys))
  rows = helpers.build(database.Builder, tmp_path / "database", sqlite_path=str(path), query="SELECT id, key FROM k",
                       order_by="id", split_percent=PERCENT, split_key="key", split_seed=7)
  assert {split: sorted(int(example["id"]) for example in tfds.as_numpy(rows.as_dataset(split=split)))
          for split in rows.info.splits} == assigned


def test_split_fractions_keep_their_assignments_and_warn_once(tmp_path, caplog):
  fractions = {"train": 0.6, "validation": 0.15, "test": 0.25}
  with caplog.at_level(logging.WARNING):
    builder, keys = _keyed(tmp_path, split_fractions=fractions, split_seed=5)
    assigned = _ids(builder)
  expected = {name: [] for name in fractions}
  for index, key in enumerate(keys):
    expected[helpers.split_fractions_assignment(fractions, 5, key)].append(index)
  assert assigned == expected
  assert assigned != _by_rule(keys, splits.bucket_ranges(PERCENT), splits.split_bucket, 5)
  warnings = [record.getMessage() for record in caplog.records if "split_fractions is deprecated" in record.getMessage()]
  assert len(warnings) == 1, warnings
  for fragment in ("numpy_arrays config 't'", "use split_percent={'train': 60.0, 'validation': 15.0, 'test': 25.0}",
                   "not the same assignment"):
    assert fragment in warnings[0]


def test_split_percent_does_not_warn(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    _keyed(tmp_path, split_percent={"train": 50, "test": 50})
  assert not [record for record in caplog.records if "deprecated" in record.getMessage()]


_CONFIG = "numpy_arrays config 't'"
FAILURES = [
    pytest.param(helpers.Failure(errors.ConfigError, [_CONFIG, "split_percent", "must be positive and sum to 100",
                                                      "they sum to 90"],
                                 {"paths": ["x"], "split_percent": {"train": 50, "test": 40}}), id="percent-sum"),
    pytest.param(helpers.Failure(errors.ConfigError, [_CONFIG, "must be positive"],
                                 {"paths": ["x"], "split_percent": {"train": 100, "test": 0}}), id="percent-zero"),
    pytest.param(helpers.Failure(errors.ConfigError, [_CONFIG, "`split_percent` or its deprecated spelling", "not both"],
                                 {"paths": ["x"], "split_percent": {"train": 100}, "split_fractions": {"train": 1.0}}),
                 id="both-spellings"),
    pytest.param(helpers.Failure(errors.ConfigError, [_CONFIG, "split_percent only applies with `paths`"],
                                 {"splits": {"train": ["x"]}, "split_percent": {"train": 100}}),
                 id="percent-with-splits"),
    pytest.param(helpers.Failure(errors.ConfigError, [_CONFIG, "split_percent ({split: percent}", "must be given"],
                                 {"paths": ["x"]}), id="percent-missing"),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_split_config_errors(tmp_path, failure):
  helpers.assert_fails_as(Builder, tmp_path, failure)
