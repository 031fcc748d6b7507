"""The PostgreSQL session: psycopg2, a REPEATABLE READ, READ ONLY snapshot, each statement parsed as one."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import itertools
import json
import os
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

from absl import logging

from tfds_builders.core import errors
from tfds_builders.core.sql import connection as connection_lib
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import statements
from tfds_builders.core.sql import types as sql_types


def _postgres():
  import psycopg2  # pylint: disable=g-import-not-at-top
  import psycopg2.extensions  # pylint: disable=g-import-not-at-top
  import psycopg2.errors  # pylint: disable=g-import-not-at-top
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


class PostgresSession(sessions.ReadSession):
  """psycopg2 connection with our type casters and a read-only snapshot."""

  driver = "postgresql"

  def __init__(self, spec: connection_lib.ConnectionSpec, snapshot: str | None):
    super().__init__(spec)
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
      milliseconds = connection_lib.timeout_ms(getattr(self.spec, setting), setting)
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
          "(docs/database.md, 'Safety').", self.spec.where(), user, power,
      )

  def _warn_about_tables(self, table_oids: set[int]) -> None:
    """Warns once per table the role could write (superusers were warned already)."""
    unseen = sorted(table_oids - self._warned_tables)
    if self.superuser or not unseen:
      return
    self._warned_tables.update(unseen)
    writable = [
        _text(name) for (name,) in self.fetch_all(statements.Statement(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = "
            "ANY(%s::oid[]) AND pg_catalog.has_table_privilege(c.oid, "
            "'INSERT, UPDATE, DELETE, TRUNCATE') ORDER BY 1", [unseen]))
    ]
    if writable:
      user = self.connection.get_dsn_parameters().get("user", "?")
      logging.warning(
          "%s: role %r may INSERT, UPDATE, DELETE or TRUNCATE %s, which the query reads. "
          "The READ ONLY transaction stops SQL writes; a role with SELECT privileges only "
          "also stops what functions could do (docs/database.md, 'Safety').",
          self.spec.where(), user, ", ".join(writable),
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
      self, error: Exception, action: str, statement: statements.Statement | None = None,
      rows_read: int | None = None,
  ) -> errors.TfdsBuildersError:
    """A redacted SourceError explaining a psycopg2 error (ConfigError for a write by `statement`)."""
    text = connection_lib.redact(" ".join(str(error).split()), self._dsn)
    code = getattr(error, "pgcode", None)
    where = self.spec.where()
    if code == "25006" or "data-modifying statement" in text or (
        code in ("42601", "0A000") and statements.writes_data(statement, self.driver)
    ):
      return sessions.write_error(self.spec, sessions.field_of(statement), text)
    if code in ("57014", "55P03") and "timeout" in text:
      return sessions.timeout_error(self.spec, action, text, lock="lock timeout" in text)
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

  def _formatted(self, statement: statements.Statement, action: str) -> bytes:
    """The exact bytes psycopg2 would send for `statement` (its user part checked first), sent as they are."""
    psycopg2 = _postgres()
    self._check_statement(statement)
    problem = None
    try:
      with self.connection.cursor() as formatter:
        return formatter.mogrify(statement.sql, statement.params)
    except psycopg2.Error as error:
      problem = self._error(error, action, statement)
    except (TypeError, ValueError, IndexError, KeyError) as error:
      problem = sessions.parameter_error(self.spec, error, "%s or %(name)s; a literal % is written %%")
    raise problem

  def _execute(self, cursor, statement: statements.Statement, action: str) -> None:
    """Sends one statement: its user part checked, the whole parsed by the server as one."""
    psycopg2 = _postgres()
    sent = self._formatted(statement, action)
    problem = None
    try:
      if self._parses_as_many(sent):
        problem = statements.refusal(
            sessions.field_of(statement), self.spec.where(),
            "is more than one statement for the PostgreSQL parser (it refused the text as "
            "one prepared statement: 'cannot insert multiple commands')",
        )
      else:
        cursor.execute(sent)
    except psycopg2.Error as error:
      problem = self._error(error, action, statement)
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

  def result_columns(self, statement: statements.Statement) -> list[sessions.ResultColumn]:
    with self.connection.cursor() as cursor:
      self._execute(cursor, statement, "describing the query")
      description = [
          (column.name, column.type_code, column.table_oid) for column in cursor.description or ()
      ]
    self._load_types([oid for _, oid, _ in description])
    self._warn_about_tables({table for _, _, table in description if table})
    return [sessions.ResultColumn(name, *self._type_cache[oid]) for name, oid, _ in description]

  def _load_types(self, oids: list[int]) -> None:
    missing = sorted(set(oids) - set(self._type_cache))
    if not missing:
      return
    with self.connection.cursor() as cursor:
      self._execute(
          cursor,
          statements.Statement(
              "SELECT t.oid, t.typname, t.typtype = 'e', e.typname, e.typtype = 'e', "
              "format_type(t.oid, NULL) FROM pg_catalog.pg_type t "
              "LEFT JOIN pg_catalog.pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem "
              "WHERE t.oid = ANY(%s::oid[])",
              [missing],
          ),
          "looking up column types",
      )
      for oid, name, is_enum, element, element_is_enum, formatted in cursor.fetchall():
        self._type_cache[oid] = (
            sql_types.postgres_type(
                _text(name), is_enum=is_enum, element=_text(element) if element else None,
                element_is_enum=bool(element_is_enum),
            ),
            _text(formatted),
        )

  def fetch_all(self, statement: statements.Statement) -> list[tuple]:
    with self.connection.cursor() as cursor:
      self._execute(cursor, statement, "computing statistics")
      return cursor.fetchall()

  def explain(self, statement: statements.Statement) -> Any:
    """The server's plans of `statement` (a list of one); a failure leaves the transaction usable."""
    explained = dataclasses.replace(statement, sql=f"EXPLAIN (FORMAT JSON) {statement.sql}")
    with self._contained(), self.connection.cursor() as cursor:
      self._execute(cursor, explained, "explaining the query")
      plan = cursor.fetchone()[0]
    return json.loads(plan) if isinstance(plan, (str, bytes)) else plan

  def not_null_columns(self, statement: statements.Statement) -> set[int]:
    """Positions of the result columns that are a NOT NULL column of a table, read as it is.

    Only plain and partitioned tables count: views and foreign tables do not
    enforce NOT NULL. Whether joins or grouping sets could still add NULLs is
    for the caller to judge (`explain`). A failure leaves the transaction usable.
    """
    probe = dataclasses.replace(statement, sql=f"SELECT * FROM ({statement.sql}) AS tfds_nullable LIMIT 0")
    with self._contained():
      with self.connection.cursor() as cursor:
        self._execute(cursor, probe, "describing the query")
        # psycopg2 reads each column's table OID and column number from RowDescription.
        origins = {
            position: (column.table_oid, column.table_column)
            for position, column in enumerate(cursor.description or ())
            if column.table_oid and column.table_column and column.table_column > 0
        }
      if not origins:
        return set()
      rows = self.fetch_all(statements.Statement(
          "SELECT a.attrelid, a.attnum FROM pg_catalog.pg_attribute a "
          "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
          "WHERE a.attnotnull AND NOT a.attisdropped AND c.relkind IN ('r', 'p') "
          "AND a.attrelid = ANY(%s::oid[])",
          [sorted({oid for oid, _ in origins.values()})],
      ))
    not_null = {(int(oid), int(number)) for oid, number in rows}
    return {position for position, origin in origins.items() if origin in not_null}

  @contextlib.contextmanager
  def _contained(self) -> Iterator[None]:
    """A savepoint: a statement failing inside would otherwise abort the build's transaction."""
    with self.connection.cursor() as cursor:
      cursor.execute("SAVEPOINT tfds_contained")
    try:
      yield
    except errors.TfdsBuildersError:
      try:
        with self.connection.cursor() as cursor:
          cursor.execute("ROLLBACK TO SAVEPOINT tfds_contained")
      except _postgres().Error:
        pass  # the connection is gone: the error raised says so
      raise
    with self.connection.cursor() as cursor:
      cursor.execute("RELEASE SAVEPOINT tfds_contained")

  def rows(
      self, statement: statements.Statement, *, fetch_size: int = sessions.DEFAULT_FETCH_SIZE, label: str = "the query",
  ) -> Iterator[tuple]:
    psycopg2 = _postgres()
    # A named cursor lives on the server: only `fetch_size` rows are ever
    # held here, whatever the size of the result.
    cursor = self.connection.cursor(name=f"tfds_cursor_{next(self._cursor_ids)}")
    cursor.itersize = fetch_size
    read = 0
    try:
      self._execute(cursor, statement, f"reading {label}")
      while True:
        problem = None
        try:
          batch = cursor.fetchmany(fetch_size)
        except psycopg2.Error as error:
          problem = self._error(error, f"reading {label}", statement, rows_read=read)
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

  def copy_binary(
      self, statement: statements.Statement, *, label: str = "the query", chunk_bytes: int = 1 << 20,
  ) -> Iterator[bytes]:
    """Streams `COPY (statement) TO STDOUT (FORMAT binary)` in this session's snapshot, in chunks.

    The statement is checked as `rows` checks it, and must be one read-only
    query by the tokenizer and by the server's parser (nothing can close the
    COPY's parenthesis early or follow it). psycopg2 hands each row to a
    sink on a thread of its own; at most `_COPY_QUEUE` chunks of about
    `chunk_bytes` wait for the caller, so memory does not grow with the result.
    Closing the iterator early (or an error downstream) cancels the COPY and
    rolls back to a savepoint taken before it, so the transaction and its
    snapshot stay usable and an error surfaces without reading the rest.

    Raises:
      ConfigError: for a statement that is not exactly one read-only query.
      SourceError: for a server error (redacted, as `rows` raises it).
    """
    psycopg2 = _postgres()
    sent = self._copy_statement(statement, f"reading {label}")
    with self.connection.cursor() as cursor:
      cursor.execute("SAVEPOINT tfds_copy")
    sink = _CopySink(chunk_bytes)
    thread = threading.Thread(target=sink.run, args=(self.connection, sent), name="tfds_copy", daemon=True)
    thread.start()
    finished = False
    try:
      while True:
        chunk = sink.chunks.get()
        if chunk is None:
          break
        yield chunk
      finished = True
    finally:
      if not finished:
        # Stopped early (an error downstream, a head cut, Ctrl-C): cancel the COPY rather
        # than read the rest of a result that may be huge; the savepoint keeps the
        # transaction, and its snapshot, usable for what follows.
        sink.discard = True
        self.connection.cancel()
      while thread.is_alive() or not sink.chunks.empty():
        try:
          sink.chunks.get(timeout=0.05)
        except queue.Empty:
          pass
      thread.join()
      self._end_copy(release=finished and sink.failure is None)
    if isinstance(sink.failure, psycopg2.Error):
      raise self._error(sink.failure, f"reading {label}", statement)
    if sink.failure is not None:
      raise sink.failure

  def _end_copy(self, release: bool) -> None:
    """Releases the COPY's savepoint, or rolls back to it after a cancel or a failure."""
    psycopg2 = _postgres()
    if self.connection.closed:
      return
    command = "RELEASE SAVEPOINT tfds_copy" if release else "ROLLBACK TO SAVEPOINT tfds_copy"
    for attempt in range(2):  # a cancel that arrives late can hit this command: once more then
      try:
        with self.connection.cursor() as cursor:
          cursor.execute(command)
        return
      except psycopg2.errors.QueryCanceled:
        if attempt or release:
          raise
        command = "ROLLBACK TO SAVEPOINT tfds_copy"
      except psycopg2.Error:
        return  # the connection is gone: the error raised says so

  def _copy_statement(self, statement: statements.Statement, action: str) -> bytes:
    """The COPY of `statement`: its user part checked, the whole checked to be one query before it is wrapped."""
    psycopg2 = _postgres()
    sent = self._formatted(statement, action)
    field = sessions.field_of(statement)
    text = sent.decode("utf-8")
    # One query whose parentheses all close inside it, with no `;`: `COPY (` + it + `)` is then one COPY of it.
    end = statements.check_read_query(
        text, field, self.driver, backslash_quotes=self._backslash_quotes(), where=self.spec.where())
    if end != len(text):
      raise statements.refusal(field, self.spec.where(), "ends with `;`, which COPY (query) cannot hold")
    copy = b"COPY (" + sent + b"\n) TO STDOUT (FORMAT binary)"
    try:
      many = self._parses_as_many(sent) or self._parses_as_many(copy)
    except psycopg2.Error as error:
      raise self._error(error, action, statement) from None
    if many:
      raise statements.refusal(
          field, self.spec.where(),
          "is more than one statement for the PostgreSQL parser (it refused the text as "
          "one prepared statement: 'cannot insert multiple commands')",
      )
    return copy

  def send_functions(self, statement: statements.Statement) -> list[str]:
    """Per result column of `statement`, the send function of its type: how binary COPY writes it.

    Functions of `pg_catalog` by name (`int4send`, `enum_send`, ...), citext's
    `citextsend`; "" for any other (a user-defined type's), so that a type
    merely named like a built-in one is never decoded as it.
    """
    probe = dataclasses.replace(statement, sql=f"SELECT * FROM ({statement.sql}) AS tfds_copy_probe LIMIT 0")
    with self.connection.cursor() as cursor:
      self._execute(cursor, probe, "describing the query")
      oids = [column.type_code for column in cursor.description or ()]
    if not oids:
      return []
    found = {}
    for oid, function, builtin, library, source in self.fetch_all(statements.Statement(
        "SELECT t.oid, p.proname, n.nspname = 'pg_catalog', p.probin, p.prosrc FROM pg_catalog.pg_type t "
        "JOIN pg_catalog.pg_proc p ON p.oid = t.typsend JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "WHERE t.oid = ANY(%s::oid[])", [sorted(set(oids))])):
      function = _text(function)
      citext = library is not None and _text(library) == "$libdir/citext" and _text(source) == "citextsend"
      found[oid] = function if builtin else "citextsend" if citext else ""
    return [found.get(oid, "") for oid in oids]

  def export_snapshot(self) -> str | None:
    return _text(self.fetch_all(statements.Statement("SELECT pg_export_snapshot()"))[0][0])

  def facts(self) -> dict[str, Any]:
    version = self.connection.server_version
    snapshot_function = "pg_current_snapshot()" if version >= 130000 else "txid_current_snapshot()"
    server, snapshot, started = self.fetch_all(statements.Statement(
        f"SELECT current_setting('server_version'), {snapshot_function}::text, "
        "to_char(transaction_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')"
    ))[0]
    parameters = self.connection.get_dsn_parameters()  # never holds the password
    return {
        "driver": "postgresql",
        "connection": self.spec.where(),
        "host": parameters.get("host"),
        "port": parameters.get("port"),
        "dbname": parameters.get("dbname"),
        "user": parameters.get("user"),
        "server_version": _text(server),
        "snapshot": _text(snapshot),
        "transaction_started": _text(started),
        "isolation": "REPEATABLE READ, READ ONLY",
    }


# Chunks that wait for the reader of a binary COPY (each about `chunk_bytes`).
_COPY_QUEUE = 4


class _CopySink:
  """The file psycopg2's `copy_expert` writes a COPY's rows to, handing joined chunks to a queue."""

  def __init__(self, chunk_bytes: int):
    self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_COPY_QUEUE)
    self.failure: BaseException | None = None
    self.discard = False
    self._chunk_bytes = chunk_bytes
    self._parts: list[bytes] = []
    self._size = 0

  def write(self, data: bytes) -> int:
    # Called once per row: kept short, the join and hand-over happen once per chunk.
    self._parts.append(data)
    self._size += len(data)
    if self._size >= self._chunk_bytes:
      self._hand_over()
    return len(data)

  def _hand_over(self) -> None:
    chunk, self._parts, self._size = b"".join(self._parts), [], 0
    if not self.discard:
      self.chunks.put(chunk)

  def run(self, connection, copy: bytes) -> None:
    """Runs the COPY (on the sink's thread); ends the queue with None."""
    try:
      with connection.cursor() as cursor:
        cursor.copy_expert(copy, self)
      if self._size:
        self._hand_over()
    except BaseException as error:  # pylint: disable=broad-except  # the reader raises it
      self.failure = error
    finally:
      self.chunks.put(None)


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
