"""database: a dataset from SQL queries on PostgreSQL or SQLite, streamed, typed, reproducible."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import splits
from tfds_builders.core import streaming_builder
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import sessions
from tfds_builders.database import codecs as codecs_lib
from tfds_builders.database import copy_reading
from tfds_builders.database import plan as plan_lib
from tfds_builders.database import queries
from tfds_builders.database import read_jobs
from tfds_builders.database import reading
from tfds_builders.database import session as session_lib

_DESCRIPTION = """\
Rows of SQL queries on PostgreSQL or SQLite, one example per row. Features are
inferred from the result's column types (overridable per column); NULLs follow
an explicit per-column policy; categorical, normalization and imputation
statistics are computed in SQL. All splits are read in one read-only
snapshot, streamed through a server-side cursor.
"""


@dataclasses.dataclass
class BuilderConfig(streaming_builder.StreamingConfig):
  """Where the rows come from, how they split, and how columns become features.

  Attributes:
    driver: `postgresql` or `sqlite`; empty: `sqlite` when `sqlite_path` is
      set, else `postgresql`.
    dsn: PostgreSQL DSN (`host=... dbname=... user=...`) or URI. Empty:
      libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
      ~/.pgpass). Stored redacted; never logged.
    dsn_env: Name of an environment variable holding the DSN instead.
    sqlite_path: SQLite database file, relative to `data_root`; opened
      read-only.
    data_root: Directory that `sqlite_path` is taken from.
    query: The SELECT of a single-query config: the `train` split, or every
      split with `split_percent`.
    split_queries: Split name -> SELECT, one query per split.
    params: Parameters bound to every query (PostgreSQL `%s` / `%(name)s`,
      SQLite `?` / `:name`); a dict (named) when split queries differ.
    split_percent: Split name -> percent (summing to 100) of the rows of
      `query`, assigned by a hash of `split_key` and `split_seed`: the rule
      of `core/splits.py` (md5 bucket, consecutive ranges in config order).
    split_key: Column whose value decides a row's split (hash split).
    split_seed: Seed of the hash split.
    order_by: Columns giving the stored order (unique together): two builds
      of unchanged data are then identical. Without it the order is not
      guaranteed.
    columns: Column name -> settings: type, array, numeric, temporal, nulls,
      default, impute, categorical, vocabulary, unknown, normalize, apply.
    nulls: Default NULL policy: error, default, mask or skip_row.
    numeric: Default for `numeric`/`decimal`: `float64` or `string` (exact).
    temporal: Default for date/time/timestamp: `iso` (text) or `epoch` (int64).
    statistics_split: Split whose rows give normalization and imputation
      statistics.
    fetch_size: Rows per round trip of the server-side cursor.
    partition_key: Column (first of `order_by`) whose ranges split each split
      into partitions on Beam; or `ctid` (PostgreSQL, no `order_by`): ranges
      of heap blocks of the one table the query reads (`SELECT ... FROM table
      [WHERE ...]`), whose rows are then stored in ctid order on every path.
    num_partitions: Partitions per split on Beam.
    use_beam: Read the partitions on Beam workers, in one exported snapshot;
      also chosen by `--beam_pipeline_options`.
    application_name: PostgreSQL `application_name` of the connections.
    statement_timeout: Longest a statement may run (milliseconds, or "30s",
      "5min"); empty: the server's default.
    lock_timeout: Longest a statement may wait for a lock; empty: the server's.
    read_path: How PostgreSQL rows are read: `copy` (binary COPY, decoded and
      framed in compiled code: several times faster; every column must be of
      a type it decodes, else a ConfigError names it), `cursor` (the
      server-side cursor, one Python call per value), or `auto` (the
      default: `copy` when every column allows it, else `cursor`; SQLite
      always reads through the cursor). Both store the same bytes; the one
      used is recorded in the provenance.
  """

  driver: str = ""
  dsn: str = dataclasses.field(default="", repr=False)
  dsn_env: str = ""
  sqlite_path: str = ""
  data_root: str | None = None
  query: str = ""
  split_queries: dict[str, str] = dataclasses.field(default_factory=dict)
  params: list[Any] | dict[str, Any] = dataclasses.field(default_factory=list)
  split_percent: dict[str, float] = dataclasses.field(default_factory=dict)
  split_key: str = ""
  split_seed: int = 0
  order_by: list[str] | str = dataclasses.field(default_factory=list)
  columns: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  nulls: str = "error"
  numeric: str = "float64"
  temporal: str = "iso"
  statistics_split: str = "train"
  fetch_size: int = sessions.DEFAULT_FETCH_SIZE
  partition_key: str = ""
  num_partitions: int = 1
  application_name: str = connection.DEFAULT_APPLICATION_NAME
  statement_timeout: int | str = ""
  lock_timeout: int | str = ""
  read_path: str = "auto"


def _bundled(**kwargs) -> BuilderConfig:
  return BuilderConfig(
      data_root=str(paths.bundled_data_dir("database")), sqlite_path="demo.sqlite", **kwargs
  )


_SPLIT_NAME = re.compile(r"^\w+$")

_PENGUIN_COLUMNS = {
    "species": {"categorical": True},
    "island": {"vocabulary": ["Biscoe", "Dream", "Torgersen"], "unknown": "other"},
    "bill_length_mm": {"normalize": "standard", "impute": "mean"},
    "body_mass_g": {"impute": "median"},
    "sex": {"nulls": "mask"},
    "comment": {"nulls": "default", "default": ""},
}


class Builder(streaming_builder.StreamingBuilder):
  """Rows of SQL queries as a TFDS dataset."""

  DESCRIPTION = _DESCRIPTION
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      _bundled(
          name="demo",
          description="Bundled SQLite penguins table, 75/25 hash split on id, "
          "with categorical, normalized, imputed and masked columns.",
          query="SELECT * FROM penguins",
          split_percent={"train": 75, "test": 25},
          split_key="id",
          order_by=["id"],
          columns=_PENGUIN_COLUMNS,
          partition_key="id",
          num_partitions=3,
      ),
      _bundled(
          name="split_queries",
          description="Bundled SQLite penguins table, one query per split "
          "(observed before / from 2009), NULL rows skipped.",
          split_queries={
              "train": "SELECT id, species, bill_length_mm, body_mass_g, observed_on "
                       "FROM penguins WHERE observed_on < :year_start",
              "test": "SELECT id, species, bill_length_mm, body_mass_g, observed_on "
                      "FROM penguins WHERE observed_on >= :year_start",
          },
          params={"year_start": "2009-01-01"},
          order_by=["id"],
          nulls="skip_row",
          temporal="epoch",
      ),
  ]

  def default_ordered(self) -> bool:
    # Rows the user sorted with order_by are read in that order; others have none to keep.
    return bool(self.builder_config.order_by)

  def inferred_features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(self._plan.features())

  @contextlib.contextmanager
  def _build_context(self, download_config: tfds.download.DownloadConfig) -> Iterator[reading.BuildReading]:
    """One read-only snapshot for every split and statistic; Beam workers join it."""
    on_beam = self._uses_beam(download_config)
    with session_lib.open_session(self._plan.spec) as session:
      yield reading.BuildReading(session, on_beam, self._plan.prepare(session, on_beam=on_beam))

  def _split_streams(self, dl_manager: tfds.download.DownloadManager, context: reading.BuildReading):
    del dl_manager  # rows come from the database, nothing is downloaded
    return {split: reading.split_examples(jobs, context) for split, jobs in context.prepared.jobs.items()}

  def _after_build(self, context: reading.BuildReading, split_infos: Sequence[tfds.core.SplitInfo]) -> None:
    # Rows are encoded by the plan's codecs, not by the features: class names
    # computed in SQL only have to reach features.json, which TFDS writes after this.
    del split_infos
    prepared = context.prepared
    for name, names in prepared.class_names.items():
      feature = self.info.features[name]
      if feature.num_classes is None:
        feature.names = list(names)
    self.info.metadata["preprocessing"] = prepared.preprocessing
    self.record_provenance(**prepared.provenance)

  @functools.cached_property
  def _plan(self) -> plan_lib.QueryPlan:
    return self.planned(_plan_query, "schema pass: the query's columns, types and NULLs")


def _plan_query(config: BuilderConfig) -> plan_lib.QueryPlan:
  spec = _check_config(config)
  return plan_lib.QueryPlan.from_config(config, spec, functools.partial(_check_key_columns, config))


def _check_config(config: BuilderConfig) -> connection.ConnectionSpec:
  """Validates the config on its own; returns where to connect."""
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"database config {config.name!r}: {message}")

  driver = config.driver or ("sqlite" if config.sqlite_path else "postgresql")
  if driver not in connection.DRIVERS:
    raise fail(f"driver={config.driver!r}; use one of {connection.DRIVERS}.")
  if driver == "sqlite" and not config.sqlite_path:
    raise fail("driver='sqlite' needs `sqlite_path` (the database file).")
  if driver == "postgresql" and config.sqlite_path:
    raise fail("`sqlite_path` is set but driver='postgresql'; drop one of them.")
  if driver == "sqlite" and (config.dsn or config.dsn_env):
    raise fail("`dsn`/`dsn_env` are for PostgreSQL; SQLite reads `sqlite_path`.")
  if config.dsn and config.dsn_env:
    raise fail("give `dsn` or `dsn_env`, not both.")
  _check_splits(config, fail)
  if config.fetch_size < 1 or config.num_partitions < 1:
    raise fail("fetch_size and num_partitions must be at least 1.")
  order_by = plan_lib.as_names(config.order_by)
  if config.partition_key == queries.CTID and (driver == "sqlite" or order_by):
    raise fail(
        "partition_key='ctid' cuts a PostgreSQL table into ranges of heap blocks and stores "
        "its rows in ctid order, " + (
            "but SQLite has no ctid; use an integer column (e.g. `rowid AS row_id`) as "
            "partition_key and order_by." if driver == "sqlite" else
            f"which is not the order of order_by {order_by}; drop order_by (the order is then "
            "the table's physical order in the snapshot), or partition by its first column.")
    )
  if config.partition_key and order_by and order_by[0] != config.partition_key:
    raise fail(
        f"partition_key {config.partition_key!r} must be the first column of order_by "
        f"{order_by}, so that partitions in key order give the serial order."
    )
  if not isinstance(config.columns, Mapping):
    raise fail("`columns` must map column names to settings.")
  for option, choices in (("nulls", codecs_lib.NULL_POLICIES), ("numeric", codecs_lib.NUMERIC_MODES),
                          ("temporal", codecs_lib.TEMPORAL_MODES), ("read_path", copy_reading.READ_PATHS)):
    errors.check_choice(getattr(config, option), choices, option, fail)
  if driver == "sqlite" and config.read_path == "copy":
    raise fail("read_path='copy' reads PostgreSQL's binary COPY; SQLite is read with 'auto' or 'cursor'.")
  if config.nulls == "default":
    raise fail("nulls='default' needs a value per column: set it in `columns` instead.")
  sqlite_path = str(paths.resolve(config.sqlite_path, config.data_root)) if driver == "sqlite" else ""
  return connection.ConnectionSpec(
      driver=driver, dsn=config.dsn, dsn_env=config.dsn_env, sqlite_path=sqlite_path,
      application_name=config.application_name,
      statement_timeout=config.statement_timeout, lock_timeout=config.lock_timeout,
  )


def _check_splits(config: BuilderConfig, fail) -> None:
  if bool(config.query) == bool(config.split_queries):
    raise fail(
        "give either `query` (one SELECT) or `split_queries` ({split: SELECT}), "
        "not both or neither."
    )
  if config.split_queries and (config.split_percent or config.split_key):
    raise fail("`split_percent`/`split_key` divide `query`; with `split_queries` leave them out.")
  if bool(config.split_percent) != bool(config.split_key):
    raise fail("a hash split needs both `split_percent` ({split: percent}) and `split_key` (a column).")
  if config.split_percent and (problem := splits.check_percent(config.split_percent)):
    raise fail(problem)
  names = list(config.split_queries or config.split_percent or ["train"])
  bad = [name for name in names if not _SPLIT_NAME.match(str(name))]
  if bad:
    raise fail(f"split names {bad} are not valid; use letters, digits and _.")
  empty = [split for split, query in config.split_queries.items() if not str(query).strip()]
  if empty:
    raise fail(f"split_queries {empty} are empty; give each split a SELECT.")


def _check_key_columns(config: BuilderConfig, order_by: Sequence[str], names: list[str]) -> None:
  for setting, wanted in (("order_by", list(order_by)), ("split_key", [config.split_key]),
                          ("partition_key", [config.partition_key if config.partition_key != queries.CTID else ""])):
    missing = [name for name in wanted if name and name not in names]
    if missing:
      raise errors.ConfigError(
          f"{setting} names {missing}, which the query does not return. Its "
          f"columns are {names}; add them to the SELECT or fix the names."
      )
