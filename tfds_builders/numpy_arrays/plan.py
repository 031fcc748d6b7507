"""The numpy_arrays plan: every split's array sources and the features their headers give."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import splits
from tfds_builders.core import tensor_codecs
from tfds_builders.numpy_arrays import encoding
from tfds_builders.numpy_arrays import groups as groups_lib
from tfds_builders.numpy_arrays import npy_files


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One feature as the headers give it: dtype, and a shape whose varying dims are None."""

  dtype: np.dtype
  shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class SplitRule:
  """A hash split resolved once (`core/splits.py`): each split's bucket range and a key's bucket.

  Attributes:
    ranges: Split name -> `[low, high)` buckets, consecutive in config order.
    bucket: `(seed, key)` -> bucket: `splits.split_bucket` for
      `split_percent`, `splits.crc32_bucket` for the deprecated `split_fractions`.
    seed: `split_seed`.
  """

  ranges: Mapping[str, tuple[int, int]]
  bucket: Callable[[Any, Any], int]
  seed: int

  def split_of(self, key: str) -> str:
    return splits.split_of(self.ranges, self.bucket(self.seed, key))


@dataclasses.dataclass(frozen=True)
class ArrayPlan:
  """The resolved sources of every split and the features inferred from them.

  Attributes:
    groups_by_split: Split name -> its groups; the one split `all` when
      `paths` are divided by `split_rule`.
    specs: Feature name -> dtype and shape.
    split_rule: How `paths` are divided; None when `splits` name each
      split's sources.
  """

  groups_by_split: Mapping[str, Sequence[groups_lib.Group]]
  specs: Mapping[str, FeatureSpec]
  split_rule: SplitRule | None

  @property
  def split_names(self) -> list[str]:
    return list(self.split_rule.ranges if self.split_rule else self.groups_by_split)

  @property
  def features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {name: encoding.tensor_feature(name, spec) for name, spec in self.specs.items()}
    )

  def groups_for(self, split: str) -> Sequence[groups_lib.Group]:
    return self.groups_by_split["all" if self.split_rule else split]

  def num_examples(self, split: str, layout: str) -> int | None:
    """The split's example count from the headers already read, or None under a hash split.

    Under `layout: rows` a group's sources share their first axis (checked
    when the plan is made), so any one of them gives its rows.
    """
    if self.split_rule or split not in self.groups_by_split:
      return None  # a hash split: known once every key is; or not a split of this config
    groups = self.groups_by_split[split]
    if layout == "files":
      return len(groups)
    return sum(next(iter(group.sources.values())).num_rows for group in groups)

  def holds(self, split: str, key: str) -> bool:
    """Whether the example `key`, read for `split`, belongs to it.

    Under a hash split every split reads all sources and keeps the examples
    whose key hashes into its range; the assignment depends only on the key
    and the seed, so it is the same on every build.
    """
    return self.split_rule is None or self.split_rule.split_of(key) == split

  @classmethod
  def from_config(cls, config: Any) -> ArrayPlan:
    """Reads the headers of every source a checked numpy_arrays config names."""
    if config.splits:
      sources = {split: pats for split, pats in config.splits.items()}
    else:
      sources = {"all": config.paths}
    groups_by_split = {
        split: _groups(config, patterns) for split, patterns in sources.items()
    }
    all_groups = [group for groups in groups_by_split.values() for group in groups]
    return cls(
        groups_by_split=groups_by_split,
        specs=_infer_specs(all_groups, config.layout, paired=is_paired(config)),
        split_rule=_split_rule(config),
    )


def is_paired(config: Any) -> bool:
  """Whether the config maps features to files (`{feature: files}`)."""
  sources = list(config.splits.values()) if config.splits else [config.paths]
  return any(isinstance(source, Mapping) for source in sources)


def _split_rule(config: Any) -> SplitRule | None:
  """`split_percent`, or the deprecated `split_fractions` with its own assignments, resolved once."""
  if config.split_percent:
    return SplitRule(splits.bucket_ranges(config.split_percent), splits.split_bucket, config.split_seed)
  if not config.split_fractions:
    return None
  percent = {name: round(fraction * 100, 9) for name, fraction in config.split_fractions.items()}
  logging.warning(
      "numpy_arrays config %r: split_fractions is deprecated; use split_percent=%s. That gives the same "
      "shares but not the same assignment (split_percent hashes keys with md5, the rule of every builder, "
      "split_fractions with CRC-32): switching moves examples between splits.", config.name, percent)
  return SplitRule(splits.fraction_ranges(config.split_fractions), splits.crc32_bucket, config.split_seed)


