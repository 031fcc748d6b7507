"""Reading a SQL query from PostgreSQL or SQLite: read-only, one snapshot, streamed, redacted errors.

`open_session` opens one connection holding one `REPEATABLE READ`,
`READ ONLY` transaction; every query of the session sees the same data.
`stream_query` is the one-call form: rows of one query, in batches fetched by
a server-side cursor. Errors are `SourceError`/`ConfigError` whose text never
holds the password.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from etils import epath

from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import sql_types

DRIVERS = ("postgresql", "sqlite")
DEFAULT_APPLICATION_NAME = "tfds_builders"
DEFAULT_FETCH_SIZE = 10_000
Params = Sequence[Any] | Mapping[str, Any] | None

_QUERY_MARK = "\x00user_query\x00"
_WRITE_KEYWORDS = re.compile(
    r"(?:^|;)\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*\(?\s*(INSERT|UPDATE|DELETE|MERGE|UPSERT|"
    r"REPLACE|CREATE|DROP|ALTER|TRUNCATE|GRANT|REVOKE|COPY|VACUUM|REINDEX|CLUSTER|COMMENT|"
    r"LOCK|REFRESH|CALL|DO|ATTACH|DETACH|PRAGMA)\b",
    re.IGNORECASE | re.DOTALL,
)
_SQLITE_CAST_EXAMPLE = "CAST(column AS TEXT)"
_POSTGRES_CAST_EXAMPLE = "column::text"


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
  """

  driver: str
  dsn: str = dataclasses.field(default="", repr=False)
  dsn_env: str = ""
  sqlite_path: str = ""
  application_name: str = DEFAULT_APPLICATION_NAME
  connect_timeout: int = 10

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
  style (positional or named). Identifiers are quoted by the session.
  """

  def __init__(self, session: ReadSession, user_query: str, user_params: Params):
    self.session = session
    self._user_query = user_query.strip().rstrip(";").strip()
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
  """One connection in one `REPEATABLE READ`, `READ ONLY` transaction."""

  driver: str

  def __init__(self, spec: ConnectionSpec):
    self.spec = spec

  def __enter__(self) -> ReadSession:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  def close(self) -> None:
    raise NotImplementedError

  def quote(self, identifier: str) -> str:
    raise NotImplementedError

  def query_text(self, user_query: str, user_params: Params = None) -> QueryText:
    return QueryText(self, user_query, user_params)

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


def open_session(spec: ConnectionSpec, *, snapshot: str | None = None) -> ReadSession:
  """Connects and starts the read-only transaction.

  Args:
    spec: Where to read from.
    snapshot: A `ReadSession.export_snapshot()` id: this session then sees
      exactly what the exporting session sees.

  Raises:
    ConfigError: for an unknown driver or an unparsable DSN.
    SourceError: if the database cannot be reached or opened.
  """
  if spec.driver == "postgresql":
    return _PostgresSession(spec, snapshot)
  if spec.driver == "sqlite":
    return _SqliteSession(spec)
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
  with open_session(spec, snapshot=snapshot) as session:
    yield from session.rows(sql, params, fetch_size=fetch_size, user_query=sql)


def writes_data(user_query: str) -> bool:
  """Whether a query holds a statement that starts by modifying data or schema."""
  return bool(_WRITE_KEYWORDS.search(user_query))


def _write_error(spec: ConnectionSpec, detail: str) -> errors.SourceError:
  return errors.SourceError(
      errors.with_hint(
          f"The query tries to modify the database ({spec.describe()}: {detail}); "
          "the database builder only reads, in a READ ONLY transaction",
          "Give a SELECT (or VALUES/WITH ... SELECT) query; run data changes "
          "separately, before the build.",
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


class _PostgresSession(ReadSession):
  """psycopg2 connection with our type casters and a read-only snapshot."""

  driver = "postgresql"

  def __init__(self, spec: ConnectionSpec, snapshot: str | None):
    super().__init__(spec)
    psycopg2 = _postgres()
    self._dsn = spec.resolved_dsn()
    self._cursor_ids = itertools.count()
    self._type_cache: dict[int, tuple[sql_types.SqlType | None, str]] = {}
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
    """A redacted SourceError explaining a psycopg2 error."""
    text = redact(" ".join(str(error).split()), self._dsn)
    code = getattr(error, "pgcode", None)
    where = self.spec.describe()
    if code == "25006" or "data-modifying statement" in text or (
        code in ("42601", "0A000") and writes_data(user_query)
    ):
      return _write_error(self.spec, text)
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
    psycopg2 = _postgres()
    problem = None
    try:
      cursor.execute(sql, params)
    except psycopg2.Error as error:
      problem = self._error(error, action, user_query)
    except (TypeError, ValueError, IndexError, KeyError) as error:
      problem = _parameter_error(self.spec, error, "%s or %(name)s; a literal % is written %%")
    if problem:
      raise problem

  def describe(self, sql: str, params: Params, user_query: str) -> list[ResultColumn]:
    with self.connection.cursor() as cursor:
      self._execute(cursor, sql, params, "describing the query", user_query)
      description = [(column.name, column.type_code) for column in cursor.description or ()]
    self._load_types([oid for _, oid in description])
    return [ResultColumn(name, *self._type_cache[oid]) for name, oid in description]

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


class _SqliteSession(ReadSession):
  """A read-only SQLite connection in one read transaction."""

  driver = "sqlite"

  def __init__(self, spec: ConnectionSpec):
    super().__init__(spec)
    path = epath.Path(spec.sqlite_path)
    if not path.exists():
      raise errors.SourceError(
          f"SQLite database {spec.sqlite_path} not found. Check `sqlite_path` "
          "(relative paths are taken from `data_root`)."
      )
    self.path = path
    problem = None
    try:
      # mode=ro: SQLite itself refuses every write, so the source cannot change.
      self.connection = sqlite3.connect(
          f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None,
          check_same_thread=False,
      )
      self.connection.create_aggregate("stddev_pop", 1, _StddevPop)
      self.connection.create_function("tfds_bucket", 2, split_bucket, deterministic=True)
      # The read transaction holds a SHARED lock from its first read on, so
      # every query of this session sees the same committed data.
      self.connection.execute("BEGIN")
      self.journal_mode = self.connection.execute("PRAGMA journal_mode").fetchone()[0]
      self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
      problem = self._error(error, "opening the database")
    if problem:
      raise problem
    self._view_ids = itertools.count()

  def close(self) -> None:
    try:
      self.connection.execute("ROLLBACK")
    except sqlite3.Error:
      pass
    self.connection.close()

  def quote(self, identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'

  def _error(self, error: Exception, action: str, user_query: str = "") -> errors.TfdsBuildersError:
    text = " ".join(str(error).split())
    if "bindings" in text or "binding parameter" in text:
      return _parameter_error(self.spec, error, "? or :name")
    if "readonly database" in text or (writes_data(user_query) and "syntax error" in text):
      return _write_error(self.spec, text)
    return errors.SourceError(
        errors.with_hint(
            f"SQLite error while {action} ({self.spec.describe()}): {text}",
            "Check the query; try it in the sqlite3 shell first.",
        )
    )

  def _execute(self, sql: str, params: Params, action: str, user_query: str) -> sqlite3.Cursor:
    problem = None
    try:
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

  def _declared_types(self, user_query: str) -> dict[int, str]:
    """Declared types via a temporary view (views cannot hold parameters)."""
    view = f"tfds_describe_{next(self._view_ids)}"
    sql = f"CREATE TEMP VIEW {view} AS {user_query.strip().rstrip(';')}"
    try:
      self.connection.execute(sql)
      rows = self.connection.execute(f"PRAGMA temp.table_info({view})").fetchall()
      self.connection.execute(f"DROP VIEW temp.{view}")
    except sqlite3.Error:
      return {}  # the storage classes below still type every column
    return {index: declared or "" for index, _, declared, *_ in rows}

  def _storage_classes(
      self, sql: str, params: Params, user_query: str, names: list[str], indexes: list[int],
  ) -> dict[int, set[str]]:
    # The describe query has LIMIT 0; scan the whole result for its classes.
    inner = re.sub(r"\s+LIMIT 0\s*$", "", sql)
    selects = ", ".join(
        f"group_concat(DISTINCT typeof({self.quote(names[index])}))" for index in indexes
    )
    cursor = self._execute(
        f"SELECT {selects} FROM ({inner}) AS tfds_types", params,
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
          batch = cursor.fetchmany(fetch_size)
        except sqlite3.Error as error:
          problem = self._error(error, f"reading {label}", user_query)
        if problem:
          raise problem
        if not batch:
          return
        yield from batch
    finally:
      try:
        cursor.close()
      except sqlite3.Error:
        pass  # the session closed first (a failed build): nothing to release

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
    stat = self.path.stat()
    return {
        "driver": "sqlite",
        "connection": self.spec.describe(),
        "path": str(self.path),
        "size_bytes": stat.length,
        "modified": stat.mtime,
        "sqlite_version": sqlite3.sqlite_version,
        "journal_mode": self.journal_mode,
        "isolation": "one read transaction (SHARED lock), file opened with mode=ro",
    }


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
