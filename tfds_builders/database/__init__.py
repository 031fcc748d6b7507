"""The database builder: a dataset from SQL queries on PostgreSQL or SQLite."""

from __future__ import annotations

from tfds_builders import tfds_internals
from tfds_builders.database.database_dataset_builder import Builder
from tfds_builders.database.database_dataset_builder import BuilderConfig

# `tfds build tfds_builders/database` imports this folder as `database`: make that the canonical package.
tfds_internals.resolve_folder_import(__name__)

__all__ = ["Builder", "BuilderConfig"]
