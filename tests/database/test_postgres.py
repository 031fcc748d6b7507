"""The database builder on a real PostgreSQL: every type, policies, safety, snapshots, lost connections."""

from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
import traceback

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders import augmented
from tfds_builders.core import errors
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import drivers
from tfds_builders.core.sql import statements

from tests import helpers
from tests.database.common import BUILDER_DIR
from tests.database.common import PASSWORD_MARK
from tests.database.common import make_builder
from tests.database.common import build
from tests.database.common import examples
from tests.database.common import column
from tests.database.common import assert_build_fails
from tests.database.common import sqlite_file
from tests.database.common import bucket
from tests.database.common import float_bits
from tests.database.common import assert_tfds_encodes_the_same
from tests.database.common import assert_no_dataset

pytestmark = pytest.mark.postgres


def test_postgres_every_type_round_trips_through_tfds_load(tmp_path, pg):
  builder = build(tmp_path, name="every", dsn=pg.dsn, query=f"SELECT * FROM {pg.schema}.every_type",
                  order_by="id", nulls="mask")
  features = builder.info.features
  kinds = {name: (features[name].np_dtype, features[name].shape)
           for name in features if not name.endswith("_is_null")}
  text, ints, floats = (np.object_, ()), (np.int64, ()), (np.float64, ())
  assert kinds == {
      "id": ints, "i2": ints, "i4": ints, "i8": ints, "f4": (np.float32, ()), "f8": floats,
      "num": floats, "flag": (np.bool_, ()), "txt": text, "vc": text, "ch": text, "raw": text,
      "d": text, "ts": text, "tstz": text, "tm": text, "js": text, "jsb": text, "m": text,
      "u": text, "ints": (np.int64, (None,)), "floats": (np.float64, (None,)),
      "reals": (np.float32, (None,)), "texts": (np.object_, (None,)), "flags": (np.bool_, (None,)),
      "dates": (np.object_, (None,)), "nums": (np.float64, (None,)), "moods": (np.object_, (None,)),
  }
  loaded = list(tfds.as_numpy(tfds.load("database/every", data_dir=str(tmp_path / "tfds"),
                                        split="train", download=False)))
  first, zeros, nulls = loaded
  assert (first["i2"], first["i4"], first["i8"]) == (-32768, 2**31 - 1, -(2**63))
  assert first["f4"] == np.finfo(np.float32).max
  assert float_bits(first["f8"]) == float_bits(-0.0)
  assert first["num"] == 12345678901234567890.0123456789
  assert first["flag"] and first["txt"] == "héllo, 世界".encode()
  assert (first["vc"], first["ch"], first["raw"]) == (b"varchar", b"ab ", b"\x00\xff\x10")
  assert (first["d"], first["tm"]) == (b"2024-02-29", b"23:59:59.500000")
  assert first["ts"] == b"2024-02-29T12:34:56.789012"
  assert first["tstz"] == b"2024-02-29T10:34:56.789012+00:00"  # stored in UTC
  assert first["js"] == b'{"b": 1,  "a": [1, 2]}'  # json keeps its text
  assert first["jsb"] == b'{"a": [1, 2], "b": 1}'  # jsonb as PostgreSQL prints it
  assert (first["m"], first["u"]) == (b"happy", b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
  np.testing.assert_array_equal(first["ints"], [1, -2, 2**63 - 1])
  assert [float_bits(v) for v in first["floats"]] == [float_bits(v) for v in (1.5, -np.inf)] + [
      float_bits(first["floats"][2])] and np.isnan(first["floats"][2])
  np.testing.assert_array_equal(first["reals"], np.float32([0.25]))
  assert list(first["texts"]) == [b"a", b"b c", b""]
  assert list(first["flags"]) == [True, False]
  assert list(first["dates"]) == [b"2024-01-01"] and list(first["moods"]) == [b"sad", b"ok"]
  np.testing.assert_array_equal(first["nums"], [1.5, -1e-9])
  # 0, '', false, empty arrays and '0' are values: no mask is set.
  assert not any(zeros[name] for name in zeros if name.endswith("_is_null"))
  assert (zeros["i8"], zeros["f8"], zeros["txt"], zeros["flag"], zeros["raw"]) == (0, 0.0, b"", False, b"")
  assert zeros["ch"] == b"   " and zeros["js"] == b"0" and list(zeros["ints"]) == []
  # NULL in every nullable column: masked, with placeholders.
  assert all(nulls[name] for name in nulls if name.endswith("_is_null") and name != "id_is_null")
  assert (nulls["i8"], nulls["f8"], nulls["txt"], nulls["flag"], list(nulls["ints"])) == (0, 0.0, b"", False, [])
  assert_tfds_encodes_the_same(builder)


def test_postgres_exact_numeric_and_epoch_temporal(tmp_path, pg):
  builder = build(tmp_path, dsn=pg.dsn, order_by="id", nulls="mask", numeric="string",
                  temporal="epoch",
                  query=f"SELECT id, num, nums, d, ts, tstz, tm, dates FROM {pg.schema}.every_type")
  first, zeros, _ = examples(builder)
  assert first["num"] == b"12345678901234567890.0123456789"
  assert list(first["nums"]) == [b"1.5", b"-0.000000001"]
  assert first["d"] == (datetime.date(2024, 2, 29) - datetime.date(1970, 1, 1)).days
  stamp = datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)
  assert first["ts"] == (stamp - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1)
  assert first["tstz"] == first["ts"] - 2 * 3600 * 10**6
  assert first["tm"] == (23 * 3600 + 59 * 60 + 59) * 10**6 + 500_000
  assert list(first["dates"]) == [19723]
  assert (zeros["d"], zeros["ts"], zeros["tstz"], zeros["tm"]) == (0, 0, 0, 0)
  assert builder.info.features["tstz"].np_dtype == np.int64


