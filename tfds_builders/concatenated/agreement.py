"""Schema agreement: the one FeaturesDict under which every source's records decode unchanged.

Records are copied without being decoded, so the output features must decode
each source's *wire layout* as that source meant it. Prepared TFDS sources
declare their features (dtype, shape, type such as Image or ClassLabel); raw
TFRecord sources only show their wire layout (value kind and list length),
which is inferred over all raw sources together.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.core import example_schema

PROMOTIONS = ("integers", "floats", "shapes")
_NONE = tfds.features.Encoding.NONE


@dataclasses.dataclass(frozen=True)
class Participant:
  """One source's features, as given to `agree`."""

  source: str
  features: tfds.features.FeaturesDict
  typed: bool  # declared (prepared TFDS) or inferred from the wire (raw)


@dataclasses.dataclass(frozen=True)
class _Column:
  source: str
  leaf: tfds.features.FeatureConnector
  typed: bool
  wire: Mapping[str, example_schema.FeatureSpec]  # relative names ("" = the leaf itself)

  def summary(self) -> str:
    """`int64 (None,) (raw) in 'site_a'`: the leaf, how it is known, and its source."""
    return describe_leaf(self.leaf) + ("" if self.typed else " (raw)") + f" in {self.source!r}"


@dataclasses.dataclass(frozen=True)
class Agreement:
  """The agreed output features and the promotions that were applied."""

  features: tfds.features.FeaturesDict
  promoted: dict[str, str]  # feature -> "old dtypes/shapes -> new"


def describe_leaf(leaf: tfds.features.FeatureConnector) -> str:
  """`int64 (None,)`, with the type named when it is not a plain Tensor."""
  dtype = leaf.np_dtype
  if isinstance(dtype, Mapping):
    dtype_text = "nested"
  else:
    dtype_text = "string" if np.dtype(dtype).kind in "OSU" else np.dtype(dtype).name
  text = f"{dtype_text} {tuple(leaf.shape) if not isinstance(leaf.shape, Mapping) else ''}".strip()
  if isinstance(leaf, tfds.features.ClassLabel):
    return f"ClassLabel(names={leaf.names})"
  if type(leaf) is not tfds.features.Tensor:
    return f"{type(leaf).__name__} {text}"
  encoding = tfds_internals.tensor_encoding(leaf)
  return text if encoding == _NONE else f"{text} encoding={encoding.value}"


def agree(participants: Sequence[Participant], promotions: Sequence[str]) -> Agreement:
  """The output features, checked before anything is written.

  Args:
    participants: Every source's features, in config order. The first source
      is the reference for missing and extra features.
    promotions: Opt-in widenings, a subset of `PROMOTIONS`.

  Raises:
    SchemaError: listing every differing feature (name, dtype, shape, source),
      and every missing and extra one.
  """
  columns = [_columns(p) for p in participants]
  reference = participants[0].source
  problems = []
  for participant, cols in zip(participants[1:], columns[1:]):
    for name in sorted(columns[0].keys() - cols.keys()):
      problems.append(
          f"feature {name!r} is missing in {participant.source!r} "
          f"({columns[0][name].summary()})"
      )
    for name in sorted(cols.keys() - columns[0].keys()):
      problems.append(
          f"feature {name!r} is extra in {participant.source!r} ({cols[name].summary()}), "
          f"not in {reference!r}"
      )
  leaves: dict[str, tfds.features.FeatureConnector] = {}
  promoted: dict[str, str] = {}
  for name in columns[0]:
    present = [cols[name] for cols in columns if name in cols]
    leaf, problem, change = _agree_column(name, present, set(promotions))
    if problem:
      problems.append(problem)
    else:
      leaves[name] = leaf
      if change:
        promoted[name] = change
  if problems:
    raise errors.SchemaError(
        "The sources' features do not agree; nothing was written:\n"
        + "\n".join(f"  - {problem}" for problem in problems)
        + "\nMake the sources agree (same features, dtypes and shapes), or enable "
        "the promotion named above in the config's `promotions`."
    )
  structure = next((p.features for p in participants if p.typed), participants[0].features)
  return Agreement(_rebuild(structure, leaves), promoted)


