"""The numpy_arrays plan: every split's array sources and the features their headers give."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.numpy_arrays import encoding
from tfds_builders.numpy_arrays import groups as groups_lib
from tfds_builders.numpy_arrays import npy_files

_SUPPORTED_KINDS = "biufc"  # bool, signed, unsigned, float, complex
_REFUSED_KINDS = {
    "O": "object arrays may hold pickled code and have no fixed layout; "
    "convert them to a numeric dtype",
    "V": "structured or void dtypes are not stored as one tensor; save each "
    "field as its own array (np.savez(path, **{n: a[n] for n in a.dtype.names}))",
    "S": "byte-string arrays are not supported; store them as uint8 "
    "(np.frombuffer(...)) with their lengths",
    "U": "unicode string arrays are not supported; encode them to uint8",
    "M": "datetime64 is not supported; store a.view('int64') and record the unit",
    "m": "timedelta64 is not supported; store a.view('int64') and record the unit",
}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One feature as the headers give it: dtype, and a shape whose varying dims are None."""

  dtype: np.dtype
  shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class ArrayPlan:
  """The resolved sources of every split and the features inferred from them."""

  groups_by_split: Mapping[str, Sequence[groups_lib.Group]]
  specs: Mapping[str, FeatureSpec]
  fractions: Mapping[str, float]
  seed: int

  @property
  def split_names(self) -> list[str]:
    return list(self.fractions or self.groups_by_split)

  @property
  def features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {name: encoding.tensor_feature(name, spec) for name, spec in self.specs.items()}
    )

  def groups_for(self, split: str) -> Sequence[groups_lib.Group]:
    return self.groups_by_split["all" if self.fractions else split]

  def num_examples(self, split: str, layout: str) -> int | None:
    """The split's example count from the headers already read, or None under `split_fractions`.

    Under `layout: rows` a group's sources share their first axis (checked
    when the plan is made), so any one of them gives its rows.
    """
    if self.fractions or split not in self.groups_by_split:
      return None  # hashed fractions: known once every key is; or not a split of this config
    groups = self.groups_by_split[split]
    if layout == "files":
      return len(groups)
    return sum(next(iter(group.sources.values())).num_rows for group in groups)

  def holds(self, split: str, key: str) -> bool:
    """Whether the example `key`, read for `split`, belongs to it.

    With `split_fractions` every split reads all sources and keeps the
    examples whose key hashes into its share; the assignment depends only on
    the key and the seed, so it is the same on every build.
    """
    if not self.fractions:
      return True
    point = zlib.crc32(f"{self.seed}:{key}".encode()) / 2**32
    cumulative = 0.0
    for name, fraction in self.fractions.items():
      cumulative += fraction
      if point < cumulative:
        return name == split
    return name == split

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
        fractions=dict(config.split_fractions),
        seed=config.split_seed,
    )


def is_paired(config: Any) -> bool:
  """Whether the config maps features to files (`{feature: files}`)."""
  sources = list(config.splits.values()) if config.splits else [config.paths]
  return any(isinstance(source, Mapping) for source in sources)


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
  dtype = source.header.dtype
  if dtype.kind in _REFUSED_KINDS or dtype.kind not in _SUPPORTED_KINDS:
    reason = _REFUSED_KINDS.get(dtype.kind, "this dtype has no TensorFlow equivalent")
    raise errors.SchemaError(
        f"{source.name}: array {name!r} has dtype {dtype.str!r}: {reason}."
    )
  if (dtype.kind == "f" and dtype.itemsize > 8) or dtype.itemsize > 16:
    raise errors.SchemaError(
        f"{source.name}: array {name!r} has dtype {dtype} which TensorFlow cannot "
        "hold; cast explicitly (e.g. to float64) if the precision loss is acceptable."
    )
  return dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype.newbyteorder("|")


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
  if spec.dtype == np.uint32 and spec.shape.count(None) > 1:
    raise errors.SchemaError(
        f"Feature {name!r}: uint32 arrays with more than one varying dimension "
        f"{spec.shape} cannot be stored exactly (TensorFlow cannot decode raw "
        "uint32). Save them as uint64 or int64, or pad to fixed shapes."
    )
