"""Reading a SQL query from PostgreSQL or SQLite: one read-only statement, one snapshot, streamed.

`open_session` opens one connection holding one `REPEATABLE READ`,
`READ ONLY` transaction; every query of the session sees the same data.
`stream_query` is the one-call form: rows of one query, in batches fetched by
a server-side cursor. The user's SQL must be exactly one query: a tokenizer
(`check_read_query`) refuses a second statement and anything but
SELECT/WITH/VALUES/TABLE before it is sent, PostgreSQL parses every statement
with the extended protocol (which refuses a second one) and opens sessions
whose default is READ ONLY, and SQLite runs under an authorizer that allows
reading only. Errors are `SourceError`/`ConfigError` whose text never holds
the password.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import itertools
import math
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import logging
from etils import epath

from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import sql_types

DRIVERS = ("postgresql", "sqlite")
DEFAULT_APPLICATION_NAME = "tfds_builders"
DEFAULT_FETCH_SIZE = 10_000
Params = Sequence[Any] | Mapping[str, Any] | None

_QUERY_MARK = "\x00user_query\x00"
_SQLITE_CAST_EXAMPLE = "CAST(column AS TEXT)"
_POSTGRES_CAST_EXAMPLE = "column::text"
_TIMEOUT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")
_TIMEOUT_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}


@dataclasses.dataclass(frozen=True)
class ConnectionSpec:
  """Where to read from. Picklable; `describe()` is safe to log.

  Attributes:
    driver: `postgresql` or `sqlite`.
    dsn: A libpq DSN (`host=... dbname=...`) or URI (`postgresql://...`).
      Empty: libpq's environment variables (PGHOST, PGUSER, PGPASSWORD,
      PGDATABASE, ...) and `~/.pgpass` decide.
    dsn_env: Name of an environment variable holding the DSN, read where the
      connection is opened (so the DSN stays out of configs and pickles).
    sqlite_path: The SQLite database file, opened read-only.
    application_name: PostgreSQL `application_name` unless the DSN sets one.
    connect_timeout: Seconds to wait for PostgreSQL, unless the DSN says.
    statement_timeout: Longest run of one statement: milliseconds (int) or
      a duration ("500ms", "30s", "5min", "1h"); empty: the server's
      setting (a DSN may also say `options='-c statement_timeout=30s'`).
      SQLite interrupts a statement that runs longer.
    lock_timeout: Longest wait for a lock, same units. SQLite: the busy
      timeout (default 5 s).
  """

  driver: str
  dsn: str = dataclasses.field(default="", repr=False)
  dsn_env: str = ""
  sqlite_path: str = ""
  application_name: str = DEFAULT_APPLICATION_NAME
  connect_timeout: int = 10
  statement_timeout: int | str = ""
  lock_timeout: int | str = ""

  def __post_init__(self):
    for setting in ("statement_timeout", "lock_timeout"):
      timeout_ms(getattr(self, setting), setting)  # refuse a bad value at config time

  def resolved_dsn(self) -> str:
    """The DSN to connect with (from `dsn_env` when set).

    Raises:
      ConfigError: if `dsn_env` names an unset variable.
    """
    if not self.dsn_env:
      return self.dsn
    value = os.environ.get(self.dsn_env)
    if value is None:
      raise errors.ConfigError(
          f"dsn_env={self.dsn_env!r} names an environment variable that is not "
          "set. Export it (export NAME='host=... dbname=...'), or give `dsn`."
      )
    return value

  def describe(self) -> str:
    """What this connects to, with any password redacted."""
    if self.driver == "sqlite":
      return f"SQLite {self.sqlite_path}"
    if self.dsn_env:
      return f"PostgreSQL DSN from ${self.dsn_env}"
    if not self.dsn:
      return "PostgreSQL via libpq environment variables"
    return f"PostgreSQL DSN {redact(self.dsn, self.dsn)}"


def timeout_ms(value: int | str, setting: str) -> int | None:
  """A timeout setting in milliseconds (None: not set).

  Raises:
    ConfigError: naming `setting`, for anything but a count of milliseconds
      or a number with a unit (ms, s, min, h).
  """
  if value in ("", None):
    return None
  if isinstance(value, bool):
    match = None
  elif isinstance(value, (int, float)):
    match = _TIMEOUT.match(f"{value}ms") if value >= 0 else None
  else:
    match = _TIMEOUT.match(str(value))
  if not match:
    raise errors.ConfigError(
        f"{setting}={value!r} is not a duration. Give milliseconds (30000) or a "
        "number with a unit: '500ms', '30s', '5min', '1h'."
    )
  return round(float(match.group(1)) * _TIMEOUT_UNITS_MS[match.group(2) or "ms"])


def redact(text: str, dsn: str = "") -> str:
  """`text` with DSN/URI passwords and the literal password of `dsn` or PGPASSWORD removed."""
  text = provenance.redact(text)
  for secret in (_dsn_password(dsn), os.environ.get("PGPASSWORD", "")):
    if secret:
      text = text.replace(secret, provenance.REDACTED)
  return text


def _dsn_password(dsn: str) -> str:
  if not dsn:
    return ""
  try:
    from psycopg2.extensions import parse_dsn  # pylint: disable=g-import-not-at-top
    return parse_dsn(dsn).get("password", "")
  except Exception:  # pylint: disable=broad-except  # unparsable: nothing to find
    return ""


# ------------------------------------------------- one read-only statement --

# The statements a read-only build may run; everything else (COMMIT, SET,
# DO, COPY, CALL, ATTACH, PRAGMA, VACUUM, INSERT, ...) is refused unsent.
READ_STATEMENTS = ("SELECT", "WITH", "VALUES", "TABLE")
_DATA_CHANGES = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "TRUNCATE", "CREATE", "DROP",
    "ALTER", "GRANT", "REVOKE", "COPY", "VACUUM", "REINDEX", "CLUSTER", "COMMENT", "REFRESH",
    "ATTACH", "DETACH", "IMPORT", "SECURITY", "REASSIGN",
})
_WRITING_WORDS = _DATA_CHANGES | {"LOCK", "CALL", "DO", "PRAGMA"}
_WORD = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_PARAMETER = re.compile(r"\$[0-9]+")
# The servers' own whitespace: any other character (U+00A0 too) is part of a word.
_SPACE = frozenset(" \t\n\r\f\v")
# PostgreSQL ends a `--` comment at \r too; SQLite only at \n.
_POSTGRES_LINE_END = re.compile(r"[\r\n]")
_SQLITE_LINE_END = re.compile(r"\n")


@dataclasses.dataclass(frozen=True)
class _Scan:
  """What the tokenizer found: where the statement ends, and what is wrong (empty: nothing)."""

  end: int
  problem: str = ""


def check_read_query(sql: str, field: str, driver: str, *, backslash_quotes: bool = False,
                     where: str = "") -> int:
  """Refuses SQL that is not exactly one read-only query; returns where it ends.

  A tokenizer that knows the driver's strings, quoted identifiers, comments
  and (PostgreSQL) E'...' strings and $tag$ dollar quoting finds the one
  statement: a `;` may only be followed by whitespace and comments, every
  parenthesis must close inside the query (the builder wraps it in one),
  and it must start with SELECT, WITH, VALUES or TABLE.

  Args:
    sql: The user's SQL.
    field: The config field holding it (`query`, `side_table_sql`), named
      in the error.
    driver: `postgresql` or `sqlite`: how the text is tokenized.
    backslash_quotes: PostgreSQL with `standard_conforming_strings=off`:
      `\\'` escapes a quote in every string.
    where: What the SQL would run on, for the message.

  Returns:
    The offset where the statement ends (its terminating `;`, or the length).

  Raises:
    ConfigError: naming `field`, the offending position and what to do.
  """
  scan = _scan(sql, driver, backslash_quotes)
  if scan.problem:
    raise _refusal(field, where, scan.problem)
  return scan.end


def _scan(sql: str, driver: str, backslash_quotes: bool) -> _Scan:
  """Tokenizes `sql` as the server would, as far as statement boundaries go."""
  postgres = driver == "postgresql"
  index, length, depth = 0, len(sql), 0
  end = None  # offset of the terminating `;`
  first = None  # the first word (or other token) of the statement
  while index < length:
    if sql[index] in _SPACE:
      index += 1
      continue
    if sql.startswith("--", index):
      stop = (_POSTGRES_LINE_END if postgres else _SQLITE_LINE_END).search(sql, index)
      index = stop.end() if stop else length
      continue
    if sql.startswith("/*", index):
      index = _comment_end(sql, index, nested=postgres)
      if index < 0:
        return _Scan(length, "leaves a /* comment open: it never ends with */")
      continue
    if end is not None:
      return _Scan(end, f"holds a second statement after the `;` at character {end + 1}: "
                        f"{_excerpt(sql[index:])}")
    start = index
    kind, index = _token(sql, index, postgres, backslash_quotes)
    if index < 0:
      return _Scan(length, f"leaves a {kind} open: the one starting at character {start + 1} "
                           f"({_excerpt(sql[start:])}) never ends")
    if kind == ";":
      end = start
      continue
    if kind == "(":
      depth += 1
    elif kind == ")":
      depth -= 1
      if depth < 0:
        return _Scan(length, f"closes a parenthesis at character {start + 1} that it never "
                             f"opened: {_excerpt(sql[start:])}")
    if first is None and kind != "(":
      first = sql[start:index].upper() if kind == "word" else sql[start:index]
  if first is None:
    return _Scan(length, "holds no query")
  if depth > 0:
    return _Scan(length, f"leaves {depth} parenthesis(es) open")
  if first not in READ_STATEMENTS:
    verb = "tries to modify the database: it" if first in _DATA_CHANGES else "is not a query: it"
    return _Scan(length, f"{verb} starts with {_excerpt(first)}, not {', '.join(READ_STATEMENTS)}")
  return _Scan(length if end is None else end)


def _token(sql: str, index: int, postgres: bool, backslash_quotes: bool) -> tuple[str, int]:
  """The kind of the token at `index` and where it ends (-1: never closed)."""
  char = sql[index]
  if char == "'":
    return "string literal", _quote_end(sql, index, "'", backslash_quotes)
  if char == '"':
    return "quoted identifier", _quote_end(sql, index, '"', False)
  if not postgres and char in "`[":
    close = "`" if char == "`" else "]"
    stop = sql.find(close, index + 1)
    if char == "`":  # `` doubles a backquote
      while stop >= 0 and sql.startswith("``", stop):
        stop = sql.find("`", stop + 2)
    return "quoted identifier", stop + 1 if stop >= 0 else -1
  if postgres and char == "$":
    tag = _DOLLAR_TAG.match(sql, index)
    if tag:
      stop = sql.find(tag.group(0), tag.end())
      return "dollar-quoted string", stop + len(tag.group(0)) if stop >= 0 else -1
    parameter = _PARAMETER.match(sql, index)
    return "parameter", parameter.end() if parameter else index + 1
  word = _WORD.match(sql, index)
  if word:
    text, after = word.group(0).lower(), word.end()
    if postgres and after < len(sql) and sql[after] == "'" and text in ("e", "b", "x", "n"):
      # E'..' takes backslash escapes; B'..', X'..', N'..' are plain strings.
      escapes = text == "e" or (text == "n" and backslash_quotes)
      return "string literal", _quote_end(sql, after, "'", escapes)
    if postgres and text == "u" and sql.startswith(("&'", '&"'), after):
      quote = sql[after + 1]
      return "string literal" if quote == "'" else "quoted identifier", _quote_end(
          sql, after + 1, quote, False)
    if not postgres and text == "x" and after < len(sql) and sql[after] == "'":
      return "string literal", _quote_end(sql, after, "'", False)
    return "word", after
  number = _NUMBER.match(sql, index)
  if number:
    return "number", number.end()
  return char, index + 1


def _quote_end(sql: str, index: int, quote: str, backslash_escapes: bool) -> int:
  """The offset after the quote closing the one at `index` (doubled quotes and escapes skipped)."""
  position = index + 1
  while position < len(sql):
    char = sql[position]
    if backslash_escapes and char == "\\":
      position += 2
    elif char == quote:
      if sql.startswith(quote, position + 1):
        position += 2
      else:
        return position + 1
    else:
      position += 1
  return -1


def _comment_end(sql: str, index: int, nested: bool) -> int:
  """The offset after the `*/` closing the comment at `index` (-1: never closed)."""
  depth, position = 0, index
  while position < len(sql):
    if sql.startswith("/*", position) and (nested or depth == 0):
      depth += 1
      position += 2
    elif sql.startswith("*/", position):
      depth -= 1
      position += 2
      if depth == 0:
        return position
    else:
      position += 1
  return -1


def _excerpt(text: str, limit: int = 60) -> str:
  text = " ".join(text.split())
  return repr(redact(text if len(text) <= limit else text[:limit] + "..."))


def _refusal(field: str, where: str, problem: str) -> errors.ConfigError:
  """The error for SQL refused before anything was sent."""
  on = f" on {where}" if where else ""
  return errors.ConfigError(
      errors.with_hint(
          f"`{field}` must be exactly one read-only query, but it {problem}. Nothing was "
          f"sent to run{on}",
          _READ_ONLY_HINT,
      )
  )


_READ_ONLY_HINT = (
    "Give one query (SELECT, WITH ... SELECT, VALUES or TABLE) without `;` between "
    "statements: the build runs it as a single statement in a READ ONLY transaction (SQLite: "
    "a file opened read-only), so transaction control (BEGIN, COMMIT, ROLLBACK, END), SET, "
    "RESET, DO, COPY, CALL, ATTACH, PRAGMA and VACUUM are refused. Run any other statement "
    "separately, before the build."
)


@dataclasses.dataclass(frozen=True)
class ResultColumn:
  """One column of a query result: its name and type (None if unsupported)."""

  name: str
  sql_type: sql_types.SqlType | None
  type_name: str


class QueryText:
  """Composes SQL around a user query: placeholders in the driver's style.

  The user's query keeps its own parameters; values the builder adds are
  bound too (never formatted into the SQL), after the user's in the same
  style (positional or named). Identifiers are quoted by the session. The
  user's query is checked to be one read-only query first (ConfigError).
  """

  def __init__(self, session: ReadSession, user_query: str, user_params: Params,
               field: str = "query"):
    self.session = session
    end = session.check_user_query(user_query, field)
    self._user_query = user_query[:end].strip()  # without its `;` and trailing comments
    self._named = isinstance(user_params, Mapping)
    self._user_params = user_params
    self._params: Any = dict(user_params) if self._named else list(user_params or [])

  @property
  def query(self) -> str:
    """Stands for the user's query inside a template given to `build`."""
    return _QUERY_MARK

  def bind(self, value: Any) -> str:
    """A placeholder bound to `value`."""
    postgres = self.session.driver == "postgresql"
    if isinstance(value, (bytes, memoryview)) and postgres:
      value = bytes(value).decode("utf-8")  # text keys arrive as bytes
    if self._named:
      name = f"tfds_p{len(self._params)}"
      self._params[name] = value
      return f"%({name})s" if postgres else f":{name}"
    self._params.append(value)
    return "%s" if postgres else "?"

  def ident(self, name: str) -> str:
    return self.session.quote(name)

  def build(self, template: str) -> tuple[str, Params]:
    """`template` with the user query in place, and all parameters."""
    params = self._params or None
    user_query = self._user_query
    if self.session.driver == "postgresql" and params is not None and not self._user_params:
      # psycopg2 reads % as a placeholder once parameters are passed.
      user_query = user_query.replace("%", "%%")
    # Newlines: a trailing `-- comment` in the user query must not swallow SQL.
    return template.replace(_QUERY_MARK, f"\n{user_query}\n"), params


