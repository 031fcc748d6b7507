"""read_path='copy' (binary COPY framed in compiled code) against the cursor path: the same bytes, keys and errors."""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import pickle
import struct
import threading
import time

import pytest

from tfds_builders.core import errors
from tfds_builders.core import shard_writer
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import drivers
from tfds_builders.core.sql import statements
from tfds_builders.database import copy_reading
from tfds_builders.database import read_jobs
from tfds_builders.database import reading
from tfds_builders.database import session as session_lib

from tests.database.common import assert_build_fails
from tests.database.common import build
from tests.database.common import make_builder
from tests.database.common import records
from tests.database.common import sqlite_file
from tests.database.common import POLICY_TABLE

pytestmark = pytest.mark.postgres

BIG_TEXT = "é" * 40_000  # 80,000 bytes: one value beyond 64 KiB
KINDS_DDL = """
CREATE TYPE {schema}.feeling AS ENUM ('low', 'fine', 'héllo');
CREATE TABLE {schema}.kinds (
  id int4 PRIMARY KEY, i2 int2, i8 int8, f4 real, f8 float8, flag boolean, txt text, vc varchar(8),
  ch char(3), nm name, raw bytea, js json, jsb jsonb, m {schema}.feeling, u uuid, d date, tm time,
  ts timestamp, tstz timestamptz
);
INSERT INTO {schema}.kinds VALUES
  (1, -32768, -9223372036854775808, 3.4028235e38, -0.0, true, 'héllo, 世界', 'varchar', 'ab',
   'a name', '\\x00ff10', '{{"b": 1,  "a": [1, 2]}}', '{{"b": 1, "a": [1, 2]}}', 'héllo',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '23:59:59.5', '2024-02-29 12:34:56.789012',
   '2024-02-29 12:34:56.789012+02'),
  (2, 0, 0, 0, 0, false, '', '', '', '', '', '0', '0', 'low', '00000000-0000-0000-0000-000000000000',
   '1970-01-01', '00:00', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL),
  (4, 32767, 9223372036854775807, 'NaN', 'Infinity', true, %(big)s, 'x', 'abc', 'n', '\\xdeadbeef',
   '[]', '{{}}', 'fine', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', '0001-01-01', '24:00:00',
   '0001-01-01 00:00:00', '9999-12-31 23:59:59.999999+00'),
  (5, 1, 1, '-Infinity', 'NaN', NULL, 'text', NULL, 'z', NULL, NULL, 'null', NULL, NULL, NULL,
   '9999-12-31', '12:00:00.000001', '2000-01-01 00:00:00.5', '1999-12-31 23:59:59-05'),
  (6, 2, 2, 1.5, 2.5, false, 'inf', 'i', 'i', 'i', '\\x', '1', '1', 'low', NULL,
   'infinity', NULL, '-infinity', 'infinity');
"""
# A NULL policy's default for every column of `kinds`, in the column's own type.
DEFAULTS = {
    "i2": 7, "i8": -7, "f4": 0.25, "f8": -1.5, "flag": True, "txt": "dflt", "vc": "v", "ch": "c",
    "nm": "n", "raw": "ab", "js": "{}", "jsb": "[]", "m": "fine", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "d": "2000-01-02", "tm": "01:02:03", "ts": "2000-01-01T00:00:01", "tstz": "2000-01-01T00:00:01+00:00",
}
FINITE = "id <> 6"  # the row of infinities, which temporal='epoch' refuses


@pytest.fixture(scope="module")
def kinds(pg):
  pg.run(KINDS_DDL.format(schema=pg.schema), {"big": BIG_TEXT})
  pg.run(f"CREATE TABLE {pg.schema}.many AS SELECT g AS id, 'name ' || g AS name, (g * 0.5)::float8 AS half, "
         f"(g % 3 = 0) AS flag, CASE WHEN g % 7 = 0 THEN NULL ELSE g % 5 END AS maybe "
         f"FROM generate_series(1, 70000) AS g")
  return pg


def _same_build(tmp_path, name: str, **config) -> tuple:
  """Builds with the cursor and with binary COPY; asserts equal shards and features.json."""
  cursor = build(tmp_path / "cursor", name=name, read_path="cursor", **config)
  copy = build(tmp_path / "copy", name=name, read_path="copy", **config)
  assert copy.info.metadata["provenance"]["read_path"] == {"requested": "copy", "used": "copy"}
  assert cursor.info.metadata["provenance"]["read_path"] == {"requested": "cursor", "used": "cursor"}
  stored = [{path.name: path.read_bytes() for path in pathlib.Path(builder.data_path).iterdir()
             if ".tfrecord" in path.name or path.name == "features.json"} for builder in (cursor, copy)]
  assert stored[0] == stored[1] and any(".tfrecord" in name for name in stored[0])
  return cursor, copy


