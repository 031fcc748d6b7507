"""Splits and order: the hash split, split queries, order_by, identifiers, Beam partitions."""

from __future__ import annotations

import functools
import logging
import pickle
import sqlite3

import pytest
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import shard_writer
from tfds_builders.core import splits
from tfds_builders.database import Builder
from tfds_builders.database import reading
from tfds_builders.database import session as session_lib

from tests import helpers
from tests.database.common import POLICY_TABLE
from tests.database.common import PREP_TABLE
from tests.database.common import make_builder
from tests.database.common import build
from tests.database.common import examples
from tests.database.common import column
from tests.database.common import records
from tests.database.common import assert_build_fails
from tests.database.common import sqlite_file
from tests.database.common import bucket


# ------------------------------------------------------ splits and order --


def _id_table(count: int) -> str:
  values = ", ".join(f"({i}, 'row {i}')" for i in range(1, count + 1))
  return f"CREATE TABLE k (id INTEGER PRIMARY KEY, label TEXT); INSERT INTO k VALUES {values};"


def test_hash_split_is_stable_per_key(tmp_path):
  path = sqlite_file(tmp_path, _id_table(60))
  config = dict(sqlite_path=path, query="SELECT * FROM k", order_by="id",
                split_percent={"train": 50, "validation": 30, "test": 20}, split_key="id",
                split_seed=7)
  builder = build(tmp_path, **config)
  edges = {"train": (0, 0.5), "validation": (0.5, 0.8), "test": (0.8, 1.0)}
  for split, (low, high) in edges.items():
    expected = [i for i in range(1, 61) if low * 2**32 <= bucket(i, 7) < high * 2**32]
    assert [int(i) for i in column(builder, "id", split)] == expected
  # More rows later: the earlier keys keep their split.
  connection = sqlite3.connect(path)
  connection.executemany("INSERT INTO k VALUES (?, ?)", [(i, f"row {i}") for i in range(61, 200)])
  connection.commit()
  connection.close()
  grown = build(tmp_path / "grown", **config)
  for split in edges:
    old = [int(i) for i in column(grown, "id", split) if i <= 60]
    assert old == [int(i) for i in column(builder, "id", split)]


def test_order_by_makes_builds_identical_and_no_order_is_recorded(tmp_path, caplog):
  path = sqlite_file(tmp_path, _id_table(30))
  config = dict(sqlite_path=path, query="SELECT * FROM k", order_by=["label", "id"])
  first, second = build(tmp_path / "a", **config), build(tmp_path / "b", **config)
  assert records(first) == records(second)
  assert first.info.metadata["provenance"]["order"] == {"order_by": ["label", "id"]}
  labels = [bytes(v).decode() for v in column(first, "label")]
  assert labels == sorted(labels)
  with caplog.at_level(logging.WARNING):
    unordered = build(tmp_path / "c", sqlite_path=path, query="SELECT * FROM k")
  assert "not guaranteed" in unordered.info.metadata["provenance"]["order"]
  assert any("row order is not guaranteed" in r.getMessage() for r in caplog.records)


