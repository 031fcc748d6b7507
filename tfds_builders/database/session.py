"""The database builder's read-only session: core.sql's, with the SQL functions its statements call on SQLite."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from tfds_builders.core import splits
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import drivers
from tfds_builders.core.sql import sessions


def open_session(spec: connection.ConnectionSpec, *, snapshot: str | None = None) -> sessions.ReadSession:
  """`drivers.open_session`, where SQLite also knows `stddev_pop` and the split bucket."""
  return drivers.open_session(spec, snapshot=snapshot, sqlite_setup=_register_sqlite_functions)


def _register_sqlite_functions(sqlite_connection: sqlite3.Connection) -> None:
  sqlite_connection.create_aggregate("stddev_pop", 1, _StddevPop)
  splits.register_sqlite(sqlite_connection)


class _StddevPop:
  """PostgreSQL's stddev_pop for SQLite (Welford's algorithm)."""

  def __init__(self):
    self.count, self.mean, self.squares = 0, 0.0, 0.0

  def step(self, value: Any) -> None:
    if value is None:
      return
    self.count += 1
    delta = float(value) - self.mean
    self.mean += delta / self.count
    self.squares += delta * (float(value) - self.mean)

  def finalize(self) -> float | None:
    return math.sqrt(self.squares / self.count) if self.count else None
