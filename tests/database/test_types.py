"""Column types: SQLite's declared types and storage classes, the type -> kind tables."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from tfds_builders.augmented import side_table
from tfds_builders.core import errors
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import drivers
from tfds_builders.core.sql import statements
from tfds_builders.core.sql import types as sql_types

from tests.database.common import build
from tests.database.common import examples
from tests.database.common import column
from tests.database.common import assert_build_fails
from tests.database.common import sqlite_file
from tests.database.common import file_hashes
from tests.database.common import float_bits
from tests.database.common import assert_tfds_encodes_the_same


SQLITE_TYPES = """
CREATE TABLE typed (
  id INTEGER PRIMARY KEY, small SMALLINT, big BIGINT, ratio REAL, precise DOUBLE PRECISION,
  price DECIMAL(10, 2), flag BOOLEAN, name VARCHAR(20), note TEXT, data BLOB, day DATE,
  stamp DATETIME, zoned TIMESTAMPTZ, clock TIME, doc JSON, untyped
);
INSERT INTO typed VALUES
  (1, -32768, 9223372036854775807, 1.5e-300, 1e308, 12.5, 1, 'héllo', 'x', x'00ff', '2024-02-29',
   '2024-02-29 12:34:56.789', '2024-02-29T12:34:56+02:00', '23:59:59', '{"a": 1}', 7),
  (2, 0, 0, 0.0, 0.0, 0, 0, '', '', x'', '1970-01-01', '1970-01-01 00:00:00',
   '1970-01-01T00:00:00+00:00', '00:00:00', '{}', 0);
