"""concatenated: one versioned dataset from many sources of the same features, with provenance."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders.concatenated import agreement
from tfds_builders.concatenated import mixing
from tfds_builders.concatenated import plan as plan_lib
from tfds_builders.concatenated import records
from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import streaming_builder

_DESCRIPTION = """\
Several datasets of the same features (per site, per month, ...) concatenated
into one, in config order, or interleaved by weight. Sources are prepared TFDS
datasets and raw TFRecord files of tf.train.Example. Records are copied as
they are, never decoded: variable-length values stay ragged and bytes are
unchanged. Each example carries its `source` (a ClassLabel of the source
names) and `source_key`, which finds it again in its source.
"""


@dataclasses.dataclass
class BuilderConfig(streaming_builder.StreamingConfig):
  """Which sources to combine, and how.

  Attributes:
    sources: One dict per source, in output order: `{"name": ..., "tfrecords":
      glob | [globs] | {split: glob(s)}}` (raw TFRecords of tf.train.Example;
      one glob or list means split `train`; optional `"compression"`:
      auto/none/gzip), `{"name": ..., "dataset": "name[/config][:version]",
      "data_dir": ...}` or `{"name": ..., "dataset_dir": version_dir}`.
    splits: Split mapping. None: each split name of the sources maps to
      itself. Or rules such as `"a:train + b:validation -> train; a:test ->
      test"` (a string or a list of rules), or a dict
      `{"train": ["a:train", "b:validation"]}`.
    per_example_provenance: Add the `source` and `source_key` features.
    provenance_feature: Name of the `source` feature (`<name>_key` is the
      other), for sources that already have a `source` feature.
    promotions: Opt-in widenings when sources differ: `integers` (e.g.
      int32 -> int64), `floats` (float32 -> float64), `shapes` (a fixed
      dimension -> None).
    mixing: `concatenate` (sources one after another) or `interleave`.
    weights: For `interleave`: source name -> relative weight. None: the
      sources take turns.
    seed: Seed of the weighted draws.
    stopping_strategy: For `interleave`: `first_exhausted`, `all_exhausted`
      (sources that run out start over) or `all_exhausted_without_replacement`.
    zlib_features: Numeric Tensor features to store compressed, as TFDS's
      `Tensor(encoding="zlib")` (their records are re-encoded).
    data_root: Directory that relative paths are taken from.
    use_beam: One Beam worker per source file.
  """

  sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  splits: Any = None
  per_example_provenance: bool = True
  provenance_feature: str = "source"
  promotions: list[str] = dataclasses.field(default_factory=list)
  mixing: str = "concatenate"
  weights: dict[str, float] | None = None
  seed: int = 0
  stopping_strategy: str = "first_exhausted"
  zlib_features: list[str] = dataclasses.field(default_factory=list)
  data_root: str | None = None


_DEMO_SOURCES = [
    {"name": "site_a", "tfrecords": {"train": "site_a/train.tfrecord", "test": "site_a/test.tfrecord"}},
    {"name": "site_b", "tfrecords": {"train": "site_b/train-*.tfrecord", "test": "site_b/test.tfrecord"}},
]


def _bundled(**kwargs) -> BuilderConfig:
  return BuilderConfig(data_root=str(paths.bundled_data_dir("concatenated")), **kwargs)


class Builder(streaming_builder.StreamingBuilder):
  """Datasets of the same features concatenated or interleaved, with provenance."""

  DESCRIPTION = _DESCRIPTION
  PAIRS_SUPERVISED_KEYS = True
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      _bundled(
          name="demo",
          description="Bundled raw TFRecords of two sites (image bytes, label, "
          "variable-length tokens), concatenated with provenance.",
          sources=_DEMO_SOURCES,
      ),
      _bundled(
          name="interleaved",
          description="The same two sites, interleaved 1:2 by weight, every example once.",
          sources=_DEMO_SOURCES,
          mixing="interleave",
          weights={"site_a": 1.0, "site_b": 2.0},
          stopping_strategy="all_exhausted_without_replacement",
      ),
  ]

  def inferred_features(self) -> tfds.features.FeaturesDict:
    return self._plan.features

  def expected_examples(self, split: str) -> int | None:
    """The sources' counts, mixed: every record once, or the interleave's draws."""
    return self._plan.num_examples(split) if split in self._plan.mapping else None

  def _split_streams(self, dl_manager: tfds.download.DownloadManager, context: None):
    del dl_manager, context  # sources are local or remote paths, never downloaded
    return {split: self._partitions(split) for split in self._plan.mapping}

  def _after_build(self, context: None, split_infos: Sequence[tfds.core.SplitInfo]) -> None:
    del context, split_infos
    plan = self._plan
    # The counts recorded are the sources' own; records.copy_records checks each
    # file against its count as it reads it, so a build that succeeds read
    # exactly these (but in files a first_exhausted interleave stops inside).
    self.record_provenance(
        sources=[source.provenance_record() for source in plan.sources.values()],
        split_mapping={split: [str(part) for part in parts] for split, parts in plan.mapping.items()},
        examples_per_source=plan.examples_per_source(),
        promotions_applied=plan.agreement.promoted,
    )

  def _partitions(self, split: str) -> streaming_builder.Partitions:
    plan = self._plan
    streams = plan.streams(split)
    if self.builder_config.mixing == "concatenate":
      # One partition per source file: Beam copies files in parallel.
      tasks = [task for tasks in streams for task in tasks]
      split_positions = itertools.accumulate((task.part.num_records for task in tasks), initial=0)
      return streaming_builder.Partitions([
          functools.partial(records.copy_file, task, position) for task, position in zip(tasks, split_positions)
      ])
    return streaming_builder.Partitions([
        functools.partial(records.interleave, streams, *plan.interleave_args(split))
    ])

  @functools.cached_property
  def _plan(self) -> plan_lib.ConcatenationPlan:
    return self.planned(_plan_sources, "the sources' dataset_info and features")


def _plan_sources(config: BuilderConfig) -> plan_lib.ConcatenationPlan:
  _check_config(config)
  return plan_lib.ConcatenationPlan.from_config(config)


def _check_config(config: BuilderConfig) -> None:
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"concatenated config {config.name!r}: {message}")

  unknown = sorted(set(config.promotions) - set(agreement.PROMOTIONS))
  if unknown:
    raise fail(f"unknown promotions {unknown}; use any of {agreement.PROMOTIONS}.")
  errors.check_choice(config.mixing, mixing.MIXINGS, "mixing", fail)
  if config.mixing == "concatenate" and config.weights is not None:
    raise fail("weights only apply with mixing='interleave'.")
  mixing.check(None if config.weights is None else list(config.weights.values()), config.stopping_strategy)
  if config.per_example_provenance and not config.provenance_feature.isidentifier():
    raise fail(f"provenance_feature={config.provenance_feature!r} must be a plain name like 'source'.")
