"""numpy_arrays: `.npy` / `.npz` arrays stored with dtype, shape and bytes preserved."""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import safe_paths
from tfds_builders.core import serialization
from tfds_builders.core import streaming_builder
from tfds_builders.numpy_arrays import groups as groups_lib
from tfds_builders.numpy_arrays import npy_files

_DESCRIPTION = """\
NumPy arrays from `.npy` files and `.npz` archives, stored so that every array
comes back bit-identical: same dtype, same shape, same bytes. Features are
inferred from the array headers; a dimension that varies between examples
becomes `None`.
"""

Patterns = groups_lib.Patterns

LAYOUTS = ("rows", "files")
NPZ_MEMBER_MODES = ("features", "examples")
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


@dataclasses.dataclass
class BuilderConfig(streaming_builder.StreamingConfig):
  """Which arrays to read and how they map to examples and splits.

  Attributes:
    splits: Split name -> files, directories or globs of `.npy` / `.npz`; or
      split name -> {feature: `.npy` files}, whose files pair up in sorted
      order as the features of the same examples (`X.npy` with `y.npy`).
    paths: Alternative to `splits`: sources (a list, or a feature mapping)
      divided by `split_fractions`.
    split_fractions: Split name -> fraction (summing to 1), used with `paths`.
      Each example lands in a split by a hash of its key and `split_seed`.
    split_seed: Seed of the fraction assignment.
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
    """Rows (or files) counted from the headers; None when `split_fractions` hash the keys."""
    return self._plan.num_examples(split, self.builder_config.layout)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # sources are local or remote paths, never downloaded
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
    return {
        split: self._generate_examples(split=split)
        for split in plan.split_names
    }

  def _generate_examples(self, split: str) -> streaming_builder.Partitions:
    plan = self._plan
    return streaming_builder.Partitions([
        functools.partial(_group_examples, plan, split, group, self.builder_config.layout)
        for group in plan.groups_for(split)
    ])

  @functools.cached_property
  def _plan(self) -> _Plan:
    return self.planned(_Plan.from_config, "the arrays' headers")


def _group_examples(
    plan: _Plan, split: str, group: groups_lib.Group, layout: str
) -> Iterator[tuple[str, bytes]]:
  """The serialized examples of one file (group) that belong to `split`."""
  encoders = {name: _encoder(name, spec) for name, spec in plan.specs.items()}
  for key, arrays in group.examples(layout):
    if plan.holds(split, key):
      yield key, serialization.example(
          encoders[name](array) for name, array in arrays.items()
      )


@dataclasses.dataclass(frozen=True)
class _FeatureSpec:
  dtype: np.dtype
  shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class _Plan:
  """The resolved sources of every split and the features inferred from them."""

  groups_by_split: Mapping[str, Sequence[groups_lib.Group]]
  specs: Mapping[str, _FeatureSpec]
  fractions: Mapping[str, float]
  seed: int

  @property
  def split_names(self) -> list[str]:
    return list(self.fractions or self.groups_by_split)

  @property
  def features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {name: _tensor_feature(name, spec) for name, spec in self.specs.items()}
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
  def from_config(cls, config: BuilderConfig) -> _Plan:
    _check_config(config)
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
        specs=_infer_specs(all_groups, config.layout, paired=_is_paired(config)),
        fractions=dict(config.split_fractions),
        seed=config.split_seed,
    )


def _check_config(config: BuilderConfig) -> None:
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"numpy_arrays config {config.name!r}: {message}")

  errors.check_choice(config.layout, LAYOUTS, "layout", fail)
  errors.check_choice(config.npz_members, NPZ_MEMBER_MODES, "npz_members", fail)
  if bool(config.splits) == bool(config.paths):
    raise fail(
        "give either `splits` ({split: [paths]}) or `paths` with "
        "`split_fractions`, not both or neither."
    )
  if config.paths:
    total = sum(config.split_fractions.values())
    if not config.split_fractions or abs(total - 1.0) > 1e-9:
      raise fail(
          f"split_fractions {config.split_fractions} must be given with "
          f"`paths` and sum to 1 (they sum to {total})."
      )
  elif config.split_fractions:
    raise fail("split_fractions only applies with `paths`, not `splits`.")
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


def _is_paired(config: BuilderConfig) -> bool:
  sources = list(config.splits.values()) if config.splits else [config.paths]
  return any(isinstance(source, Mapping) for source in sources)


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


def _groups(config: BuilderConfig, patterns: Patterns | Mapping[str, Patterns]) -> list[groups_lib.Group]:
  if isinstance(patterns, Mapping):
    return groups_lib.paired_groups(patterns, root=config.data_root, config_name=config.name)
  return groups_lib.listed_groups(
      patterns, feature_name=config.feature_name, npz_members=config.npz_members,
      root=config.data_root,
  )


def _infer_specs(
    groups: Sequence[groups_lib.Group], layout: str, paired: bool = False
) -> dict[str, _FeatureSpec]:
  """Features from headers only: dtype must agree, differing dims become None.

  Args:
    groups: Every split's groups.
    layout: `rows` or `files`.
    paired: Whether the config maps features to files (else a mismatch between
      .npy files may be X and y given as one list, and the error says how to pair).
  """
  first_group = groups[0]
  specs: dict[str, _FeatureSpec] = {}
  first_seen: dict[str, str] = {}
  for group in groups:
    _check_same_features(group, first_group)
    if layout == "rows":
      _check_same_rows(group)
    for name, source in group.sources.items():
      dtype = _storable_dtype(source, name)
      shape = source.header.shape[1:] if layout == "rows" else source.header.shape
      if name not in specs:
        specs[name], first_seen[name] = _FeatureSpec(dtype, shape), source.name
        continue
      specs[name] = _merge(
          specs[name], _FeatureSpec(dtype, shape), name, first_seen[name], source.name,
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
    spec: _FeatureSpec,
    other: _FeatureSpec,
    name: str,
    first: str,
    source: str,
    suggest_pairing: bool = False,
) -> _FeatureSpec:
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
  return _FeatureSpec(spec.dtype, shape)


def _check_encodable(name: str, spec: _FeatureSpec) -> None:
  if spec.dtype == np.uint32 and spec.shape.count(None) > 1:
    raise errors.SchemaError(
        f"Feature {name!r}: uint32 arrays with more than one varying dimension "
        f"{spec.shape} cannot be stored exactly (TensorFlow cannot decode raw "
        "uint32). Save them as uint64 or int64, or pad to fixed shapes."
    )


def _tensor_feature(name: str, spec: _FeatureSpec) -> tfds.features.Tensor:
  # Raw bytes keep every dtype exact; TF cannot decode raw uint32, whose values
  # fit losslessly in the int64 list encoding instead.
  encoding = (
      tfds.features.Encoding.NONE
      if spec.dtype == np.uint32
      else tfds.features.Encoding.BYTES
  )
  return tfds.features.Tensor(
      shape=spec.shape, dtype=np.dtype(spec.dtype.name), encoding=encoding,
      doc=f"Array {name!r}",
  )


def _encoder(name: str, spec: _FeatureSpec):
  """A function from one example's array to its serialized map entries."""
  if spec.dtype == np.uint32:
    key = serialization.FeatureKey(name)
    return lambda array: serialization.int64_feature(key, array.ravel().tolist())
  if spec.shape.count(None) > 1:
    value_key = serialization.FeatureKey(f"{name}/value")
    shape_key = serialization.FeatureKey(f"{name}/shape")

    def encode_with_shape(array: np.ndarray) -> list:
      return serialization.int64_feature(shape_key, np.shape(array)) + (
          serialization.bytes_feature(value_key, _raw_bytes(array))
      )

    return encode_with_shape
  key = serialization.FeatureKey(name)
  return lambda array: serialization.bytes_feature(key, _raw_bytes(array))


def _raw_bytes(array: np.ndarray | np.generic) -> serialization.Payload:
  """The C-order bytes of an array, without a copy when it is contiguous."""
  # memoryview.cast refuses shapes with a zero dimension; those have no bytes.
  if isinstance(array, np.ndarray) and array.flags.c_contiguous and array.size:
    return memoryview(array).cast("B")
  return array.tobytes()