def test_postgres_infinity_is_kept_as_text_or_refused_as_epoch(tmp_path, pg):
  query = "SELECT 1 AS id, 'infinity'::date AS d, '-infinity'::timestamptz AS t"
  builder = build(tmp_path, dsn=pg.dsn, query=query)
  (example,) = examples(builder)
  assert (example["d"], example["t"]) == (b"infinity", b"-infinity")
  assert_build_fails(tmp_path / "e", errors.SchemaError, "column 'd'", "'infinity' has no epoch",
                     dsn=pg.dsn, query=query, temporal="epoch")


def test_postgres_per_column_type_overrides(tmp_path, pg):
  builder = build(tmp_path, dsn=pg.dsn, order_by="id",
                  query=f"SELECT id, i4, f8, num, d, span FROM {pg.schema}.every_type "
                        f"CROSS JOIN (SELECT '1 day'::interval::text AS span) AS s WHERE id < 3",
                  columns={"i4": {"type": "float32"}, "f8": {"type": "float32"},
                           "num": {"numeric": "string"}, "d": {"temporal": "epoch"},
                           "span": {"type": "text"}})
  features = builder.info.features
  assert (features["i4"].np_dtype, features["f8"].np_dtype) == (np.float32, np.float32)
  first, _ = examples(builder)
  assert first["i4"] == np.float32(2**31 - 1) and first["num"] == b"12345678901234567890.0123456789"
  assert first["d"] == 19782 and first["span"] == b"P1D"


@pytest.mark.parametrize("query, fragments", [
    pytest.param("SELECT id, span FROM {schema}.odd",
                 ["Column 'span' has type 'interval'", "span::text"], id="interval"),
    pytest.param("SELECT id, spot FROM {schema}.odd", ["'point'", "spot::text"], id="point"),
    pytest.param("SELECT id, grid FROM {schema}.odd", ["column 'grid'", "multi-dimensional"], id="2d"),
    pytest.param("SELECT id, holes FROM {schema}.odd", ["column 'holes'", "NULL elements",
                                                        "array_remove"], id="null-element"),
])
def test_postgres_unsupported_values_name_the_column(tmp_path, pg, query, fragments):
  error = errors.SchemaError
  assert_build_fails(tmp_path, error, *fragments, dsn=pg.dsn, query=query.format(schema=pg.schema),
                     order_by="id")