class ReadSession:
  """One connection in one `REPEATABLE READ`, `READ ONLY` transaction.

  Attributes:
    spec: Where it reads.
    query_field: The config field holding the user's SQL, named in errors;
      empty: `query` for SQL composed around it by `QueryText` (the database
      builder), `side_table_sql` for SQL sent as is (the augmented builder).
  """

  driver: str

  def __init__(self, spec: ConnectionSpec, query_field: str = ""):
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

  def query_text(self, user_query: str, user_params: Params = None,
                 field: str = "query") -> QueryText:
    return QueryText(self, user_query, user_params, self.query_field or field)

  def check_user_query(self, user_query: str, field: str) -> int:
    """`check_read_query` for this session's driver; returns where the statement ends.

    Raises:
      ConfigError: naming `field`, unless `user_query` is one read-only query.
    """
    backslash_quotes = self._backslash_quotes()
    key = (user_query, backslash_quotes)
    self._fields.setdefault(user_query, field)
    if key not in self._checked:
      self._checked[key] = check_read_query(
          user_query, field, self.driver, backslash_quotes=backslash_quotes,
          where=self.spec.describe(),
      )
    return self._checked[key]

  def _check_statement(self, sql: str, user_query: str) -> None:
    """Checks the user's part of a statement about to be sent."""
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

  def describe(self, sql: str, params: Params, user_query: str) -> list[ResultColumn]:
    """The result columns of `sql` (which must be cheap: add LIMIT 0)."""
    raise NotImplementedError

  def fetch_all(self, sql: str, params: Params, user_query: str = "") -> list[tuple]:
    """All rows of a small query (statistics, bounds)."""
    raise NotImplementedError

  def rows(
      self, sql: str, params: Params, *, fetch_size: int = DEFAULT_FETCH_SIZE,
      user_query: str = "", label: str = "the query",
  ) -> Iterator[tuple]:
    """Streams the rows of `sql`, `fetch_size` at a time."""
    raise NotImplementedError

  def export_snapshot(self) -> str | None:
    """An id other sessions pass to `open_session` to see this snapshot."""
    raise NotImplementedError

  def facts(self) -> dict[str, Any]:
    """What identifies the data read: server, snapshot, file (for provenance)."""
    raise NotImplementedError