def _groups(config: Any, patterns: groups_lib.Patterns | Mapping[str, groups_lib.Patterns]) -> list[groups_lib.Group]:
  if isinstance(patterns, Mapping):
    return groups_lib.paired_groups(patterns, root=config.data_root, config_name=config.name)
  return groups_lib.listed_groups(
      patterns, feature_name=config.feature_name, npz_members=config.npz_members,
      root=config.data_root,
  )


def _infer_specs(
    groups: Sequence[groups_lib.Group], layout: str, paired: bool = False
) -> dict[str, FeatureSpec]:
  """Features from headers only: dtype must agree, differing dims become None.

  Args:
    groups: Every split's groups.
    layout: `rows` or `files`.
    paired: Whether the config maps features to files (else a mismatch between
      .npy files may be X and y given as one list, and the error says how to pair).
  """
  first_group = groups[0]
  specs: dict[str, FeatureSpec] = {}
  first_seen: dict[str, str] = {}
  for group in groups:
    _check_same_features(group, first_group)
    if layout == "rows":
      _check_same_rows(group)
    for name, source in group.sources.items():
      dtype = _storable_dtype(source, name)
      shape = source.header.shape[1:] if layout == "rows" else source.header.shape
      if name not in specs:
        specs[name], first_seen[name] = FeatureSpec(dtype, shape), source.name
        continue
      specs[name] = _merge(
          specs[name], FeatureSpec(dtype, shape), name, first_seen[name], source.name,
          suggest_pairing=not paired,
      )
  for name, spec in specs.items():
    _check_encodable(name, spec)
  return specs


def _check_same_features(group: groups_lib.Group, reference: groups_lib.Group) -> None:
  if set(group.sources) != set(reference.sources):
    missing = sorted(set(reference.sources) - set(group.sources))
    extra = sorted(set(group.sources) - set(reference.sources))
    raise errors.SchemaError(
        f"{group.key} has different arrays than {reference.key}: missing "
        f"{missing}, extra {extra}. Every .npz of a dataset needs the same "
        "member names; or set npz_members='examples'."
    )


def _check_same_rows(group: groups_lib.Group) -> None:
  rows = {name: source.num_rows for name, source in group.sources.items()}
  if len(set(rows.values())) > 1:
    files = ", ".join(f"{source.name} ({rows[name]} rows)" for name, source in group.sources.items())
    paired = all(source.member is None for source in group.sources.values())
    hint = (
        "Pair files that hold the same examples in the same order (X[i] with y[i])."
        if paired
        else "Fix the arrays, or use layout='files' or npz_members='examples'."
    )
    raise errors.SchemaError(
        f"{group.key}: under layout='rows' these arrays are the features of the "
        f"same examples and need equal first axes, got {rows} from {files}. {hint}"
    )


def _storable_dtype(source: npy_files.ArraySource, name: str) -> np.dtype:
  try:
    return encoding.stored_dtype(source.header.dtype)
  except tensor_codecs.RefusedDtype as refused:
    raise errors.SchemaError(
        f"{source.name}: array {name!r} has dtype {source.header.dtype.str!r}: {refused}."
    ) from None


def _merge(
    spec: FeatureSpec,
    other: FeatureSpec,
    name: str,
    first: str,
    source: str,
    suggest_pairing: bool = False,
) -> FeatureSpec:
  # X.npy and y.npy listed together land in one feature; what they need is a
  # feature each, not one dtype.
  pairing = (
      f" If they are different features of the same examples (say X and y), map "
      f"them: splits={{'train': {{'image': 'X.npy', 'label': 'y.npy'}}}}, or save one "
      f"archive: np.savez(path, image=X, label=y)."
      if suggest_pairing
      else ""
  )
  if spec.dtype != other.dtype:
    raise errors.SchemaError(
        f"Feature {name!r} is {spec.dtype} in {first} but {other.dtype} in "
        f"{source}. Arrays are never cast silently: if they are the same feature, "
        f"save them with one dtype.{pairing}"
    )
  if len(spec.shape) != len(other.shape):
    raise errors.SchemaError(
        f"Feature {name!r} has {len(spec.shape)} dims per example in {first} "
        f"but {len(other.shape)} in {source}. Reshape them to the same rank if "
        f"they are the same feature.{pairing}"
    )
  shape = tuple(a if a == b else None for a, b in zip(spec.shape, other.shape))
  return FeatureSpec(spec.dtype, shape)


def _check_encodable(name: str, spec: FeatureSpec) -> None:
  if encoding.codec(spec).shape_refused:  # uint32 is an int64_list, which holds one varying dim
    raise errors.SchemaError(
        f"Feature {name!r}: uint32 arrays with more than one varying dimension "
        f"{spec.shape} cannot be stored exactly (TensorFlow cannot decode raw "
        "uint32). Save them as uint64 or int64, or pad to fixed shapes."
    )
