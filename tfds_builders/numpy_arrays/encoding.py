"""How numpy_arrays stores an array: its TFDS feature and its serialized entries, bytes kept exact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import serialization
from tfds_builders.numpy_arrays import groups as groups_lib


def tensor_feature(name: str, spec: Any) -> tfds.features.Tensor:
  """The feature of one array (a `plan.FeatureSpec`): every dtype kept exact."""
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


def encoder(name: str, spec: Any) -> Callable[[np.ndarray], list]:
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


def group_examples(
    plan: Any, split: str, group: groups_lib.Group, layout: str
) -> Iterator[tuple[str, bytes]]:
  """The serialized examples of one file (group) that belong to `split`."""
  encoders = {name: encoder(name, spec) for name, spec in plan.specs.items()}
  for key, arrays in group.examples(layout):
    if plan.holds(split, key):
      yield key, serialization.example(
          encoders[name](array) for name, array in arrays.items()
      )
