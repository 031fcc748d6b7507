"""A read-only session: one connection, one snapshot, streamed; the errors both drivers raise.

`drivers.open_session` opens one connection holding one `REPEATABLE READ`,
`READ ONLY` transaction; every statement of the session sees the same data.
The user's SQL must be exactly one query: the tokenizer
(`statements.check_read_query`) refuses anything else before it is sent,
PostgreSQL parses every statement with the extended protocol (which refuses
a second one) and opens sessions whose default is READ ONLY, and SQLite runs
under an authorizer that allows reading only. Errors are
`SourceError`/`ConfigError` whose text never holds the password.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any


from tfds_builders.core import errors
from tfds_builders.core.sql import connection as connection_lib
from tfds_builders.core.sql import statements
from tfds_builders.core.sql import types as sql_types

DEFAULT_FETCH_SIZE = 10_000


@dataclasses.dataclass(frozen=True)
class ResultColumn:
  """One column of a query result: its name and type (None if unsupported)."""

  name: str
  sql_type: sql_types.SqlType | None
  type_name: str


class ReadSession:
  """One connection in one `REPEATABLE READ`, `READ ONLY` transaction.

  Attributes:
    spec: Where it reads.
    query_field: The config field holding the user's SQL, named in errors;
      empty: `query` for SQL composed around it (the database builder), `side_table_sql` for SQL sent as is (the augmented builder).
  """

  driver: str

  def __init__(self, spec: connection_lib.ConnectionSpec, query_field: str = ""):
    self.spec = spec
    self.query_field = query_field
    self._checked: dict[tuple[str, bool], int] = {}  # (user SQL, backslash quotes) -> its end
    self._fields: dict[str, str] = {}

  def __enter__(self) -> ReadSession:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  def close(self) -> None:
    raise NotImplementedError

  def quote(self, identifier: str) -> str:
    raise NotImplementedError

  def check_user_query(self, user_query: str, field: str) -> int:
    """`check_read_query` for this session's driver; returns where the statement ends.

    Raises:
      ConfigError: naming `field`, unless `user_query` is one read-only query.
    """
    backslash_quotes = self._backslash_quotes()
    key = (user_query, backslash_quotes)
    self._fields.setdefault(user_query, field)
    if key not in self._checked:
      self._checked[key] = statements.check_read_query(
          user_query, field, self.driver, backslash_quotes=backslash_quotes,
          where=self.spec.where(),
      )
    return self._checked[key]

  def _check_statement(self, statement: statements.Statement) -> None:
    """Checks the user's part of a statement about to be sent."""
    sql, user_query = statement.sql, statement.user_query
    if user_query:
      # The database builder composes its SQL around the user's query; the
      # side table sends its query as is.
      composed = sql.strip() != user_query.strip()
      self.check_user_query(
          user_query, self.query_field or ("query" if composed else "side_table_sql"))

  def _field(self, user_query: str) -> str:
    return self._fields.get(user_query, self.query_field or "query")

  def _backslash_quotes(self) -> bool:
    return False

  def result_columns(self, statement: statements.Statement) -> list[ResultColumn]:
    """Runs `statement` (which must be cheap: add LIMIT 0) for its result columns and their types."""
    raise NotImplementedError

  def fetch_all(self, statement: statements.Statement) -> list[tuple]:
    """All rows of a small query (statistics, bounds)."""
    raise NotImplementedError

  def rows(
      self, statement: statements.Statement, *, fetch_size: int = DEFAULT_FETCH_SIZE, label: str = "the query",
  ) -> Iterator[tuple]:
    """Streams the rows of `statement`, `fetch_size` at a time."""
    raise NotImplementedError

  def export_snapshot(self) -> str | None:
    """An id other sessions pass to `open_session` to see this snapshot."""
    raise NotImplementedError

  def facts(self) -> dict[str, Any]:
    """What identifies the data read: server, snapshot, file (for provenance)."""
    raise NotImplementedError


def write_error(spec: connection_lib.ConnectionSpec, field: str, detail: str) -> errors.ConfigError:
  """The error for a query the server (or SQLite's guard) refused as a write."""
  refused_by = (
      "the build reads a file opened read-only, under an authorizer that allows reading only"
      if spec.driver == "sqlite" else "the build reads in a READ ONLY transaction"
  )
  return errors.ConfigError(
      errors.with_hint(
          f"`{field}` tries to modify the database ({spec.where()}: {detail}); it was "
          f"refused and nothing was changed: {refused_by}",
          statements.READ_ONLY_HINT,
      )
  )


def timeout_error(
    spec: connection_lib.ConnectionSpec, action: str, detail: str, lock: bool) -> errors.SourceError:
  setting = "lock_timeout" if lock else "statement_timeout"
  limit = getattr(spec, setting)
  if limit not in ("", None):
    limit = f"={limit!r}"
  else:
    limit = " (SQLite's default, 5 s)" if spec.driver == "sqlite" else " (the server setting)"
  waited = "waited longer for a lock than" if lock else "ran longer than"
  return errors.SourceError(
      errors.with_hint(
          f"The query {waited} {setting}{limit} while "
          f"{action} ({spec.where()}: {detail}); nothing was written as a dataset",
          ("Rerun when the transaction holding the lock has ended" if lock else
           "Make the query faster (an index, a narrower WHERE)")
          + f", or raise {setting} in the connection settings (e.g. '10min').",
      )
  )


def parameter_error(spec: connection_lib.ConnectionSpec, error: Exception, style: str) -> errors.ConfigError:
  return errors.ConfigError(
      errors.with_hint(
          f"The query's parameters do not match its placeholders ({spec.where()}: "
          f"{' '.join(str(error).split())})",
          f"Give `params` as a list for positional or a dict for named placeholders "
          f"({style}).",
      )
  )
