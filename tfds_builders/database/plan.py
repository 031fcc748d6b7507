"""A database config checked against the database, then prepared inside the build's snapshot."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from absl import logging
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import splits
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import statements
from tfds_builders.core.sql import types as sql_types
from tfds_builders.database import codecs as codecs_lib
from tfds_builders.database import columns as columns_lib
from tfds_builders.database import copy_reading
from tfds_builders.database import nullability
from tfds_builders.database import physical
from tfds_builders.database import queries
from tfds_builders.database import read_jobs
from tfds_builders.database import session as session_lib


class QueryConfig(Protocol):
  """The fields of the card's BuilderConfig that the plan reads (the card imports this module)."""

  name: str
  query: str
  split_queries: Mapping[str, str]
  params: statements.Params
  split_percent: Mapping[str, float]
  split_key: str
  split_seed: int
  order_by: list[str] | str
  columns: Mapping[str, Mapping[str, Any]]
  nulls: str
  numeric: str
  temporal: str
  statistics_split: str
  fetch_size: int
  partition_key: str
  num_partitions: int
  read_path: str


NO_ORDER = (
    "not guaranteed: no `order_by` was given, so two builds may store the rows "
    "in different orders"
)


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What `QueryPlan.prepare` computed inside the build's snapshot.

  Attributes:
    jobs: Split -> its read jobs (one, or one per Beam partition).
    class_names: Column -> ClassLabel names (categorical columns).
    preprocessing: Column -> statistics, for `info.metadata["preprocessing"]`.
    provenance: What was read, for `record_provenance`.
  """

  jobs: dict[str, list[read_jobs.ReadJob]]
  class_names: dict[str, tuple[str, ...]]
  preprocessing: dict[str, Any]
  provenance: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class QueryPlan:
  """A config checked against the database: connection, sources, columns, order."""

  config: QueryConfig
  spec: connection.ConnectionSpec
  sources: tuple[queries.SplitSource, ...]
  column_plans: tuple[columns_lib.ColumnPlan, ...]
  order_by: tuple[str, ...]
  described: tuple[tuple[str, Any], ...]  # (name, SqlType) as the database reported them

  @classmethod
  def from_config(
      cls, config: QueryConfig, spec: connection.ConnectionSpec,
      check_keys: Callable[[Sequence[str], list[str]], None],
  ) -> QueryPlan:
    """Reads the result columns of the config's queries (LIMIT 0) and plans their features.

    Args:
      config: A config the card has checked on its own.
      spec: Where to connect, as the card resolved it.
      check_keys: The card's check of the key columns (`order_by`, then the
        result's column names), run before the columns are planned.

    Raises:
      ConfigError, SourceError, SchemaError: see the dataset card.
    """
    sources = _sources(config)
    key_column = "" if config.partition_key == queries.CTID else config.partition_key
    order_by = tuple(as_names(config.order_by) or as_names(key_column))
    with session_lib.open_session(spec) as session:
      result = _result_columns(session, sources[0])
      not_null = _never_null(session, sources[0], result)
      for source in sources[1:]:
        _check_same_columns(
            _signature(result), source, _signature(_result_columns(session, source)),
            f"split {sources[0].split!r} returns",
        )
        not_null &= _never_null(session, source, result)
    check_keys(order_by, [column.name for column in result])
    plans = columns_lib.plan_columns(
        result, config.columns,
        columns_lib.Defaults(nulls=config.nulls, numeric=config.numeric, temporal=config.temporal),
        cast_example="CAST(column AS TEXT)" if spec.driver == "sqlite" else "column::text",
        not_null=not_null,
    )
    return cls(config, spec, tuple(sources), tuple(plans), order_by, tuple(_signature(result)))

  def features(self) -> dict[str, tfds.features.FeatureConnector]:
    """Every column's feature (and NULL mask), in result order."""
    found = {}
    for plan in self.column_plans:
      found.update(plan.features())
    return found

  def prepare(self, session: sessions.ReadSession, on_beam: bool) -> Prepared:
    """Checks the snapshot's data, computes the statistics, plans the reads.

    Args:
      session: The build's read-only session: everything is read in it.
      on_beam: Plan Beam partitions, in a snapshot exported for the workers.
    """
    config = self.config
    for source in self.sources:
      _check_same_columns(
          list(self.described), source, _signature(_result_columns(session, source)),
          "the build was planned with",
      )
    if config.split_key:
      _refuse_null_keys(session, self.sources[0], config.split_key, "split_key")
    split_sources = self._split_sources()
    statistics = columns_lib.compute_statistics(
        session, self.column_plans, split_sources,
        next((s for s in split_sources if s.split == config.statistics_split), None),
    )
    codecs = tuple(columns_lib.finalize(self.column_plans, statistics))
    read_path = self._read_path(session, codecs)
    snapshot = session.export_snapshot() if on_beam else None
    jobs, queries_record = {}, {}
    for source in split_sources:
      ranges = self._partition_ranges(session, source, on_beam)
      jobs[source.split] = [
          self._job(session, source, codecs, snapshot, partition, index, len(ranges), read_path)
          for index, partition in enumerate(ranges)
      ]
      queries_record[source.split] = self._query_record(session, source, ranges)
    if not self.order_by:
      logging.warning("database/%s: row order is %s.", config.name, NO_ORDER)
    preprocessing = {name: stats["record"] for name, stats in statistics.items()}
    return Prepared(
        jobs=jobs,
        class_names={c.name: c.class_names for c in codecs if c.class_names is not None},
        preprocessing=preprocessing,
        provenance={
            "source": session.facts(),
            "queries": queries_record,
            "order": {"order_by": list(self.order_by)} if self.order_by else NO_ORDER,
            "split_mode": _split_mode(config),
            "columns": {codec.name: _column_record(codec) for codec in codecs},
            "read_path": read_path.record(),
            "preprocessing": preprocessing,
        },
    )

  def _split_sources(self) -> list[queries.SplitSource]:
    if not self.config.split_percent:
      return list(self.sources)
    return [
        dataclasses.replace(self.sources[0], split=split, bucket_range=bucket_range)
        for split, bucket_range in splits.bucket_ranges(self.config.split_percent).items()
    ]

  def _partition_ranges(
      self, session, source: queries.SplitSource, on_beam: bool,
  ) -> list[tuple[Any, Any] | queries.BlockRange | None]:
    """Key ranges of about equal row counts, computed in SQL (ntile), or block ranges (ctid).

    A ctid config is checked (one table's rows) and read in ctid order on
    every path; only Beam cuts it into ranges.
    """
    key, count = self.config.partition_key, self.config.num_partitions
    if key == queries.CTID:
      return physical.block_ranges(session, source, count if on_beam else 1)
    if not on_beam or not key or count < 2:
      return [None]
    _refuse_null_keys(session, source, key, "partition_key")
    starts = session.fetch_all(queries.partition_starts_sql(session, source, key, count))
    return queries.partition_ranges([row[0] for row in starts])

  def _read_path(self, session, codecs) -> copy_reading.ReadPath:
    """The config's `read_path` resolved once for every split: the columns are the same in each."""
    plain = dataclasses.replace(self.sources[0], bucket_range=None)
    names = [plan.name for plan in self.column_plans]
    return copy_reading.resolve(
        self.config.read_path, session, queries.rows_sql(session, plain, ()), codecs,
        [names.index(name) for name in self.order_by], self.config.name)

  def _job(self, session, source, codecs, snapshot, partition, index, count, read_path) -> read_jobs.ReadJob:
    statement = queries.rows_sql(
        session, source, self.order_by, partition=partition,
        partition_key=self.config.partition_key,
    )
    names = [plan.name for plan in self.column_plans]
    label = f"split {source.split!r}" + (f", partition {index + 1}/{count}" if count > 1 else "")
    return read_jobs.ReadJob(
        spec=self.spec, snapshot=snapshot, statement=statement, codecs=codecs, key_names=self.order_by,
        key_indexes=tuple(names.index(name) for name in self.order_by),
        split=source.split, label=label, fetch_size=self.config.fetch_size,
        first_row=partition.first_row if isinstance(partition, queries.BlockRange) else 0,
        copy_formats=read_path.formats if read_path.used == "copy" else None,
    )

  def _query_record(self, session, source: queries.SplitSource, ranges) -> dict[str, Any]:
    """The serial statement of a split, its parameters, partitions and skipped rows."""
    statement = queries.rows_sql(session, source, self.order_by, partition_key=self.config.partition_key)
    record: dict[str, Any] = {"sql": statement.sql, "params": statement.params}
    if self.config.partition_key == queries.CTID:
      record["partitions"] = [physical.record(block_range) for block_range in ranges]
    elif len(ranges) > 1:
      record["partitions"] = [
          [columns_lib.json_value(low), columns_lib.json_value(high)] for low, high in ranges
      ]
    skipping = [plan.name for plan in self.column_plans if plan.null_action == "skip_row"]
    if skipping:
      statement = queries.null_count_sql(session, source, skipping)
      record["rows_skipped_for_nulls"] = session.fetch_all(statement)[0][0]
    return record


