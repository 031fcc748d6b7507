"""The cross_product plan: both inputs read once, the pairs to write, and the rename table of their names."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import example_schema
from tfds_builders.core import paths
from tfds_builders.core import serialization
from tfds_builders.cross_product import inputs
from tfds_builders.cross_product import pairs

SIDES = ("left", "right")
INDEX_FEATURES = {"left": "left_index", "right": "right_index"}


@dataclasses.dataclass(frozen=True)
class PairingPlan:
  """The sides, how their feature names combine, and the pairs to write."""

  sides: Mapping[str, inputs.Side]
  space: pairs.PairSpace
  policy: str
  renames: Mapping[str, Mapping[str, str | None]]  # side -> source name -> output name, None: dropped
  collisions: Sequence[str]

  @property
  def features(self) -> tfds.features.FeaturesDict:
    """Features decoding the pair bytes as written: `features.json` matches them."""
    index = {
        INDEX_FEATURES[side]: tfds.features.Tensor(
            shape=(), dtype=np.int64, doc=f"Row of the pair's {side} record in the {side} input."
        )
        for side in SIDES
    }
    if self.policy == "prefix":
      nested = {side: example_schema.to_features(self.sides[side].schema) for side in SIDES}
      return tfds.features.FeaturesDict({**nested, **index})
    flat = {
        self.renames[side][name]: example_schema.to_feature(spec)
        for side in SIDES
        for name, spec in self.sides[side].schema.items()
        if self.renames[side][name] is not None
    }
    return tfds.features.FeaturesDict({**dict(sorted(flat.items())), **index})

  def spill_records(self, side: str) -> Iterator[bytes]:
    """The records of one side, renamed once and followed by their index.

    Raises:
      SourceError: naming the side and file, if a file is corrupt or holds
        another number of records than when it was first counted.
    """
    index_key = serialization.FeatureKey(INDEX_FEATURES[side])
    for count, record in enumerate(self.renamed_records(side)):
      index_example = serialization.example([serialization.int64_feature(index_key, [count])])
      yield serialization.merge_examples(record, index_example)

  def renamed_records(self, side: str) -> Iterator[bytes]:
    """The records of one side with their features renamed (or dropped) by the rename table, in order."""
    rename = self.renames[side].get
    for record in self.sides[side].records():
      yield serialization.rename_features(record, rename)

  def side_features(self, side: str) -> tfds.features.FeaturesDict:
    """The part of `features` that one side's renamed records hold (without its index)."""
    if self.policy == "prefix":
      return tfds.features.FeaturesDict({side: example_schema.to_features(self.sides[side].schema)})
    return tfds.features.FeaturesDict({
        self.renames[side][name]: example_schema.to_feature(spec)
        for name, spec in self.sides[side].schema.items()
        if self.renames[side][name] is not None
    })

  def provenance(self, data_root: str | None) -> dict:
    return {
        "sources": {
            side: paths.source_names([f.path for f in self.sides[side].files], data_root)
            for side in SIDES
        },
        "records": {side: self.sides[side].num_records for side in SIDES},
        "mode": self.space.mode,
        "pairs_considered": self.space.size,
        "sampling": {"rate": self.space.sample_rate, "seed": self.space.sample_seed},
        "collision_policy": self.policy,
        "collisions": list(self.collisions),
        "renamed": {
            side: {name: new for name, new in sorted(self.renames[side].items()) if new != name}
            for side in SIDES
        },
        "schema": {
            side: {name: spec.spec_text() for name, spec in sorted(self.sides[side].schema.items())}
            for side in SIDES
        },
    }

  def explain_empty(self, error: errors.SourceError) -> errors.SourceError:
    """A clearer error when sampling kept no pair at all."""
    if self.space.sample_rate >= 1.0 or "no examples" not in str(error):
      return error
    return self.nothing_kept()

  def nothing_kept(self) -> errors.SourceError:
    """The error for a sample of no pair at all."""
    return errors.SourceError(
        f"sample_rate={self.space.sample_rate} with sample_seed="
        f"{self.space.sample_seed} kept none of the {self.space.size:,} pairs. "
        "Raise sample_rate or try another sample_seed."
    )

  @classmethod
  def from_config(cls, config: Any) -> PairingPlan:
    """Reads both inputs of a checked cross_product config in full: counts, schemas, names."""
    left = inputs.read("left", config.left, config.left_schema, config.compression, config.data_root)
    if config.mode == "combinations":
      right = dataclasses.replace(left, name="right")
    else:
      right = inputs.read("right", config.right, config.right_schema, config.compression, config.data_root)
    space = pairs.PairSpace(
        mode=config.mode,
        num_left=left.num_records,
        num_right=right.num_records,
        sample_rate=config.sample_rate,
        sample_seed=config.sample_seed,
    )
    _check_pair_count(space, config)
    renames, collisions = _resolve_names(left.schema, right.schema, config.collision_policy)
    return cls({"left": left, "right": right}, space, config.collision_policy, renames, collisions)


