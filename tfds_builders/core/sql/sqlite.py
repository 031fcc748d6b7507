"""The SQLite session: a file opened read-only, one read transaction, an authorizer that allows reading only."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any

from etils import epath

from tfds_builders.core import errors
from tfds_builders.core.sql import connection as connection_lib
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import statements
from tfds_builders.core.sql import types as sql_types

# Registers on a SQLite connection the functions the caller's SQL calls (PostgreSQL has its own).
SqliteSetup = Callable[[sqlite3.Connection], None]


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


class SqliteSession(sessions.ReadSession):
  """A read-only SQLite connection in one read transaction, guarded by an authorizer."""

  driver = "sqlite"

  def __init__(self, spec: connection_lib.ConnectionSpec, sqlite_setup: SqliteSetup | None = None):
    super().__init__(spec)
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
    self._statement_ms = connection_lib.timeout_ms(spec.statement_timeout, "statement_timeout")
    lock_ms = connection_lib.timeout_ms(spec.lock_timeout, "lock_timeout")
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
      if sqlite_setup is not None:
        sqlite_setup(self.connection)
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

  def _error(
      self, error: Exception, action: str, statement: statements.Statement | None = None,
  ) -> errors.TfdsBuildersError:
    text = " ".join(str(error).split())
    field = sessions.field_of(statement)
    refused, self.guard.refused = self.guard.refused, ""
    if "bindings" in text or "binding parameter" in text:
      return sessions.parameter_error(self.spec, error, "? or :name")
    if "one statement at a time" in text:
      return statements.refusal(field, self.spec.where(),
                      "is more than one statement for SQLite's parser (sqlite3: "
                      f"{text.rstrip('.')})")
    if refused.startswith("function ") and "not authorized" in text:
      detail = text if refused.split()[-1] in text else f"{text}: {refused}"
      return errors.ConfigError(errors.with_hint(
          f"`{field}` calls a function the build refuses ({self.spec.where()}: {detail}): "
          "loading an extension would run a library's code. Nothing was run",
          "Remove the call: a build reads with SQLite's built-in functions only"))
    if refused and "not authorized" in text:
      return sessions.write_error(self.spec, field, f"{text}: {refused}")
    if "readonly database" in text or (
        "syntax error" in text and statements.writes_data(statement, self.driver)):
      return sessions.write_error(self.spec, field, text)
    if text == "interrupted" and self._statement_ms is not None:
      return sessions.timeout_error(self.spec, action, text, lock=False)
    if "database is locked" in text:
      return sessions.timeout_error(self.spec, action, text, lock=True)
    return errors.SourceError(
        errors.with_hint(
            f"SQLite error while {action} ({self.spec.where()}): {text}",
            "Check the query; try it in the sqlite3 shell first.",
        )
    )

  def _execute(self, statement: statements.Statement, action: str) -> sqlite3.Cursor:
    self._check_statement(statement)
    problem = None
    try:
      self._start_clock()
      return self.connection.execute(statement.sql, statement.params or ())
    except sqlite3.Error as error:
      problem = self._error(error, action, statement)
    raise problem

  def result_columns(self, statement: statements.Statement) -> list[sessions.ResultColumn]:
    cursor = self._execute(statement, "describing the query")
    names = [column[0] for column in cursor.description or ()]
    cursor.close()
    declared = self._declared_types(_sqlite_without_parameters(statement.user_query))
    types = {
        index: sql_types.sqlite_declared_type(declared.get(index, "")) for index in range(len(names))
    }
    # Newer SQLite versions report a view column without a declared type as
    # BLOB: such a column is typed by its values unless they are blobs.
    maybe_untyped = [index for index in types if declared.get(index, "").strip().upper() == "BLOB"]
    undeclared = [index for index, found in types.items() if found is None]
    if undeclared or maybe_untyped:
      classes = self._storage_classes(statement, names, undeclared + maybe_untyped)
      for index in undeclared:
        types[index] = sql_types.sqlite_storage_type(names[index], classes[index])
      for index in maybe_untyped:
        if not classes[index] <= {"blob", "null"}:
          types[index] = sql_types.sqlite_storage_type(names[index], classes[index])
    return [
        sessions.ResultColumn(name, types[index], types[index].source) for index, name in enumerate(names)
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
    body = user_query[:statements.statement_end(user_query, "sqlite")].strip()
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
      self, statement: statements.Statement, names: list[str], indexes: list[int],
  ) -> dict[int, set[str]]:
    # The describe query has LIMIT 0; scan the whole result for its classes.
    inner = re.sub(r"\s+LIMIT 0\s*$", "", statement.sql)
    inner = inner[:statements.statement_end(inner, "sqlite")]  # a query sent as is may end in `;`
    selects = ", ".join(
        f"group_concat(DISTINCT typeof({self.quote(names[index])}))" for index in indexes
    )
    # Newlines: a trailing `-- comment` must not swallow the closing parenthesis.
    cursor = self._execute(
        dataclasses.replace(statement, sql=f"SELECT {selects} FROM (\n{inner}\n) AS tfds_types"),
        "inferring column types",
    )
    found = cursor.fetchone()
    return {index: set((found[position] or "").split(",")) - {""}
            for position, index in enumerate(indexes)}

  def fetch_all(self, statement: statements.Statement) -> list[tuple]:
    return self._execute(statement, "computing statistics").fetchall()

  def explain(self, statement: statements.Statement) -> list[tuple]:
    """The statement's bytecode, compiled through the authorizer; nothing runs."""
    explained = dataclasses.replace(statement, sql=f"EXPLAIN {statement.sql}")
    return self._execute(explained, "explaining the query").fetchall()

  def rows(
      self, statement: statements.Statement, *, fetch_size: int = sessions.DEFAULT_FETCH_SIZE, label: str = "the query",
  ) -> Iterator[tuple]:
    cursor = self._execute(statement, f"reading {label}")
    try:
      while True:
        problem = None
        try:
          self._start_clock()  # each batch is timed, as each FETCH is on PostgreSQL
          batch = cursor.fetchmany(fetch_size)
        except sqlite3.Error as error:
          problem = self._error(error, f"reading {label}", statement)
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
          f"{self.spec.where()} changed while the build was reading {label}: the file is in "
          "WAL mode and was read without locks (opened immutable, so that no -wal or -shm file "
          "is created beside it), so what was read may mix two versions",
          "Build again when no program writes the database, or from a copy "
          f"(sqlite3 {self.path} \".backup copy.sqlite\")"))

  def export_snapshot(self) -> str | None:
    if self.journal_mode.lower() == "wal":
      raise errors.ConfigError(
          f"{self.spec.where()} is in WAL mode: parallel readers could see "
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
        "connection": self.spec.where(),
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


def _sqlite_header_says_wal(path: epath.Path, spec: connection_lib.ConnectionSpec) -> bool:
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


def _sqlite_read_only_uri(path: epath.Path, spec: connection_lib.ConnectionSpec, wal: bool) -> str:
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
