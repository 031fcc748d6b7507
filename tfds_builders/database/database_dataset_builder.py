"""database: a dataset from SQL queries on PostgreSQL or SQLite, streamed, typed, reproducible."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders.core import paths
from tfds_builders.core import streaming_builder
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import sessions
from tfds_builders.database import build_dirs
from tfds_builders.database import plan as plan_lib
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
      into partitions on Beam.
    num_partitions: Partitions per split on Beam.
    use_beam: Read the partitions on Beam workers, in one exported snapshot;
      also chosen by `--beam_pipeline_options`.
    application_name: PostgreSQL `application_name` of the connections.
    statement_timeout: Longest a statement may run (milliseconds, or "30s",
      "5min"); empty: the server's default.
    lock_timeout: Longest a statement may wait for a lock; empty: the server's.
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


def _bundled(**kwargs) -> BuilderConfig:
  return BuilderConfig(
      data_root=str(paths.bundled_data_dir("database")), sqlite_path="demo.sqlite", **kwargs
  )


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

  def download_and_prepare(self, **kwargs) -> None:
    """TFDS's `download_and_prepare`; a failure also removes the folders it created."""
    with build_dirs.removed_on_failure(
        self, kwargs.get("download_dir"), kwargs.get("download_config")
    ):
      super().download_and_prepare(**kwargs)

  def default_ordered(self) -> bool:
    # Rows the user sorted with order_by are read in that order; others have none to keep.
    return bool(self.builder_config.order_by)

  def inferred_features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(self._plan.features())

  @contextlib.contextmanager
  def _build_context(self, download_config: tfds.download.DownloadConfig) -> Iterator[_Reading]:
    """One read-only snapshot for every split and statistic; Beam workers join it."""
    with session_lib.open_session(self._plan.spec) as session:
      yield _Reading(session, on_beam=self._uses_beam(download_config))

  def _split_streams(self, dl_manager: tfds.download.DownloadManager, context: _Reading):
    del dl_manager  # rows come from the database, nothing is downloaded
    prepared = self._plan.prepare(context.session, on_beam=context.on_beam)
    for name, names in prepared.class_names.items():
      feature = self.info.features[name]
      if feature.num_classes is None:  # names computed in SQL just now
        feature.names = list(names)
    self.info.metadata["preprocessing"] = prepared.preprocessing
    self.record_provenance(**prepared.provenance)
    return {split: _examples(jobs, context) for split, jobs in prepared.jobs.items()}

  @functools.cached_property
  def _plan(self) -> plan_lib.QueryPlan:
    return self.planned(plan_lib.QueryPlan.from_config, "schema pass: the query's columns, types and NULLs")


@dataclasses.dataclass(frozen=True)
class _Reading:
  """A build's context: its read-only session, and whether Beam workers read the partitions."""

  session: sessions.ReadSession
  on_beam: bool


def _examples(jobs: Sequence[reading.ReadJob], context: _Reading):
  """A split's examples: read in the build's session, or one partition per Beam worker."""
  if context.on_beam:
    return streaming_builder.Partitions(
        [functools.partial(reading.read_partition, job) for job in jobs]
    )
  (job,) = jobs
  return reading.read_in_session(job, context.session)
