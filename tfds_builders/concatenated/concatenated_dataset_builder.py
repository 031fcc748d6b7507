"""concatenated: one versioned dataset from many sources of the same features, with provenance."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.concatenated import agreement
from tfds_builders.concatenated import mixing
from tfds_builders.concatenated import records
from tfds_builders.concatenated import sources
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

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # sources are local or remote paths, never downloaded
    plan = self._plan
    # The counts recorded are the sources' own; records.copy_records checks each
    # file against its count as it reads it, so a build that succeeds read
    # exactly these (but in files a first_exhausted interleave stops inside).
    self.record_provenance(
        sources=[source.describe() for source in plan.sources.values()],
        split_mapping={split: [str(part) for part in parts] for split, parts in plan.mapping.items()},
        examples_per_source=plan.examples_per_source(),
        promotions_applied=plan.agreement.promoted,
    )
    return {split: self._generate_examples(split=split) for split in plan.mapping}

  def _generate_examples(self, split: str) -> streaming_builder.Partitions:
    plan = self._plan
    streams = plan.streams(split)
    if self.builder_config.mixing == "concatenate":
      # One partition per source file: Beam copies files in parallel.
      return streaming_builder.Partitions([
          functools.partial(records.copy_records, task) for tasks in streams for task in tasks
      ])
    return streaming_builder.Partitions([
        functools.partial(records.interleave, streams, *plan.interleave_args(split))
    ])

  @functools.cached_property
  def _plan(self) -> _Plan:
    return self.planned(_Plan.from_config, "the sources' dataset_info and features")


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Opened sources, the split mapping, and the features they agree on."""

  config: BuilderConfig
  sources: dict[str, sources.Source]
  mapping: sources.SplitMapping
  agreement: agreement.Agreement
  features: tfds.features.FeaturesDict
  zlib: records.ZlibEncoder | None

  def streams(self, split: str) -> list[list[records.CopyTask]]:
    """The split's copy tasks: per mapping entry (concatenate) or per source (interleave)."""
    if self.config.mixing == "concatenate":
      return [self._tasks(part) for part in self.mapping[split]]
    by_source: dict[str, list[records.CopyTask]] = {}
    for part in self.mapping[split]:
      by_source.setdefault(part.source, []).extend(self._tasks(part))
    return list(by_source.values())

  def _tasks(self, part: sources.SplitPart) -> list[records.CopyTask]:
    source = self.sources[part.source]
    tag = self.config.provenance_feature if self.config.per_example_provenance else None
    return [
        records.CopyTask(
            source=source.name, source_id=list(self.sources).index(source.name),
            split=part.split, part=record_part, typed=source.typed,
            provenance_feature=tag, zlib=self.zlib,
        )
        for record_part in source.parts[part.split]
    ]

  def interleave_args(self, split: str) -> tuple:
    """(lengths, weights, seed, stopping_strategy) of the split's streams."""
    streams = self.streams(split)
    lengths = [sum(task.part.num_records for task in tasks) for tasks in streams]
    weights = None
    if self.config.weights is not None:
      weights = [float(self.config.weights[tasks[0].source]) for tasks in streams]
    return lengths, weights, self.config.seed, self.config.stopping_strategy

  def num_examples(self, split: str) -> int:
    """The split's example count, known from the sources' counts before reading a record."""
    return sum(self._stream_counts[split])

  def examples_per_source(self) -> dict[str, dict[str, int]]:
    """Output split -> source -> examples it contributes."""
    result = {}
    for split in self.mapping:
      taken: dict[str, int] = {}
      for tasks, count in zip(self.streams(split), self._stream_counts[split]):
        if tasks:  # every stream draws from one source
          taken[tasks[0].source] = taken.get(tasks[0].source, 0) + count
      result[split] = taken
    return result

  @functools.cached_property
  def _stream_counts(self) -> dict[str, list[int]]:
    """Split -> examples each of its streams contributes: an interleave's schedule is walked once, here."""
    counts = {}
    for split in self.mapping:
      lengths, weights, seed, stopping_strategy = self.interleave_args(split)
      every_record_once = (self.config.mixing == "concatenate"
                           or stopping_strategy == "all_exhausted_without_replacement")
      counts[split] = lengths if every_record_once else mixing.counts(lengths, weights, seed, stopping_strategy)
    return counts

  @classmethod
  def from_config(cls, config: BuilderConfig) -> _Plan:
    _check_config(config)
    specs = sources.parse_sources(config.sources)
    available = {spec.name: sources.available_splits(spec, config.data_root) for spec in specs}
    mapping = sources.parse_split_mapping(config.splits, available)
    used = {
        spec.name: list(dict.fromkeys(p.split for parts in mapping.values() for p in parts if p.source == spec.name))
        for spec in specs
    }
    unused = [name for name, splits in used.items() if not splits]
    if unused:
      raise errors.ConfigError(
          f"Sources {unused} are not used by the split mapping {_mapping_text(mapping)}; "
          "map one of their splits or remove them."
      )
    if config.weights is not None:
      _check_weights(config, [spec.name for spec in specs])
    opened = {spec.name: sources.open_source(spec, used[spec.name], config.data_root) for spec in specs}
    _check_no_shared_files(opened.values())
    agreed = agreement.agree(
        [agreement.Participant(s.name, s.features, s.typed) for s in opened.values()],
        config.promotions,
    )
    features, zlib = _output_features(config, agreed.features, list(opened))
    return cls(config, opened, mapping, agreed, features, zlib)