def _columns(participant: Participant) -> dict[str, _Column]:
  wire = example_schema.from_features(participant.features)
  columns = {}
  for path, leaf in _leaves(participant.features).items():
    relative = {
        name[len(path):].lstrip("/"): spec
        for name, spec in wire.items()
        if name == path or name.startswith(path + "/")
    }
    columns[path] = _Column(participant.source, leaf, participant.typed, relative)
  return columns


def _leaves(features: tfds.features.FeatureConnector, prefix: str = "") -> dict[str, tfds.features.FeatureConnector]:
  leaves = {}
  for name, child in features.items():
    if isinstance(child, tfds.features.FeaturesDict):
      leaves.update(_leaves(child, f"{prefix}{name}/"))
    else:
      leaves[f"{prefix}{name}"] = child
  return leaves


def _rebuild(
    features: tfds.features.FeaturesDict,
    leaves: Mapping[str, tfds.features.FeatureConnector],
    prefix: str = "",
) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      name: _rebuild(child, leaves, f"{prefix}{name}/")
      if isinstance(child, tfds.features.FeaturesDict)
      else leaves[f"{prefix}{name}"]
      for name, child in features.items()
  })


def _identity(leaf: tfds.features.FeatureConnector) -> str:
  """What two declared features must share to be the same feature."""
  content = leaf.to_json()
  content.pop("description", None)
  names = leaf.names if isinstance(leaf, tfds.features.ClassLabel) else None
  return json.dumps([content, names], sort_keys=True, default=str)


def _agree_column(
    name: str, columns: Sequence[_Column], enabled: set[str]
) -> tuple[tfds.features.FeatureConnector | None, str, str]:
  """(output leaf, problem, promotion applied) of one feature."""
  raw = [c for c in columns if not c.typed]
  typed = [c for c in columns if c.typed]
  listing = ", ".join(c.summary() for c in columns)
  raw_spec = None
  if raw:
    kinds = {c.wire[""].kind for c in raw}
    if len(kinds) > 1:
      return None, f"feature {name!r} differs: {listing}; raw value kinds cannot be promoted", ""
    lengths = {c.wire[""].length for c in raw}
    # Raw files declare no shape: lengths that differ are what inference sees.
    raw_spec = example_schema.FeatureSpec(kinds.pop(), lengths.pop() if len(lengths) == 1 else None)
  if not typed:
    return example_schema.to_feature(raw_spec), "", ""

  candidate, change = typed[0].leaf, ""
  if len({_identity(c.leaf) for c in typed}) > 1:
    candidate, needed, reason = _promote([c.leaf for c in typed])
    if candidate is None or not needed <= enabled:
      return None, _mismatch(name, listing, needed - enabled, reason), ""
    change = f"{' / '.join(sorted({describe_leaf(c.leaf) for c in typed}))} -> {describe_leaf(candidate)}"
  if raw_spec is None:
    return candidate, "", change

  fitted, needed, reason = _fit_raw(candidate, raw_spec)
  if fitted is None or not needed <= enabled:
    return None, _mismatch(name, listing, needed - enabled, reason), ""
  if fitted is not candidate:
    change = f"{describe_leaf(candidate)} -> {describe_leaf(fitted)} (to hold the raw records)"
  return fitted, "", change


def _mismatch(name: str, listing: str, missing_promotions: set[str], reason: str) -> str:
  text = f"feature {name!r} differs: {listing}"
  if reason:
    return f"{text}; {reason}"
  return f"{text}; enable promotions {sorted(missing_promotions)} to store it as one feature"


