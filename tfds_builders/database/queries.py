"""The SQL the database builder runs: a split's rows, their order, partitions and statistics.

Every statement wraps the user's query as a subquery. Values the builder adds
(split bounds, partition bounds, offsets) are bound parameters; identifiers
it adds (key and column names) are quoted by the session (`psycopg2.sql` on
PostgreSQL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

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
    user_query = self._user_query
    if self.session.driver == "postgresql" and params is not None and not self._user_sql.params:
      # psycopg2 reads % as a placeholder once parameters are passed.
      user_query = user_query.replace("%", "%%")
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
    *, partition: tuple[Any, Any] | None = None, partition_key: str = "",
    limit_zero: bool = False,
) -> statements.Statement:
  """The statement streaming a split (or one partition of it), in order."""
  text = QueryText(session, source.user_sql)
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
