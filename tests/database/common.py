"""Shared by the database tests: builders of custom configs, readers of what they stored, SQL sources."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pathlib
import sqlite3
import struct
from typing import Any

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_info import DatasetInfoFileError

from tests import helpers
from tfds_builders.database import Builder

DUMMY_DATA = helpers.REPO / "dummy_data" / "database"
BUILDER_DIR = helpers.REPO / "tfds_builders" / "database"
PASSWORD_MARK = "tfds_builders_pw"  # the test role's password (scripts/start_postgres.sh)

# Small tables the tests of several concerns read: NULL policies, and preprocessing over two splits.
POLICY_TABLE = """
CREATE TABLE p (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, f REAL, b BOOLEAN);
INSERT INTO p VALUES (1, 0, '', 0.0, 0), (2, NULL, NULL, NULL, NULL), (3, 7, 'x', 2.5, 1);
"""
PREP_TABLE = """
CREATE TABLE q (id INTEGER PRIMARY KEY, part TEXT, color TEXT, size INTEGER, x REAL);
INSERT INTO q VALUES
  (1, 'train', 'red', 3, 1.0), (2, 'train', 'blue', 1, 2.0), (3, 'train', 'red', NULL, NULL),
  (4, 'train', 'green', 3, 5.0), (5, 'test', 'purple', 10, 100.0), (6, 'test', 'red', NULL, 3.0);
"""
PREP_SPLITS = {"train": "SELECT * FROM q WHERE part = 'train'", "test": "SELECT * FROM q WHERE part = 'test'"}

make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)
assert_build_fails = functools.partial(helpers.assert_build_fails, Builder)
file_hashes = helpers.file_hashes


def examples(builder: tfds.core.DatasetBuilder, split: str = "train") -> list[dict[str, Any]]:
  """A split's examples as NumPy, in stored order."""
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def column(builder: tfds.core.DatasetBuilder, name: str, split: str = "train") -> list:
  return [example[name] for example in examples(builder, split)]


def records(builder: tfds.core.DatasetBuilder, split: str = "train") -> list[bytes]:
  """The stored serialized records of a split, in order."""
  files = [str(builder.data_path / name) for name in builder.info.splits[split].filenames]
  return [record.numpy() for record in tf.data.TFRecordDataset(files)]


def sqlite_file(tmp_path: pathlib.Path, script: str, name: str = "db.sqlite") -> str:
  """A SQLite database created by `script`; returns its path."""
  path = tmp_path / name
  connection = sqlite3.connect(path)
  connection.executescript(script)
  connection.commit()
  connection.close()
  return str(path)


def bucket(key: Any, seed: int = 0) -> int:
  """The documented split hash: first 32 bits of md5('<seed>:<key>')."""
  return int(hashlib.md5(f"{seed}:{key}".encode()).hexdigest()[:8], 16)


def float_bits(value: float) -> bytes:
  return struct.pack("<d", value)


def assert_tfds_encodes_the_same(builder: tfds.core.DatasetBuilder, split: str = "train") -> None:
  """Our wire-format records equal what TFDS's own encoder makes of their decoded values."""
  features = builder.info.features
  for record in records(builder, split):
    decoded = {name: value.numpy() for name, value in features.deserialize_example(record).items()}
    ours = tf.train.Example.FromString(record)
    assert ours == tf.train.Example.FromString(features.serialize_example(decoded))


def assert_no_dataset(data_dir: pathlib.Path, dataset_dir: pathlib.Path) -> None:
  """Nothing tfds.load would accept, and no record files left behind."""
  assert not (dataset_dir / "dataset_info.json").exists()
  with pytest.raises(DatasetInfoFileError):
    tfds.builder_from_directory(str(dataset_dir))
  leftovers = list(data_dir.rglob("*.tfrecord*")) if data_dir.exists() else []
  assert not leftovers, leftovers


@dataclasses.dataclass
class Postgres:
  """A schema of the test database, and an autocommit connection that sets it up."""

  dsn: str
  schema: str
  admin: Any  # an autocommit psycopg2 connection

  def run(self, statement: str, params=None) -> list[tuple]:
    with self.admin.cursor() as cursor:
      cursor.execute(statement, params)
      return cursor.fetchall() if cursor.description else []
