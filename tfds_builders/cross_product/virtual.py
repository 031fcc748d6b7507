"""The cross product as a random-access data source over two ArrayRecord inputs: the builder's examples, unwritten."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, SupportsIndex

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.cross_product import array_records
from tfds_builders.cross_product import cross_product_dataset_builder as card
from tfds_builders.cross_product import inputs
from tfds_builders.cross_product import plan as plan_lib

Example = dict[str, Any]


class VirtualPairs:
  """The examples a cross_product config builds, read by index (`len`, `[k]`, `__getitems__`) and never written.

  Index k is pair (k // M, k % M) under `product` and the k-th pair i < j under
  `combinations`, in the builder's (i, j) order; under sampling, index t < K is
  the pair perm(t) of the builder's sample (a seeded shuffled order), so
  `len()` is exactly the sample's K. An example is the builder's example of the
  same pair, decoded as `tfds.data_source` decodes it: the same features,
  collision policy, `left_index` and `right_index`, values and dtypes.

  Each side is read and decoded once, into memory (about the size of its
  decoded records); no pair is stored. The NumPy arrays of a record are shared
  by every example holding it and are read-only: copy one to change it.

  Usable as a Grain data source (`grain.MapDataset.source(pairs)`,
  `grain.DataLoader(data_source=pairs, ...)`) and wherever a
  `tfds.data_source` result is.

  Attributes:
    config: The resolved BuilderConfig.
    features: The examples' features (those of the builder's `features.json`).
  """

  def __init__(self, config: card.BuilderConfig | Mapping[str, Any] | str, *, data_root: str | None = None):
    """Reads and decodes both inputs of a cross_product config.

    Args:
      config: A BuilderConfig, its fields as a dict (`name` optional), or the
        name of one of the builder's configs. Its `left`/`right` inputs must
        be ArrayRecord files, directories or globs (a dataset built with
        `--file_format array_record`); fields about writing (memory budget,
        partitions, split, Beam) do not apply.
      data_root: Directory that relative paths are taken from (overrides the
        config's `data_root`).

    Raises:
      ConfigError: as the builder for an invalid config, or an unknown config name.
      SourceError: for an input that is not ArrayRecord, missing, empty or
        corrupt, or a sample that keeps no pair (as the builder).
      SchemaError: as the builder, for records whose features disagree.
    """
    self.config = _resolve(config, data_root)
    card.check_config(self.config)
    for side in plan_lib.SIDES:
      patterns = getattr(self.config, side)
      if patterns:
        array_records.only_array_records(side, inputs.expand(patterns, self.config.compression, self.config.data_root))
    plan = card.plan_pairs(self.config)
    self.features: tfds.features.FeaturesDict = plan.features
    self._space = plan.space
    self._length = plan.space.sample_count
    if not self._length:
      raise plan.nothing_kept()
    self._prefix = plan.policy == "prefix"
    self._left, self._right = (_decoded_side(plan, side, self._prefix) for side in plan_lib.SIDES)
    # With sample_rate < 1 the order is perm(t), even when K rounds up to every pair.
    perm = plan.space.permutation
    self._sample = (perm.size, *perm.radices, perm.keys) if plan.space.sampled else None

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: SupportsIndex) -> Example:
    """The example of pair `index` (negative indices count from the end, like a Sequence).

    Raises:
      IndexError: if `index` is out of range.
      TypeError: if it is not an integer (slices included).
    """
    number = self._candidate(operator.index(index))
    i, j = self._space.pair(number)
    return self._example(i, j)

  def __getitems__(self, indices: Sequence[SupportsIndex]) -> list[Example]:
    """The examples of several indices at once (Grain's and PyTorch's batch protocol), in their order.

    Raises:
      IndexError: naming the first index out of range.
    """
    numbers = [operator.index(index) for index in indices]
    beyond = next((number for number in numbers if not -2**63 <= number < 2**63), None)
    if beyond is not None:  # no int64 holds it, so it is out of range
      raise self._out_of_range(beyond)
    wanted = np.array(numbers, np.int64)
    if not len(wanted):
      return []
    wanted = np.where(wanted < 0, wanted + self._length, wanted)
    outside = (wanted < 0) | (wanted >= self._length)
    if outside.any():
      raise self._out_of_range(list(indices)[int(np.argmax(outside))])
    if self._sample is not None:
      wanted = self._space.permutation(wanted)
    rows, columns = self._space.pairs_of(wanted)
    example = self._example
    return [example(i, j) for i, j in zip(rows.tolist(), columns.tolist())]

  def __iter__(self) -> Iterator[Example]:
    for index in range(self._length):
      yield self[index]

  def __repr__(self) -> str:
    space = self._space
    sample = f", sample_rate={space.sample_rate}, sample_seed={space.sample_seed}" if space.sampled else ""
    return (f"VirtualPairs(config={self.config.name!r}, mode={space.mode!r}, left={space.num_left}, "
            f"right={space.num_right}, pairs={self._length}{sample})")

  def pair(self, index: SupportsIndex) -> tuple[int, int]:
    """The rows (i, j) of the pair at `index`: its `left_index` and `right_index`."""
    return self._space.pair(self._candidate(operator.index(index)))

  def _candidate(self, index: int) -> int:
    """The candidate number of the pair at an index: the index itself, or perm(index) under sampling."""
    position = index + self._length if index < 0 else index
    if not 0 <= position < self._length:
      raise self._out_of_range(index)
    if self._sample is None:
      return position
    return int(fast.permutation.forward(position, *self._sample))

  def _example(self, i: int, j: int) -> Example:
    if self._prefix:  # fresh nested dicts: changing one example's dict leaves the others alone
      return {"left": dict(self._left[i]), "right": dict(self._right[j]),
              "left_index": i, "right_index": j}
    return {**self._left[i], **self._right[j], "left_index": i, "right_index": j}

  def _out_of_range(self, index: object) -> IndexError:
    return IndexError(f"VirtualPairs index {index} is out of range: {self!r} holds {self._length} pairs "
                      f"(indices 0 to {self._length - 1}, or negative from the end).")


def _resolve(config: card.BuilderConfig | Mapping[str, Any] | str, data_root: str | None) -> card.BuilderConfig:
  """The BuilderConfig that a config, its fields or a config name stand for."""
  if isinstance(config, str):
    named = {known.name: known for known in card.Builder.BUILDER_CONFIGS}
    if config not in named:
      raise errors.ConfigError(
          f"VirtualPairs: no cross_product config named {config!r}; use one of {sorted(named)}, or pass a "
          "BuilderConfig or its fields as a dict."
      )
    config = named[config]
  elif isinstance(config, Mapping):
    fields = {field.name for field in dataclasses.fields(card.BuilderConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
      raise errors.ConfigError(f"VirtualPairs: unknown cross_product config fields {unknown}; see BuilderConfig.")
    config = card.BuilderConfig(**{"name": "virtual", **config})
  elif not isinstance(config, card.BuilderConfig):
    raise errors.ConfigError(
        f"VirtualPairs: config is a {type(config).__name__}; pass a cross_product BuilderConfig, a dict of its "
        "fields, or a config name."
    )
  return dataclasses.replace(config, data_root=data_root) if data_root is not None else config


def _decoded_side(plan: plan_lib.PairingPlan, side: str, prefix: bool) -> list[Example]:
  """Every record of one side, renamed as the builder renames it and decoded by its part of the features."""
  features = plan.side_features(side)
  decoded = []
  for record in plan.renamed_records(side):
    values = features.deserialize_example_np(record)
    values = values[side] if prefix else values
    for value in values.values():
      if isinstance(value, np.ndarray):
        value.flags.writeable = False  # shared by every pair holding this record
    decoded.append(values)
  return decoded
