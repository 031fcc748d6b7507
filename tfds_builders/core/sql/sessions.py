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
  """

  driver: str

  def __init__(self, spec: connection_lib.ConnectionSpec):
    self.spec = spec
    self._checked: dict[tuple[str, str, bool], int] = {}  # (user SQL, field, backslash quotes) -> its end

  def __enter__(self) -> ReadSession:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  def close(self) -> None:
    raise NotImplementedError

  def quote(self, identifier: str) -> str:
    raise NotImplementedError

  def check_user_query(self, statement: statements.Statement) -> int:
    """`check_read_query` of the statement's user query for this driver; returns where it ends.

    Raises:
      ConfigError: naming `statement.field`, unless its user query is one read-only query.
    """
    backslash_quotes = self._backslash_quotes()
    key = (statement.user_query, statement.field, backslash_quotes)
    if key not in self._checked:
      self._checked[key] = statements.check_read_query(
          statement.user_query, statement.field, self.driver, backslash_quotes=backslash_quotes,
          where=self.spec.where(),
      )
    return self._checked[key]

  def _check_statement(self, statement: statements.Statement) -> None:
    """Checks the user's part of a statement about to be sent."""
    if statement.user_query:
      self.check_user_query(statement)

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

  def explain(self, statement: statements.Statement) -> Any:
    """How the database would run `statement`, which is compiled, never run.

    PostgreSQL: its `EXPLAIN (FORMAT JSON)` plans; SQLite: its bytecode
    (`EXPLAIN` rows). Sent through the same read-only guard as every statement.
    """
    raise NotImplementedError

  def export_snapshot(self) -> str | None:
    """An id other sessions pass to `open_session` to see this snapshot."""
    raise NotImplementedError

  def facts(self) -> dict[str, Any]:
    """What identifies the data read: server, snapshot, file (for provenance)."""
    raise NotImplementedError


def field_of(statement: statements.Statement | None) -> str:
  """The config field an error about `statement` names: where the user wrote its SQL."""
  if statement is None or not statement.field:
    return "internal SQL"  # the builder's own statements hold no user SQL
  return statement.field


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