def test_postgres_null_policies_and_error_key(tmp_path, pg):
  query = f"SELECT id, i8, txt FROM {pg.schema}.every_type"
  assert_build_fails(tmp_path, errors.SchemaError, "Column 'i8' is NULL in the row with id='3'",
                     dsn=pg.dsn, query=query, order_by="id")
  skipped = build(tmp_path / "s", dsn=pg.dsn, query=query, order_by="id", nulls="skip_row")
  assert [int(i) for i in column(skipped, "id")] == [1, 2]
  filled = build(tmp_path / "d", dsn=pg.dsn, query=query, order_by="id",
                 columns={"i8": {"default": 42}, "txt": {"default": "none"}})
  assert [(int(e["i8"]), e["txt"]) for e in examples(filled)][2] == (42, b"none")


def test_postgres_splits_hash_and_per_query(tmp_path, pg):
  query = "SELECT g AS id, 'name ' || g AS name FROM generate_series(1, 200) AS g WHERE 'a%' LIKE 'a%'"
  builder = build(tmp_path, dsn=pg.dsn, query=query, order_by="id",
                  split_percent={"train": 80, "test": 20}, split_key="id", split_seed=3)
  for split, keep in (("train", lambda b: b < 0.8 * 2**32), ("test", lambda b: b >= 0.8 * 2**32)):
    assert [int(i) for i in column(builder, "id", split)] == [i for i in range(1, 201) if keep(bucket(i, 3))]
  per_query = build(tmp_path / "q", dsn=pg.dsn, order_by="id", params={"cut": 150},
                    split_queries={"train": "SELECT g AS id FROM generate_series(1, 200) g WHERE g < %(cut)s",
                                   "test": "SELECT g AS id FROM generate_series(1, 200) g WHERE g >= %(cut)s"})
  assert per_query.info.splits["train"].num_examples == 149
  assert per_query.info.splits["test"].num_examples == 51


