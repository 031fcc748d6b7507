"""The SQL the database builder runs: a split's rows, their order, partitions and statistics.

Every statement wraps the user's query as a subquery. Values the builder adds
(split bounds, partition bounds, offsets) are bound parameters; identifiers
it adds (key and column names) are quoted by the session (`psycopg2.sql` on
PostgreSQL). The one exception is `partition_key: "ctid"`: its block ranges
and ctid order must reach the scan of the user's one table, so they are
written into the user's query where its WHERE condition goes (`TableScan`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tfds_builders.core import errors
from tfds_builders.core import splits
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import statements

_QUERY_MARK = "\x00user_query\x00"


@dataclasses.dataclass(frozen=True)
class SplitSource:
  """The rows of one split: a user query, maybe narrowed to a bucket range.

  Attributes:
    split: Split name.
    user_sql: The user's SELECT and its bound parameters, as `user_statement` makes it.
    split_key: Column hashed into buckets (hash-split mode), else "".
    split_seed: Seed mixed into the hash.
    bucket_range: `[low, high)` of `splits.split_bucket` values kept, or None.
  """

  split: str
  user_sql: statements.Statement
  split_key: str = ""
  split_seed: int = 0
  bucket_range: tuple[int, int] | None = None


CTID = "ctid"  # partition_key for physical row ranges: heap blocks of the query's one table


@dataclasses.dataclass(frozen=True)
class BlockRange:
  """The rows of one table stored in heap blocks `[first_block, end_block)`, in ctid order.

  Attributes:
    first_block: First block (None: from the start).
    end_block: Block after the last (None: to the end, also blocks added
      after the build's snapshot, which hold none of its rows).
    first_row: Row number of the range's first row in its split: the rows
      of the ranges before it, counted in the snapshot.
  """

  first_block: int | None
  end_block: int | None
  first_row: int = 0


@dataclasses.dataclass(frozen=True)
class TableScan:
  """A user query that reads one table row by row, cut where ctid conditions go.

  `head` + `WHERE (condition) AND <ctid range>` + `ORDER BY qualifier.ctid`
  is the user's query restricted to a block range, in physical order.

  Attributes:
    head: `SELECT ... FROM table [[AS] alias]` as written.
    condition: The user's WHERE condition as written, or "".
    table: The table as written (`schema.table`, quotes kept), for `to_regclass`.
    qualifier: The alias, else the table's last name part, as written: what
      qualifies `ctid` (an output column named ctid cannot shadow it).
  """

  head: str
  condition: str
  table: str
  qualifier: str


def user_statement(query: str, params: statements.Params, field: str) -> statements.Statement:
  """The user's SQL as written in config field `field`, with its parameters."""
  return statements.Statement(query, params, user_query=query, field=field)


class QueryText:
  """Composes SQL around a user query: placeholders in the driver's style.

  The user's query keeps its own parameters; values the builder adds are
  bound too (never formatted into the SQL), after the user's in the same
  style (positional or named). Identifiers are quoted by the session. The
  user's query is checked to be one read-only query first (ConfigError).
  """

  def __init__(self, session: sessions.ReadSession, user_sql: statements.Statement):
    self.session = session
    end = session.check_user_query(user_sql)
    self._user_sql = user_sql
    self._user_query = user_sql.user_query[:end].strip()  # without its `;` and trailing comments
    self._named = isinstance(user_sql.params, Mapping)
    self._params: Any = dict(user_sql.params) if self._named else list(user_sql.params or [])
    # The query at the mark: (text, written by the user) pieces; only the user's get % doubled.
    self._pieces: list[tuple[str, bool]] = [(self._user_query, True)]

  def table_scan(self) -> TableScan:
    """The user's query cut as `TableScan` (ConfigError if it is not one table's rows)."""
    backslash_quotes = self.session._backslash_quotes()  # pylint: disable=protected-access
    return table_scan(self._user_query, self._user_sql.field, backslash_quotes)

  def read_by_ctid(self, block_range: BlockRange | None, ordered: bool) -> None:
    """Puts `block_range`'s ctid bounds (bound now: after the user's parameters) and ctid order into the query."""
    scan = self.table_scan()
    ctid = f"{scan.qualifier}.{CTID}"
    bounds = []
    if block_range is not None and block_range.first_block is not None:
      bounds.append(f"{ctid} >= {self.bind(f'({block_range.first_block},0)')}::tid")
    if block_range is not None and block_range.end_block is not None:
      bounds.append(f"{ctid} < {self.bind(f'({block_range.end_block},0)')}::tid")
    # Newlines: a trailing `-- comment` of the user's text must not swallow ours.
    pieces = [(scan.head, True)]
    if scan.condition:
      pieces += [("\nWHERE (", False), (scan.condition, True), ("\n)", False)]
    if bounds:
      pieces.append(("\nAND " if scan.condition else "\nWHERE ", False))
      pieces.append((" AND ".join(bounds), False))
    if ordered:
      pieces.append((f"\nORDER BY {ctid}", False))
    self._pieces = pieces

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

  def build(self, template: str) -> statements.Statement:
    """`template` with the user query in place, bound to all parameters."""
    params = self._params or None
    # psycopg2 reads % as a placeholder once parameters are passed.
    double = self.session.driver == "postgresql" and params is not None and not self._user_sql.params
    user_query = "".join(
        text.replace("%", "%%") if double and written_by_user else text
        for text, written_by_user in self._pieces
    )
    # Newlines: a trailing `-- comment` in the user query must not swallow SQL.
    return dataclasses.replace(
        self._user_sql, sql=template.replace(_QUERY_MARK, f"\n{user_query}\n"), params=params)


def _where(text: QueryText, source: SplitSource,
           partition: tuple[Any, Any] | None = None, partition_key: str = "") -> list[str]:
  conditions = []
  if source.bucket_range is not None:
    low, high = source.bucket_range
    bucket = splits.bucket_sql(
        text.session.driver, text.ident(source.split_key), text.bind(str(source.split_seed))
    )
    # One occurrence of the bucket expression, so its seed is bound once.
    conditions.append(f"{bucket} - {text.bind(low)} BETWEEN 0 AND {text.bind(high - low - 1)}")
  if partition is not None:
    low, high = partition
    key = text.ident(partition_key)
    if low is not None:
      conditions.append(f"{key} >= {text.bind(low)}")
    if high is not None:
      conditions.append(f"{key} < {text.bind(high)}")
  return conditions


def rows_sql(
    session: sessions.ReadSession, source: SplitSource, order_by: Sequence[str],
    *, partition: tuple[Any, Any] | BlockRange | None = None, partition_key: str = "",
    limit_zero: bool = False,
) -> statements.Statement:
  """The statement streaming a split (or one partition of it), in order.

  With `partition_key` CTID the user's query reads its table in ctid order,
  restricted to `partition` (a `BlockRange`; None: every block); else
  `partition` is a `[low, high)` range of the key column.
  """
  text = QueryText(session, source.user_sql)
  if partition_key == CTID and not limit_zero:
    text.read_by_ctid(partition, ordered=True)  # type: ignore[arg-type]
    partition = None
  sql = f"SELECT * FROM ({text.query}) AS tfds_source"
  conditions = _where(text, source, partition, partition_key)
  if conditions:
    sql += " WHERE " + " AND ".join(f"({condition})" for condition in conditions)
  if order_by and not limit_zero:
    sql += " ORDER BY " + ", ".join(text.ident(name) for name in order_by)
  if limit_zero:
    sql += " LIMIT 0"
  return text.build(sql)


def _over_split(
    session: sessions.ReadSession, source: SplitSource, select: str,
    tail: str = "", bind: Sequence[Any] = (), required: Sequence[str] = (),
) -> statements.Statement:
  """`SELECT <select> FROM (split rows) AS s <tail>`; `{}` in select/tail are identifiers.

  `required` columns must be non-NULL: rows a `skip_row` column leaves out
  of the dataset are left out of its statistics too.
  """
  text = QueryText(session, source.user_sql)
  conditions = _where(text, source)
  conditions += [f"{session.quote(column)} IS NOT NULL" for column in required]
  inner = f"SELECT * FROM ({text.query}) AS tfds_source"
  if conditions:
    inner += " WHERE " + " AND ".join(f"({condition})" for condition in conditions)
  placeholders = [text.bind(value) for value in bind]
  tail = tail.format(*placeholders) if placeholders else tail
  return text.build(f"SELECT {select} FROM ({inner}) AS tfds_split {tail}")


def null_count_sql(session, source: SplitSource, columns: Sequence[str]) -> statements.Statement:
  """The number of rows where any of `columns` is NULL."""
  condition = " OR ".join(f"{session.quote(column)} IS NULL" for column in columns)
  return _over_split(session, source, "count(*)", f"WHERE {condition}")


def distinct_sql(session, source: SplitSource, column: str, required: Sequence[str] = ()) -> statements.Statement:
  quoted = session.quote(column)
  return _over_split(
      session, source, f"DISTINCT {quoted}", f"WHERE {quoted} IS NOT NULL", required=required,
  )


# What `summary_sql` can compute; avg and stddev_pop are for numeric columns only.
_AGGREGATES = {
    "rows": "count(*)", "count": "count({0})", "avg": "avg({0})",
    "stddev_pop": "stddev_pop({0})", "min": "min({0})", "max": "max({0})",
}


def summary_sql(
    session, source: SplitSource, column: str, aggregates: Sequence[str],
    required: Sequence[str] = (),
) -> statements.Statement:
  """One row: the named `_AGGREGATES` of a column over the split, in order."""
  quoted = session.quote(column)
  select = ", ".join(_AGGREGATES[name].format(quoted) for name in aggregates)
  return _over_split(session, source, select, required=required)


def sort_key(session, column: str, plain_text: bool) -> str:
  """A column as an ORDER BY key: text in code-point order on every engine.

  Args:
    session: Quotes the column and says the driver.
    column: Column name.
    plain_text: Whether the column is a PostgreSQL text type (text, varchar,
      bpchar, name, citext), which orders by the database's collation unless
      told "C" (byte order of UTF-8, which is code-point order).
  """
  quoted = session.quote(column)
  if session.driver == "sqlite":
    return f"{quoted} COLLATE BINARY"  # a column's own collation (NOCASE) would win
  return f'{quoted} COLLATE "C"' if plain_text else quoted


def ordered_value_sql(
    session, source: SplitSource, column: str, key: str, offset: int, *,
    descending: bool = False, required: Sequence[str] = (),
) -> statements.Statement:
  """The `offset`-th non-NULL value of a column in `key` order (min, max, median)."""
  quoted = session.quote(column)
  direction = " DESC" if descending else ""
  return _over_split(
      session, source, quoted,
      f"WHERE {quoted} IS NOT NULL ORDER BY {key}{direction} LIMIT 1 OFFSET {{}}",
      bind=[offset], required=required,
  )


def mode_sql(session, source: SplitSource, column: str, key: str, required: Sequence[str] = ()) -> statements.Statement:
  """The most frequent non-NULL value (ties: the smallest in `key` order)."""
  quoted = session.quote(column)
  return _over_split(
      session, source, quoted,
      f"WHERE {quoted} IS NOT NULL GROUP BY {quoted} ORDER BY count(*) DESC, {key} LIMIT 1",
      required=required,
  )


def partition_starts_sql(session, source: SplitSource, key: str, count: int) -> statements.Statement:
  """The first key of each of `count` equal-sized ranges (ntile), in order."""
  quoted = session.quote(key)
  text = QueryText(session, source.user_sql)
  conditions = _where(text, source)
  inner = f"SELECT * FROM ({text.query}) AS tfds_source"
  if conditions:
    inner += " WHERE " + " AND ".join(f"({condition})" for condition in conditions)
  # A CTE keeps placeholders in binding order: the user's query comes first.
  return text.build(
      f"WITH tfds_split AS ({inner}) SELECT min({quoted}) FROM (SELECT {quoted}, "
      f"ntile({text.bind(count)}) OVER (ORDER BY {quoted}) AS tfds_part FROM tfds_split) "
      "AS tfds_parts GROUP BY tfds_part ORDER BY tfds_part"
  )


def partition_ranges(starts: Sequence[Any]) -> list[tuple[Any, Any]]:
  """`[low, high)` key ranges (None: unbounded) covering every key, from range starts."""
  bounds = []
  for start in starts[1:]:
    if not bounds or start != bounds[-1]:
      bounds.append(start)
  edges = [None, *bounds, None]
  return list(zip(edges[:-1], edges[1:]))


def block_range_count_sql(session, source: SplitSource, block_range: BlockRange) -> statements.Statement:
  """The number of rows of a split in `block_range` of its table."""
  text = QueryText(session, source.user_sql)
  text.read_by_ctid(block_range, ordered=False)
  conditions = _where(text, source)
  inner = f"SELECT * FROM ({text.query}) AS tfds_source"
  if conditions:
    inner += " WHERE " + " AND ".join(f"({condition})" for condition in conditions)
  return text.build(f"SELECT count(*) FROM ({inner}) AS tfds_range")


def table_sql(scan: TableScan) -> statements.Statement:
  """One row: kind, schema, name and heap blocks of the table `scan` reads, resolved as the query would."""
  return statements.Statement(
      "SELECT c.relkind, n.nspname, c.relname, pg_catalog.pg_relation_size(c.oid) / "
      "pg_catalog.current_setting('block_size')::bigint FROM pg_catalog.pg_class c JOIN "
      "pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.oid = pg_catalog.to_regclass(%s)",
      [scan.table],
  )


# Words after the table that end the FROM clause or join another relation: not an alias.
_NOT_ALIAS = frozenset({
    "WHERE", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL", "LATERAL", "ON",
    "USING", "TABLESAMPLE", "GROUP", "HAVING", "WINDOW", "ORDER", "LIMIT", "OFFSET", "FETCH",
    "FOR", "UNION", "INTERSECT", "EXCEPT", "FROM", "SELECT", "INTO", "WITH",
})
# Clauses that would follow a WHERE condition (outside parentheses): the rule takes none.
_AFTER_CONDITION = frozenset({
    "GROUP", "HAVING", "WINDOW", "ORDER", "LIMIT", "OFFSET", "FETCH", "FOR", "UNION",
    "INTERSECT", "EXCEPT",
})
_NAME_KINDS = ("word", "quoted identifier")
TABLE_SCAN_SHAPE = "SELECT ... FROM table [[AS] alias] [WHERE condition], or TABLE table"


@dataclasses.dataclass(frozen=True)
class _Token:
  kind: str  # "word", "quoted identifier", a punctuation character, ...
  text: str  # upper-cased for a word
  start: int
  end: int


def _top_level_tokens(sql: str, backslash_quotes: bool) -> list[_Token]:
  """PostgreSQL's tokens of `sql` outside parentheses (comments skipped), as `core.sql.statements` reads them."""
  # pylint: disable=protected-access  # the one tokenizer of core.sql.statements, not a copy of it
  found, index, depth = [], 0, 0
  while index < len(sql):
    if sql[index] in statements._SPACE:
      index += 1
      continue
    if sql.startswith("--", index):
      stop = statements._POSTGRES_LINE_END.search(sql, index)
      index = stop.end() if stop else len(sql)
      continue
    if sql.startswith("/*", index):
      index = statements._comment_end(sql, index, nested=True)
      if index < 0:
        break  # check_read_query refused it already
      continue
    start = index
    kind, index = statements._token(sql, index, True, backslash_quotes)
    if index < 0:
      break
    if kind == ")":
      depth -= 1
    elif depth == 0 and kind != "(":
      text = sql[start:index]
      found.append(_Token(kind, text.upper() if kind == "word" else text, start, index))
    if kind == "(":
      if depth == 0:
        found.append(_Token(kind, kind, start, index))
      depth += 1
  return found


def table_scan(query: str, field: str, backslash_quotes: bool = False) -> TableScan:
  """Cuts a one-table query (`TABLE_SCAN_SHAPE`) into the parts ctid bounds go between.

  Only the shape is read here; what the query computes (aggregates,
  DISTINCT, window functions) and what the table is are the server's to
  say (`database.physical`).

  Args:
    query: The user's query, as `check_read_query` accepted it, without its `;`.
    field: Its config field, for the message.
    backslash_quotes: PostgreSQL's `standard_conforming_strings=off`.

  Raises:
    ConfigError: naming the field and what breaks the shape.
  """
  tokens = _top_level_tokens(query, backslash_quotes)
  def refuse(problem: str) -> errors.ConfigError:
    return errors.ConfigError(errors.with_hint(
        f"partition_key={CTID!r} cuts the rows of one table into ranges of its heap blocks, "
        f"so `{field}` must read one table as {TABLE_SCAN_SHAPE}; it {problem}",
        "Use a column as partition_key (the first of order_by) for joins, views, grouping "
        "and set operations, or build without partitions.",
    ))

  def name_at(position: int) -> int:
    """Where the (possibly schema-qualified) name starting at `position` ends."""
    if position >= len(tokens) or tokens[position].kind not in _NAME_KINDS:
      raise refuse(f"has {_shown(tokens, position, query)} where the table's name goes")
    while (position + 2 < len(tokens) and tokens[position + 1].kind == "."
           and tokens[position + 2].kind in _NAME_KINDS):
      position += 2
    return position + 1

  if tokens and tokens[0].text == "TABLE":
    first = 2 if len(tokens) > 1 and tokens[1].text == "ONLY" else 1
    after = name_at(first)
    if after != len(tokens):
      raise refuse(f"has {_shown(tokens, after, query)} after the table")
    table = query[tokens[first].start:tokens[after - 1].end]
    qualifier = query[tokens[after - 1].start:tokens[after - 1].end]
    return TableScan(f"SELECT * FROM {query[tokens[1].start:]}", "", table, qualifier)
  if not tokens or tokens[0].text != "SELECT":
    raise refuse(f"starts with {_shown(tokens, 0, query)}")
  from_at = next((i for i, token in enumerate(tokens) if token.text == "FROM"), None)
  if from_at is None:
    raise refuse("reads no table (no FROM)")
  first = from_at + 2 if from_at + 1 < len(tokens) and tokens[from_at + 1].text == "ONLY" else from_at + 1
  after = name_at(first)
  table = query[tokens[first].start:tokens[after - 1].end]
  qualifier = query[tokens[after - 1].start:tokens[after - 1].end]
  position = after
  if position < len(tokens) and tokens[position].text == "AS":
    position += 1
    if position >= len(tokens) or tokens[position].kind not in _NAME_KINDS:
      raise refuse(f"has {_shown(tokens, position, query)} where the alias goes")
  if position < len(tokens) and (
      tokens[position].kind == "quoted identifier"
      or (tokens[position].kind == "word" and tokens[position].text not in _NOT_ALIAS)):
    qualifier = query[tokens[position].start:tokens[position].end]
    position += 1
  if position == len(tokens):
    return TableScan(query, "", table, qualifier)
  if tokens[position].text != "WHERE" or position + 1 == len(tokens):
    raise refuse(f"has {_shown(tokens, position, query)} after the table, not WHERE or the end")
  clause = next((t for t in tokens[position + 1:] if t.kind == "word" and t.text in _AFTER_CONDITION), None)
  if clause is not None:
    raise refuse(f"has {query[clause.start:clause.end]!r} after its WHERE condition")
  where = tokens[position]
  return TableScan(query[:where.start].rstrip(), query[where.end:].strip(), table, qualifier)


def _shown(tokens: Sequence[_Token], position: int, query: str) -> str:
  if position >= len(tokens):
    return "nothing"
  return repr(" ".join(query[tokens[position].start:].split())[:40])
