"""The concatenated builder: many sources of the same features as one dataset, with provenance."""

from __future__ import annotations

from tfds_builders import tfds_internals
from tfds_builders.concatenated.agreement import PROMOTIONS
from tfds_builders.concatenated.concatenated_dataset_builder import Builder
from tfds_builders.concatenated.concatenated_dataset_builder import BuilderConfig
from tfds_builders.concatenated.mixing import STOPPING_STRATEGIES
from tfds_builders.concatenated.mixing import schedule

# `tfds build tfds_builders/concatenated` imports this folder as `concatenated`: make that the canonical package.
tfds_internals.resolve_folder_import(__name__)

__all__ = ["Builder", "BuilderConfig", "PROMOTIONS", "STOPPING_STRATEGIES", "schedule"]
