"""The cursor path's column blocks give RowEncoder's records, keys and errors, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import pathlib
import sqlite3
import sys
from typing import Any

import numpy as np
import pytest

from tests.database.common import build
from tests.database.common import make_builder
from tests.database.common import records
from tfds_builders.core import errors
from tfds_builders.core import serialization
from tfds_builders.core import shard_writer
from tfds_builders.core import shuffling
from tfds_builders.core import tfrecord_io
from tfds_builders.core.fast import record_blocks
from tfds_builders.database import codecs as codecs_lib
from tfds_builders.database import read_jobs
from tfds_builders.database import reading
from tfds_builders.database import session as session_lib

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))  # regression_cases, as test_regression_bytes imports it
import regression_cases  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position
import test_regression_bytes  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position

ROWS = 3500
# Row indexes (0-based) whose `skip` column is NULL: two at the boundary of 1024-row blocks, and every row
# of the third such block. The last 428 rows are a short block, encoded row by row.
SKIPPED = frozenset({5, 1023, 1024, 2047, *range(2048, 3072)})
ALL_KINDS_COLUMNS = {
    "small": {"nulls": "error"},
    "f": {"nulls": "default", "default": 1.5},
    "f4": {"type": "float32"},
    "t": {"nulls": "default", "default": "none"},
    "amount": {"numeric": "string"},
    "ts": {"temporal": "epoch"},
    "cat": {"categorical": True, "unknown": "<missing>"},
    "vocab": {"vocabulary": ["a", "b"], "unknown": "other", "nulls": "error"},
    "norm": {"normalize": "standard", "impute": "mean"},
    "mm": {"normalize": "minmax"},
    "skip": {"nulls": "skip_row"},
}
_BIG = (-2**63, 2**63 - 1, 2**53 + 1, 0, 127, 128, -1, 16384, 2**21)
_FLOATS = (-0.0, 1e308, 5e-324, float("inf"))


def _all_kinds_row(r: int) -> tuple:
  """Row r of a table with every SQLite column kind, NULLs in most columns, ASCII text in the first block only."""
  def null_every(step: int, value: Any) -> Any:
    return None if r % step == step - 1 else value

  text = f"plain {r}" if r < 1024 else ("", f"héllo 世界 {r}", f"plain {r}")[r % 3]
  return (
      r + 1, null_every(7, _BIG[r % len(_BIG)] + (r if r % len(_BIG) > 6 else 0)), r % 300,
      null_every(5, _FLOATS[r % 4] if r % 8 < 4 else r / 3), null_every(9, r * 0.25), null_every(11, text),
      null_every(13, bytes([r % 256]) * (r % 4)), null_every(17, r % 2),
      null_every(19, r / 4 if r % 2 else r), null_every(10, f"{r}.{r % 100:02d}"),
      null_every(23, f"2024-01-{r % 28 + 1:02d}"), null_every(29, f"2024-02-29 12:34:{r % 60:02d}.{r:06d}"),
      null_every(31, ("red", "green", "blue")[r % 3]), ("a", "b", "c")[r % 3], null_every(37, r * 0.5),
      r % 1000, f'{{"r": {r}}}', None if r in SKIPPED else r,
  )


_ALL_KINDS_SCRIPT = """
CREATE TABLE t (id INTEGER PRIMARY KEY, big INTEGER, small INTEGER, f REAL, f4 REAL, t TEXT, raw BLOB,
  flag BOOLEAN, num NUMERIC, amount NUMERIC, d DATE, ts TIMESTAMP, cat TEXT, vocab TEXT, norm REAL, mm INTEGER,
  js JSON, skip INTEGER);
