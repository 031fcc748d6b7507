"""How numpy_arrays stores an array: its TFDS feature and its serialized entries, bytes kept exact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import serialization
from tfds_builders.core import tensor_codecs
from tfds_builders.numpy_arrays import groups as groups_lib

# Every dtype as its raw bytes, so arrays come back bit-exact.
POLICY = tensor_codecs.EXACT


def codec(spec: Any) -> tensor_codecs.TensorCodec:
  """The codec of one array (a `plan.FeatureSpec`)."""
  return tensor_codecs.resolve(spec.dtype, spec.shape, POLICY)


def stored_dtype(dtype: np.dtype) -> np.dtype:
  """The little-endian dtype an array of `dtype` is stored as.

  Raises:
    tensor_codecs.RefusedDtype: saying why, for a dtype TensorFlow cannot hold.
  """
  return tensor_codecs.resolve(dtype, (), POLICY).dtype


def tensor_feature(name: str, spec: Any) -> tfds.features.Tensor:
  """The feature of one array (a `plan.FeatureSpec`): every dtype kept exact."""
  return codec(spec).feature(doc=f"Array {name!r}")


def encoder(name: str, spec: Any) -> Callable[[np.ndarray], list]:
  """A function from one example's array to its serialized map entries."""
  return codec(spec).encoder(name, cast=False)  # arrays are read in their stored dtype


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
