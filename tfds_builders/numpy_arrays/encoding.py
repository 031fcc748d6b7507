"""How numpy_arrays stores an array: its TFDS feature and its serialized entries, bytes kept exact."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
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
    plan: Any, split: str, group: groups_lib.Group, layout: str, start: int = 0, stop: int | None = None
) -> Iterator[tuple[str, bytes]]:
  """The serialized examples of one file (group) that belong to `split` (rows `[start, stop)` only if given)."""
  encoders = {name: encoder(name, spec) for name, spec in plan.specs.items()}
  for key, arrays in group.examples(layout, start, stop):
    if plan.holds(split, key):
      yield key, serialization.example(
          encoders[name](array) for name, array in arrays.items()
      )


RowSlice = tuple[groups_lib.Group, int, int]


def row_slices(groups: Sequence[groups_lib.Group], start: int, stop: int) -> list[RowSlice]:
  """Rows `[start, stop)` of the groups' rows end to end, as `(group, first, end)` within each group."""
  slices, offset = [], 0
  for group in groups:
    rows = group.num_rows
    first, end = max(start - offset, 0), min(stop - offset, rows)
    if first < end:
      slices.append((group, first, end))
    offset += rows
  return slices


def sliced_examples(plan: Any, split: str, slices: Sequence[RowSlice]) -> Iterator[tuple[str, bytes]]:
  """The serialized examples of row slices, in order: one Beam partition of a split."""
  for group, first, end in slices:
    yield from group_examples(plan, split, group, "rows", first, end)


def rows_partition(
    plan: Any, split: str, groups: Sequence[groups_lib.Group], start: int, stop: int
) -> Callable[[], Iterator[tuple[str, bytes]]]:
  """The partition of the split's examples `[start, stop)`: picklable, holding only the row slices it reads."""
  return functools.partial(sliced_examples, plan, split, row_slices(groups, start, stop))


def serialized_bytes(plan: Any, split: str, groups: Sequence[groups_lib.Group]) -> int:
  """The split's serialized bytes: each group's rows times its first row's size (rows of one array serialize alike)."""
  total = 0
  for group in groups:
    if group.num_rows:
      _, first = next(group_examples(plan, split, group, "rows", 0, 1))
      total += len(first) * group.num_rows
  return total