def plain_tensor(leaf: tfds.features.FeatureConnector) -> bool:
  return type(leaf) is tfds.features.Tensor and tfds_internals.tensor_encoding(leaf) == _NONE


def _promote(leaves: Sequence[tfds.features.FeatureConnector]):
  """(widened Tensor, promotions it needs, reason it is impossible)."""
  if not all(plain_tensor(leaf) for leaf in leaves):
    return None, set(), (
        "only plain tfds.features.Tensor features (no encoding) can be promoted; "
        "other feature types must be identical"
    )
  dtype, needed, reason = _widen_dtype([np.dtype(leaf.np_dtype) for leaf in leaves])
  if dtype is None:
    return None, needed, reason
  shape, shape_needed, reason = _widen_shape([tuple(leaf.shape) for leaf in leaves])
  if shape is None:
    return None, needed | shape_needed, reason
  return tfds.features.Tensor(shape=shape, dtype=dtype), needed | shape_needed, ""


def _widen_dtype(dtypes: Sequence[np.dtype]):
  if len(set(dtypes)) == 1:
    return dtypes[0], set(), ""
  result = np.result_type(*dtypes)
  if all(d.kind in "biu" for d in dtypes):
    # uint64 travels bitcast to int64 and has no wider integer: never widened.
    if result.kind in "iu" and result != np.uint64 and np.dtype(np.uint64) not in dtypes:
      return result, {"integers"}, ""
    return None, set(), f"{sorted(d.name for d in set(dtypes))} have no common integer dtype"
  if all(d.kind == "f" for d in dtypes):
    return result, {"floats"}, ""
  return None, set(), (
      f"dtypes {sorted(d.name for d in set(dtypes))} are stored as different value "
      "kinds and cannot be promoted without decoding"
  )


def _widen_shape(shapes: Sequence[tuple]):
  if len(set(shapes)) == 1:
    return shapes[0], set(), ""
  ranks = {len(shape) for shape in shapes}
  if len(ranks) == 1:
    widened = tuple(dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes))
  elif ranks == {0, 1}:
    widened = (None,)  # a scalar is a one-value list on the wire
  else:
    return None, set(), f"shapes {sorted(set(shapes), key=str)} have different ranks"
  if widened.count(None) > 1:
    return None, set(), (
        f"shapes {sorted(set(shapes), key=str)} would widen to {widened}; TFDS stores "
        "at most one unknown dimension without an encoding"
    )
  return widened, {"shapes"}, ""


def _fit_raw(candidate: tfds.features.FeatureConnector, raw: example_schema.FeatureSpec):
  """The declared feature widened, if needed, so that raw records decode under it."""
  wire = example_schema.from_features(tfds.features.FeaturesDict({"x": candidate}))
  if set(wire) != {"x"} or wire["x"].kind != raw.kind:
    return None, set(), "raw records store it as " + raw.spec_text()
  needed: set[str] = set()
  dtype = np.dtype(candidate.np_dtype) if plain_tensor(candidate) else None
  shape = tuple(candidate.shape) if dtype is not None else None
  # Raw int64 values may not fit a narrower integer; raw floats are float32.
  if raw.kind == "int64_list" and np.dtype(candidate.np_dtype) != np.int64:
    if dtype is None:
      return None, set(), f"raw records hold int64 values, declared {describe_leaf(candidate)}"
    dtype, needed = np.dtype(np.int64), needed | {"integers"}
  if raw.kind == "float_list" and dtype == np.float16:
    dtype, needed = np.dtype(np.float32), needed | {"floats"}
  length = wire["x"].length
  if length is not None and raw.length != length:
    if shape is None or len(shape) > 1:
      return None, set(), f"raw records store it as {raw.spec_text()}, declared {describe_leaf(candidate)}"
    shape, needed = (None,), needed | {"shapes"}
  if not needed:
    return candidate, needed, ""
  return tfds.features.Tensor(shape=shape, dtype=dtype), needed, ""
