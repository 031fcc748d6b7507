"""The database benchmark's server: the generated table, in PostgreSQL or (for the smoke size) SQLite."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

DSN_ENV = "TFDS_BUILDERS_PG_DSN"
COLUMNS = ("id", "label", "score", "ratio", "name", "flag")


@dataclasses.dataclass(frozen=True)
class Table:
  """A generated table of `rows` rows and where it lives.

  Attributes:
    rows: Row count.
    dsn: The PostgreSQL DSN; empty for SQLite.
    sqlite_path: The SQLite file; None for PostgreSQL.
  """

  rows: int
  dsn: str = ""
  sqlite_path: pathlib.Path | None = None

  @property
  def query(self) -> str:
    table = f"rows_{self.rows}" if self.sqlite_path else f"tfds_bench.rows_{self.rows}"
    return f"SELECT {', '.join(COLUMNS)} FROM {table}"

  def builder_options(self) -> dict[str, Any]:
    """The database BuilderConfig fields that reach this table."""
    if self.sqlite_path:
      return {"data_root": str(self.sqlite_path.parent), "sqlite_path": self.sqlite_path.name}
    return {"dsn": self.dsn}

  @contextlib.contextmanager
  def connect(self) -> Iterator[Any]:
    """A DB-API connection, closed on exit."""
    if self.sqlite_path:
      connection = sqlite3.connect(self.sqlite_path)
    else:
      import psycopg2  # pylint: disable=g-import-not-at-top

      connection = psycopg2.connect(self.dsn)
    try:
      yield connection
    finally:
      connection.close()


def dsn_from_env(required: bool) -> str:
  """The test server's DSN; exits with how to start it when `required` and unset."""
  dsn = os.environ.get(DSN_ENV, "")
  if required and not dsn:
    sys.exit(f"database: {DSN_ENV} is not set; run `source scripts/start_postgres.sh`")
  return dsn


def postgres_table(dsn: str, rows: int) -> tuple[Table, int]:
  """Creates tfds_bench.rows_N with generate_series (unless it exists); returns it and its bytes."""
  import psycopg2  # pylint: disable=g-import-not-at-top

  table = f"tfds_bench.rows_{rows}"
  with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
    cursor.execute("CREATE SCHEMA IF NOT EXISTS tfds_bench")
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    if not cursor.fetchone()[0]:
      print(f"database: generating {table}", file=sys.stderr)
      cursor.execute(
          f"CREATE TABLE {table} AS SELECT g::int8 AS id, (g % 10)::int4 AS label, "
          "(g * 0.001)::float8 AS score, (g % 997)::float4 AS ratio, 'item ' || g AS name, "
          f"(g % 2 = 0) AS flag FROM generate_series(1, {int(rows)}) AS g"
      )
      cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
      cursor.execute(f"ANALYZE {table}")
    cursor.execute(f"SELECT count(*) FROM {table}")  # warms the server's cache
    cursor.execute("SELECT pg_table_size(%s::regclass)", [table])
    return Table(rows, dsn=dsn), cursor.fetchone()[0]


def drop_postgres_table(dsn: str, rows: int) -> None:
  import psycopg2  # pylint: disable=g-import-not-at-top

  with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
    cursor.execute(f"DROP TABLE IF EXISTS tfds_bench.rows_{int(rows)}")


def sqlite_table(directory: pathlib.Path, rows: int) -> tuple[Table, int]:
  """The same table in a SQLite file (no server needed); returns it and the file's bytes."""
  path = directory / f"bench_{rows}.sqlite"
  with contextlib.closing(sqlite3.connect(path)) as connection, connection:
    connection.execute(
        f"CREATE TABLE rows_{int(rows)} (id INTEGER PRIMARY KEY, label INTEGER, score REAL, "
        "ratio REAL, name TEXT, flag INTEGER)")
    connection.executemany(
        f"INSERT INTO rows_{int(rows)} VALUES (?, ?, ?, ?, ?, ?)",
        ((g, g % 10, g * 0.001, float(g % 997), f"item {g}", int(g % 2 == 0)) for g in range(1, rows + 1)),
    )
  return Table(rows, sqlite_path=path), path.stat().st_size
