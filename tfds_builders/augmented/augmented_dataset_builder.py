"""augmented: new fields for every example of an existing dataset, as a new version or as an overlay."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from etils import epath
import tensorflow_datasets as tfds

from tfds_builders import tfds_internals
from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import function_calls
from tfds_builders.augmented import generators
from tfds_builders.augmented import overlay_format
from tfds_builders.augmented import plan as plan_lib
from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import streaming_builder

_DESCRIPTION = """\
An existing dataset (a prepared TFDS dataset or raw TFRecord files of
tf.train.Example) with new fields added to every example, computed by a user
function or joined from a side table. `materialize` writes a new version whose
base features are the base's bytes, copied without decoding; `overlay` writes
only the new fields, which `tfds_builders.load_augmented` zips back onto the
unmodified base, checking every example's alignment.
"""

MODES = ("materialize", "overlay")
MISSING_POLICIES = ("error", "skip", "default")
# Where the generators count the examples they leave out, inside TFDS's incomplete build dir.
_UNMATCHED_DIR = ".unmatched"


@dataclasses.dataclass
class BuilderConfig(streaming_builder.StreamingConfig):
  """The base, where the new fields come from, and the output mode.

  Attributes:
    base: A prepared TFDS dataset: its version directory, or
      `name[/config][:version]` under `base_data_dir`.
    base_data_dir: The data_dir of a base given by name.
    base_records: Instead of `base`: raw TFRecord files of tf.train.Example,
      `{split: files, directories or globs}`.
    base_compression: `auto` (GZIP detected), `none` or `gzip` for base_records.
    splits: The base splits to augment (default: all).
    mode: `materialize` (base features + new fields, a new dataset version)
      or `overlay` (new fields only, loaded with `load_augmented`).
    function: `"package.module:function"`, called per example with a dict of
      NumPy values; returns a dict of new fields.
    features: Declared features of new fields, e.g. `{"label": "int64",
      "embedding": "float32[16]", "tags": "string[None]"}`; others are
      inferred (function: from its first results, side table: from columns).
    side_table: A CSV or Parquet file joined on `join_key`.
    side_table_format: `auto` (by extension), `csv` or `parquet`.
    side_table_sql: Instead of `side_table`: a read-only SQL query whose rows
      form the side table, read with the database builder's connection code.
    side_table_connection: Where `side_table_sql` runs: fields of
      `core.sql.connection.ConnectionSpec`, e.g. `{"driver": "postgresql",
      "dsn_env": "MY_DSN"}` or `{"driver": "sqlite", "sqlite_path": "x.db"}`.
    join_key: The base feature (scalar int or string) matched with the side
      table's key column.
    side_table_key: The side table's key column (default: `join_key`).
    side_table_columns: Columns to add (default: every column but the key).
    missing_policy: For an example whose key has no row: `error`, `skip`
      (dropped, counted in the metadata) or `default`.
    missing_defaults: `{column: value}` used under `missing_policy="default"`.
    overwrite_fields: New fields allowed to replace base features of that name.
    verify_base: Overlay only. An overlay joined from a side table walks each
      base record's frame, checks its data against its CRC and reads its join
      key in one compiled pass, without parsing the records (that is what
      makes it fast); True reads and parses every record as materialize
      does. Either way the loader's reads check every CRC.
    constant_fields: New fields with one value in every split (`{"source":
      "web"}`), or one value per split (`{"weight": {"train": 1.0, "test":
      0.5}}`, naming exactly the splits built); typed by `features` or
      inferred. An overlay stores them in metadata.json only (no data
      bytes); materialize appends them to every record.
    num_workers: Processes calling `function` in a local build (Beam builds
      run one shard per Beam worker instead).
    data_root: Directory that relative paths are taken from.
    use_beam: Augment each base file on a Beam worker.
  """

  base: str = ""
  base_data_dir: str | None = None
  base_records: dict[str, list[str] | str] = dataclasses.field(default_factory=dict)
  base_compression: str = "auto"
  splits: list[str] = dataclasses.field(default_factory=list)
  mode: str = "materialize"
  function: str = ""
  features: dict[str, Any] = dataclasses.field(default_factory=dict)
  side_table: str = ""
  side_table_format: str = "auto"
  side_table_sql: str = ""
  side_table_connection: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # may hold a password
  join_key: str = ""
  side_table_key: str = ""
  side_table_columns: list[str] = dataclasses.field(default_factory=list)
  missing_policy: str = "error"
  missing_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
  overwrite_fields: list[str] = dataclasses.field(default_factory=list)
  verify_base: bool = False
  constant_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
  num_workers: int = 1
  data_root: str | None = None


def _bundled(**kwargs) -> BuilderConfig:
  return BuilderConfig(
      data_root=str(paths.bundled_data_dir("augmented")),
      base_records={"train": ["base/train-*.tfrecord"], "test": ["base/test-*.tfrecord"]},
      **kwargs,
  )


class Builder(streaming_builder.StreamingBuilder):
  """An existing dataset plus new fields, materialized or as an overlay.

  Planning (`AugmentationPlan.from_config`, run when the builder is made)
  reads the base's schema and counts (a raw base's first record only, when
  the overlay's own walk learns the rest), the whole side table, and the
  function's results on its first examples.
  """

  DESCRIPTION = _DESCRIPTION
  PAIRS_SUPERVISED_KEYS = True
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release (raw TFRecord bases start at 1.0.0)."}
  BUILDER_CONFIGS = [
      _bundled(
          name="demo",
          description="Bundled raw TFRecords plus labels.csv joined on id, materialized.",
          side_table="labels.csv",
          join_key="id",
      ),
      _bundled(
          name="demo_overlay",
          description="The same join written as an overlay of the new fields only.",
          side_table="labels.csv",
          join_key="id",
          mode="overlay",
      ),
      _bundled(
          name="demo_function",
          description="Bundled raw TFRecords plus fields computed from the text.",
          function="tfds_builders.augmented.example_functions:text_statistics",
      ),
  ]

  # canonical_version and release_notes are designated overrides of TFDS's (see tfds_internals).
  @functools.cached_property
  def canonical_version(self) -> tfds.core.Version:
    """The config's version, else the minor version after a prepared base's, else VERSION.

    TFDS asks for it first, before the folder it names can be checked for a
    prepared version; so it is a planning step of its own, which reads only
    the base's dataset_info.json, and the full plan is not made for it.
    """
    config = self.builder_config
    if config.version:
      return tfds.core.Version(str(config.version))
    if config.base and not config.base_records:
      return self.planned(_version_after_base, "the base's version")
    return self.VERSION

  @property
  def release_notes(self) -> dict[str, str]:
    """The config's notes, else one note for this version: what the plan adds to the base."""
    if self.builder_config.release_notes:
      return self.builder_config.release_notes
    return {str(self.version): plan_lib.release_note(self.builder_config, None if self.has_prepared_version() else self._plan)}

  def default_ordered(self) -> bool:
    # An overlay is zipped with its base by position; a materialized version stands alone.
    return self.builder_config.mode == "overlay"

  def inferred_features(self) -> tfds.features.FeaturesDict:
    return self._plan.features

  def expected_examples(self, split: str) -> int | None:
    """The base split's count: one output example per base example.

    None while a walked base is still uncounted, and when a materialized
    version drops examples without a side-table row (`missing_policy: skip`).
    """
    plan = self._plan
    if plan.walk or plan.drops_examples or split not in plan.base.splits:
      return None
    return plan.base.splits[split].num_examples

  @contextlib.contextmanager
  def _build_context(self, download_config: tfds.download.DownloadConfig) -> Iterator[generators.BuildContext]:
    """The user function and its worker pool, the walk of a raw base, and the tally of unmatched examples, for one build."""
    plan, walk = self._plan, None
    uses_beam = self._uses_beam(download_config)
    if plan.walk and uses_beam:  # Beam's partitions need every file's offset first
      plan = plan.with_base(plan.walk.start().base())
    elif plan.walk:
      walk = plan.walk.start()
    # Resolved for this build, so an edited function is not an earlier build's; Beam workers resolve their own.
    function = None if uses_beam or not plan.function else function_calls.resolve(
        plan.function, plan.base.features_source)
    # Inside TFDS's incomplete.* directory: visible to Beam workers, gone if the build fails.
    tally_dir = epath.Path(self.data_path) / _UNMATCHED_DIR
    tally_dir.mkdir(parents=True, exist_ok=True)
    try:
      with function_calls.worker_pool(plan.num_workers if function else 1, function) as pool:
        yield generators.BuildContext(
            plan=plan, pool=pool, function=function, walk=walk, unmatched=generators.UnmatchedTally(str(tally_dir)))
    finally:
      tally_dir.rmtree(missing_ok=True)

  def _split_streams(self, dl_manager: tfds.download.DownloadManager, context: generators.BuildContext):
    del dl_manager  # sources are local or remote paths, never downloaded
    plan = context.plan
    if plan.path == plan_lib.CONSTANTS_ONLY:  # nothing to read or write: see _write_splits
      return {split: () for split in plan.base.splits}
    for split in plan.base.splits:
      generators.check_some_match(plan, split)
    if context.walk:  # file offsets are learned as the walk goes: one partition reads the files in order
      return {split: streaming_builder.Partitions([functools.partial(generators.walked_split, context, split)])
              for split in plan.base.splits}
    return {
        split: streaming_builder.Partitions([
            functools.partial(generators.PATHS[plan.path], context, split, index, offset)
            for index, offset in enumerate(base_split.offsets)
        ])
        for split, base_split in plan.base.splits.items()
    }

  def _write_splits(
      self, streams: Mapping[str, Any], download_config: tfds.download.DownloadConfig
  ) -> list[tfds.core.SplitInfo]:
    """Writes the splits; an overlay of constants alone writes no shard: each split is 0 examples, 0 bytes."""
    if self._plan.path != plan_lib.CONSTANTS_ONLY:
      return super()._write_splits(streams, download_config)
    return [
        tfds.core.SplitInfo(name=split, shard_lengths=[], num_bytes=0,
                            filename_template=tfds_internals.filename_template(self, split))
        for split in streams
    ]

  def _after_build(self, context: generators.BuildContext, split_infos: Sequence[tfds.core.SplitInfo]) -> None:
    plan = context.plan.with_base(context.walk.base()) if context.walk else context.plan
    unmatched = context.unmatched.totals([info.name for info in split_infos])
    self.info.metadata[overlay_format.METADATA_KEY] = plan.metadata(unmatched)
    self.record_provenance(**plan.provenance())

  @functools.cached_property
  def _plan(self) -> plan_lib.AugmentationPlan:
    def resolve(config: BuilderConfig) -> plan_lib.AugmentationPlan:
      _check_config(config)
      return plan_lib.AugmentationPlan.from_config(config)

    return self.planned(resolve, "the base's features and counts, the side table or function's fields")