@pytest.mark.parametrize("nulls, order_by, temporal, where, stored", [
    ("error", "id", "iso", "id IN (1, 2, 4)", 3),
    ("error", "", "epoch", "id IN (1, 2, 4)", 3),
    ("default", "id", "iso", "", 6),
    ("default", "", "epoch", FINITE, 5),
    ("mask", "", "iso", "", 6),
    ("mask", "id", "epoch", FINITE, 5),
    ("skip_row", "id", "iso", "", 3),
    ("skip_row", "", "epoch", FINITE, 3),
])
def test_every_kind_is_stored_byte_identical(tmp_path, kinds, nulls, order_by, temporal, where, stored):
  query = f"SELECT * FROM {kinds.schema}.kinds" + (f" WHERE {where}" if where else "")
  columns = {}
  if nulls == "default":
    columns = {name: {"nulls": "default", "default": value} for name, value in DEFAULTS.items()}
  elif nulls != "error":
    columns = {name: {"nulls": nulls} for name in DEFAULTS}
  cursor, _ = _same_build(tmp_path, "kinds", dsn=kinds.dsn, query=query, order_by=order_by,
                          temporal=temporal, columns=columns)
  assert cursor.info.splits["train"].num_examples == len(records(cursor)) == stored


def test_many_rows_unicode_keys_and_shuffled_keys_are_identical(tmp_path, kinds):
  # 70,000 rows: several 4 MiB blocks; keys hashed by the shuffle must be the cursor's keys.
  query = f"SELECT * FROM {kinds.schema}.many"
  _same_build(tmp_path / "plain", "many", dsn=kinds.dsn, query=query, nulls="mask")
  _same_build(tmp_path / "shuffled", "many", dsn=kinds.dsn, query=query, nulls="skip_row", shuffle=True)
  _same_build(tmp_path / "text_key", "many", dsn=kinds.dsn, query=query, nulls="mask", shuffle=True,
              order_by=["name", "id"])


def test_a_value_larger_than_a_block_and_no_rows(tmp_path, kinds):
  huge = f"SELECT 1 AS id, repeat('ab', 3000000) AS text UNION ALL SELECT 2, 'small'"
  _same_build(tmp_path / "huge", "huge", dsn=kinds.dsn, query=huge, order_by="id")
  empty = f"SELECT * FROM {kinds.schema}.kinds WHERE id < 0"
  for read_path in ("cursor", "copy"):
    assert_build_fails(tmp_path / read_path, errors.SourceError, "'train' has no examples",
                       dsn=kinds.dsn, query=empty, read_path=read_path)


def _stream(builder, read_path: str) -> list[tuple[object, bytes]]:
  """The split's `(key, record)` pairs as the read path yields them, in a fresh snapshot."""
  config = dataclasses.replace(builder.builder_config, read_path=read_path)
  plan = dataclasses.replace(builder._plan, config=config)  # pylint: disable=protected-access
  with session_lib.open_session(plan.spec) as session:
    (job,) = plan.prepare(session, on_beam=False).jobs["train"]
    assert (job.copy_formats is not None) == (read_path == "copy")
    return list(shard_writer.unblocked(reading.read_in_session(job, session)))


@pytest.mark.parametrize("order_by", [[], ["id"], ["txt", "id"]])
def test_keys_are_the_cursor_keys(tmp_path, kinds, order_by):
  builder = make_builder(tmp_path, dsn=kinds.dsn, query=f"SELECT * FROM {kinds.schema}.kinds",
                         order_by=order_by, nulls="skip_row", columns={"txt": {"nulls": "mask"}})
  cursor, copy = _stream(builder, "cursor"), _stream(builder, "copy")
  assert copy == cursor and all(isinstance(key, str) for key, _ in copy)
  expected = {(): ["train:0", "train:1", "train:3"], ("id",): ["1", "2", "4"],
              ("txt", "id"): ["héllo, 世界/1", "/2", f"{BIG_TEXT}/4"]}[tuple(order_by)]
  assert sorted(key for key, _ in copy) == sorted(expected)


def _same_failure(tmp_path, error_type, *fragments, **config) -> str:
  messages = [assert_build_fails(tmp_path / read_path, error_type, *fragments, read_path=read_path, **config)
              for read_path in ("cursor", "copy")]
  assert messages[0] == messages[1]
  return messages[0]


