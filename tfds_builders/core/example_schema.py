"""Inferring a schema from `tf.train.Example` records, and mapping it to and from TFDS features.

The schema is expressed at the wire level (value kind and list length per
feature), so raw records can be copied into a TFDS dataset without being
decoded and re-encoded: `to_features` chooses the TFDS features whose
serialized form is exactly the raw records' layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from google.protobuf import message
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders.core import errors

KINDS = ("bytes_list", "float_list", "int64_list")
_DTYPES = {"bytes_list": np.object_, "float_list": np.float32, "int64_list": np.int64}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One Example feature: its value kind and list length (None: varies)."""

  kind: str
  length: int | None

  def describe(self) -> str:
    return f"{self.kind}[{'*' if self.length is None else self.length}]"


Schema = Mapping[str, FeatureSpec]


def parse_example(record: bytes, source: str, index: int) -> tf.train.Example:
  """Parses one record, naming the file and record index if it is no Example.

  Raises:
    SchemaError: if the record is not a serialized `tf.train.Example`.
  """
  try:
    return tf.train.Example.FromString(record)
  except message.DecodeError as error:
    raise errors.SchemaError(
        f"{source}: record {index} is not a tf.train.Example ({error}). "
        "Only TFRecord files of tf.train.Example records are supported."
    ) from error


def spec_of(example: tf.train.Example) -> dict[str, FeatureSpec]:
  """The wire-level schema of one parsed Example."""
  specs = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else ()
    specs[name] = FeatureSpec(kind or "int64_list", len(values))
  return specs


def merge(schema: Schema, record_spec: Schema, source: str, index: int) -> dict[str, FeatureSpec]:
  """Widens `schema` by one record's spec: lengths that differ become None.

  Raises:
    SchemaError: naming the file, record, and feature, if a feature is missing,
      extra, or of another value kind.
  """
  problems = diff(schema, record_spec)
  if problems:
    raise errors.SchemaError(
        f"{source}: record {index} does not match the schema of the records "
        f"before it: {'; '.join(problems)}. Every record needs the same "
        "features with the same value kinds."
    )
  return {
      name: spec if spec.length == record_spec[name].length else FeatureSpec(spec.kind, None)
      for name, spec in schema.items()
  }


def diff(expected: Schema, actual: Schema, lengths: bool = False) -> list[str]:
  """Human-readable differences: missing, extra and mismatched features.

  Args:
    expected: The reference schema.
    actual: The schema compared with it.
    lengths: Also report a fixed length that differs from, or is not covered
      by, the expected one.
  """
  problems = [f"missing feature {name!r} ({spec.describe()})" for name, spec in expected.items() if name not in actual]
  problems += [f"extra feature {name!r} ({spec.describe()})" for name, spec in actual.items() if name not in expected]
  for name in expected.keys() & actual.keys():
    want, got = expected[name], actual[name]
    if want.kind != got.kind:
      problems.append(f"feature {name!r} is {got.describe()}, expected {want.describe()}")
    elif lengths and want.length is not None and want.length != got.length:
      problems.append(f"feature {name!r} has {got.length} values, expected {want.length}")
  return sorted(problems)


def infer(records: Iterable[tuple[str, int, bytes]]) -> dict[str, FeatureSpec]:
  """The schema covering every `(source name, index, record)` given.

  Raises:
    SourceError: if there are no records.
    SchemaError: if records disagree (see `merge`) or are not Examples.
  """
  schema: dict[str, FeatureSpec] | None = None
  for source, index, record in records:
    record_spec = spec_of(parse_example(record, source, index))
    schema = record_spec if schema is None else merge(schema, record_spec, source, index)
  if schema is None:
    raise errors.SourceError("No records to infer a schema from: the input is empty.")
  return schema


def check(schema: Schema, record: bytes, source: str, index: int) -> None:
  """Raises SchemaError naming the file and record if it breaks `schema`."""
  problems = diff(schema, spec_of(parse_example(record, source, index)), lengths=True)
  if problems:
    raise errors.SchemaError(
        f"{source}: record {index} does not match the schema: {'; '.join(problems)}."
    )


def to_feature(spec: FeatureSpec) -> tfds.features.Tensor:
  """The TFDS feature that decodes exactly this raw Example feature.

  One value becomes a scalar, a fixed length L a vector of L, a varying length
  a `(None,)` vector: TFDS's serialized form of each is the raw layout.
  """
  shape = () if spec.length == 1 else (spec.length,)
  dtype = tf.string if spec.kind == "bytes_list" else _DTYPES[spec.kind]
  return tfds.features.Tensor(shape=shape, dtype=dtype)


def to_features(schema: Schema) -> tfds.features.FeaturesDict:
  """A FeaturesDict that decodes records of `schema` as they are on disk."""
  return tfds.features.FeaturesDict({name: to_feature(spec) for name, spec in sorted(schema.items())})


def from_features(features: tfds.features.FeatureConnector) -> dict[str, FeatureSpec]:
  """The wire-level schema TFDS writes for `features` (flattened names)."""
  infos = tfds.core.utils.flatten_nest_dict(features.get_serialized_info())
  return {name: _spec_of_info(info) for name, info in infos.items()}


def _spec_of_info(info: tfds.features.TensorInfo) -> FeatureSpec:
  dtype = np.dtype(info.np_dtype) if info.np_dtype is not None else np.dtype(object)
  if dtype.kind in "OSU":
    kind = "bytes_list"
  elif dtype.kind == "f":
    kind = "float_list"
  else:
    kind = "int64_list"
  shape = tuple(info.shape)
  length = None if any(dim is None for dim in shape) else int(np.prod(shape, dtype=np.int64))
  return FeatureSpec(kind, length)