def test_postgres_preprocessing_in_sql(tmp_path, pg):
  query = ("SELECT g AS id, (ARRAY['b', 'a', 'c'])[1 + g % 3] AS letter, "
           "CASE WHEN g % 5 = 0 THEN NULL ELSE g * 1.5 END AS x, "
           "CASE WHEN g % 7 = 0 THEN NULL ELSE g % 4 END AS small FROM generate_series(1, 40) g")
  builder = build(tmp_path, dsn=pg.dsn, order_by="id",
                  split_queries={"train": query + " WHERE g <= 30", "test": query + " WHERE g > 30"},
                  columns={"letter": {"categorical": True}, "x": {"normalize": "standard", "impute": "mean"},
                           "small": {"impute": "median"}})
  train_x = np.array([g * 1.5 for g in range(1, 31) if g % 5])
  mean = train_x.mean()  # imputed first: the statistics are those of the stored values
  std = np.array([g * 1.5 if g % 5 else mean for g in range(1, 31)]).std()
  assert builder.info.features["letter"].names == ["a", "b", "c"]
  got = examples(builder, "test")
  for example in got:
    g = int(example["id"])
    x = g * 1.5 if g % 5 else mean
    assert example["x"] == pytest.approx(np.float32((x - mean) / std), rel=1e-6)
  small = sorted(g % 4 for g in range(1, 31) if g % 7)
  assert builder.info.metadata["preprocessing"]["small"]["impute"]["value"] == small[(len(small) - 1) // 2]


def test_postgres_bound_parameters_and_quoted_identifiers(tmp_path, pg):
  pg.run(f'CREATE TABLE {pg.schema}.hostile ("Key; DROP TABLE x" int PRIMARY KEY, v text)')
  pg.run(f"INSERT INTO {pg.schema}.hostile VALUES (2, 'b'), (1, %s)", ["a'); DROP TABLE x; --"])
  builder = build(tmp_path, dsn=pg.dsn, query=f"SELECT * FROM {pg.schema}.hostile WHERE v = %s OR v = 'b'",
                  params=["a'); DROP TABLE x; --"], order_by="Key; DROP TABLE x",
                  split_percent={"train": 100}, split_key="Key; DROP TABLE x")
  assert [int(e["Key; DROP TABLE x"]) for e in examples(builder)] == [1, 2]
  sql = builder.info.metadata["provenance"]["queries"]["train"]["sql"]
  assert 'ORDER BY "Key; DROP TABLE x"' in sql and "DROP TABLE x; --" not in sql


@pytest.mark.parametrize("query", [
    "INSERT INTO {schema}.every_type (id) VALUES (99) RETURNING *",
    "WITH gone AS (DELETE FROM {schema}.every_type RETURNING *) SELECT * FROM gone",
    "SELECT nextval('{schema}.counter') AS n",
    "SELECT * FROM {schema}.every_type FOR UPDATE",
])
def test_postgres_writing_query_fails_clearly(tmp_path, pg, query):
  assert_build_fails(tmp_path, errors.ConfigError, "tries to modify the database", "READ ONLY",
                     dsn=pg.dsn, query=query.format(schema=pg.schema))
  assert pg.run(f"SELECT count(*) FROM {pg.schema}.every_type") == [(3,)]


@pytest.mark.parametrize("query, fragments", [
    ("SELECT 1 +", ["syntax error", "Fix the SQL syntax"]),
    ("SELECT * FROM no_such_table", ["no_such_table", "Check the table name"]),
    ("SELECT no_such_column FROM {schema}.every_type", ["no_such_column", "Check the column names"]),
])
def test_postgres_query_errors(tmp_path, pg, query, fragments):
  message = assert_build_fails(tmp_path, errors.SourceError, *fragments,
                               dsn=pg.dsn, query=query.format(schema=pg.schema))
  assert PASSWORD_MARK not in message


@pytest.mark.parametrize("query, params, driver", [
    pytest.param("SELECT 1 AS one WHERE 'x%' LIKE %(pattern)s", {"pattern": "x%"}, "postgresql",
                 marks=pytest.mark.postgres),
    pytest.param("SELECT %s AS one, %s AS two", [1], "postgresql", marks=pytest.mark.postgres),
    ("SELECT ? AS one, ? AS two", [1], "sqlite"),
])
def test_parameters_that_do_not_match_placeholders(tmp_path, request, query, params, driver):
  connection = ({"dsn": request.getfixturevalue("postgres_dsn")} if driver == "postgresql"
                else {"sqlite_path": sqlite_file(tmp_path, "CREATE TABLE e (x INTEGER);")})
  assert_build_fails(tmp_path, errors.ConfigError, "parameters do not match its placeholders",
                     "list for positional or a dict for named", query=query, params=params,
                     **connection)


def _with_password(dsn: str, password: str) -> str:
  from psycopg2.extensions import make_dsn, parse_dsn  # pylint: disable=import-outside-toplevel
  return make_dsn(**{**parse_dsn(dsn), "password": password})


def test_postgres_wrong_password_never_shows_it(tmp_path, pg):
  secret = "Wr0ng-Secret-4711"
  with pytest.raises(errors.SourceError) as excinfo:
    build(tmp_path, dsn=_with_password(pg.dsn, secret), query="SELECT 1 AS one")
  text = "".join(traceback.format_exception(excinfo.value))
  assert "Cannot connect" in text and "Check the password" in text
  assert secret not in text
  assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None


def test_postgres_bad_dsn(tmp_path):
  message = assert_build_fails(
      tmp_path, errors.ConfigError, "Cannot parse the PostgreSQL DSN", "key=value pairs",
      dsn="host=127.0.0.1 password=Secret-0815 garbage", query="SELECT 1")
  assert "Secret-0815" not in message
  message = assert_build_fails(
      tmp_path, errors.SourceError, "Cannot connect", "port",
      dsn="host=127.0.0.1 port=1 password=Secret-0815 connect_timeout=2", query="SELECT 1")
  assert "Secret-0815" not in message


def test_postgres_libpq_environment_and_dsn_env(tmp_path, pg, monkeypatch):
  from psycopg2.extensions import parse_dsn  # pylint: disable=import-outside-toplevel

  for key, value in parse_dsn(pg.dsn).items():
    monkeypatch.setenv({"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE",
                        "user": "PGUSER", "password": "PGPASSWORD"}[key], value)
  builder = build(tmp_path, driver="postgresql", query="SELECT 7 AS seven")
  assert column(builder, "seven") == [7]
  source = builder.info.metadata["provenance"]["source"]
  assert source["connection"] == "PostgreSQL via libpq environment variables"
  assert source["user"] == parse_dsn(pg.dsn)["user"]
  monkeypatch.setenv("MY_DSN", pg.dsn)
  via_env = build(tmp_path / "env", dsn_env="MY_DSN", query="SELECT 8 AS eight")
  assert via_env.info.metadata["provenance"]["source"]["connection"] == "PostgreSQL DSN from $MY_DSN"
  assert_build_fails(tmp_path / "unset", errors.ConfigError, "'UNSET_DSN'", "not set",
                     dsn_env="UNSET_DSN", query="SELECT 1")


def test_postgres_password_is_in_no_file_of_the_dataset(tmp_path, pg, caplog):
  assert PASSWORD_MARK in pg.dsn
  with caplog.at_level(logging.DEBUG):
    builder = build(tmp_path, dsn=pg.dsn, query=f"SELECT * FROM {pg.schema}.every_type",
                    order_by="id", nulls="mask",
                    columns={"m": {"categorical": True, "unknown": "<missing>"}})
  files = [path for path in (tmp_path / "tfds").rglob("*") if path.is_file()]
  assert {path.name for path in files} >= {"dataset_info.json", "features.json", "metadata.json"}
  for path in files:
    assert PASSWORD_MARK.encode() not in path.read_bytes(), path
  assert PASSWORD_MARK not in caplog.text
  record = builder.info.metadata["provenance"]
  assert "password=***" in record["config"]["dsn"]
  assert PASSWORD_MARK not in repr(builder.builder_config)


@pytest.mark.slow  # a `tfds build` subprocess
def test_postgres_tfds_build_cli_keeps_the_password_out_of_its_output(tmp_path, pg):
  config = json.dumps({"name": "cli", "dsn": pg.dsn, "order_by": "id",
                       "query": f"SELECT id, txt FROM {pg.schema}.every_type WHERE id < 3"})
  tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
  result = subprocess.run(
      [str(tfds_cli), "build", str(BUILDER_DIR), "--data_dir", str(tmp_path), "--config", config],
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True, text=True,
      timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert PASSWORD_MARK not in result.stdout + result.stderr
  for path in tmp_path.rglob("*"):
    assert not path.is_file() or PASSWORD_MARK.encode() not in path.read_bytes(), path
  assert tfds.builder_from_directory(str(tmp_path / "database/cli/1.0.0")).info.splits[
      "train"].num_examples == 2


def test_postgres_one_snapshot_shared_with_other_sessions(pg):
  pg.run(f"CREATE TABLE {pg.schema}.growing (id int)")
  pg.run(f"INSERT INTO {pg.schema}.growing VALUES (1)")
  spec = connection.ConnectionSpec("postgresql", dsn=pg.dsn)
  count = statements.Statement(f"SELECT count(*) FROM {pg.schema}.growing")
  with drivers.open_session(spec) as session:
    assert session.fetch_all(count) == [(1,)]
    pg.run(f"INSERT INTO {pg.schema}.growing VALUES (2)")  # committed meanwhile
    assert session.fetch_all(count) == [(1,)]
    snapshot = session.export_snapshot()
    with drivers.open_session(spec, snapshot=snapshot) as worker:
      assert worker.fetch_all(count) == [(1,)]
      assert list(worker.rows(count)) == [(1,)]
    with drivers.open_session(spec) as fresh:
      assert list(fresh.rows(count)) == [(2,)]
    assert session.facts()["isolation"] == "REPEATABLE READ, READ ONLY"


@pytest.mark.slow  # streams 400,000 rows until the server drops the connection
def test_postgres_dropped_connection_fails_clearly_and_leaves_no_dataset(tmp_path, pg):
  app = f"tfds_drop_test_{os.getpid()}"
  # The cursor path: the test waits for its FETCH (test_binary_copy covers COPY).
  config = dict(name="dropped", dsn=pg.dsn, application_name=app, fetch_size=500, order_by="id",
                read_path="cursor",
                query="SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 400000) g")
  seen: list[str] = []

  def terminate_once_streaming() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
      rows = pg.run("SELECT pid, query FROM pg_stat_activity WHERE application_name = %s "
                    "AND query LIKE 'FETCH%%'", [app])
      if rows:
        seen.append(rows[0][1])
        pg.run("SELECT pg_terminate_backend(%s)", [rows[0][0]])
        return
      time.sleep(0.005)

  killer = threading.Thread(target=terminate_once_streaming)
  builder = make_builder(tmp_path, **config)  # planning connects before the killer starts
  killer.start()
  try:
    with pytest.raises(errors.SourceError) as excinfo:
      builder.download_and_prepare()
  finally:
    killer.join()
  message = str(excinfo.value)
  assert "Lost the connection" in message and "while reading split 'train' after" in message
  assert "Nothing was written as a dataset; rerun" in message
  assert seen and seen[0].startswith("FETCH FORWARD 500 FROM")  # a server-side cursor
  data_dir = tmp_path / "tfds"
  assert_no_dataset(data_dir, data_dir / "database" / "dropped" / "1.0.0")
  rerun = build(tmp_path, **{**config, "query": config["query"].replace("400000", "1000")})
  assert rerun.info.splits["train"].num_examples == 1000


def test_postgres_numeric_and_date_columns_get_one_feature_in_database_and_side_table(tmp_path, pg):
  """The same column types become the same features in `database` and in an augmented SQL side table."""
  query = f"SELECT id, num, d, tstz FROM {pg.schema}.every_type WHERE id <= 2"
  from_database = build(tmp_path, dsn=pg.dsn, query=query, order_by="id")
  base = helpers.write_records(tmp_path / "base" / "base.tfrecord", [
      tf.train.Example(features=tf.train.Features(feature={
          "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[key]))})).SerializeToString()
      for key in (1, 2)])
  side_table = augmented.Builder(
      config=augmented.BuilderConfig(
          name="side", base_records={"train": [str(base)]}, join_key="id", side_table_sql=query,
          side_table_connection={"driver": "postgresql", "dsn": pg.dsn}),
      data_dir=str(tmp_path / "augmented"))
  side_table.download_and_prepare()
  database_rows = {int(e["id"]): e for e in examples(from_database)}
  side_rows = {int(e["id"]): e for e in examples(side_table)}
  for name in ("num", "d", "tstz"):
    database_feature, side_feature = from_database.info.features[name], side_table.info.features[name]
    assert (side_feature.dtype, side_feature.np_dtype) == (database_feature.dtype, database_feature.np_dtype), name
    assert [side_rows[key][name] for key in (1, 2)] == [database_rows[key][name] for key in (1, 2)], name
