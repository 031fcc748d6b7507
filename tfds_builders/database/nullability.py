"""Which result columns can never be NULL: NOT NULL table columns that the query reads as they are."""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

from tfds_builders.core import errors
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import statements


def never_null(session: sessions.ReadSession, statement: statements.Statement) -> set[int]:
  """Positions of the result columns of `statement` that the database guarantees are not NULL.

  A column qualifies only when the database itself traces it to a NOT NULL
  table column (or a rowid) and nothing on the way can turn it into NULL:
  an outer join or grouping sets make every column of the query doubtful.
  Expressions, views' columns on PostgreSQL, and whatever cannot be traced
  may be NULL. Best effort: on any doubt (or error) a column is nullable.

  Args:
    session: The planning session (read-only; nothing here reads the statement's rows).
    statement: The statement whose columns are asked about, without LIMIT.
  """
  try:
    if session.driver == "postgresql":
      return _postgres(session, statement)
    if session.driver == "sqlite":
      return _sqlite(session, statement)
  except errors.TfdsBuildersError:
    pass  # a guarantee that cannot be read is no guarantee
  return set()


# -------------------------------------------------------------- PostgreSQL --

# Join types whose output can hold NULLs for NOT NULL columns of one side.
_OUTER_JOINS = ("Left", "Right", "Full")


def _postgres(session: sessions.ReadSession, statement: statements.Statement) -> set[int]:
  plan = session.explain(statement)[0]["Plan"]
  if any(_may_add_nulls(node) for node in _plan_nodes(plan)):
    return set()
  return session.not_null_columns(statement)


def _plan_nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
  yield node
  for child in node.get("Plans", ()):
    yield from _plan_nodes(child)


def _may_add_nulls(node: Mapping[str, Any]) -> bool:
  return node.get("Join Type") in _OUTER_JOINS or "Grouping Sets" in node


# ------------------------------------------------------------------ SQLite --

# SQLite has no API for a result column's origin; its bytecode (EXPLAIN)
# says which table cursor and column fill each result register. Opcodes are
# documented at sqlite.org/opcode.html; the register each one writes:
_WRITES_P1 = frozenset({"SoftNull", "AggFinal", "Yield", "Gosub", "InitCoroutine"})
_WRITES_P2 = frozenset({
    "Rowid", "IdxRowid", "Integer", "Int64", "Real", "String8", "String", "Blob", "Variable",
    "SCopy", "IntCopy", "Sequence", "RowData", "SorterData", "Count", "Not", "BitNot",
    "ZeroOrNull", "IsTrue", "NewRowid", "OffsetLimit", "BeginSubrtn", "ReadCookie",
})
_WRITES_P3 = frozenset({
    "Column", "Function", "PureFunc", "AggValue", "AggStep", "AggStep1", "AggInverse", "Add",
    "Subtract", "Multiply", "Divide", "Remainder", "Concat", "BitAnd", "BitOr", "ShiftLeft",
    "ShiftRight", "And", "Or", "MakeRecord", "RowSetRead", "Offset",
})
# Opcodes that write no register (their P2 is often a jump address).
_WRITES_NONE = frozenset({
    "Init", "Goto", "Halt", "HaltIfNull", "Transaction", "TableLock", "OpenRead",
    "OpenEphemeral", "OpenAutoindex", "OpenPseudo", "OpenDup", "SorterOpen", "ReopenIdx",
    "Close", "Rewind", "Last", "Next", "Prev", "SorterNext", "SorterSort", "Sort", "SeekGE",
    "SeekGT", "SeekLE", "SeekLT", "SeekRowid", "NotExists", "Found", "NotFound", "NoConflict",
    "IfNoHope", "SeekScan", "SeekHit", "SeekEnd", "DeferredSeek", "FinishSeek", "IdxGE",
    "IdxGT", "IdxLE", "IdxLT", "IdxInsert", "SorterInsert", "Eq", "Ne", "Lt", "Le", "Gt",
    "Ge", "ElseEq", "IsNull", "NotNull", "IsType", "If", "IfNot", "IfPos", "IfNotZero",
    "DecrJumpZero", "IfNullRow", "NullRow", "MustBeInt", "Affinity", "RealAffinity", "Cast",
    "ResultRow", "Noop", "Explain", "Once", "CollSeq", "Return", "EndCoroutine", "Jump",
    "Compare", "Permutation", "Filter", "FilterAdd", "Trace", "Expire", "ColumnsUsed",
    "CursorHint", "ReleaseReg", "Abortable", "ResetSorter", "RowSetTest", "RowSetAdd",
})
_OPENS = ("Open", "SorterOpen", "ReopenIdx")
_OPFLAG_P2ISREG = 0x10  # OpenRead's P2 names a register holding the root page (sqliteInt.h)
_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class _Op:
  opcode: str
  p1: int
  p2: int
  p3: int
  p5: int

  def written(self) -> range | tuple[int, ...]:
    """The registers this instruction may write (P2 and P3 for unknown opcodes)."""
    if self.opcode == "Null":
      return range(self.p2, max(self.p2, self.p3) + 1)
    if self.opcode == "Copy":
      return range(self.p2, self.p2 + self.p3 + 1)
    if self.opcode == "Move":
      return range(self.p2, self.p2 + self.p3)
    if self.opcode in _WRITES_NONE:
      return ()
    if self.opcode in _WRITES_P1:
      return (self.p1,)
    if self.opcode in _WRITES_P2:
      return (self.p2,)
    if self.opcode in _WRITES_P3:
      return (self.p3,)
    return (self.p2, self.p3)


