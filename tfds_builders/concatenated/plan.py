"""The concatenated plan: the opened sources, the split mapping, and the features they agree on."""

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


@dataclasses.dataclass(frozen=True)
class ConcatenationPlan:
  """Opened sources, the split mapping, and the features they agree on."""

  config: Any  # the builder's BuilderConfig
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
  def from_config(cls, config: Any) -> ConcatenationPlan:
    """Opens every source of a checked concatenated config: its dataset_info, features and file counts."""
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


def _check_weights(config: Any, names: Sequence[str]) -> None:
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
    config: Any, agreed: tfds.features.FeaturesDict, source_names: list[str]
) -> tuple[tfds.features.FeaturesDict, records.ZlibEncoder | None]:
  """The agreed features, with zlib encodings and the provenance features."""
  features = dict(agreed.items())
  compressed = []
  for name in config.zlib_features:
    leaf = features.get(name)
    if leaf is None or not agreement.plain_tensor(leaf) or leaf.np_dtype == np.object_ or (
        tuple(leaf.shape).count(None) > 1
    ):
      raise errors.ConfigError(
          f"zlib_features lists {name!r}, which is "
          f"{'not a feature' if leaf is None else agreement.describe_leaf(leaf)}; zlib "
          f"applies to top-level numeric Tensor features (these: "
          f"{[n for n, f in features.items() if agreement.plain_tensor(f) and f.np_dtype != np.object_]})."
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