def test_errors_are_the_cursor_errors(tmp_path, kinds):
  table = f"{kinds.schema}.kinds"
  _same_failure(tmp_path / "null", errors.SchemaError, "Column 'i2' is NULL in row 2 of split 'train'",
                dsn=kinds.dsn, query=f"SELECT id, i2 FROM {table} ORDER BY id")
  _same_failure(tmp_path / "null_key", errors.SchemaError, "Column 'txt' is NULL in the row with id='3'",
                dsn=kinds.dsn, query=f"SELECT id, txt FROM {table}", order_by="id")
  _same_failure(tmp_path / "infinity", errors.SchemaError, "'infinity' has no epoch value",
                dsn=kinds.dsn, query=f"SELECT id, d FROM {table} WHERE id = 6", temporal="epoch",
                order_by="id")
  _same_failure(tmp_path / "duplicate", errors.SchemaError, "order_by ['k'] is not unique",
                "k='b'", dsn=kinds.dsn, order_by="k",
                query="SELECT k, n FROM (VALUES ('a', 1), ('b', 2), ('b', 3)) AS t(k, n)")
  _same_failure(tmp_path / "duplicate_null", errors.SchemaError, "k='None'", dsn=kinds.dsn, order_by="k",
                query="SELECT k, n FROM (VALUES (1, 1), (NULL::int, 2), (NULL, 3)) AS t(k, n)")


def test_a_year_python_cannot_hold_is_a_schema_error(tmp_path, kinds):
  assert_build_fails(tmp_path, errors.SchemaError, "column 'd' holds a date that Python's datetime cannot",
                     "row 1 of split 'train'", dsn=kinds.dsn, read_path="copy",
                     query="SELECT * FROM (VALUES (1, '2000-01-01'::date), (2, '10000-01-01')) AS t(id, d)")


# ------------------------------------------------------------ read path --


def test_auto_falls_back_to_the_cursor_and_copy_names_the_column(tmp_path, kinds):
  query = "SELECT 1 AS id, 1.5::numeric AS amount"
  builder = build(tmp_path, dsn=kinds.dsn, query=query)
  assert builder.info.metadata["provenance"]["read_path"] == {
      "requested": "auto", "used": "cursor",
      "cursor_because": "column 'amount' has type numeric, which binary COPY does not decode"}
  assert_build_fails(tmp_path / "copy", errors.ConfigError, "read_path='copy' cannot read it: column 'amount'",
                     "numeric", dsn=kinds.dsn, query=query, read_path="copy")
  auto = build(tmp_path / "auto", dsn=kinds.dsn, query="SELECT 1 AS id")
  assert auto.info.metadata["provenance"]["read_path"] == {"requested": "auto", "used": "copy"}
  for query, order_by, why in (("SELECT ARRAY[1, 2] AS ints", "", "column 'ints' is an array"),
                               ("SELECT 1.5::float8 AS x", "x", "column 'x' is an order_by column of type float8"),
                               ("SELECT 'x'::\"char\" AS c", "", "column 'c' has type char, which binary COPY")):
    assert_build_fails(tmp_path / why.split()[1].strip("'"), errors.ConfigError, why, dsn=kinds.dsn,
                       query=query, read_path="copy", order_by=order_by)