def _version_after_base(config: BuilderConfig) -> tfds.core.Version:
  """The minor version after the prepared base's: the version a materialized augmentation of it gets."""
  base_version = tfds.core.Version(base_lib.version_of(plan_lib.base_location(config), config.base_data_dir))
  return tfds.core.Version(f"{base_version.major}.{base_version.minor + 1}.0")


def _check_config(config: BuilderConfig) -> None:
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"augmented config {config.name!r}: {message}")

  errors.check_choice(config.mode, MODES, "mode", fail)
  if config.mode == "overlay" and config.shuffle:
    raise fail(
        "shuffle: true reorders the overlay, which is zipped with its base by position. "
        "Drop shuffle (load_augmented keeps the base's order), or use mode='materialize'."
    )
  if bool(config.base) == bool(config.base_records):
    raise fail(
        "give either `base` (a prepared TFDS dataset: directory or name) or "
        "`base_records` ({split: TFRecord files}), not both or neither."
    )
  has_table = bool(config.side_table or config.side_table_sql)
  if config.side_table and config.side_table_sql:
    raise fail("give `side_table` (a file) or `side_table_sql` (a query), not both.")
  if bool(config.side_table_sql) != bool(config.side_table_connection):
    raise fail("`side_table_sql` and `side_table_connection` go together: the query and where it runs.")
  if not config.function and not has_table and not config.constant_fields and not plan_lib.compacts(config):
    raise fail(
        "give `function` ('package.module:function'), a side table or `constant_fields` (any of them): "
        "where the new fields come from.")
  if not isinstance(config.constant_fields, dict):
    raise fail(f"constant_fields={config.constant_fields!r}; use {{name: value}} or {{name: {{split: value}}}}.")
  if has_table and not config.join_key:
    raise fail("a side table needs `join_key`: the base feature matched with the table's key column.")
  if config.join_key and not has_table:
    raise fail("`join_key` only applies with a side table.")
  errors.check_choice(config.missing_policy, MISSING_POLICIES, "missing_policy", fail)
  if config.missing_defaults and config.missing_policy != "default":
    raise fail("missing_defaults only applies with missing_policy='default'.")
  if config.verify_base and config.mode != "overlay":
    raise fail("verify_base only applies with mode='overlay' (materialize reads and checks every record).")
  if not isinstance(config.num_workers, int) or config.num_workers < 1:
    raise fail(f"num_workers={config.num_workers!r}; use a positive integer.")
