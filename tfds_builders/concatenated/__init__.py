"""The concatenated builder: many sources of the same features as one dataset, with provenance."""

from __future__ import annotations

from tfds_builders.concatenated.agreement import PROMOTIONS
from tfds_builders.concatenated.concatenated_dataset_builder import Builder
from tfds_builders.concatenated.concatenated_dataset_builder import BuilderConfig
from tfds_builders.concatenated.mixing import STOPPING_STRATEGIES
from tfds_builders.concatenated.mixing import schedule

__all__ = ["Builder", "BuilderConfig", "PROMOTIONS", "STOPPING_STRATEGIES", "schedule"]