def test_copy_is_for_postgresql_and_the_choice_is_checked(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  assert_build_fails(tmp_path / "sqlite", errors.ConfigError, "read_path='copy' reads PostgreSQL's binary COPY",
                     sqlite_path=path, query="SELECT * FROM p", read_path="copy")
  assert_build_fails(tmp_path / "bad", errors.ConfigError, "read_path='fast'; use one of",
                     sqlite_path=path, query="SELECT * FROM p", read_path="fast")


@pytest.mark.parametrize("query, fragment", [
    ("SELECT 1 AS id) TO PROGRAM 'touch /tmp/tfds_pwned' --", "closes a parenthesis"),
    ("SELECT 1 AS id; COPY (SELECT 1) TO PROGRAM 'touch /tmp/tfds_pwned'", "second statement"),
    ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/tfds_pwned'", "starts with 'COPY'"),
    ("WITH gone AS (DELETE FROM {schema}.kinds RETURNING id) SELECT id FROM gone", "modify the database"),
])
def test_hostile_queries_cannot_change_the_copy(tmp_path, kinds, query, fragment):
  assert_build_fails(tmp_path, errors.ConfigError, fragment, dsn=kinds.dsn, read_path="copy",
                     query=query.format(schema=kinds.schema))
  assert not os.path.exists("/tmp/tfds_pwned")
  assert kinds.run(f"SELECT count(*) FROM {kinds.schema}.kinds") == [(6,)]


def test_the_whole_statement_is_checked_before_it_is_wrapped(kinds):
  spec = connection.ConnectionSpec(driver="postgresql", dsn=kinds.dsn)
  with drivers.open_session(spec) as session:
    # The user part is one query, but the text around it would close COPY's parenthesis.
    for sql, fragment in (("SELECT 1) TO PROGRAM 'touch /tmp/tfds_pwned' --", "closes a parenthesis"),
                          ("SELECT 1;", "ends with `;`")):
      statement = statements.Statement(sql, user_query="SELECT 1", field="query")
      with pytest.raises(errors.ConfigError, match=fragment):
        list(session.copy_binary(statement))
    statement = statements.Statement("SELECT 1 AS a UNION ALL SELECT 2", user_query="SELECT 1", field="query")
    assert b"".join(session.copy_binary(statement)).startswith(b"PGCOPY\n\xff\r\n\x00")
    assert session.fetch_all(statements.Statement("SELECT 3")) == [(3,)]  # the transaction is usable
  assert not os.path.exists("/tmp/tfds_pwned")


def test_stopping_early_leaves_the_session_usable(kinds):
  spec = connection.ConnectionSpec(driver="postgresql", dsn=kinds.dsn)
  with drivers.open_session(spec) as session:
    chunks = session.copy_binary(statements.Statement(f"SELECT * FROM {kinds.schema}.many"), chunk_bytes=4096)
    next(chunks)
    chunks.close()
    assert session.fetch_all(statements.Statement(f"SELECT count(*) FROM {kinds.schema}.many")) == [(70000,)]


def test_stopping_early_cancels_the_copy_and_keeps_the_snapshot(kinds):
  # A result no one could read to the end: stopping must cancel it, not drain it.
  endless = statements.Statement("SELECT generate_series(1, 10000000000) AS g")  # streamed, never materialized
  spec = connection.ConnectionSpec(driver="postgresql", dsn=kinds.dsn)
  with drivers.open_session(spec) as session:
    before = session.fetch_all(statements.Statement("SELECT txid_current_snapshot()::text"))
    chunks = session.copy_binary(endless, chunk_bytes=4096)
    next(chunks)
    closer = threading.Thread(target=chunks.close, daemon=True)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive(), "closing the COPY did not cancel it"
    after = session.fetch_all(statements.Statement("SELECT txid_current_snapshot()::text"))
    assert after == before  # the same transaction and snapshot, still usable
    assert session.fetch_all(statements.Statement(f"SELECT count(*) FROM {kinds.schema}.many")) == [(70000,)]


@pytest.mark.parametrize("partitioning", [
    dict(order_by=["id"], partition_key="id", split_percent={"train": 60, "test": 40}, split_key="id"),
    dict(partition_key="ctid", split_percent={"train": 60, "test": 40}, split_key="id"),
])
def test_beam_partitions_read_with_copy_concatenate_to_the_serial_path(tmp_path, kinds, partitioning):
  config = dict(dsn=kinds.dsn, query=f"SELECT * FROM {kinds.schema}.many", num_partitions=4, nulls="mask",
                shuffle=True, **partitioning)
  serial = build(tmp_path, read_path="cursor", **config)
  for split in ("train", "test"):
    streams = {}
    for read_path in ("cursor", "copy"):
      plan = make_builder(tmp_path / read_path, read_path=read_path, **config)._plan  # pylint: disable=protected-access
      with session_lib.open_session(plan.spec) as coordinator:
        jobs = plan.prepare(coordinator, on_beam=True).jobs[split]
        assert len(jobs) == 4 and all((job.copy_formats is not None) == (read_path == "copy") for job in jobs)
        partitions = [pickle.loads(pickle.dumps(functools.partial(reading.read_partition, job))) for job in jobs]
        streams[read_path] = [pair for partition in partitions for pair in shard_writer.unblocked(partition())]
    assert streams["copy"] == streams["cursor"]  # keys too: the shuffle orders by them
    assert sorted(record for _, record in streams["copy"]) == sorted(records(serial, split))


@pytest.mark.slow  # streams 2,000,000 rows until the server drops the connection
def test_a_dropped_connection_during_copy_fails_clearly(tmp_path, kinds):
  app = f"tfds_copy_drop_{os.getpid()}"
  config = dict(name="dropped", dsn=kinds.dsn, application_name=app, read_path="copy",
                query="SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 2000000) g")
  seen: list[str] = []

  def terminate_once_copying() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
      rows = kinds.run("SELECT pid, query FROM pg_stat_activity WHERE application_name = %s "
                       "AND query LIKE 'COPY%%'", [app])
      if rows:
        seen.append(rows[0][1])
        kinds.run("SELECT pg_terminate_backend(%s)", [rows[0][0]])
        return
      time.sleep(0.002)

  killer = threading.Thread(target=terminate_once_copying)
  builder = make_builder(tmp_path, **config)
  killer.start()
  try:
    with pytest.raises(errors.SourceError, match="Lost the connection .* while reading split 'train'"):
      builder.download_and_prepare()
  finally:
    killer.join()
  assert seen and seen[0].startswith("COPY (SELECT * FROM (")


# ------------------------------------------------------ hostile streams --


def _job(formats: tuple[str, ...], names: tuple[str, ...] = ("a", "b"), key_indexes=()) -> read_jobs.ReadJob:
  from tfds_builders.core.sql import types as sql_types  # pylint: disable=import-outside-toplevel
  from tfds_builders.database import codecs as codecs_lib  # pylint: disable=import-outside-toplevel
  kinds = {"int4": "int", "text": "text"}
  codecs = tuple(codecs_lib.ColumnCodec(name, sql_types.SqlType(kinds[fmt], source=fmt))
                 for name, fmt in zip(names, formats))
  return read_jobs.ReadJob(
      spec=connection.ConnectionSpec(driver="postgresql"), snapshot=None,
      statement=statements.Statement("SELECT 1"), codecs=codecs, key_names=tuple(names[i] for i in key_indexes),
      key_indexes=tuple(key_indexes), split="train", label="split 'train'", fetch_size=1, copy_formats=formats)


HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


def _row(*fields: bytes | None, count: int | None = None) -> bytes:
  parts = [struct.pack(">h", len(fields) if count is None else count)]
  for field in fields:
    parts.append(struct.pack(">i", -1) if field is None else struct.pack(">i", len(field)) + field)
  return b"".join(parts)


TRAILER = struct.pack(">h", -1)
GOOD = HEADER + _row(struct.pack(">i", 1), b"x") + _row(struct.pack(">i", 2), "é".encode()) + TRAILER


def _decoded(stream: bytes, step: int | None = None, job=None) -> list[tuple[object, bytes]]:
  chunks = [stream] if step is None else [stream[i:i + step] for i in range(0, len(stream), step)]
  return list(shard_writer.unblocked(copy_reading.framed_blocks(job or _job(("int4", "text")), chunks)))


def test_rows_straddling_chunks_decode_the_same():
  whole = _decoded(GOOD)
  assert [key for key, _ in whole] == ["train:0", "train:1"]
  for step in (1, 2, 3, 7, 19):
    assert _decoded(GOOD, step) == whole
  assert _decoded(GOOD, 5, _job(("int4", "text"), key_indexes=(1,))) == [("x", whole[0][1]), ("é", whole[1][1])]


@pytest.mark.parametrize("stream, fragment", [
    (GOOD[:-1], "row 2 (0-based, as read): the stream ends inside this row (it is truncated)"),
    (GOOD[:30], "row 0 (0-based, as read): the stream ends inside this row"),
    (HEADER[:5], "row 0 (0-based, as read): the stream ends inside this row"),
    (HEADER + struct.pack(">hi", 2, 4) + b"\x00\x00\x00\x01" + struct.pack(">i", 0x7FFFFFFF) + b"abc",
     "row 0 (0-based, as read): the stream ends"),
    (HEADER + struct.pack(">hi", 2, 0x7FFFFFFF) + b"1234", "the stream ends inside this row"),
    (HEADER + _row(struct.pack(">i", 1), b"x") + struct.pack(">hi", 2, -5),
     "row 1 (0-based, as read): a field of column 'a' has the length -5"),
    (HEADER + _row(struct.pack(">i", 1), b"x", count=3),
     "row 0 (0-based, as read): a row has 3 fields, not the 2 columns"),
    (HEADER + _row(struct.pack(">h", 1), b"x"), "a field of column 'a' is 2 bytes long, but a int4 value is 4"),
    (b"PGCOPY\n\xff\r\n\x01" + GOOD[11:], "does not start with the PGCOPY signature"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 1 << 16, 0) + GOOD[19:], "flags this reader does not know"),
    (b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, -1) + GOOD[19:], "extension length is negative"),
    (GOOD + b"\x00", "bytes follow the stream's trailer"),
])
def test_hostile_streams_are_source_errors(stream, fragment):
  for step in (None, 3):
    with pytest.raises(errors.SourceError, match="The binary COPY stream of split 'train' is malformed") as raised:
      _decoded(stream, step)
    assert fragment in str(raised.value)
