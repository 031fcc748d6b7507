"""Partitions without a key: a one-table query cut into ranges of heap blocks (ctid ranges) in the snapshot."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from tfds_builders.core import errors
from tfds_builders.core.sql import sessions
from tfds_builders.database import queries

# Plan nodes that read the table's rows, and those that pass rows through one
# by one (a parallel scan's Gather, a set-returning target list): a query
# planned with only these yields per table row what it yields for that row
# alone, so ranges of rows concatenate to the whole. InitPlans and SubPlans
# are expressions of a row (or constants), computed in the same snapshot.
_ROW_SCANS = frozenset({
    "Seq Scan", "Tid Range Scan", "Tid Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan",
})
_ROW_BY_ROW = frozenset({
    "Bitmap Index Scan", "BitmapAnd", "BitmapOr", "Gather", "Result", "ProjectSet", "Subquery Scan",
})
_EXPRESSIONS = ("InitPlan", "SubPlan")
# pg_class.relkind: what has heap blocks and ctids of its own.
_HEAP_KINDS = ("r", "m")
_KIND_NAMES = {
    "p": "a partitioned table (its rows are in its partitions, whose ctids repeat)",
    "v": "a view (it has no blocks; read its table)", "f": "a foreign table (it has no blocks)",
    "S": "a sequence", "c": "a composite type", "t": "a TOAST table", "i": "an index",
}


def block_ranges(
    session: sessions.ReadSession, source: queries.SplitSource, count: int,
) -> list[queries.BlockRange | None]:
  """The split's table cut into `count` ranges of about equal blocks, in block order.

  Checks that the split's query reads one table row by row, which is what
  makes the ranges concatenate to the serial read (ctid order). Each range
  knows its first row number: the split's rows in the ranges before it,
  counted in the snapshot. The last range is open-ended.

  Args:
    session: The build's session: blocks and rows are those of its snapshot.
    source: The split.
    count: Partitions wanted; fewer when the table has fewer blocks.

  Returns:
    `[None]` (the whole table in ctid order) for one range or an empty
    table, else the `BlockRange`s.

  Raises:
    ConfigError: if the query is not one table's rows (naming the split and why).
  """
  scan = queries.QueryText(session, source.user_sql).table_scan()
  blocks = _heap_blocks(session, source, scan)
  parts = max(1, min(count, blocks))
  if parts == 1:
    return [None]
  edges = [blocks * index // parts for index in range(1, parts)]
  ranges, first_row = [], 0
  for first_block, end_block in zip([None, *edges], [*edges, None]):
    block_range = queries.BlockRange(first_block, end_block, first_row)
    ranges.append(block_range)
    if end_block is not None:
      first_row += session.fetch_all(queries.block_range_count_sql(session, source, block_range))[0][0]
  return ranges


def record(block_range: queries.BlockRange | None) -> dict[str, Any]:
  """A range as provenance records it."""
  block_range = block_range or queries.BlockRange(None, None)
  return {"blocks": [block_range.first_block or 0, block_range.end_block],
          "first_row": block_range.first_row}


def _heap_blocks(session: sessions.ReadSession, source: queries.SplitSource, scan: queries.TableScan) -> int:
  """The blocks of the table `scan` reads (now: no fewer than its snapshot's), after checking it and the plan."""
  field = source.user_sql.field
  found = session.fetch_all(queries.table_sql(scan))
  if not found:
    raise _refusal(source, f"reads {scan.table}, which PostgreSQL does not resolve to a table")
  kind, schema, name, blocks = found[0]
  kind = kind.decode() if isinstance(kind, bytes) else str(kind)
  if kind not in _HEAP_KINDS:
    raise _refusal(source, f"reads {scan.table}, {_KIND_NAMES.get(kind, f'a relation of kind {kind!r}')}")
  plain = dataclasses.replace(source, bucket_range=None)
  plan = session.explain(queries.rows_sql(session, plain, ()))[0]["Plan"]
  nodes = list(_row_nodes(plan))
  other = sorted({node["Node Type"] for node in nodes} - _ROW_SCANS - _ROW_BY_ROW)
  tables = {(node.get("Schema", _text(schema)), node["Relation Name"])
            for node in nodes if "Relation Name" in node}
  if other or tables != {(_text(schema), _text(name))}:
    planned = ", ".join(other) if other else "a read of " + (", ".join(t for _, t in sorted(tables)) or "no table")
    raise _refusal(
        source, f"is planned by the server as {planned}, not one row per row of {scan.table} "
        f"(aggregates, DISTINCT, window functions and inherited tables need all rows at once); "
        f"`{field}` must be rows of one table")
  return int(blocks)


def _row_nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
  """The plan's nodes that produce its rows (not those of subquery expressions)."""
  yield node
  for child in node.get("Plans", ()):
    if child.get("Parent Relationship") not in _EXPRESSIONS:
      yield from _row_nodes(child)


def _refusal(source: queries.SplitSource, problem: str) -> errors.ConfigError:
  return errors.ConfigError(errors.with_hint(
      f"partition_key={queries.CTID!r} cuts the rows of one table into ranges of its heap "
      f"blocks, but the `{source.user_sql.field}` of split {source.split!r} {problem}",
      "Use a column as partition_key (the first of order_by), or build without partitions.",
  ))


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
