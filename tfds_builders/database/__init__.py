"""The database builder: a dataset from SQL queries on PostgreSQL or SQLite."""

from __future__ import annotations

from tfds_builders.database.database_dataset_builder import Builder
from tfds_builders.database.database_dataset_builder import BuilderConfig

__all__ = ["Builder", "BuilderConfig"]