def _sqlite(session: sessions.ReadSession, statement: statements.Statement) -> set[int]:
  program = [
      _Op(row[1], *(int(value or 0) for value in (row[2], row[3], row[4], row[6])))
      for row in session.explain(statement)
  ]
  return _sqlite_never_null(program, _SqliteSchema(session))


def _sqlite_never_null(program: list[_Op], schema: _SqliteSchema) -> set[int]:
  results = [op for op in program if op.opcode == "ResultRow"]
  if len(results) != 1:
    return set()  # a compound SELECT: several paths fill the result
  opened = collections.defaultdict(list)
  for op in program:
    if op.opcode.startswith(_OPENS):
      opened[op.p1].append(op)
  # Cursors opened once, on a b-tree of the main database, by its root page.
  tables = {
      cursor: ops[0].p2 for cursor, ops in opened.items()
      if len(ops) == 1 and ops[0].opcode == "OpenRead" and ops[0].p3 == 0
      and not ops[0].p5 & _OPFLAG_P2ISREG
  }
  nulled = {op.p1 for op in program if op.opcode in ("NullRow", "IfNullRow")}  # outer joins
  writers = collections.defaultdict(list)
  for op in program:
    for register in op.written():
      writers[register].append(op)
  (result,) = results
  found = set()
  for position in range(result.p2):
    ops = writers.get(result.p1 + position, [])
    if len(ops) != 1 or ops[0].p1 in nulled or ops[0].p1 not in tables:
      continue
    if schema.never_null(tables[ops[0].p1], ops[0].opcode, ops[0].p2):
      found.add(position)
  return found


class _SqliteSchema:
  """Root pages -> tables and indexes, and their NOT NULL columns, read on demand in the session."""

  def __init__(self, session: sessions.ReadSession):
    self._session = session
    self._roots = {
        root: (kind, name, table, sql or "")
        for kind, name, table, root, sql in session.fetch_all(statements.Statement(
            "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master "
            "WHERE type IN ('table', 'index')"
        ))
    }

  def never_null(self, root: int, opcode: str, number: int) -> bool:
    """Whether `opcode` (Column, Rowid, IdxRowid) reading column `number` of b-tree `root` is never NULL."""
    kind, name, table, sql = self._roots.get(root, ("", "", "", ""))
    if kind == "table":
      not_null = self._not_null_columns(name, sql)
      if opcode == "Rowid":
        return not_null is not None
      return opcode == "Column" and not_null is not None and number in not_null
    if kind == "index":
      not_null = self._not_null_columns(table, self._table_sql(table))
      if not_null is None:
        return False
      if opcode == "IdxRowid":
        return True
      columns = [row[1] for row in self._session.fetch_all(statements.Statement(
          "SELECT seqno, cid FROM pragma_index_xinfo(?) ORDER BY seqno", (name,)))]
      if opcode != "Column" or number >= len(columns):
        return False
      cid = columns[number]
      return cid == -1 or cid in not_null  # -1: the rowid; -2: an expression
    return False

  def _table_sql(self, table: str) -> str:
    return next((sql for kind, name, _, sql in self._roots.values()
                 if kind == "table" and name == table), "")

  def _not_null_columns(self, table: str, sql: str) -> set[int] | None:
    """Column numbers declared NOT NULL; None for tables whose records are not in declared order."""
    if _WITHOUT_ROWID.search(sql):
      return None  # records hold the primary key first
    rows = self._session.fetch_all(statements.Statement(
        "SELECT cid, \"notnull\", hidden FROM pragma_table_xinfo(?)", (table,)))
    if any(hidden for _, _, hidden in rows):
      return None  # generated or hidden columns shift the record's column numbers
    return {cid for cid, not_null, _ in rows if not_null}