def open_session(spec: ConnectionSpec, *, snapshot: str | None = None,
                 query_field: str = "") -> ReadSession:
  """Connects and starts the read-only transaction.

  Args:
    spec: Where to read from.
    snapshot: A `ReadSession.export_snapshot()` id: this session then sees
      exactly what the exporting session sees.
    query_field: The config field holding the user's SQL, named in errors
      (see `ReadSession.query_field`).

  Raises:
    ConfigError: for an unknown driver or an unparsable DSN.
    SourceError: if the database cannot be reached or opened.
  """
  if spec.driver == "postgresql":
    return _PostgresSession(spec, snapshot, query_field)
  if spec.driver == "sqlite":
    return _SqliteSession(spec, query_field)
  raise errors.ConfigError(f"driver={spec.driver!r}; use one of {DRIVERS}.")


def stream_query(
    spec: ConnectionSpec, sql: str, params: Params = None, *,
    fetch_size: int = DEFAULT_FETCH_SIZE, snapshot: str | None = None,
) -> Iterator[tuple]:
  """Rows of one query, streamed in a fresh read-only session.

  Args:
    spec: Where to read from.
    sql: The query (PostgreSQL: `%s` / `%(name)s` placeholders; SQLite: `?`
      / `:name`).
    params: Its bound parameters.
    fetch_size: Rows per round trip of the server-side cursor.
    snapshot: Read in this exported snapshot (PostgreSQL).

  Yields:
    Result rows as tuples.
  """
  with open_session(spec, snapshot=snapshot, query_field="sql") as session:
    yield from session.rows(sql, params, fetch_size=fetch_size, user_query=sql)


def writes_data(user_query: str, driver: str = "postgresql") -> bool:
  """Whether a query holds a clause that modifies data or schema.

  That is a data-changing keyword (INSERT, DELETE, COPY, ATTACH, ...) that
  starts the query or follows `;`, `(` or `)`, outside strings and comments:
  `WITH d AS (SELECT 1) DELETE FROM t`, not `SELECT replace(v, 'a', 'b')`.
  """
  postgres, index, previous = driver == "postgresql", 0, ";"
  while index < len(user_query):
    if user_query[index] in _SPACE:
      index += 1
      continue
    if user_query.startswith(("--", "/*"), index):
      end = (_comment_end(user_query, index, postgres) if user_query[index] == "/" else
             user_query.find("\n", index) + 1)
      index = end if end > 0 else len(user_query)
      continue
    start = index
    kind, index = _token(user_query, index, postgres, False)
    if index < 0:
      return False
    word = user_query[start:index].upper() if kind == "word" else ""
    if word in _WRITING_WORDS and previous in (";", "(", ")"):
      return True
    previous = kind
  return False


def _write_error(spec: ConnectionSpec, field: str, detail: str) -> errors.ConfigError:
  """The error for a query the server (or SQLite's guard) refused as a write."""
  refused_by = (
      "the build reads a file opened read-only, under an authorizer that allows reading only"
      if spec.driver == "sqlite" else "the build reads in a READ ONLY transaction"
  )
  return errors.ConfigError(
      errors.with_hint(
          f"`{field}` tries to modify the database ({spec.describe()}: {detail}); it was "
          f"refused and nothing was changed: {refused_by}",
          _READ_ONLY_HINT,
      )
  )


def _timeout_error(
    spec: ConnectionSpec, action: str, detail: str, lock: bool) -> errors.SourceError:
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
          f"{action} ({spec.describe()}: {detail}); nothing was written as a dataset",
          ("Rerun when the transaction holding the lock has ended" if lock else
           "Make the query faster (an index, a narrower WHERE)")
          + f", or raise {setting} in the connection settings (e.g. '10min').",
      )
  )