"""


def _sqlite(tmp_path: pathlib.Path, script: str, rows: list[tuple], name: str = "db.sqlite") -> pathlib.Path:
  path = tmp_path / name
  with contextlib.closing(sqlite3.connect(path)) as connection, connection:
    connection.executescript(script)
    connection.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(rows[0]))})", rows)
  return path


@pytest.fixture(scope="module")
def all_kinds(tmp_path_factory) -> pathlib.Path:
  return _sqlite(tmp_path_factory.mktemp("all_kinds"), _ALL_KINDS_SCRIPT, [_all_kinds_row(r) for r in range(ROWS)])


def _sqlite_config(path: pathlib.Path, **config: Any) -> dict[str, Any]:
  return {"data_root": str(path.parent), "sqlite_path": path.name, "query": "SELECT * FROM t", "nulls": "mask",
          "columns": ALL_KINDS_COLUMNS, **config}


def row_by_row(job: read_jobs.ReadJob, rows: list[tuple]):
  """The cursor path before column blocks: RowEncoder per row, as `reading.examples` encoded every row."""
  encoder = codecs_lib.RowEncoder(job.codecs)
  previous = None
  for number, row in enumerate(rows, job.first_row):
    if job.key_indexes:
      key_values = tuple(row[index] for index in job.key_indexes)
      if key_values == previous:
        raise read_jobs.duplicate_key(job, key_values)  # pylint: disable=protected-access
      previous = key_values
      key = "/".join(read_jobs.key_text(value) for value in key_values)  # pylint: disable=protected-access
      describe = lambda: read_jobs.describe_key(job, key_values)  # pylint: disable=cell-var-from-loop
    else:
      key = f"{job.split}:{number}"
      describe = lambda: f"row {number} of {job.label} (0-based, as read)"  # pylint: disable=cell-var-from-loop
    serialized = encoder.encode(row, describe)
    if serialized is not None:
      yield key, serialized


@dataclasses.dataclass
class Read:
  """One split read both ways in one session: the block path's stream, and row by row."""

  job: read_jobs.ReadJob
  stream: list[Any]  # `reading.read_in_session`'s items
  rows: list[tuple]  # the same statement's rows, for `row_by_row`

  @property
  def blocks(self) -> int:
    return sum(isinstance(value, tfrecord_io.FramedRecords) for _, value in self.stream)


def read_both_ways(builder, fetch_size: int) -> dict[str, Read]:
  plan = builder._plan  # pylint: disable=protected-access
  with session_lib.open_session(plan.spec) as session:
    reads = {}
    for split, (job,) in plan.prepare(session, on_beam=False).jobs.items():
      job = dataclasses.replace(job, fetch_size=fetch_size)
      stream = list(reading.read_in_session(job, session))
      reads[split] = Read(job, stream, list(session.rows(job.statement, fetch_size=fetch_size, label=job.label)))
  return reads


def assert_same_examples(read: Read) -> None:
  expected = list(row_by_row(read.job, read.rows))
  got = list(shard_writer.unblocked(read.stream))
  assert len(got) == len(expected)
  for (key, serialized), (want_key, want) in zip(got, expected):
    assert (key, serialized) == (want_key, want)


# ------------------------------------------------------------------ SQLite --


@pytest.mark.parametrize("fetch_size, blocks", [(1000, 2), (1500, 2), (ROWS, 1)])
@pytest.mark.parametrize("order_by", [[], ["id"], ["flag", "id"]])
def test_sqlite_blocks_encode_every_kind_as_row_encoder(tmp_path, all_kinds, fetch_size, blocks, order_by):
  builder = make_builder(tmp_path, **_sqlite_config(all_kinds, order_by=order_by))
  (read,) = read_both_ways(builder, fetch_size).values()
  assert len(read.rows) == ROWS
  if order_by != ["flag", "id"]:  # rows in id order: blocks of 1024 rows at least, the third all skipped
    assert read.blocks == blocks
  assert read.blocks
  assert_same_examples(read)


def test_sqlite_build_stores_row_encoder_records(tmp_path, all_kinds):
  config = _sqlite_config(all_kinds, fetch_size=1000, order_by=["id"])
  (read,) = read_both_ways(make_builder(tmp_path / "plan", **config), 1000).values()
  expected = [serialized for _, serialized in row_by_row(read.job, read.rows)]
  assert records(build(tmp_path, **config)) == expected
  assert len(expected) == ROWS - len(SKIPPED)


def test_block_keys_shuffle_as_row_keys(tmp_path, all_kinds):
  (read,) = read_both_ways(make_builder(tmp_path, **_sqlite_config(all_kinds)), 1000).values()
  shuffled = functools.partial(shuffling.shuffled, work_dir=tmp_path / "work", salt="train")
  assert list(shuffled(read.stream)) == list(shuffled(row_by_row(read.job, read.rows)))
  keys, _ = read.stream[0]
  assert list(keys[3:7]) == ["train:3", "train:4", "train:6", "train:7"]  # a cut block's keys; row 5 is skipped


def test_block_keys_number_from_the_partition_first_row(tmp_path, all_kinds):
  (read,) = read_both_ways(make_builder(tmp_path, **_sqlite_config(all_kinds)), 1000).values()
  job = dataclasses.replace(read.job, first_row=70_000)  # a ctid partition's rows continue the split's numbering
  got = list(shard_writer.unblocked(reading.examples(job, read.rows)))
  assert got == list(row_by_row(job, read.rows))
  assert got[0][0] == "train:70000" and got[-1][0] == f"train:{70_000 + ROWS - 1}"