def _mapping_text(mapping: sources.SplitMapping) -> str:
  return "; ".join(f"{' + '.join(map(str, parts))} -> {split}" for split, parts in mapping.items())


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


def _check_weights(config: BuilderConfig, names: Sequence[str]) -> None:
  if set(config.weights) != set(names):
    raise errors.ConfigError(
        f"concatenated config {config.name!r}: weights name {sorted(config.weights)}, "
        f"but the sources are {list(names)}; give every source a weight."
    )


def _check_no_shared_files(opened: Sequence[sources.Source]) -> None:
  """A file read twice (by two sources, or two splits) is a duplicate source."""
  readers: dict[str, str] = {}
  for source in opened:
    for split, parts in source.parts.items():
      for part in parts:
        where = f"{source.name}:{split}"
        if part.file.name in readers:
          raise errors.ConfigError(
              f"Duplicate source: {part.file.name} is read by both {readers[part.file.name]} "
              f"and {where}. List each source (and split) once."
          )
        readers[part.file.name] = where


def _output_features(
    config: BuilderConfig, agreed: tfds.features.FeaturesDict, source_names: list[str]
) -> tuple[tfds.features.FeaturesDict, records.ZlibEncoder | None]:
  """The agreed features, with zlib encodings and the provenance features."""
  features = dict(agreed.items())
  compressed = []
  for name in config.zlib_features:
    leaf = features.get(name)
    if leaf is None or not agreement._plain_tensor(leaf) or leaf.np_dtype == np.object_ or (  # pylint: disable=protected-access
        tuple(leaf.shape).count(None) > 1
    ):
      raise errors.ConfigError(
          f"zlib_features lists {name!r}, which is "
          f"{'not a feature' if leaf is None else agreement.describe_leaf(leaf)}; zlib "
          f"applies to top-level numeric Tensor features (these: "
          f"{[n for n, f in features.items() if agreement._plain_tensor(f) and f.np_dtype != np.object_]})."  # pylint: disable=protected-access
      )
    features[name] = tfds.features.Tensor(shape=leaf.shape, dtype=leaf.np_dtype, encoding="zlib")
    compressed.append((name, np.dtype(leaf.np_dtype).name))
  if config.per_example_provenance:
    clashes = sorted({config.provenance_feature, f"{config.provenance_feature}_key"} & set(features))
    if clashes:
      raise errors.SchemaError(
          f"The sources already have features {clashes}; set provenance_feature to "
          "another name (e.g. 'origin'), or per_example_provenance=False."
      )
    features[config.provenance_feature] = tfds.features.ClassLabel(
        names=source_names, doc="The source this example was copied from."
    )
    features[f"{config.provenance_feature}_key"] = tfds.features.Text(
        doc="Where in its source: split[i:i+1] (prepared) or file:record (raw)."
    )
  encoder = records.ZlibEncoder(tuple(compressed)) if compressed else None
  return tfds.features.FeaturesDict(features), encoder
