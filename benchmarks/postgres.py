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
# The wide table: 20 columns shaped like a public flights table (336,776 rows), with
# NULLs where flights have them (cancelled, unknown aircraft) and a long free-text note.
WIDE_ROWS = 336_776
_WIDE_SELECT = {
    "id": "g::int8",
    "month": "(1 + g % 12)::int2",
    "day": "(1 + g % 28)::int2",
    "flight_date": "date '2013-01-01' + (g % 365)::int4",
    "dep_time": "CASE WHEN g % 41 = 0 THEN NULL ELSE ((g * 37) % 2400)::int2 END",
    "sched_dep_time": "((g * 37 + 15) % 2400)::int2",
    "dep_delay": "CASE WHEN g % 41 = 0 THEN NULL ELSE ((g * 7919) % 181 - 30)::float8 END",
    "arr_time": "CASE WHEN g % 37 = 0 THEN NULL ELSE ((g * 53) % 2400)::int2 END",
    "sched_arr_time": "((g * 53 + 40) % 2400)::int2",
    "arr_delay": "CASE WHEN g % 37 = 0 THEN NULL ELSE ((g * 104729) % 241 - 60)::float8 END",
    "carrier": "(ARRAY['UA','AA','B6','DL','EV','MQ','US','WN','VX','FL','AS','9E','F9','HA','YV','OO'])[1 + g % 16]",
    "flight": "(1 + (g * 31) % 8500)::int4",
    "tailnum": "CASE WHEN g % 150 = 0 THEN NULL ELSE 'N' || (10000 + (g * 17) % 90000)::text || 'UA' END",
    "origin": "(ARRAY['EWR','LGA','JFK'])[1 + g % 3]",
    "dest": "(ARRAY['ATL','ORD','LAX','BOS','MCO','CLT','SFO','FLL','MIA','DCA','DTW','DFW','RDU',"
            "'TPA','DEN','IAH','MSP','PBI','BNA','LAS'])[1 + (g * 13) % 20]",
    "air_time": "CASE WHEN g % 35 = 0 THEN NULL ELSE (20 + (g * 11) % 680)::float4 END",
    "distance": "(80 + (g * 29) % 4900)::float8",
    "time_hour": "timestamptz '2013-01-01 05:00:00+00' + (g % 8760) * interval '1 hour'",
    "cancelled": "g % 41 = 0",
    "remark": "CASE WHEN g % 4 = 0 THEN NULL ELSE repeat('delayed by weather ', (g % 7)::int4) || g::text END",
}
WIDE_COLUMNS = tuple(_WIDE_SELECT)
WIDE_NULLABLE = ("dep_time", "dep_delay", "arr_time", "arr_delay", "tailnum", "air_time", "remark")
# nulls: default, as a user would write it: each nullable column's stand-in.
WIDE_DEFAULTS = {"dep_time": 0, "dep_delay": 0.0, "arr_time": 0, "arr_delay": 0.0, "tailnum": "",
                 "air_time": 0.0, "remark": ""}


@dataclasses.dataclass(frozen=True)
class Table:
  """A generated table of `rows` rows and where it lives.

  Attributes:
    rows: Row count.
    dsn: The PostgreSQL DSN; empty for SQLite.
    sqlite_path: The SQLite file; None for PostgreSQL.
    wide: The 20-column table (PostgreSQL only) instead of the 6-column one.
    order_by: An ORDER BY of the query (the builds order with their own `order_by`).
  """

  rows: int
  dsn: str = ""
  sqlite_path: pathlib.Path | None = None
  wide: bool = False
  order_by: str = ""

  @property
  def name(self) -> str:
    table = f"{'wide' if self.wide else 'rows'}_{self.rows}"
    return table if self.sqlite_path else f"tfds_bench.{table}"

  @property
  def columns(self) -> tuple[str, ...]:
    return WIDE_COLUMNS if self.wide else COLUMNS

  @property
  def query(self) -> str:
    order = f" ORDER BY {self.order_by}" if self.order_by else ""
    return f"SELECT {', '.join(self.columns)} FROM {self.name}{order}"

  @property
  def uri(self) -> str:
    """The table's database as a URI: what ADBC, ConnectorX and SQLAlchemy take."""
    if self.sqlite_path:
      return f"sqlite:///{self.sqlite_path.resolve()}"
    import psycopg2.extensions  # pylint: disable=g-import-not-at-top
    from urllib import parse  # pylint: disable=g-import-not-at-top

    if "://" in self.dsn:
      return self.dsn
    parts = psycopg2.extensions.parse_dsn(self.dsn)
    user = parse.quote(parts.get("user", ""), safe="")
    password = parse.quote(parts.get("password", ""), safe="")
    login = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{parts['port']}" if "port" in parts else ""
    return f"postgresql://{login}{parts.get('host', 'localhost')}{port}/{parts.get('dbname', '')}"

  @property
  def sqlalchemy_uri(self) -> str:
    """The URI for SQLAlchemy (Hugging Face `from_sql`), through psycopg2 as the builder reads."""
    uri = self.uri
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1) if uri.startswith("postgresql://") else uri

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

  table = Table(rows, dsn=dsn).name
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


def wide_postgres_table(dsn: str, rows: int) -> tuple[Table, int]:
  """Creates tfds_bench.wide_N (20 columns, NULLs in 7, NOT NULL on the rest) unless it exists."""
  import psycopg2  # pylint: disable=g-import-not-at-top

  table = Table(rows, dsn=dsn, wide=True)
  with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
    cursor.execute("CREATE SCHEMA IF NOT EXISTS tfds_bench")
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table.name])
    if not cursor.fetchone()[0]:
      print(f"database: generating {table.name}", file=sys.stderr)
      select = ", ".join(f"{expression} AS {name}" for name, expression in _WIDE_SELECT.items())
      # g is int8: the hashing products below pass int4's range past 20,000 rows.
      cursor.execute(f"CREATE TABLE {table.name} AS SELECT {select} FROM generate_series(1, {int(rows)}::int8) AS g")
      not_null = [name for name in WIDE_COLUMNS if name not in WIDE_NULLABLE and name != "id"]
      cursor.execute(f"ALTER TABLE {table.name} ADD PRIMARY KEY (id), "
                     + ", ".join(f"ALTER COLUMN {name} SET NOT NULL" for name in not_null))
      cursor.execute(f"ANALYZE {table.name}")
    cursor.execute(f"SELECT count(*) FROM {table.name}")  # warms the server's cache
    cursor.execute("SELECT pg_table_size(%s::regclass)", [table.name])
    return table, cursor.fetchone()[0]


def count_complete_rows(table: Table) -> int:
  """Rows of the wide table without a NULL: what a config-wide skip_row keeps."""
  with table.connect() as connection, connection.cursor() as cursor:
    cursor.execute(f"SELECT count(*) FROM {table.name} WHERE "
                   + " AND ".join(f"{name} IS NOT NULL" for name in WIDE_NULLABLE))
    return cursor.fetchone()[0]


def drop_postgres_table(dsn: str, rows: int, wide: bool = False) -> None:
  import psycopg2  # pylint: disable=g-import-not-at-top

  with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
    cursor.execute(f"DROP TABLE IF EXISTS {Table(rows, dsn=dsn, wide=wide).name}")


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