def _parameter_error(spec: ConnectionSpec, error: Exception, style: str) -> errors.ConfigError:
  return errors.ConfigError(
      errors.with_hint(
          f"The query's parameters do not match its placeholders ({spec.describe()}: "
          f"{' '.join(str(error).split())})",
          f"Give `params` as a list for positional or a dict for named placeholders "
          f"({style}).",
      )
  )


# ------------------------------------------------------------- PostgreSQL --


def _postgres():
  import psycopg2  # pylint: disable=g-import-not-at-top
  import psycopg2.extensions  # pylint: disable=g-import-not-at-top
  import psycopg2.extras  # pylint: disable=g-import-not-at-top
  return psycopg2


_PGRES_COMMAND_OK = 1
_PG_DIAG_SQLSTATE = ord("C")


@functools.cache
def _libpq() -> ctypes.CDLL | None:
  """The libpq psycopg2 runs on, for PQprepare; None if it cannot be told apart.

  psycopg2 sends SQL with the simple query protocol, which runs every
  statement of a string. The extended protocol's Parse message (PQprepare)
  takes exactly one: the server itself refuses a second one. Only the very
  library psycopg2 loaded may be handed its connection, so it is taken from
  this process's memory map and its version must match.
  """
  psycopg2 = _postgres()
  try:
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
      mapped = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
  except OSError:
    return None
  found = sorted(path for path in mapped if os.path.basename(path).startswith("libpq."))
  found += sorted(path for path in mapped if os.path.basename(path).startswith("libpq-"))
  if len(found) != 1:
    return None
  try:
    library = ctypes.CDLL(found[0])
  except OSError:
    return None
  if library.PQlibVersion() != psycopg2.extensions.libpq_version():
    return None
  library.PQprepare.restype = ctypes.c_void_p
  library.PQprepare.argtypes = [
      ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
  library.PQresultStatus.argtypes = [ctypes.c_void_p]
  library.PQresultErrorField.restype = ctypes.c_char_p
  library.PQresultErrorField.argtypes = [ctypes.c_void_p, ctypes.c_int]
  library.PQresultErrorMessage.restype = ctypes.c_char_p
  library.PQresultErrorMessage.argtypes = [ctypes.c_void_p]
  library.PQclear.argtypes = [ctypes.c_void_p]
  return library


@functools.cache
def _warn_no_libpq() -> None:
  logging.warning(
      "psycopg2's libpq could not be identified in this process: PostgreSQL statements are "
      "not parsed with the extended protocol before they run. The SQL tokenizer still "
      "refuses a second statement, and sessions still default to READ ONLY.")


class _PostgresSession(ReadSession):
  """psycopg2 connection with our type casters and a read-only snapshot."""

  driver = "postgresql"

  def __init__(self, spec: ConnectionSpec, snapshot: str | None, query_field: str = ""):
    super().__init__(spec, query_field)
    psycopg2 = _postgres()
    self._dsn = spec.resolved_dsn()
    self._cursor_ids = itertools.count()
    self._type_cache: dict[int, tuple[sql_types.SqlType | None, str]] = {}
    self._warned_tables: set[int] = set()
    self.superuser = False
    self.connection = None
    problem = None
    try:
      self.connection = psycopg2.connect(self._dsn, **self._connect_options(psycopg2))
    except psycopg2.ProgrammingError as error:  # libpq could not parse the DSN
      problem = errors.ConfigError(
          errors.with_hint(
              f"Cannot parse the PostgreSQL DSN ({_redact_quoted(str(error))})",
              "Give key=value pairs separated by spaces (host=... dbname=... "
              "user=...) or a postgresql:// URI.",
          )
      )
    except psycopg2.Error as error:
      problem = self._error(error, "connecting")
    if problem:
      raise problem
    try:
      self._start(snapshot)
    except psycopg2.Error as error:
      problem = self._error(error, "starting the read-only transaction")
    if problem:
      self.close()
      raise problem

  def _connect_options(self, psycopg2) -> dict[str, Any]:
    given = psycopg2.extensions.parse_dsn(self._dsn) if self._dsn else {}
    options: dict[str, Any] = {"client_encoding": "UTF8"}
    if "application_name" not in given and "PGAPPNAME" not in os.environ:
      options["application_name"] = self.spec.application_name
    if "connect_timeout" not in given and "PGCONNECT_TIMEOUT" not in os.environ:
      options["connect_timeout"] = self.spec.connect_timeout
    # Server settings at connection start: every transaction of the session
    # defaults to READ ONLY, so even a COMMIT that slipped through would
    # leave the next statement read-only (and RESET returns to these values).
    settings = ["-c default_transaction_read_only=on"]
    for setting in ("statement_timeout", "lock_timeout"):
      milliseconds = timeout_ms(getattr(self.spec, setting), setting)
      if milliseconds is not None:
        settings.append(f"-c {setting}={milliseconds}")
    # Appended to the DSN's (or PGOPTIONS') own options: later ones win.
    base = given["options"] if "options" in given else os.environ.get("PGOPTIONS", "")
    options["options"] = " ".join(filter(None, [base.strip(), *settings]))
    return options

  def _start(self, snapshot: str | None) -> None:
    psycopg2 = _postgres()
    connection = self.connection
    _register_casters(connection)
    connection.set_session(
        isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
        readonly=True, autocommit=False,
    )
    with connection.cursor() as cursor:
      if snapshot:
        # Must be the transaction's first statement.
        cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
      # Arrays of enums, uuids and citext: psycopg2 would return their text.
      cursor.execute(
          "SELECT array_agg(a.oid) FROM pg_catalog.pg_type a JOIN pg_catalog.pg_type e "
          "ON e.typarray = a.oid WHERE e.typtype = 'e' OR e.typname IN ('uuid', 'citext')"
      )
      text_arrays = cursor.fetchone()[0]
      if text_arrays:
        ext = psycopg2.extensions
        ext.register_type(
            ext.new_array_type(tuple(text_arrays), "TFDS_TEXT_LIKE_ARRAY", ext.BYTES), connection
        )
      # Values come back in one form whatever the server's settings.
      cursor.execute(
          "SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO', true), "
          "set_config('extra_float_digits', '3', true), set_config('IntervalStyle', "
          "'iso_8601', true)"
      )
      cursor.execute(
          "SELECT r.rolname, r.rolsuper, EXISTS (SELECT 1 FROM pg_catalog.pg_roles w WHERE "
          "w.rolname = 'pg_write_all_data' AND pg_catalog.pg_has_role(r.oid, w.oid, 'MEMBER')) "
          "FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
      )
      role = cursor.fetchone()
    if role:
      self._warn_about_role(_text(role[0]), bool(role[1]), bool(role[2]))

  def _warn_about_role(self, user: str, superuser: bool, writes_all: bool) -> None:
    """Warns when the role may write: READ ONLY stops SQL writes, not every side effect."""
    self.superuser = superuser
    if superuser or writes_all:
      power = "a superuser" if superuser else "a member of pg_write_all_data"
      logging.warning(
          "%s: the build connects as role %r, %s. Its READ ONLY transaction refuses SQL "
          "writes, but functions a query calls can still act (pg_terminate_backend, "
          "dblink, pg_advisory_lock, ...). Connect as a role with SELECT privileges only "
          "(docs/database.md, 'Safety').", self.spec.describe(), user, power,
      )

  def _warn_about_tables(self, table_oids: set[int]) -> None:
    """Warns once per table the role could write (superusers were warned already)."""
    unseen = sorted(table_oids - self._warned_tables)
    if self.superuser or not unseen:
      return
    self._warned_tables.update(unseen)
    writable = [
        _text(name) for (name,) in self.fetch_all(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = "
            "ANY(%s::oid[]) AND pg_catalog.has_table_privilege(c.oid, "
            "'INSERT, UPDATE, DELETE, TRUNCATE') ORDER BY 1", [unseen])
    ]
    if writable:
      user = self.connection.get_dsn_parameters().get("user", "?")
      logging.warning(
          "%s: role %r may INSERT, UPDATE, DELETE or TRUNCATE %s, which the query reads. "
          "The READ ONLY transaction stops SQL writes; a role with SELECT privileges only "
          "also stops what functions could do (docs/database.md, 'Safety').",
          self.spec.describe(), user, ", ".join(writable),
      )

  def _backslash_quotes(self) -> bool:
    # With standard_conforming_strings off, '\'' is a quote inside a string.
    if self.connection is None:
      return False
    return self.connection.get_parameter_status("standard_conforming_strings") == "off"

  def close(self) -> None:
    if self.connection is not None and not self.connection.closed:
      try:
        self.connection.rollback()  # read-only: nothing to keep
      except _postgres().Error:
        pass
      self.connection.close()

  def quote(self, identifier: str) -> str:
    from psycopg2 import sql  # pylint: disable=g-import-not-at-top
    return sql.Identifier(identifier).as_string(self.connection)

  def _error(
      self, error: Exception, action: str, user_query: str = "", rows_read: int | None = None,
  ) -> errors.TfdsBuildersError:
    """A redacted SourceError explaining a psycopg2 error (ConfigError for a write)."""
    text = redact(" ".join(str(error).split()), self._dsn)
    code = getattr(error, "pgcode", None)
    where = self.spec.describe()
    if code == "25006" or "data-modifying statement" in text or (
        code in ("42601", "0A000") and writes_data(user_query, self.driver)
    ):
      return _write_error(self.spec, self._field(user_query), text)
    if code in ("57014", "55P03") and "timeout" in text:
      return _timeout_error(self.spec, action, text, lock="lock timeout" in text)
    psycopg2 = _postgres()
    connection_lost = (
        code in ("57P01", "57P02", "57P03")  # the server terminated this backend
        or isinstance(error, psycopg2.InterfaceError)
        or (isinstance(error, psycopg2.OperationalError) and code is None)
        or bool(self.connection is not None and self.connection.closed)
    )
    if connection_lost and action != "connecting":
      read = f" after {rows_read} rows" if rows_read is not None else ""
      return errors.SourceError(
          errors.with_hint(
              f"Lost the connection to {where} while {action}{read} ({text})",
              "Nothing was written as a dataset; rerun the build when the server is reachable.",
          )
      )
    if action == "connecting":
      hint = (
          "Check the password (in the DSN, PGPASSWORD or ~/.pgpass) and the user."
          if "password" in text or "authentication" in text
          else "Check host, port and dbname, and that the server accepts connections."
      )
      return errors.SourceError(errors.with_hint(f"Cannot connect to {where} ({text})", hint))
    hint = {
        "42601": "Fix the SQL syntax of the query.",
        "42P01": "Check the table name (and schema, e.g. myschema.mytable).",
        "42703": "Check the column names of the query.",
        "42501": "Grant the user SELECT on the tables, or connect as another user.",
    }.get(code or "", "Check the query; try it in psql first.")
    return errors.SourceError(
        errors.with_hint(f"PostgreSQL error while {action} ({where}): {text}", hint)
    )

  def _execute(self, cursor, sql: str, params: Params, action: str, user_query: str) -> None:
    """Sends one statement: its user part checked, the whole parsed by the server as one."""
    psycopg2 = _postgres()
    self._check_statement(sql, user_query)
    problem = None
    try:
      # The exact bytes psycopg2 would send: checked, then sent as they are.
      with self.connection.cursor() as formatter:
        statement = formatter.mogrify(sql, params)
    except psycopg2.Error as error:
      problem = self._error(error, action, user_query)
    except (TypeError, ValueError, IndexError, KeyError) as error:
      problem = _parameter_error(self.spec, error, "%s or %(name)s; a literal % is written %%")
    if problem:
      raise problem
    try:
      if self._parses_as_many(statement):
        problem = _refusal(
            self._field(user_query), self.spec.describe(),
            "is more than one statement for the PostgreSQL parser (it refused the text as "
            "one prepared statement: 'cannot insert multiple commands')",
        )
      else:
        cursor.execute(statement)
    except psycopg2.Error as error:
      problem = self._error(error, action, user_query)
    if problem:
      raise problem

  def _parses_as_many(self, statement: bytes) -> bool:
    """Whether the server's own parser finds more than one statement in `statement`.

    Sent as a Parse message of the extended protocol (nothing runs), inside a
    savepoint: any other parse error is left for the real run to report.
    """
    libpq = _libpq()
    if libpq is None:
      _warn_no_libpq()
      return False
    with self.connection.cursor() as cursor:
      cursor.execute("SAVEPOINT tfds_parse")
    result = libpq.PQprepare(self.connection.pgconn_ptr, b"", statement, 0, None)
    try:
      parsed = result is not None and libpq.PQresultStatus(result) == _PGRES_COMMAND_OK
      code = libpq.PQresultErrorField(result, _PG_DIAG_SQLSTATE) if result else None
      message = libpq.PQresultErrorMessage(result) if result else b""
    finally:
      if result:
        libpq.PQclear(result)
    with self.connection.cursor() as cursor:
      cursor.execute(
          "RELEASE SAVEPOINT tfds_parse" if parsed else "ROLLBACK TO SAVEPOINT tfds_parse")
    return code == b"42601" and b"multiple commands" in (message or b"")

  def describe(self, sql: str, params: Params, user_query: str) -> list[ResultColumn]:
    with self.connection.cursor() as cursor:
      self._execute(cursor, sql, params, "describing the query", user_query)
      description = [
          (column.name, column.type_code, column.table_oid) for column in cursor.description or ()
      ]
    self._load_types([oid for _, oid, _ in description])
    self._warn_about_tables({table for _, _, table in description if table})
    return [ResultColumn(name, *self._type_cache[oid]) for name, oid, _ in description]

  def _load_types(self, oids: list[int]) -> None:
    missing = sorted(set(oids) - set(self._type_cache))
    if not missing:
      return
    with self.connection.cursor() as cursor:
      self._execute(
          cursor,
          "SELECT t.oid, t.typname, t.typtype = 'e', e.typname, e.typtype = 'e', "
          "format_type(t.oid, NULL) FROM pg_catalog.pg_type t "
          "LEFT JOIN pg_catalog.pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem "
          "WHERE t.oid = ANY(%s::oid[])",
          [missing], "looking up column types", "",
      )
      for oid, name, is_enum, element, element_is_enum, formatted in cursor.fetchall():
        self._type_cache[oid] = (
            sql_types.postgres_type(
                _text(name), is_enum=is_enum, element=_text(element) if element else None,
                element_is_enum=bool(element_is_enum),
            ),
            _text(formatted),
        )

  def fetch_all(self, sql: str, params: Params, user_query: str = "") -> list[tuple]:
    with self.connection.cursor() as cursor:
      self._execute(cursor, sql, params, "computing statistics", user_query)
      return cursor.fetchall()

  def rows(
      self, sql: str, params: Params, *, fetch_size: int = DEFAULT_FETCH_SIZE,
      user_query: str = "", label: str = "the query",
  ) -> Iterator[tuple]:
    psycopg2 = _postgres()
    # A named cursor lives on the server: only `fetch_size` rows are ever
    # held here, whatever the size of the result.
    cursor = self.connection.cursor(name=f"tfds_cursor_{next(self._cursor_ids)}")
    cursor.itersize = fetch_size
    read = 0
    try:
      self._execute(cursor, sql, params, f"reading {label}", user_query)
      while True:
        problem = None
        try:
          batch = cursor.fetchmany(fetch_size)
        except psycopg2.Error as error:
          problem = self._error(error, f"reading {label}", user_query, rows_read=read)
        if problem:
          raise problem
        if not batch:
          return
        read += len(batch)
        yield from batch
    finally:
      if not self.connection.closed:
        try:
          cursor.close()
        except psycopg2.Error:
          pass

  def export_snapshot(self) -> str | None:
    return _text(self.fetch_all("SELECT pg_export_snapshot()", None)[0][0])

  def facts(self) -> dict[str, Any]:
    version = self.connection.server_version
    snapshot_function = "pg_current_snapshot()" if version >= 130000 else "txid_current_snapshot()"
    server, snapshot, started = self.fetch_all(
        f"SELECT current_setting('server_version'), {snapshot_function}::text, "
        "to_char(transaction_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')", None
    )[0]
    parameters = self.connection.get_dsn_parameters()  # never holds the password
    return {
        "driver": "postgresql",
        "connection": self.spec.describe(),
        "host": parameters.get("host"),
        "port": parameters.get("port"),
        "dbname": parameters.get("dbname"),
        "user": parameters.get("user"),
        "server_version": _text(server),
        "snapshot": _text(snapshot),
        "transaction_started": _text(started),
        "isolation": "REPEATABLE READ, READ ONLY",
    }


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, memoryview)) else str(value)