def test_small_reads_are_encoded_row_by_row(tmp_path, all_kinds):
  builder = make_builder(tmp_path, **_sqlite_config(all_kinds, query="SELECT * FROM t LIMIT 1000"))
  (read,) = read_both_ways(builder, 10_000).values()
  assert read.blocks == 0 and all(isinstance(value, bytes) for _, value in read.stream)
  assert_same_examples(read)


# Tables (id, v, w) of 3000 rows whose row 1500 or 2000 the codecs refuse, or whose `v` repeats.
_ERROR_TABLES = {
    "null under error": lambda r: (r + 1, None if r == 1500 else r, f"w{r}"),
    "text in an int column": lambda r: (r + 1, "oops" if r == 2000 else r, f"w{r}"),
    "fraction in an int column": lambda r: (r + 1, 1.5 if r == 1500 else r, f"w{r}"),
    "repeated key in a block": lambda r: (r + 1, r - (r == 1500), "w"),
    "repeated key across blocks": lambda r: (r + 1, r - (r == 1024), ""),
}


@pytest.mark.parametrize("table, order_by", [
    (table, order_by) for table in _ERROR_TABLES for order_by in ([["v"]] if "repeated" in table else [[], ["v"]])
])
def test_refused_rows_raise_row_encoder_error_after_the_same_examples(tmp_path, table, order_by):
  make_row = _ERROR_TABLES[table]
  query = "SELECT id, v, w FROM t ORDER BY v, id" if order_by else "SELECT id, v, w FROM t"
  path = _sqlite(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, w TEXT);",
                 [make_row(r) for r in range(3000)])
  builder = make_builder(tmp_path, data_root=str(tmp_path), sqlite_path=path.name, query=query, order_by=order_by)
  plan = builder._plan  # pylint: disable=protected-access
  with session_lib.open_session(plan.spec) as session:
    (job,) = plan.prepare(session, on_beam=False).jobs["train"]
    job = dataclasses.replace(job, fetch_size=1024)
    rows = list(session.rows(job.statement, fetch_size=1024, label=job.label))
    before = []
    with pytest.raises(errors.SchemaError) as raised:
      for item in shard_writer.unblocked(reading.read_in_session(job, session)):
        before.append(item)
  expected_before = []
  with pytest.raises(errors.SchemaError) as expected:
    for item in row_by_row(job, rows):
      expected_before.append(item)
  assert str(raised.value) == str(expected.value)
  assert before == expected_before  # the rows before the refused one were given, as row by row
  message = str(raised.value)
  assert ("v=" in message) if order_by else ("of split 'train'" in message)


# -------------------------------------------------------------- PostgreSQL --


_PG_TABLE = """
CREATE TABLE {schema}.blocks (
  id int8 PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, num numeric, amount numeric(12, 4),
  flag bool, txt text, vc varchar(16), raw bytea, d date, ts timestamp, tstz timestamptz, tm time, js json,
  jsb jsonb, u uuid, cat text, ints int8[], floats float8[], texts text[], skip int4, norm float8
);
INSERT INTO {schema}.blocks SELECT g,
  CASE WHEN g % 7 = 0 THEN NULL ELSE (g % 60000 - 30000)::int2 END,
  CASE WHEN g % 11 = 0 THEN NULL ELSE g * 1000 END,
  CASE WHEN g % 5 = 0 THEN NULL WHEN g % 3 = 0 THEN -9223372036854775808 ELSE g * 4000000000000 END,
  CASE WHEN g % 13 = 0 THEN NULL ELSE g / 3.0 END,
  CASE WHEN g % 17 = 0 THEN NULL WHEN g % 4 = 0 THEN '-0'::float8 WHEN g % 4 = 1 THEN 'Infinity' ELSE g / 7.0 END,
  CASE WHEN g % 19 = 0 THEN NULL ELSE g * 1.25 END,
  CASE WHEN g % 10 = 0 THEN NULL ELSE g * 1.2345 END,
  CASE WHEN g % 23 = 0 THEN NULL ELSE g % 2 = 0 END,
  CASE WHEN g % 29 = 0 THEN NULL WHEN g % 3 = 0 THEN '' WHEN g < 1000 THEN 'plain ' || g ELSE 'héllo 世界 ' || g END,
  'vc' || (g % 100),
  CASE WHEN g % 31 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 4, '0'), 'hex') END,
  DATE '2020-01-01' + g, TIMESTAMP '2021-06-01 00:00:00' + g * INTERVAL '61 minutes',
  CASE WHEN g % 37 = 0 THEN NULL ELSE TIMESTAMPTZ '2021-06-01 00:00:00+02' + g * INTERVAL '90 minutes' END,
  TIME '00:00' + g * INTERVAL '1 second', json_build_object('g', g), jsonb_build_object('g', g),
  md5(g::text)::uuid, (ARRAY['red', 'green', 'blue'])[g % 3 + 1],
  CASE WHEN g % 41 = 0 THEN NULL ELSE ARRAY[g, -g, g * 3] END, ARRAY[g / 2.0, g / 3.0],
  CASE WHEN g % 43 = 0 THEN NULL ELSE ARRAY['t' || (g % 3), '', 'u'] END,
  CASE WHEN g IN (1024, 1025) OR g % 97 = 0 THEN NULL ELSE g END,
  CASE WHEN g % 53 = 0 THEN NULL ELSE g * 0.5 END
FROM generate_series(1, {rows}) AS g;
"""