def test_order_by_that_is_not_unique_is_refused(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE d (g INTEGER, v TEXT); INSERT INTO d VALUES (1, 'a'), (1, 'b');")
  assert_build_fails(tmp_path, errors.SchemaError, "order_by ['g'] is not unique", "g='1'",
                     "Add columns to order_by", sqlite_path=path, query="SELECT * FROM d", order_by="g")


def test_split_queries_with_different_columns_are_refused(tmp_path):
  path = sqlite_file(tmp_path, PREP_TABLE)
  assert_build_fails(tmp_path, errors.SchemaError, "Split 'test' returns columns id int",
                     "same column names and types", sqlite_path=path,
                     split_queries={"train": "SELECT id, part FROM q", "test": "SELECT id FROM q"})


def test_quoted_identifiers_and_bound_parameters(tmp_path):
  path = sqlite_file(tmp_path, 'CREATE TABLE w ("we""ird Name" INTEGER, v TEXT); '
                               "INSERT INTO w VALUES (2, 'b'), (1, 'a''); DROP TABLE w; --');")
  hostile = "a'); DROP TABLE w; --"
  builder = build(tmp_path, sqlite_path=path, query="SELECT * FROM w WHERE v = ? OR v = 'b'",
                  params=[hostile], order_by='we"ird Name',
                  split_percent={"train": 100}, split_key='we"ird Name')
  assert [e["v"] for e in examples(builder)] == [hostile.encode(), b"b"]
  assert sqlite3.connect(path).execute("SELECT count(*) FROM w").fetchone() == (2,)


def test_split_with_no_rows(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  assert_build_fails(tmp_path, errors.SourceError, "'train' has no examples",
                     sqlite_path=path, query="SELECT * FROM p WHERE id > 100")


def test_split_bucket_matches_postgres(pg):
  keys = [1, 42, "abc", "héllo"]
  found = pg.run(
      "SELECT k, ('x' || substr(md5('5:' || k), 1, 8))::bit(32)::bigint FROM unnest(%s::text[]) k",
      [[str(k) for k in keys]])
  assert [row[1] for row in found] == [splits.split_bucket("5", k) for k in keys]
  assert [splits.split_bucket("5", k) for k in keys] == [bucket(k, 5) for k in keys]


def _partitioned_records(builder: Builder, split: str) -> tuple[int, list[bytes]]:
  """Runs a split's Beam partitions in sequence, each pickled as Beam would ship it."""
  plan = builder._plan  # pylint: disable=protected-access
  with session_lib.open_session(plan.spec) as coordinator:
    jobs = plan.prepare(coordinator, on_beam=True).jobs[split]
    partitions = [pickle.loads(pickle.dumps(functools.partial(reading.read_partition, job)))
                  for job in jobs]
    return len(jobs), [serialized for partition in partitions
                         for _, serialized in shard_writer.unblocked(partition())]


def test_postgres_partitions_concatenate_to_the_serial_path(tmp_path, pg):
  # With parameters, psycopg2 wants every literal % doubled.
  query = ("SELECT g AS id, chr(97 + g %% 26) || g AS name, g %% 3 = 0 AS flag "
           "FROM generate_series(1, 500) AS g WHERE 'x%%' LIKE %(pattern)s")
  config = dict(dsn=pg.dsn, query=query, params={"pattern": "x%"}, order_by=["name", "id"],
                partition_key="name", num_partitions=5, split_percent={"train": 60, "test": 40},
                split_key="id")
  serial = build(tmp_path, **config)
  for split in ("train", "test"):
    count, parted = _partitioned_records(make_builder(tmp_path / "beam", **config), split)
    assert count == 5
    assert parted == records(serial, split)


def test_sqlite_partitions_concatenate_to_the_serial_path(tmp_path):
  builder = tfds.builder("database/demo", data_dir=str(tmp_path))
  builder.download_and_prepare()
  count, parted = _partitioned_records(builder, "train")
  assert count == 3 and parted == records(builder, "train")


@pytest.mark.parametrize("fractions", [
    {"train": 0.6, "validation": 0.15, "test": 0.25}, {"train": 0.7, "test": 0.3},
    {"train": 0.5, "test": 0.5}, {"train": 0.8, "test": 0.2}, {"train": 1.0},
    {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4},
])
def test_split_fractions_are_the_one_rule_with_a_crc32_bucket(fractions):
  """The deprecated spelling gives numpy_arrays' assignments exactly, keys on the range edges included."""
  ranges = splits.fraction_ranges(fractions)
  keys = [f"group{index}:{row:09d}" for index in range(40) for row in range(50)]
  for seed in (0, 1, 5):
    assert [splits.split_of(ranges, splits.crc32_bucket(seed, key)) for key in keys] == [
        helpers.split_fractions_assignment(fractions, seed, key) for key in keys]
  for name, (low, high) in ranges.items():  # the buckets on either side of every edge
    for bucket in {low, max(low, high - 1)} if high > low else ():
      point = bucket / 2**32
      cumulative = 0.0
      for expected, fraction in fractions.items():
        cumulative += fraction
        if point < cumulative:
          break
      assert splits.split_of(ranges, bucket) == expected, (name, bucket)


def test_split_percent_ranges_are_consecutive_and_cover_every_bucket():
  ranges = splits.bucket_ranges({"train": 60, "validation": 15, "test": 25})
  assert ranges == {"train": (0, 2576980378), "validation": (2576980378, 3221225472),
                    "test": (3221225472, 2**32)}
  assert splits.split_of(ranges, 0) == "train" and splits.split_of(ranges, 2**32 - 1) == "test"
