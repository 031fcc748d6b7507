"""One read-only statement: the statement value, and the tokenizer that refuses anything else.

`check_read_query` finds where the user's SQL ends as the server would
tokenize it, and refuses a second statement and anything but
SELECT/WITH/VALUES/TABLE before it is sent. Sessions (`core.sql.sessions`)
add the servers' own guards.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tfds_builders.core import errors
from tfds_builders.core.sql import connection

Params = Sequence[Any] | Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Statement:
  """One statement to send, and the user's query inside it (checked; named in errors).

  Attributes:
    sql: The statement (PostgreSQL `%s` / `%(name)s` placeholders; SQLite
      `?` / `:name`).
    params: Its bound parameters.
    user_query: The user's SQL that `sql` holds (all of it, or wrapped as a
      subquery); empty for the builder's own SQL (catalog lookups).
    field: The config field the user wrote `user_query` in (`query`,
      `side_table_sql`), named in errors; required with `user_query`.
  """

  sql: str
  params: Params = None
  user_query: str = ""
  field: str = ""

  def __post_init__(self):
    if self.user_query and not self.field:
      raise ValueError("A statement holding the user's SQL names the config field it came from.")


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
    raise refusal(field, where, scan.problem)
  return scan.end


def statement_end(sql: str, driver: str) -> int:
  """Where the first statement of `sql` ends (its `;`, or the length), without judging it."""
  return _scan(sql, driver, False).end


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
  return repr(connection.redact(text if len(text) <= limit else text[:limit] + "..."))


def refusal(field: str, where: str, problem: str) -> errors.ConfigError:
  """The error for SQL refused before anything was sent."""
  on = f" on {where}" if where else ""
  return errors.ConfigError(
      errors.with_hint(
          f"`{field}` must be exactly one read-only query, but it {problem}. Nothing was "
          f"sent to run{on}",
          READ_ONLY_HINT,
      )
  )


READ_ONLY_HINT = (
    "Give one query (SELECT, WITH ... SELECT, VALUES or TABLE) without `;` between "
    "statements: the build runs it as a single statement in a READ ONLY transaction (SQLite: "
    "a file opened read-only), so transaction control (BEGIN, COMMIT, ROLLBACK, END), SET, "
    "RESET, DO, COPY, CALL, ATTACH, PRAGMA and VACUUM are refused. Run any other statement "
    "separately, before the build."
)



def writes_data(statement: Statement | None, driver: str = "postgresql") -> bool:
  """Whether the user's query in `statement` holds a clause that modifies data or schema.

  That is a data-changing keyword (INSERT, DELETE, COPY, ATTACH, ...) that
  starts the query or follows `;`, `(` or `)`, outside strings and comments:
  `WITH d AS (SELECT 1) DELETE FROM t`, not `SELECT replace(v, 'a', 'b')`.
  """
  user_query = statement.user_query if statement is not None else ""
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