@pytest.fixture(scope="module")
def pg_blocks(pg):
  pg.run(_PG_TABLE.format(schema=pg.schema, rows=ROWS))
  return pg


@pytest.mark.parametrize("order_by", [[], ["id"]])
def test_postgres_cursor_blocks_encode_every_kind_as_row_encoder(tmp_path, pg_blocks, order_by):
  builder = make_builder(
      tmp_path, dsn=pg_blocks.dsn, query=f"SELECT * FROM {pg_blocks.schema}.blocks", read_path="cursor",
      order_by=order_by, nulls="mask", temporal="epoch",
      columns={"vc": {"nulls": "error"}, "amount": {"numeric": "string"}, "d": {"temporal": "iso"},
               "cat": {"categorical": True, "unknown": "<missing>"}, "i4": {"nulls": "default", "default": -1},
               "skip": {"nulls": "skip_row"}, "norm": {"normalize": "minmax", "impute": "median"},
               "txt": {"nulls": "default", "default": "none"}})
  (read,) = read_both_ways(builder, 1000).values()
  assert read.job.copy_formats is None and len(read.rows) == ROWS
  assert read.blocks == 3
  assert_same_examples(read)


# ------------------------------------------------------------- regression --


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    pytest.param(case, id=case.case_id, marks=[pytest.mark.postgres] if case.postgres else [])
    for case in regression_cases.CASES if case.builder == "database" and callable(case.config)
])
def test_regression_cases_on_the_block_path_match_the_recording(tmp_path, monkeypatch, case):
  """Every recorded database case, read in blocks of 7 rows through the cursor, writes its recorded bytes."""
  monkeypatch.setattr(reading, "MIN_BLOCK_ROWS", 1)
  if case.postgres:
    test_regression_bytes._needs_postgres(case)  # pylint: disable=protected-access
  in_blocks = dataclasses.replace(
      case, config=lambda root: dataclasses.replace(case.config(root), fetch_size=7, read_path="cursor"))
  try:
    got = test_regression_bytes.build_case(in_blocks, tmp_path)
  finally:
    if case.postgres:
      regression_cases.pg_cleanup()
  assert got == test_regression_bytes._recorded()[case.case_id]  # pylint: disable=protected-access


# ----------------------------------------------------------------- kernels --


def test_framed_rows_frame_the_joined_entries_of_each_row():
  entries = [[b"a" * (n % 5) + b"|", b"", bytes(range(n % 200))] for n in range(300)]
  columns = [record_blocks.ByteColumn.from_items([row[c] for row in entries]) for c in range(3)]
  expected = record_blocks.framed([serialization.example_from_entries(row) for row in entries])
  got = record_blocks.framed_rows(columns)
  assert got.data.tobytes() == expected.data.tobytes() and got.ends.tolist() == expected.ends.tolist()


def test_scattered_entries_place_values_and_the_missing_entry():
  values = record_blocks.ByteColumn.from_items([b"x", b"", b"yz"])
  got = record_blocks.scattered_entries(values, np.array([False, True, True, False, True]), b"!", b"<null>")
  assert got.items() == [b"<null>", b"x!", b"!", b"<null>", b"yz!"]


@pytest.mark.parametrize("offsets", [[0, 2, 1], [0, 1, 9], [-1, 1, 2], [0, 1]])
def test_block_kernels_refuse_offsets_outside_the_data(offsets):
  column = record_blocks.ByteColumn(np.zeros(3, np.uint8), np.array(offsets, np.int64))
  good = record_blocks.ByteColumn.from_items([b"a", b"b"])
  with pytest.raises(ValueError, match="offsets in order inside"):
    record_blocks.framed_rows([good, column])
  with pytest.raises(ValueError, match="offsets in order inside"):
    record_blocks.scattered_entries(column, np.ones(2, np.bool_), b"", b"")
