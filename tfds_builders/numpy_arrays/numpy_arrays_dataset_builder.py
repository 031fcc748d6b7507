"""numpy_arrays: `.npy` / `.npz` arrays stored with dtype, shape and bytes preserved."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import safe_paths
from tfds_builders.core import splits
from tfds_builders.core import streaming_builder
from tfds_builders.numpy_arrays import encoding
from tfds_builders.numpy_arrays import groups as groups_lib
from tfds_builders.numpy_arrays import plan as plan_lib

_DESCRIPTION = """\
NumPy arrays from `.npy` files and `.npz` archives, stored so that every array
comes back bit-identical: same dtype, same shape, same bytes. Features are
inferred from the array headers; a dimension that varies between examples
becomes `None`.
"""

Patterns = groups_lib.Patterns

LAYOUTS = ("rows", "files")
NPZ_MEMBER_MODES = ("features", "examples")


@dataclasses.dataclass
class BuilderConfig(streaming_builder.StreamingConfig):
  """Which arrays to read and how they map to examples and splits.

  Attributes:
    splits: Split name -> files, directories or globs of `.npy` / `.npz`; or
      split name -> {feature: `.npy` files}, whose files pair up in sorted
      order as the features of the same examples (`X.npy` with `y.npy`).
    paths: Alternative to `splits`: sources (a list, or a feature mapping)
      divided by `split_percent`.
    split_percent: Split name -> percent (summing to 100), used with `paths`.
      Each example lands in a split by a hash of its key and `split_seed`:
      the rule of `core/splits.py`, as the database builder's `split_percent`.
    split_fractions: Deprecated spelling (split name -> fraction, summing to
      1; a warning says which `split_percent` to use). It keeps its datasets'
      assignments: the same rule with a CRC-32 bucket (`fraction_ranges`),
      so its examples do not land where `split_percent`'s do.
    split_seed: Seed of the hash split.
    layout: `rows`: the first axis is the example axis, an `(N, ...)` array
      gives N examples. `files`: each file (or member) is one example.
    npz_members: `features`: each member of an `.npz` is a feature (members
      share their first axis under `rows`). `examples`: each member is an
      example source of the feature `feature_name`.
    feature_name: Feature name for `.npy` files and `npz_members='examples'`.
    data_root: Directory that relative paths are taken from (default: the
      current directory).
    use_beam: Write each file (group) on a Beam worker.
  """

  splits: dict[str, Patterns | dict[str, Patterns]] = dataclasses.field(default_factory=dict)
  paths: Patterns | dict[str, Patterns] = dataclasses.field(default_factory=list)
  split_percent: dict[str, float] = dataclasses.field(default_factory=dict)
  split_fractions: dict[str, float] = dataclasses.field(default_factory=dict)
  split_seed: int = 0
  layout: str = "rows"
  npz_members: str = "features"
  feature_name: str = "array"
  data_root: str | None = None


def _bundled(**kwargs) -> BuilderConfig:
  return BuilderConfig(
      data_root=str(paths.bundled_data_dir("numpy_arrays")), **kwargs
  )


class Builder(streaming_builder.StreamingBuilder):
  """NumPy arrays as a TFDS dataset, bit-exact."""

  DESCRIPTION = _DESCRIPTION
  PAIRS_SUPERVISED_KEYS = True
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      _bundled(
          name="demo",
          description="Bundled .npz archives: images and labels, rows layout.",
          splits={"train": ["train"], "test": ["test"]},
      ),
      _bundled(
          name="variable_shapes",
          description="Bundled .npy files of varying shapes, one per example.",
          splits={"train": ["variable"]},
          layout="files",
          feature_name="points",
      ),
  ]

  def inferred_features(self) -> tfds.features.FeaturesDict:
    return self._plan.features

  def expected_examples(self, split: str) -> int | None:
    """Rows (or files) counted from the headers; None when a hash split divides `paths`."""
    return self._plan.num_examples(split, self.builder_config.layout)

  def _split_streams(self, dl_manager: tfds.download.DownloadManager, context: None):
    """Each split by row ranges (cut on Beam where its shards end), else one partition per file (group)."""
    del dl_manager, context  # sources are local or remote paths, never downloaded
    plan, layout = self._plan, self.builder_config.layout
    streams = {}
    for split in plan.split_names:
      groups = plan.groups_for(split)
      if layout == "rows" and plan.split_rule is None and all(group.cuts_by_rows for group in groups):
        streams[split] = streaming_builder.RangePartitions(
            num_examples=plan.num_examples(split, layout),
            make_range=functools.partial(encoding.rows_partition, plan, split, groups),
            serialized_bytes=functools.partial(encoding.serialized_bytes, plan, split, groups),
        )
      else:
        streams[split] = streaming_builder.Partitions([
            functools.partial(encoding.group_examples, plan, split, group, layout) for group in groups
        ])
    return streams

  def _after_build(self, context: None, split_infos: Sequence[tfds.core.SplitInfo]) -> None:
    del context, split_infos
    plan = self._plan
    self.record_provenance(
        sources={
            split: [source.name for group in groups for source in group.sources.values()]
            for split, groups in plan.groups_by_split.items()
        },
        features={
            name: {"dtype": str(spec.dtype), "shape": list(spec.shape)}
            for name, spec in plan.specs.items()
        },
    )

  @functools.cached_property
  def _plan(self) -> plan_lib.ArrayPlan:
    return self.planned(_plan_arrays, "the arrays' headers")


def _plan_arrays(config: BuilderConfig) -> plan_lib.ArrayPlan:
  _check_config(config)
  return plan_lib.ArrayPlan.from_config(config)


def _check_config(config: BuilderConfig) -> None:
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"numpy_arrays config {config.name!r}: {message}")

  errors.check_choice(config.layout, LAYOUTS, "layout", fail)
  errors.check_choice(config.npz_members, NPZ_MEMBER_MODES, "npz_members", fail)
  if bool(config.splits) == bool(config.paths):
    raise fail(
        "give either `splits` ({split: [paths]}) or `paths` with "
        "`split_percent`, not both or neither."
    )
  _check_split_shares(config, fail)
  # An empty pattern list expands to no file without a SourceError; caught
  # here it names the split instead of failing later on an empty plan.
  empty = [split for split, patterns in config.splits.items() if not patterns]
  if empty:
    raise fail(
        f"splits {empty} list no paths; give each split files, directories "
        "or globs, or leave it out."
    )
  sources = list(config.splits.values()) if config.splits else [config.paths]
  mappings = [source for source in sources if isinstance(source, Mapping)]
  if mappings and len(mappings) != len(sources):
    raise fail(
        "give every split a feature mapping ({feature: files}) or every split a "
        "list of files, not a mix: the splits must have the same features."
    )
  for mapping in mappings:
    _check_feature_mapping(mapping, fail)
  _check_feature_name(config.feature_name, "feature_name", fail)


def _check_split_shares(config: BuilderConfig, fail) -> None:
  """`split_percent` (or the deprecated `split_fractions`) divides `paths`, and only `paths`."""
  if config.split_percent and config.split_fractions:
    raise fail("give `split_percent` or its deprecated spelling `split_fractions`, not both.")
  if not config.paths:
    for name in ("split_percent", "split_fractions"):
      if getattr(config, name):
        raise fail(f"{name} only applies with `paths`, not `splits`.")
    return
  if config.split_percent:
    if problem := splits.check_percent(config.split_percent):
      raise fail(problem)
    return
  if not config.split_fractions:
    raise fail(
        "split_percent ({split: percent}, summing to 100; or the deprecated split_fractions) "
        "must be given with `paths`."
    )
  total = sum(config.split_fractions.values())
  if abs(total - 1.0) > 1e-9:
    raise fail(
        f"split_fractions {config.split_fractions} must be given with "
        f"`paths` and sum to 1 (they sum to {total})."
    )


def _check_feature_mapping(mapping: Mapping[str, Patterns], fail) -> None:
  for feature, patterns in mapping.items():
    _check_feature_name(feature, f"feature mapping {dict(mapping)}", fail)
    if not patterns:
      raise fail(f"feature {feature!r} lists no files; give it .npy files or globs.")


def _check_feature_name(feature: object, where: str, fail) -> None:
  # "/" would collide with the `<name>/shape` field of varying shapes, and an
  # export names a file after each feature.
  safe_paths.check_name(
      "feature name", feature, where,
      "Use a non-empty name without '/', of letters, digits and _.-", fail)


