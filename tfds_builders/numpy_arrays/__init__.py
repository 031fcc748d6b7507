"""The numpy_arrays builder and `to_numpy`, which turns its splits back into arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import tfds_internals
from tfds_builders.numpy_arrays.numpy_arrays_dataset_builder import Builder
from tfds_builders.numpy_arrays.numpy_arrays_dataset_builder import BuilderConfig

# `tfds build tfds_builders/numpy_arrays` imports this folder as `numpy_arrays`: make that the canonical package.
tfds_internals.resolve_folder_import(__name__)


def to_numpy(dataset: Any) -> dict[str, np.ndarray | list[np.ndarray]]:
  """Collects a split back into arrays: `{feature: stacked array}`.

  Features of fixed shape are stacked along a new first axis, so an `(N, ...)`
  source array comes back equal, dtype and bytes included. Features whose
  shape varies come back as a list of arrays, one per example.

  The arrays come in the dataset's order. A numpy_arrays split is unordered
  (`disable_shuffling=False`), so TFDS reads a split of several shards 16
  shards at a time, interleaved, even with `shuffle_files=False`. Load it with
  `read_config=tfds.ReadConfig(interleave_cycle_length=1)` to get the rows
  back in stored order:

      ds = tfds.load("numpy_arrays/mine", split="train",
                     read_config=tfds.ReadConfig(interleave_cycle_length=1))
      arrays = to_numpy(ds)

  Args:
    dataset: A `tf.data.Dataset` from `tfds.load(...)`, unbatched.
  """
  columns: dict[str, list[np.ndarray]] = {}
  for example in tfds.as_numpy(dataset):
    for name, value in example.items():
      columns.setdefault(name, []).append(value)
  return {
      name: np.stack(values) if len({v.shape for v in values}) == 1 else values
      for name, values in columns.items()
  }


__all__ = ["Builder", "BuilderConfig", "to_numpy"]
