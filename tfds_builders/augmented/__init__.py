"""The augmented builder, `load_augmented`, which zips an overlay chain back onto its base, and `compact`."""

from __future__ import annotations

from tfds_builders import tfds_internals
from tfds_builders.augmented.augmented_dataset_builder import Builder
from tfds_builders.augmented.augmented_dataset_builder import BuilderConfig
from tfds_builders.augmented.compaction import compact
from tfds_builders.augmented.overlay_loader import load_augmented

# `tfds build tfds_builders/augmented` imports this folder as `augmented`: make that the canonical package.
tfds_internals.resolve_folder_import(__name__)

__all__ = ["Builder", "BuilderConfig", "compact", "load_augmented"]