def _column_record(codec: codecs_lib.ColumnCodec) -> dict[str, str]:
  return {
      "source_type": codec.sql_type.source, "type": codec.sql_type.label(),
      "stored_as": codec.storage, "nulls": codec.nulls.action,
  }


def _refuse_null_keys(session, source: queries.SplitSource, column: str, setting: str) -> None:
  nulls = session.fetch_all(queries.null_count_sql(session, source, [column]))[0][0]
  if nulls:
    where = f"split {source.split!r}" if setting == "partition_key" else "the query"
    raise errors.SourceError(
        errors.with_hint(
            f"{setting} column {column!r} is NULL in {nulls} rows of {where}, which "
            "would belong to no split or partition",
            f"Filter them out (WHERE {column} IS NOT NULL) or COALESCE the key.",
        )
    )


def _result_columns(session, source: queries.SplitSource) -> list[sessions.ResultColumn]:
  """Runs the split's query with LIMIT 0 for its result columns and types."""
  plain = dataclasses.replace(source, bucket_range=None)
  try:
    return session.result_columns(queries.rows_sql(session, plain, (), limit_zero=True))
  except sql_types.UntypedColumnError as error:
    raise errors.SchemaError(errors.with_hint(
        str(error),
        f"Cast it in the query, e.g. {error.cast_example}, or give its type: "
        f"columns={{{error.column!r}: {{'type': 'text'}}}}.",
    )) from None