def _redact_quoted(text: str) -> str:
  # A DSN that does not parse may echo fragments of itself, the password too.
  return re.sub(r'"[^"]*"', '"***"', " ".join(text.split()))


def _register_casters(connection) -> None:
  """Text as raw UTF-8 bytes, JSON as its text, numeric as exact text, infinity kept."""
  psycopg2 = _postgres()
  ext = psycopg2.extensions
  ext.register_type(ext.BYTES, connection)
  ext.register_type(ext.BYTESARRAY, connection)
  psycopg2.extras.register_default_json(connection, loads=lambda text: text)
  psycopg2.extras.register_default_jsonb(connection, loads=lambda text: text)
  numeric = ext.new_type((1700,), "TFDS_NUMERIC_TEXT", lambda value, cursor: value)
  ext.register_type(numeric, connection)
  ext.register_type(ext.new_array_type((1231,), "TFDS_NUMERIC_TEXT_ARRAY", numeric), connection)
  for scalar, array in (
      (ext.PYDATE, ext.PYDATEARRAY), (ext.PYDATETIME, ext.PYDATETIMEARRAY),
      (ext.PYDATETIMETZ, ext.PYDATETIMETZARRAY),
  ):
    keeping = ext.new_type(scalar.values, f"TFDS_{scalar.name}", _keep_infinity(scalar))
    ext.register_type(keeping, connection)
    ext.register_type(ext.new_array_type(array.values, f"TFDS_{array.name}", keeping), connection)


