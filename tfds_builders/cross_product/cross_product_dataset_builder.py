"""cross_product: every pair of records from two TFRecord (or ArrayRecord) inputs of tf.train.Example."""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import functools
from collections.abc import Iterator, Sequence

from etils import epath
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import progress
from tfds_builders.core import streaming_builder
from tfds_builders.cross_product import pairs
from tfds_builders.cross_product import plan as plan_lib
from tfds_builders.cross_product import spill

_DESCRIPTION = """\
Every pair of records from two TFRecord or ArrayRecord inputs of tf.train.Example (`product`),
or every unordered pair of one input (`combinations`), optionally sampled.
Each example holds the features of both records and their row indices
`left_index` and `right_index`. Features are inferred from the records (or
declared); names present on both sides are resolved by `collision_policy`.
"""

COLLISION_POLICIES = ("prefix", "error", "left_wins", "right_wins")
DEFAULT_MEMORY_BUDGET_BYTES = 256 * 1024 * 1024
# Pairs per partition (one Beam worker task, one shard there): about this many bytes.
_PARTITION_BYTES = 256 * 1024 * 1024
_SPILL_DIR = "cross_product_spill.tmp"


@dataclasses.dataclass
class BuilderConfig(streaming_builder.StreamingConfig):
  """Which records to pair, and how.

  Attributes:
    left: TFRecord or ArrayRecord files, directories or globs of
      tf.train.Example (a prepared dataset's folder too): the first record
      of each pair.
    right: The same for the second record; empty under `combinations`.
    mode: `product`: all N×M pairs (i, j). `combinations`: the pairs i < j of
      `left` alone.
    collision_policy: For feature names found on both sides. `prefix`: every
      feature goes under `left/` or `right/` (nested features). `error`: refuse
      the build, listing the names. `left_wins` / `right_wins`: flat names;
      the other side's copy is dropped.
    left_schema: Declared features of `left` as `{name: "int64_list[3]"}`
      (kinds bytes_list/float_list/int64_list; `*` for a varying length).
      Records that disagree are an error. None: inferred from the records.
    right_schema: The same for `right`.
    compression: `auto` (GZIP detected per file), `none` or `gzip`.
    max_pairs: Refuse the build when it would consider more pairs than this
      (N×M, or N(N-1)/2), before anything is written. None: no limit.
    sample_rate: Keep exactly round(sample_rate × pairs) of the pairs, in
      (0, 1]; which ones is decided by a permutation seeded by sample_seed,
      the same on every build.
    sample_seed: Seed of the sample.
    memory_budget_bytes: Memory the block of right records held at a time may
      take. A right side larger than this is read back block by block from a
      spill file for every left record.
    left_rows_per_partition: Left records per partition (a Beam work item
      and shard). None: sized to about 256 MiB of pairs.
    split: Name of the one split written.
    data_root: Directory that relative paths are taken from (default: the
      current directory).
    use_beam: Write the partitions on Apache Beam.
  """

  left: list[str] | str = dataclasses.field(default_factory=list)
  right: list[str] | str = dataclasses.field(default_factory=list)
  mode: str = "product"
  collision_policy: str = "prefix"
  left_schema: dict[str, str] | None = None
  right_schema: dict[str, str] | None = None
  compression: str = "auto"
  max_pairs: int | None = None
  sample_rate: float = 1.0
  sample_seed: int = 0
  memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
  left_rows_per_partition: int | None = None
  split: str = "train"
  data_root: str | None = None


def _bundled(**kwargs) -> BuilderConfig:
  return BuilderConfig(data_root=str(paths.bundled_data_dir("cross_product")), **kwargs)