"""


def test_sqlite_declared_types_round_trip(tmp_path):
  path = sqlite_file(tmp_path, SQLITE_TYPES)
  builder = build(tmp_path, sqlite_path=path, query="SELECT * FROM typed", order_by="id")
  features = builder.info.features
  dtypes = {name: (feature.np_dtype, feature.shape) for name, feature in features.items()}
  assert dtypes == {
      "id": (np.int64, ()), "small": (np.int64, ()), "big": (np.int64, ()),
      "ratio": (np.float64, ()), "precise": (np.float64, ()), "price": (np.float64, ()),
      "flag": (np.bool_, ()), "name": (np.object_, ()), "note": (np.object_, ()),
      "data": (np.object_, ()), "day": (np.object_, ()), "stamp": (np.object_, ()),
      "zoned": (np.object_, ()), "clock": (np.object_, ()), "doc": (np.object_, ()),
      "untyped": (np.int64, ()),
  }
  first, second = examples(builder)
  assert first["big"] == 2**63 - 1 and first["small"] == -32768
  stored_ratio = sqlite3.connect(path).execute("SELECT ratio FROM typed WHERE id = 1").fetchone()[0]
  assert float_bits(first["ratio"]) == float_bits(stored_ratio)  # bit-exact, however SQLite parsed it
  assert first["precise"] == 1e308 and first["price"] == 12.5
  assert first["flag"] and not second["flag"]
  assert first["name"] == "héllo".encode() and first["data"] == b"\x00\xff"
  assert first["day"] == b"2024-02-29"
  assert first["stamp"] == b"2024-02-29T12:34:56.789000"
  assert first["zoned"] == b"2024-02-29T10:34:56+00:00"
  assert first["clock"] == b"23:59:59" and first["doc"] == b'{"a": 1}'
  assert first["untyped"] == 7
  # 0, '' and false are values, not NULLs: the default policy 'error' passes.
  assert (second["small"], second["name"], second["data"], second["untyped"]) == (0, b"", b"", 0)
  assert builder.info.metadata["provenance"]["columns"]["untyped"]["source_type"] == (
      "integer (storage classes)")
  assert_tfds_encodes_the_same(builder)


def test_sqlite_wal_database_is_refused_for_parallel_readers(tmp_path):
  path = sqlite_file(tmp_path, "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1);")
  with drivers.open_session(connection.ConnectionSpec("sqlite", sqlite_path=path)) as session:
    assert session.fetch_all(statements.Statement("SELECT id FROM t")) == [(1,)]
    with pytest.raises(errors.ConfigError, match="WAL mode.*Build without Beam"):
      session.export_snapshot()


def test_sqlite_types_with_parameters_and_expressions(tmp_path):
  path = sqlite_file(tmp_path, SQLITE_TYPES)
  builder = build(
      tmp_path, sqlite_path=path, order_by="id", temporal="epoch", params=[1],
      query="SELECT id, day, flag, ratio * 2 AS doubled, name || '!' AS shout FROM typed "
            "WHERE id >= ?",
  )
  features = builder.info.features
  # Declared types survive the parameter (read through a view with NULL in its place).
  assert features["day"].np_dtype == np.int64 and features["flag"].np_dtype == np.bool_
  # Expressions have no declared type: their storage classes decide.
  assert features["doubled"].np_dtype == np.float64 and features["shout"].np_dtype == np.object_
  assert [int(d) for d in column(builder, "day")] == [19782, 0]


def test_sqlite_mixed_storage_classes_are_refused(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE t (x); INSERT INTO t VALUES (1), ('one');")
  assert_build_fails(tmp_path, errors.SchemaError, "'x'", "integer, text",
                     "CAST(x AS TEXT) AS x", sqlite_path=path, query="SELECT x FROM t")


def test_untyped_column_hints_name_each_builders_own_option(tmp_path):
  with pytest.raises(sql_types.UntypedColumnError) as raised:
    sql_types.sqlite_storage_type("x", {"integer", "text"})
  # core.sql knows no builder's options: each builder adds its own hint.
  assert "columns=" not in str(raised.value) and isinstance(raised.value, errors.SchemaError)
  path = sqlite_file(tmp_path, "CREATE TABLE t (id INTEGER, x); INSERT INTO t VALUES (1, 1), (2, 'one');")
  with pytest.raises(errors.SchemaError) as raised:
    side_table.read_query("SELECT id, x FROM t", {"driver": "sqlite", "sqlite_path": path},
                          key_column="id", columns=[], key_kind="int64_list", declared={}, root=None)
  message = str(raised.value)
  assert "Column 'x'" in message and "CAST(x AS TEXT) AS x" in message and "columns=" not in message


def test_statement_with_user_sql_names_its_field():
  with pytest.raises(ValueError):
    statements.Statement("SELECT 1", user_query="SELECT 1")
  assert statements.Statement("SELECT 1", user_query="SELECT 1", field="query").field == "query"


def test_sqlite_value_not_matching_declared_type_names_column_and_row(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE t (id INTEGER, n INTEGER); "
                               "INSERT INTO t VALUES (1, 5), (2, 'five');")
  assert_build_fails(tmp_path, errors.SchemaError, "the row with id='2'", "column 'n'",
                     "'five'", "Cast the column", sqlite_path=path,
                     query="SELECT * FROM t", order_by="id")


def test_sqlite_source_is_never_modified_and_writes_fail(tmp_path):
  (tmp_path / "src").mkdir()
  path = sqlite_file(tmp_path / "src", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); "
                                       "INSERT INTO t VALUES (1, 'a'), (2, 'b');")
  before = file_hashes(tmp_path / "src")
  build(tmp_path / "out", sqlite_path=path, query="SELECT * FROM t", order_by="id")
  for index, query in enumerate(("INSERT INTO t VALUES (3, 'c') RETURNING *",
                                 "UPDATE t SET v = 'z' RETURNING *",
                                 "SELECT * FROM t; DELETE FROM t")):
    assert_build_fails(tmp_path / "out", errors.ConfigError, "`query` must be exactly one read-only query",
                       "Nothing was sent to run", "READ ONLY", name=f"write{index}", sqlite_path=path, query=query)
  assert file_hashes(tmp_path / "src") == before


def test_sql_type_mapping_tables():
  assert sql_types.postgres_type("int8") == sql_types.SqlType("int", source="int8")
  assert sql_types.postgres_type("_text", element="varchar").label() == "text[]"
  assert sql_types.postgres_type("mood", is_enum=True).kind == "enum"
  assert sql_types.postgres_type("interval") is None
  declared = {name: sql_types.sqlite_declared_type(name).kind for name in (
      "INTEGER", "BIGINT", "VARCHAR(3)", "CLOB", "DOUBLE", "FLOAT", "BOOLEAN", "DATE",
      "DATETIME", "TIMESTAMP WITH TIME ZONE", "DECIMAL(10,2)", "MONEY", "BLOB", "JSON")}
  assert declared == {
      "INTEGER": "int", "BIGINT": "int", "VARCHAR(3)": "text", "CLOB": "text",
      "DOUBLE": "float64", "FLOAT": "float64", "BOOLEAN": "bool", "DATE": "date",
      "DATETIME": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz",
      "DECIMAL(10,2)": "numeric", "MONEY": "numeric", "BLOB": "bytes", "JSON": "json"}
  assert sql_types.sqlite_declared_type("") is None
