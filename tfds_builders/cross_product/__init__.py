"""The cross_product builder, `VirtualPairs` (its examples by index, never written), and `pair_is_sampled`."""

from __future__ import annotations

from tfds_builders import tfds_internals
from tfds_builders.cross_product.cross_product_dataset_builder import Builder
from tfds_builders.cross_product.cross_product_dataset_builder import BuilderConfig
from tfds_builders.cross_product.pairs import PairSpace
from tfds_builders.cross_product.pairs import pair_is_sampled
from tfds_builders.cross_product.virtual import VirtualPairs

# `tfds build tfds_builders/cross_product` imports this folder as `cross_product`: make that the canonical package.
tfds_internals.resolve_folder_import(__name__)

__all__ = ["Builder", "BuilderConfig", "PairSpace", "VirtualPairs", "pair_is_sampled"]