def _never_null(
    session, source: queries.SplitSource, result: Sequence[sessions.ResultColumn],
) -> set[str]:
  """Names of the columns that the database guarantees are never NULL in this split's query."""
  plain = dataclasses.replace(source, bucket_range=None)
  statement = queries.rows_sql(session, plain, ())
  return {result[position].name for position in nullability.never_null(session, statement)
          if position < len(result)}


def _signature(columns: Sequence[sessions.ResultColumn]) -> list[tuple[str, Any]]:
  return [(column.name, column.sql_type) for column in columns]


def _check_same_columns(
    expected: list[tuple[str, Any]], source: queries.SplitSource,
    found: list[tuple[str, Any]], reference: str,
) -> None:
  if found != expected:
    raise errors.SchemaError(
        errors.with_hint(
            f"Split {source.split!r} returns columns {_column_list(found)}, but "
            f"{reference} {_column_list(expected)}",
            "Every split query must return the same column names and types, in "
            "the same order (cast or alias them), and tables must not change "
            "their columns during a build.",
        )
    )


def _column_list(items) -> str:
  return ", ".join(f"{name} {sql_type.label() if sql_type else '?'}" for name, sql_type in items)


def _sources(config: QueryConfig) -> list[queries.SplitSource]:
  if config.split_queries:
    return [
        queries.SplitSource(split, queries.user_statement(query, config.params, "split_queries"))
        for split, query in config.split_queries.items()
    ]
  return [queries.SplitSource(
      "all" if config.split_percent else "train", queries.user_statement(config.query, config.params, "query"),
      split_key=config.split_key, split_seed=config.split_seed,
  )]


def _split_mode(config: QueryConfig) -> dict[str, Any]:
  if config.split_queries:
    return {"mode": "one query per split"}
  if config.split_percent:
    return {
        "mode": "hash split",
        "key": config.split_key,
        "percent": dict(config.split_percent),
        "seed": config.split_seed,
        "rule": "bucket = first 32 bits of md5('<seed>:<key as text>'); splits take "
                "consecutive bucket ranges in config order",
    }
  return {"mode": "single query -> train"}


def as_names(value: list[str] | str) -> list[str]:
  """A config's column name or list of names, as a list."""
  return [value] if isinstance(value, str) and value else list(value or [])