def _keep_infinity(caster):
  # psycopg2 turns 'infinity' into date.max: a real-looking, wrong value.
  def cast(value: str | None, cursor):
    if value in ("infinity", "-infinity"):
      return value
    return caster(value, cursor)
  return cast


# ------------------------------------------------------------------ SQLite --

_SQLITE_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name for name in (
        "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER "
        "CREATE_TEMP_VIEW CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE "
        "DROP_TEMP_INDEX DROP_TEMP_TABLE DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER "
        "DROP_VIEW INSERT PRAGMA READ SELECT TRANSACTION UPDATE ATTACH DETACH ALTER_TABLE "
        "REINDEX ANALYZE CREATE_VTABLE DROP_VTABLE FUNCTION SAVEPOINT RECURSIVE"
    ).split()
}
_SQLITE_READS = frozenset({
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE,
})
# Schema pragmas that only report (also as pragma_table_info(...) in a SELECT).
_SQLITE_REPORTING_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
})
# Functions a read must not call: loading an extension runs a shared library's code.
_SQLITE_REFUSED_FUNCTIONS = frozenset({"load_extension"})
_SQLITE_TEMP_VIEW = frozenset({
    sqlite3.SQLITE_CREATE_TEMP_VIEW, sqlite3.SQLITE_DROP_TEMP_VIEW, sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE,
})


class _SqliteGuard:
  """The connection's authorizer: statements may read and call functions, nothing else.

  SQLite asks it about every action of a statement while preparing it, so
  ATTACH (VACUUM INTO attaches too), PRAGMA, BEGIN/COMMIT/SAVEPOINT and
  every write are refused before anything runs, however the SQL is spelled.
  `describing` opens the one door the session's own type lookup needs: a
  temporary view, created, read and dropped in the `temp` schema.
  """

  def __init__(self):
    self.describing = False
    self.refused = ""

  def __call__(self, action: int, first: str | None, second: str | None,
               schema: str | None, source: str | None) -> int:
    del source  # the trigger or view an action comes from: no matter
    if action == sqlite3.SQLITE_FUNCTION and (second or "").lower() in _SQLITE_REFUSED_FUNCTIONS:
      self.refused = f"function {second}"
      return sqlite3.SQLITE_DENY
    if action in _SQLITE_READS:
      return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and first in _SQLITE_REPORTING_PRAGMAS:
      return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and first == "sqlite_master" and schema == "main":
      # Asked while SQLite registers an eponymous virtual table (json_each,
      # pragma_table_info) in memory; the file stays read-only (mode=ro).
      return sqlite3.SQLITE_OK
    if self.describing and (
        (schema == "temp" and action in _SQLITE_TEMP_VIEW)
        or (action == sqlite3.SQLITE_PRAGMA and first == "query_only")
    ):
      return sqlite3.SQLITE_OK
    self.refused = " ".join(
        filter(None, [_SQLITE_ACTIONS.get(action, str(action)), first, second]))
    return sqlite3.SQLITE_DENY