class Builder(streaming_builder.StreamingBuilder):
  """Pairs of tf.train.Example records, streamed and written in (i, j) order."""

  DESCRIPTION = _DESCRIPTION
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "Sampling keeps exactly round(sample_rate × pairs) pairs, chosen by a seeded permutation: "
      "sampled configs keep other pairs than under 1.0.0; unsampled configs' bytes are unchanged.",
  }
  BUILDER_CONFIGS = [
      _bundled(
          name="product",
          description="Bundled genotypes × environments (GZIP): 5 × 4 = 20 pairs, "
          "the shared `name` feature kept on both sides under left/ and right/.",
          left=["genotypes.tfrecord"],
          right=["environments.tfrecord.gz"],
      ),
      _bundled(
          name="combinations",
          description="Bundled genotypes paired with each other: 5 × 4 / 2 = 10 pairs i < j.",
          left=["genotypes.tfrecord"],
          mode="combinations",
      ),
  ]

  def inferred_features(self) -> tfds.features.FeaturesDict:
    return self._plan.features

  def expected_examples(self, split: str) -> int | None:
    """N×M or N(N-1)/2 pairs, or exactly the sample's round(sample_rate × that)."""
    if split != self.builder_config.split:
      return None
    return self._plan.space.sample_count

  @contextlib.contextmanager
  def _build_context(self, download_config: tfds.download.DownloadConfig) -> Iterator[_Spilled]:
    """Spills both inputs into the build dir, removed however the build ends."""
    del download_config
    # Inside TFDS's incomplete.* directory: visible to Beam workers wherever
    # the output goes, and gone if the build fails.
    spill_dir = epath.Path(self.data_path) / _SPILL_DIR
    spill_dir.mkdir(parents=True, exist_ok=True)
    try:
      yield self._spill(spill_dir)
    except errors.SourceError as error:
      raise self._plan.explain_empty(error) from error
    finally:
      spill_dir.rmtree(missing_ok=True)

  def _split_streams(self, dl_manager: tfds.download.DownloadManager, context: _Spilled):
    del dl_manager  # sources are local or remote paths, never downloaded
    return {self.builder_config.split: streaming_builder.Partitions([
        functools.partial(pairs.generate, self._plan.space, context.left, context.right, start, stop)
        for start, stop in context.row_ranges
    ])}

  def _after_build(self, context: _Spilled, split_infos: Sequence[tfds.core.SplitInfo]) -> None:
    self.record_provenance(
        **self._plan.provenance(self.builder_config.data_root),
        pairs_written=sum(info.num_examples for info in split_infos),
        layout={
            "partitions": len(context.row_ranges),
            "right_blocks": len(context.right.blocks),
            "memory_budget_bytes": self.builder_config.memory_budget_bytes,
        },
    )

  def _spill(self, spill_dir: epath.Path) -> _Spilled:
    config = self.builder_config
    plan = self._plan
    with progress.timed_phase("cross_product/%s: spilling both inputs to %s", config.name, spill_dir):
      left, right = (
          spill.write(spill_dir / side, plan.spill_records(side), config.memory_budget_bytes)
          for side in plan_lib.SIDES
      )
    pair_bytes = left.num_bytes / left.num_records + right.num_bytes / right.num_records
    row_ranges = pairs.row_ranges(
        plan.space, pair_bytes, _PARTITION_BYTES, config.left_rows_per_partition
    )
    return _Spilled(left, right, tuple(row_ranges))

  @functools.cached_property
  def _plan(self) -> plan_lib.PairingPlan:
    return self.planned(plan_pairs, "both inputs, once, to count and type their records")


def plan_pairs(config: BuilderConfig) -> plan_lib.PairingPlan:
  """A config checked and resolved into its plan: both inputs read once (the builder's and `VirtualPairs`' start).

  Raises:
    ConfigError, SourceError, SchemaError: as the builder's constructor.
  """
  check_config(config)
  return plan_lib.PairingPlan.from_config(config)


@dataclasses.dataclass(frozen=True)
class _Spilled:
  """A build's context: both inputs spilled, and the left-row ranges of its partitions."""

  left: spill.SpillFile
  right: spill.SpillFile
  row_ranges: tuple[tuple[int, int], ...]


def check_config(config: BuilderConfig) -> None:
  """Refuses an invalid config (ConfigError naming the config and field) before any input is read."""
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"cross_product config {config.name!r}: {message}")

  errors.check_choice(config.mode, pairs.MODES, "mode", fail)
  errors.check_choice(config.collision_policy, COLLISION_POLICIES, "collision_policy", fail)
  if not config.left:
    raise fail("`left` lists no input; give TFRecord files, directories or globs.")
  if config.mode == "product" and not config.right:
    raise fail(
        "`right` lists no input; give TFRecord files, directories or globs, or "
        "use mode='combinations' to pair the records of `left` with each other."
    )
  if config.mode == "combinations" and (config.right or config.right_schema):
    raise fail(
        "mode='combinations' pairs the records of `left` with each other; leave "
        "`right` and `right_schema` empty, or use mode='product'."
    )
  if isinstance(config.sample_seed, bool) or not _is_integer(config.sample_seed):
    raise fail(f"sample_seed={config.sample_seed!r}; use an integer (the sample depends on it mod 2**64).")
  if not 0.0 < config.sample_rate <= 1.0:
    raise fail(f"sample_rate={config.sample_rate}; use a fraction in (0, 1] (1 keeps every pair).")
  if config.memory_budget_bytes <= 0:
    raise fail(f"memory_budget_bytes={config.memory_budget_bytes}; use a positive size in bytes.")
  if config.max_pairs is not None and config.max_pairs < 1:
    raise fail(f"max_pairs={config.max_pairs}; use a positive number, or None for no limit.")
  if config.left_rows_per_partition is not None and config.left_rows_per_partition < 1:
    raise fail(
        f"left_rows_per_partition={config.left_rows_per_partition}; use a positive number or None."
    )
  if not config.split:
    raise fail("`split` is empty; name the split, e.g. 'train'.")


def _is_integer(value: object) -> bool:
  try:
    operator.index(value)
  except TypeError:
    return False
  return True
