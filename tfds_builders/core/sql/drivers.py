"""Opening a read-only session on the spec's driver: PostgreSQL or SQLite."""

from __future__ import annotations

from tfds_builders.core import errors
from tfds_builders.core.sql import connection as connection_lib
from tfds_builders.core.sql import postgres
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import sqlite


def open_session(spec: connection_lib.ConnectionSpec, *, snapshot: str | None = None,
                 sqlite_setup: sqlite.SqliteSetup | None = None) -> sessions.ReadSession:
  """Connects and starts the read-only transaction.

  Args:
    spec: Where to read from.
    snapshot: A `ReadSession.export_snapshot()` id: this session then sees
      exactly what the exporting session sees.
    sqlite_setup: On SQLite, registers the functions the caller's SQL calls
      (PostgreSQL has them built in), before the read transaction starts.

  Raises:
    ConfigError: for an unknown driver or an unparsable DSN.
    SourceError: if the database cannot be reached or opened.
  """
  if spec.driver == "postgresql":
    return postgres.PostgresSession(spec, snapshot)
  if spec.driver == "sqlite":
    return sqlite.SqliteSession(spec, sqlite_setup)
  raise errors.ConfigError(f"driver={spec.driver!r}; use one of {connection_lib.DRIVERS}.")