class _SqliteSession(ReadSession):
  """A read-only SQLite connection in one read transaction, guarded by an authorizer."""

  driver = "sqlite"

  def __init__(self, spec: ConnectionSpec, query_field: str = ""):
    super().__init__(spec, query_field)
    path = epath.Path(spec.sqlite_path)
    if not path.exists():
      raise errors.SourceError(
          f"SQLite database {spec.sqlite_path} not found. Check `sqlite_path` "
          "(relative paths are taken from `data_root`)."
      )
    self.path = path
    # WAL mode is in the file's header; the PRAGMA reports 'delete' under immutable=1.
    self.journal_mode = "wal" if _sqlite_header_says_wal(path, spec) else "delete"
    self.uri = _sqlite_read_only_uri(path, spec, wal=self.journal_mode == "wal")
    self._file_state = _sqlite_file_state(path)
    self.guard = _SqliteGuard()
    self._statement_ms = timeout_ms(spec.statement_timeout, "statement_timeout")
    lock_ms = timeout_ms(spec.lock_timeout, "lock_timeout")
    self._deadline = math.inf
    problem = None
    try:
      # mode=ro: SQLite itself refuses every write, so the source cannot change.
      # No statement cache: every statement is prepared, so authorized, anew.
      self.connection = sqlite3.connect(
          self.uri, uri=True, isolation_level=None,
          check_same_thread=False, cached_statements=0,
          timeout=5.0 if lock_ms is None else lock_ms / 1000,
      )
      self.connection.create_aggregate("stddev_pop", 1, _StddevPop)
      self.connection.create_function("tfds_bucket", 2, split_bucket, deterministic=True)
      # The read transaction holds a SHARED lock from its first read on, so
      # every query of this session sees the same committed data (immutable=1
      # takes no lock: _check_unchanged catches a writer instead).
      self.connection.execute("BEGIN")
      if self.journal_mode != "wal":
        self.journal_mode = self.connection.execute("PRAGMA journal_mode").fetchone()[0]
      self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
      # Even the temp schema, which mode=ro leaves writable, is read-only.
      self.connection.execute("PRAGMA query_only=ON")
      self.connection.set_authorizer(self.guard)
      if self._statement_ms is not None:
        self.connection.set_progress_handler(self._past_deadline, 1000)
    except sqlite3.Error as error:
      problem = self._error(error, "opening the database")
    if problem:
      raise problem
    self._view_ids = itertools.count()

  def _past_deadline(self) -> bool:
    return time.monotonic() > self._deadline  # True interrupts the statement

  def _start_clock(self) -> None:
    if self._statement_ms is not None:
      self._deadline = time.monotonic() + self._statement_ms / 1000

  def close(self) -> None:
    self._deadline = math.inf
    try:
      self.connection.set_authorizer(None)  # the guard refuses ROLLBACK too
      self.connection.execute("ROLLBACK")
    except sqlite3.Error:
      pass
    self.connection.close()

  def quote(self, identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'

  def _error(self, error: Exception, action: str, user_query: str = "") -> errors.TfdsBuildersError:
    text = " ".join(str(error).split())
    field = self._field(user_query)
    refused, self.guard.refused = self.guard.refused, ""
    if "bindings" in text or "binding parameter" in text:
      return _parameter_error(self.spec, error, "? or :name")
    if "one statement at a time" in text:
      return _refusal(field, self.spec.describe(),
                      "is more than one statement for SQLite's parser (sqlite3: "
                      f"{text.rstrip('.')})")
    if refused.startswith("function ") and "not authorized" in text:
      detail = text if refused.split()[-1] in text else f"{text}: {refused}"
      return errors.ConfigError(errors.with_hint(
          f"`{field}` calls a function the build refuses ({self.spec.describe()}: {detail}): "
          "loading an extension would run a library's code. Nothing was run",
          "Remove the call: a build reads with SQLite's built-in functions only"))
    if refused and "not authorized" in text:
      return _write_error(self.spec, field, f"{text}: {refused}")
    if "readonly database" in text or (
        "syntax error" in text and writes_data(user_query, self.driver)):
      return _write_error(self.spec, field, text)
    if text == "interrupted" and self._statement_ms is not None:
      return _timeout_error(self.spec, action, text, lock=False)
    if "database is locked" in text:
      return _timeout_error(self.spec, action, text, lock=True)
    return errors.SourceError(
        errors.with_hint(
            f"SQLite error while {action} ({self.spec.describe()}): {text}",
            "Check the query; try it in the sqlite3 shell first.",
        )
    )

  def _execute(self, sql: str, params: Params, action: str, user_query: str) -> sqlite3.Cursor:
    self._check_statement(sql, user_query)
    problem = None
    try:
      self._start_clock()
      return self.connection.execute(sql, params or ())
    except sqlite3.Error as error:
      problem = self._error(error, action, user_query)
    raise problem

  def describe(self, sql: str, params: Params, user_query: str) -> list[ResultColumn]:
    cursor = self._execute(sql, params, "describing the query", user_query)
    names = [column[0] for column in cursor.description or ()]
    cursor.close()
    declared = self._declared_types(_sqlite_without_parameters(user_query))
    types = {
        index: sql_types.sqlite_declared_type(declared.get(index, "")) for index in range(len(names))
    }
    # Newer SQLite versions report a view column without a declared type as
    # BLOB: such a column is typed by its values unless they are blobs.
    maybe_untyped = [index for index in types if declared.get(index, "").strip().upper() == "BLOB"]
    undeclared = [index for index, found in types.items() if found is None]
    if undeclared or maybe_untyped:
      classes = self._storage_classes(sql, params, user_query, names, undeclared + maybe_untyped)
      for index in undeclared:
        types[index] = sql_types.sqlite_storage_type(names[index], classes[index])
      for index in maybe_untyped:
        if not classes[index] <= {"blob", "null"}:
          types[index] = sql_types.sqlite_storage_type(names[index], classes[index])
    return [
        ResultColumn(name, types[index], types[index].source) for index, name in enumerate(names)
    ]

  @contextlib.contextmanager
  def _describing(self) -> Iterator[None]:
    """Lets the session create, read and drop one temporary view."""
    self.guard.describing = True
    self._start_clock()  # a fresh statement_timeout for the lookup
    try:
      self.connection.execute("PRAGMA query_only=OFF")
      yield
    finally:
      try:
        self.connection.execute("PRAGMA query_only=ON")
      finally:
        self.guard.describing = False

  def _declared_types(self, user_query: str) -> dict[int, str]:
    """Declared types via a temporary view (views cannot hold parameters)."""
    view = f"tfds_describe_{next(self._view_ids)}"
    body = user_query[:_scan(user_query, "sqlite", False).end].strip()
    sql = f"CREATE TEMP VIEW {view} AS {body}"
    try:
      with self._describing():
        self.connection.execute(sql)
        rows = self.connection.execute(f"PRAGMA temp.table_info({view})").fetchall()
        self.connection.execute(f"DROP VIEW temp.{view}")
    except sqlite3.Error:
      self.guard.refused = ""
      return {}  # the storage classes below still type every column
    return {index: declared or "" for index, _, declared, *_ in rows}

  def _storage_classes(
      self, sql: str, params: Params, user_query: str, names: list[str], indexes: list[int],
  ) -> dict[int, set[str]]:
    # The describe query has LIMIT 0; scan the whole result for its classes.
    inner = re.sub(r"\s+LIMIT 0\s*$", "", sql)
    inner = inner[:_scan(inner, "sqlite", False).end]  # a query sent as is may end in `;`
    selects = ", ".join(
        f"group_concat(DISTINCT typeof({self.quote(names[index])}))" for index in indexes
    )
    # Newlines: a trailing `-- comment` must not swallow the closing parenthesis.
    cursor = self._execute(
        f"SELECT {selects} FROM (\n{inner}\n) AS tfds_types", params,
        "inferring column types", user_query,
    )
    found = cursor.fetchone()
    return {index: set((found[position] or "").split(",")) - {""}
            for position, index in enumerate(indexes)}

  def fetch_all(self, sql: str, params: Params, user_query: str = "") -> list[tuple]:
    return self._execute(sql, params, "computing statistics", user_query).fetchall()

  def rows(
      self, sql: str, params: Params, *, fetch_size: int = DEFAULT_FETCH_SIZE,
      user_query: str = "", label: str = "the query",
  ) -> Iterator[tuple]:
    cursor = self._execute(sql, params, f"reading {label}", user_query)
    try:
      while True:
        problem = None
        try:
          self._start_clock()  # each batch is timed, as each FETCH is on PostgreSQL
          batch = cursor.fetchmany(fetch_size)
        except sqlite3.Error as error:
          problem = self._error(error, f"reading {label}", user_query)
        if problem:
          raise problem
        if not batch:
          self._check_unchanged(label)
          return
        yield from batch
    finally:
      try:
        cursor.close()
      except sqlite3.Error:
        pass  # the session closed first (a failed build): nothing to release

  def _check_unchanged(self, label: str) -> None:
    """Fails the read if the file changed under it: immutable=1 (WAL mode) takes no lock."""
    if self.journal_mode == "wal" and _sqlite_file_state(self.path) != self._file_state:
      raise errors.SourceError(errors.with_hint(
          f"{self.spec.describe()} changed while the build was reading {label}: the file is in "
          "WAL mode and was read without locks (opened immutable, so that no -wal or -shm file "
          "is created beside it), so what was read may mix two versions",
          "Build again when no program writes the database, or from a copy "
          f"(sqlite3 {self.path} \".backup copy.sqlite\")"))

  def export_snapshot(self) -> str | None:
    if self.journal_mode.lower() == "wal":
      raise errors.ConfigError(
          f"{self.spec.describe()} is in WAL mode: parallel readers could see "
          "different commits. Build without Beam, or switch the file to rollback "
          "journaling (PRAGMA journal_mode=DELETE) for the build."
      )
    # Rollback journal: this session's SHARED lock keeps every writer from
    # committing until it ends, so all readers see the same data.
    return None

  def facts(self) -> dict[str, Any]:
    status = self.path.stat()
    return {
        "driver": "sqlite",
        "connection": self.spec.describe(),
        "path": str(self.path),
        "size_bytes": status.length,
        "modified": status.mtime,
        "sqlite_version": sqlite3.sqlite_version,
        "journal_mode": self.journal_mode,
        "isolation": (
            "one read transaction, file opened with mode=ro&immutable=1 (WAL mode, no -wal/-shm "
            "beside it: no lock, no side file; a change during the build fails it)"
            if self.journal_mode == "wal"
            else "one read transaction (SHARED lock), file opened with mode=ro"
        ),
    }


# Bytes 18 and 19 of the 100-byte SQLite header: file format write and read
# versions, 1 (rollback journal) or 2 (WAL).
_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_WAL_VERSION = 2


def _sqlite_header_says_wal(path: epath.Path, spec: ConnectionSpec) -> bool:
  hint = "Check `sqlite_path` (relative paths are taken from `data_root`) and the file's permissions"
  try:
    if not stat.S_ISREG(os.stat(os.fspath(path)).st_mode):  # a FIFO would block the read
      raise errors.SourceError(errors.with_hint(
          f"SQLite database {spec.sqlite_path} is not a regular file", hint))
    with open(os.fspath(path), "rb") as file:  # noqa: PTH123 - SQLite reads local files only
      header = file.read(20)
  except OSError as error:
    raise errors.SourceError(errors.with_hint(
        f"SQLite database {spec.sqlite_path} cannot be read ({error.strerror})", hint)) from error
  return header.startswith(_SQLITE_HEADER) and _SQLITE_WAL_VERSION in header[18:20]


def _sqlite_read_only_uri(path: epath.Path, spec: ConnectionSpec, wal: bool) -> str:
  """The URI that opens `path` read-only without creating any file beside it.

  A rollback-journal file opened with mode=ro creates nothing. A WAL file
  opened so would create `-wal` and `-shm` files, which a read-only
  connection cannot remove: it is opened with immutable=1 instead (no lock,
  no side file), which is safe only while no one writes it. So it must have
  no `-wal`/`-shm` (no connection has it open, no change is left out of the
  file), and `_check_unchanged` fails a read during which it changed.

  Raises:
    SourceError: for a WAL file with a `-wal` or `-shm` file beside it.
  """
  uri = f"{path.absolute().as_uri()}?mode=ro"
  if not wal:
    return uri
  names = {os.fspath(path), os.path.realpath(path)}  # SQLite names them after the real file
  side_files = sorted(f"{name}-{kind}" for name in names for kind in ("wal", "shm")
                      if os.path.lexists(f"{name}-{kind}"))
  if side_files:
    raise errors.SourceError(errors.with_hint(
        f"SQLite database {spec.sqlite_path} is in WAL mode and {', '.join(side_files)} exist beside "
        "it: a program has it open, or left changes in the WAL that are not in the file yet. "
        "Reading it would write to those files (or miss those changes)",
        f"Close the programs using it, then run `sqlite3 {spec.sqlite_path} \"PRAGMA "
        "wal_checkpoint(TRUNCATE)\"` once: it moves the WAL into the file, and the side files go "
        "as it closes (PRAGMA journal_mode=DELETE also leaves WAL mode); or build from a copy "
        f"(`sqlite3 {spec.sqlite_path} \".backup copy.sqlite\"`)"))
  return f"{uri}&immutable=1"


def _sqlite_file_state(path: epath.Path) -> tuple[int, ...]:
  status = os.stat(os.fspath(path))
  return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


_SQLITE_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/"""
    r"""|(?P<param>\?\d*|[:@$][A-Za-z_][A-Za-z0-9_]*)""",
    re.DOTALL,
)


def _sqlite_without_parameters(sql: str) -> str:
  """`sql` with its parameters replaced by NULL (quotes and comments kept).

  A view cannot hold parameters; its declared column types do not depend on
  them, so the view that reads those types gets NULL instead.
  """
  return _SQLITE_TOKENS.sub(
      lambda match: "NULL" if match.group("param") else match.group(0), sql
  )


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


def split_bucket(seed: str, key: Any) -> int:
  """The split bucket of a key: the first 32 bits of md5('<seed>:<key as text>').

  PostgreSQL computes the same number in SQL (see `bucket_sql`), so a key
  lands in the same split on both.
  """
  if key is None:
    return None
  if isinstance(key, (bytes, memoryview)):
    key = bytes(key).decode("utf-8")
  return int(hashlib.md5(f"{seed}:{key}".encode("utf-8")).hexdigest()[:8], 16)


def bucket_sql(session: ReadSession, key_sql: str, seed_placeholder: str) -> str:
  """SQL computing `split_bucket(seed, key)` for the session's driver."""
  if session.driver == "sqlite":
    return f"tfds_bucket({seed_placeholder}, {key_sql})"
  return (
      f"('x' || substr(md5({seed_placeholder} || ':' || ({key_sql})::text), 1, 8))"
      "::bit(32)::bigint"
  )