def _check_pair_count(space: pairs.PairSpace, config: Any) -> None:
  if space.mode == "combinations":
    sizes = f"{space.num_left:,} × {space.num_left - 1:,} / 2 = {space.size:,}"
  else:
    sizes = f"N × M = {space.num_left:,} × {space.num_right:,} = {space.size:,}"
  if space.size == 0:
    raise errors.SourceError(
        f"cross_product config {config.name!r}: {sizes} pairs; combinations need "
        "at least two records in `left`."
    )
  if space.sampled and space.size >= fast.permutation.MAX_SIZE:
    raise errors.ConfigError(
        f"cross_product config {config.name!r}: {sizes} pairs; a sample draws from at most "
        f"{fast.permutation.MAX_SIZE - 1:,} candidate pairs. Narrow the inputs, or split them."
    )
  if config.max_pairs is not None and space.size > config.max_pairs:
    raise errors.ConfigError(
        f"cross_product config {config.name!r}: {sizes} pairs, over "
        f"max_pairs={config.max_pairs:,}. Nothing was written. Raise max_pairs "
        "if you mean it, or narrow the inputs."
    )


def _resolve_names(
    left: Mapping[str, example_schema.FeatureSpec],
    right: Mapping[str, example_schema.FeatureSpec],
    policy: str,
) -> tuple[dict[str, dict[str, str | None]], list[str]]:
  """Output names per side (None: dropped) and the names both sides have.

  Raises:
    SchemaError: under `error` when names collide, and under the flat policies
      when a source feature takes the name of an index feature.
  """
  collisions = sorted(left.keys() & right.keys())
  if policy == "prefix":
    prefixed = {
        side: {name: f"{side}/{name}" for name in schema}
        for side, schema in zip(SIDES, (left, right))
    }
    return prefixed, collisions
  if policy == "error" and collisions:
    raise errors.SchemaError(
        f"Both inputs have the features {collisions} and collision_policy='error'. "
        "Rename them in the sources, or set collision_policy to 'prefix' (keep "
        "both under left/ and right/), 'left_wins' or 'right_wins'."
    )
  loser = "right" if policy == "left_wins" else "left"
  renames = {
      side: {name: None if side == loser and name in collisions else name for name in schema}
      for side, schema in zip(SIDES, (left, right))
  }
  taken = sorted(
      f"{name!r} of {side}" for side in SIDES for name, new in renames[side].items()
      if new in INDEX_FEATURES.values()
  )
  if taken:
    raise errors.SchemaError(
        f"The input features {taken} take the name of an index feature of the "
        f"pairs ({sorted(INDEX_FEATURES.values())}) under collision_policy={policy!r}. "
        "Use collision_policy='prefix', which nests the inputs' features, or rename them."
    )
  return renames, collisions
