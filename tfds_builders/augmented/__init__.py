"""The augmented builder, and `load_augmented`, which zips an overlay back onto its base."""

from __future__ import annotations

from tfds_builders.augmented.augmented_dataset_builder import Builder
from tfds_builders.augmented.augmented_dataset_builder import BuilderConfig
from tfds_builders.augmented.overlay_loader import load_augmented

__all__ = ["Builder", "BuilderConfig", "load_augmented"]
