"""Tests of the database builder: every type and policy on a real PostgreSQL and on SQLite."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import pathlib
import pickle
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_info import DatasetInfoFileError

import tfds_builders
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import sql_connections
from tfds_builders.core import sql_types
from tfds_builders.database import Builder
from tfds_builders.database import BuilderConfig
from tfds_builders.database import reading

# TFDS may look datasets up on GCS (info, pre-built data); tests stay offline.
tfds.core.utils.gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access

REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY_DATA = REPO / "dummy_data" / "database"
BUILDER_DIR = REPO / "tfds_builders" / "database"
PASSWORD_MARK = "tfds_builders_pw"  # the test role's password (scripts/start_postgres.sh)


# ----------------------------------------------------------------- helpers --


def make_builder(tmp_path: pathlib.Path, name: str = "t", **config) -> Builder:
  """A builder of a custom config writing under `tmp_path/tfds`."""
  return Builder(config=BuilderConfig(name=name, **config), data_dir=str(tmp_path / "tfds"))


def build(tmp_path: pathlib.Path, name: str = "t", **config) -> Builder:
  builder = make_builder(tmp_path, name, **config)
  builder.download_and_prepare()
  return builder


def examples(builder: tfds.core.DatasetBuilder, split: str = "train") -> list[dict[str, Any]]:
  """A split's examples as NumPy, in stored order."""
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def column(builder: tfds.core.DatasetBuilder, name: str, split: str = "train") -> list:
  return [example[name] for example in examples(builder, split)]


def records(builder: tfds.core.DatasetBuilder, split: str = "train") -> list[bytes]:
  """The stored serialized records of a split, in order."""
  files = [str(builder.data_path / name) for name in builder.info.splits[split].filenames]
  return [record.numpy() for record in tf.data.TFRecordDataset(files)]


def assert_build_fails(tmp_path, error_type, *fragments: str, **config) -> str:
  """Builds `config` expecting `error_type` whose message has every fragment."""
  with pytest.raises(error_type) as excinfo:
    build(tmp_path, **config)
  message = str(excinfo.value)
  for fragment in fragments:
    assert fragment in message, f"{fragment!r} not in {message!r}"
  return message


def sqlite_file(tmp_path: pathlib.Path, script: str, name: str = "db.sqlite") -> str:
  """A SQLite database created by `script`; returns its path."""
  path = tmp_path / name
  connection = sqlite3.connect(path)
  connection.executescript(script)
  connection.commit()
  connection.close()
  return str(path)


def file_hashes(root: pathlib.Path) -> dict[str, tuple[str, int]]:
  return {
      str(path): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
      for path in sorted(root.rglob("*")) if path.is_file()
  }


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


# ------------------------------------------------ TFDS's own builder tests --


class DatabaseDemoTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled default config: SQLite penguins, hash split, preprocessing."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["demo"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 19, "test": 5}
  SKIP_CHECKSUMS = True


class DatabaseSplitQueriesTest(tfds.testing.DatasetBuilderTestCase):
  """The bundled `split_queries` config: one query per split, NULL rows skipped."""

  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["split_queries"]
  EXAMPLE_DIR = str(DUMMY_DATA)
  SPLITS = {"train": 14, "test": 7}
  SKIP_CHECKSUMS = True


# ------------------------------------------------------- bundled configs --


def _demo_rows() -> list[dict[str, Any]]:
  connection = sqlite3.connect(DUMMY_DATA / "demo.sqlite")
  connection.row_factory = sqlite3.Row
  found = [dict(row) for row in connection.execute("SELECT * FROM penguins ORDER BY id")]
  connection.close()
  return found


def test_shipped_sqlite_is_created_by_demo_sql(tmp_path):
  fresh = sqlite_file(tmp_path, (DUMMY_DATA / "demo.sql").read_text())
  dump = lambda path: list(sqlite3.connect(path).iterdump())
  assert dump(DUMMY_DATA / "demo.sqlite") == dump(fresh)


def test_demo_values_splits_and_preprocessing(tmp_path):
  builder = tfds.builder("database/demo", data_dir=str(tmp_path))
  builder.download_and_prepare()
  source = _demo_rows()
  train_ids = [row["id"] for row in source if bucket(row["id"]) < 0.75 * 2**32]
  test_ids = [row["id"] for row in source if bucket(row["id"]) >= 0.75 * 2**32]
  assert [int(i) for i in column(builder, "id", "train")] == train_ids
  assert [int(i) for i in column(builder, "id", "test")] == test_ids

  train = [row for row in source if row["id"] in train_ids]
  bills = np.array([row["bill_length_mm"] for row in train if row["bill_length_mm"] is not None])
  mean = bills.mean()  # the imputed value; NULLs are imputed before the normalization statistics
  std = np.array([mean if row["bill_length_mm"] is None else row["bill_length_mm"] for row in train]).std()
  masses = sorted(row["body_mass_g"] for row in train if row["body_mass_g"] is not None)
  median = masses[(len(masses) - 1) // 2]
  features = builder.info.features
  assert features["species"].names == ["Adelie", "Chinstrap", "Gentoo"]
  assert features["island"].names == ["Biscoe", "Dream", "Torgersen", "other"]
  by_id = {row["id"]: row for row in source}
  for split in ("train", "test"):
    for example in examples(builder, split):
      row = by_id[int(example["id"])]
      assert features["species"].int2str(example["species"]) == row["species"]
      island = row["island"] if row["island"] != "Anvers" else "other"
      assert features["island"].int2str(example["island"]) == island
      bill = row["bill_length_mm"] if row["bill_length_mm"] is not None else mean
      assert example["bill_length_mm"] == np.float32((bill - mean) / std)
      mass = row["body_mass_g"] if row["body_mass_g"] is not None else median
      assert example["body_mass_g"] == mass
      assert bool(example["sex_is_null"]) == (row["sex"] is None)
      assert example["sex"] == (row["sex"] or "").encode()
      assert example["comment"] == (row["comment"] or "").encode()
      assert example["observed_on"] == row["observed_on"].encode()
      assert example["is_adult"] == bool(row["is_adult"])
  stats = builder.info.metadata["preprocessing"]
  assert stats["bill_length_mm"]["normalize"]["mean"] == pytest.approx(mean, rel=1e-12)
  assert stats["bill_length_mm"]["normalize"]["std"] == pytest.approx(std, rel=1e-12)
  assert stats["bill_length_mm"]["normalize"]["split"] == "train"
  assert stats["body_mass_g"]["impute"] == {"statistic": "median", "value": median, "split": "train"}
  assert stats["species"]["categorical"]["names"] == ["Adelie", "Chinstrap", "Gentoo"]


def test_split_queries_config_binds_params_and_skips_null_rows(tmp_path):
  builder = tfds.builder("database/split_queries", data_dir=str(tmp_path))
  builder.download_and_prepare()
  source = _demo_rows()
  complete = [row for row in source if row["bill_length_mm"] is not None and row["body_mass_g"] is not None]
  for split, keep in (("train", lambda d: d < "2009-01-01"), ("test", lambda d: d >= "2009-01-01")):
    expected = [row for row in complete if keep(row["observed_on"])]
    got = examples(builder, split)
    assert [int(e["id"]) for e in got] == [row["id"] for row in expected]
    epoch_days = [(datetime.date.fromisoformat(r["observed_on"]) - datetime.date(1970, 1, 1)).days
                  for r in expected]
    assert [int(e["observed_on"]) for e in got] == epoch_days
  assert builder.info.features["observed_on"].np_dtype == np.int64
  queries = builder.info.metadata["provenance"]["queries"]
  incomplete_train = [row for row in source if row["observed_on"] < "2009-01-01" and row not in complete]
  assert queries["train"]["rows_skipped_for_nulls"] == len(incomplete_train) == 3
  assert queries["test"]["params"] == {"year_start": "2009-01-01"}


# ------------------------------------------------------------ SQLite types --


SQLITE_TYPES = """
CREATE TABLE typed (
  id INTEGER PRIMARY KEY, small SMALLINT, big BIGINT, ratio REAL, precise DOUBLE PRECISION,
  price DECIMAL(10, 2), flag BOOLEAN, name VARCHAR(20), note TEXT, data BLOB, day DATE,
  stamp DATETIME, zoned TIMESTAMPTZ, clock TIME, doc JSON, untyped
);
INSERT INTO typed VALUES
  (1, -32768, 9223372036854775807, 1.5e-300, 1e308, 12.5, 1, 'héllo', 'x', x'00ff', '2024-02-29',
   '2024-02-29 12:34:56.789', '2024-02-29T12:34:56+02:00', '23:59:59', '{"a": 1}', 7),
  (2, 0, 0, 0.0, 0.0, 0, 0, '', '', x'', '1970-01-01', '1970-01-01 00:00:00',
   '1970-01-01T00:00:00+00:00', '00:00:00', '{}', 0);
"""


def test_sqlite_declared_types_round_trip(tmp_path):
  path = sqlite_file(tmp_path, SQLITE_TYPES)
  builder = build(tmp_path, sqlite_path=path, query="SELECT * FROM typed", order_by="id")
  features = builder.info.features
  dtypes = {name: (feature.np_dtype, feature.shape) for name, feature in features.items()}
  assert dtypes == {
      "id": (np.int64, ()), "small": (np.int64, ()), "big": (np.int64, ()),
      "ratio": (np.float64, ()), "precise": (np.float64, ()), "price": (np.float64, ()),
      "flag": (np.bool_, ()), "name": (np.object_, ()), "note": (np.object_, ()),
      "data": (np.object_, ()), "day": (np.object_, ()), "stamp": (np.object_, ()),
      "zoned": (np.object_, ()), "clock": (np.object_, ()), "doc": (np.object_, ()),
      "untyped": (np.int64, ()),
  }
  first, second = examples(builder)
  assert first["big"] == 2**63 - 1 and first["small"] == -32768
  stored_ratio = sqlite3.connect(path).execute("SELECT ratio FROM typed WHERE id = 1").fetchone()[0]
  assert float_bits(first["ratio"]) == float_bits(stored_ratio)  # bit-exact, however SQLite parsed it
  assert first["precise"] == 1e308 and first["price"] == 12.5
  assert first["flag"] and not second["flag"]
  assert first["name"] == "héllo".encode() and first["data"] == b"\x00\xff"
  assert first["day"] == b"2024-02-29"
  assert first["stamp"] == b"2024-02-29T12:34:56.789000"
  assert first["zoned"] == b"2024-02-29T10:34:56+00:00"
  assert first["clock"] == b"23:59:59" and first["doc"] == b'{"a": 1}'
  assert first["untyped"] == 7
  # 0, '' and false are values, not NULLs: the default policy 'error' passes.
  assert (second["small"], second["name"], second["data"], second["untyped"]) == (0, b"", b"", 0)
  assert builder.info.metadata["provenance"]["columns"]["untyped"]["source_type"] == (
      "integer (storage classes)")
  assert_tfds_encodes_the_same(builder)


def test_sqlite_wal_database_is_refused_for_parallel_readers(tmp_path):
  path = sqlite_file(tmp_path, "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1);")
  with sql_connections.open_session(sql_connections.ConnectionSpec("sqlite", sqlite_path=path)) as session:
    assert session.fetch_all("SELECT id FROM t", None) == [(1,)]
    with pytest.raises(errors.ConfigError, match="WAL mode.*Build without Beam"):
      session.export_snapshot()


def test_sqlite_types_with_parameters_and_expressions(tmp_path):
  path = sqlite_file(tmp_path, SQLITE_TYPES)
  builder = build(
      tmp_path, sqlite_path=path, order_by="id", temporal="epoch", params=[1],
      query="SELECT id, day, flag, ratio * 2 AS doubled, name || '!' AS shout FROM typed "
            "WHERE id >= ?",
  )
  features = builder.info.features
  # Declared types survive the parameter (read through a view with NULL in its place).
  assert features["day"].np_dtype == np.int64 and features["flag"].np_dtype == np.bool_
  # Expressions have no declared type: their storage classes decide.
  assert features["doubled"].np_dtype == np.float64 and features["shout"].np_dtype == np.object_
  assert [int(d) for d in column(builder, "day")] == [19782, 0]


def test_sqlite_mixed_storage_classes_are_refused(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE t (x); INSERT INTO t VALUES (1), ('one');")
  assert_build_fails(tmp_path, errors.SchemaError, "'x'", "integer, text",
                     "CAST(x AS TEXT) AS x", sqlite_path=path, query="SELECT x FROM t")


def test_sqlite_value_not_matching_declared_type_names_column_and_row(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE t (id INTEGER, n INTEGER); "
                               "INSERT INTO t VALUES (1, 5), (2, 'five');")
  assert_build_fails(tmp_path, errors.SchemaError, "the row with id='2'", "column 'n'",
                     "'five'", "Cast the column", sqlite_path=path,
                     query="SELECT * FROM t", order_by="id")


def test_sqlite_source_is_never_modified_and_writes_fail(tmp_path):
  (tmp_path / "src").mkdir()
  path = sqlite_file(tmp_path / "src", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); "
                                       "INSERT INTO t VALUES (1, 'a'), (2, 'b');")
  before = file_hashes(tmp_path / "src")
  build(tmp_path / "out", sqlite_path=path, query="SELECT * FROM t", order_by="id")
  for index, query in enumerate(("INSERT INTO t VALUES (3, 'c') RETURNING *",
                                 "UPDATE t SET v = 'z' RETURNING *",
                                 "SELECT * FROM t; DELETE FROM t")):
    assert_build_fails(tmp_path / "out", errors.ConfigError, "`query` must be exactly one read-only query",
                       "Nothing was sent to run", "READ ONLY", name=f"write{index}", sqlite_path=path, query=query)
  assert file_hashes(tmp_path / "src") == before


# ---------------------------------------------------------- NULL policies --


POLICY_TABLE = """
CREATE TABLE p (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, f REAL, b BOOLEAN);
INSERT INTO p VALUES (1, 0, '', 0.0, 0), (2, NULL, NULL, NULL, NULL), (3, 7, 'x', 2.5, 1);
"""


def test_null_error_policy_names_column_and_row_key(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  message = assert_build_fails(
      tmp_path, errors.SchemaError, "Column 'n' is NULL in the row with id='2'",
      "NULL policy is 'error'", "'nulls': 'mask'", "COALESCE",
      sqlite_path=path, query="SELECT * FROM p", order_by="id")
  assert "split 'train'" in message


def test_null_error_without_order_by_names_the_row_number(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  assert_build_fails(tmp_path, errors.SchemaError, "row 1 of split 'train'",
                     sqlite_path=path, query="SELECT * FROM p ORDER BY id")


def test_null_default_policy(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  builder = build(tmp_path, sqlite_path=path, query="SELECT * FROM p", order_by="id",
                  columns={"n": {"nulls": "default", "default": -1}, "s": {"default": "?"},
                           "f": {"default": -1.5}, "b": {"default": True}})
  got = examples(builder)
  assert [(int(e["n"]), e["s"], float(e["f"]), bool(e["b"])) for e in got] == [
      (0, b"", 0.0, False), (-1, b"?", -1.5, True), (7, b"x", 2.5, True)]


def test_null_mask_policy_and_zero_empty_false_are_not_null(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  builder = build(tmp_path, sqlite_path=path, query="SELECT * FROM p", order_by="id",
                  nulls="mask", columns={"f": {"nulls": "mask", "default": -9.0}})
  # `id` is the INTEGER PRIMARY KEY: never NULL, so the config-wide mask skips it.
  assert set(builder.info.features) == {
      "id", "n", "s", "f", "b", "n_is_null", "s_is_null", "f_is_null", "b_is_null"}
  got = examples(builder)
  assert [bool(e["n_is_null"]) for e in got] == [False, True, False]
  assert [bool(e["s_is_null"]) for e in got] == [False, True, False]
  assert [bool(e["f_is_null"]) for e in got] == [False, True, False]
  assert [bool(e["b_is_null"]) for e in got] == [False, True, False]
  assert (got[1]["n"], got[1]["s"], got[1]["f"], got[1]["b"]) == (0, b"", -9.0, False)
  assert (got[0]["n"], got[0]["s"], got[0]["f"], got[0]["b"]) == (0, b"", 0.0, False)


def test_null_skip_row_policy_counts_skipped_rows(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  builder = build(tmp_path, sqlite_path=path, query="SELECT * FROM p", order_by="id",
                  nulls="skip_row")
  assert [int(i) for i in column(builder, "id")] == [1, 3]
  assert builder.info.metadata["provenance"]["queries"]["train"]["rows_skipped_for_nulls"] == 1


def test_masked_null_feature_name_clash(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE t (a INTEGER, a_is_null INTEGER); INSERT INTO t VALUES (1, 0);")
  assert_build_fails(tmp_path, errors.SchemaError, "['a_is_null']", "Rename",
                     sqlite_path=path, query="SELECT * FROM t", columns={"a": {"nulls": "mask"}})


@pytest.mark.parametrize(
    "columns, fragments",
    [
        pytest.param({"nope": {"nulls": "mask"}}, ["['nope']", "does not return",
                                                   "['id', 'n', 's', 'f', 'b']"], id="unknown-column"),
        pytest.param({"n": {"nuls": "mask"}}, ["columns['n']", "unknown settings ['nuls']"],
                     id="unknown-setting"),
        pytest.param({"n": {"nulls": "ignore"}}, ["nulls='ignore'", "skip_row"], id="bad-policy"),
        pytest.param({"n": {"nulls": "default"}}, ["needs a `default`"], id="default-missing"),
        pytest.param({"n": {"default": "many"}}, ["default 'many' does not fit"], id="default-type"),
        pytest.param({"n": {"type": "decimal"}}, ["type='decimal'", "numeric"], id="bad-type"),
        pytest.param({"s": {"normalize": "standard"}}, ["needs a numeric column"], id="normalize-text"),
        pytest.param({"n": {"impute": "mean"}}, ["not an integer", "median"], id="int-mean"),
        pytest.param({"n": {"impute": "avg"}}, ["impute='avg'"], id="bad-statistic"),
        pytest.param({"f": {"categorical": True}}, ["categorical needs"], id="categorical-float"),
        pytest.param({"n": {"unknown": "x"}}, ["only applies to categorical"], id="unknown-plain"),
        pytest.param({"n": {"impute": "median", "default": 1}}, ["not both"], id="impute-and-default"),
        pytest.param({"n": {"temporal": "unix"}}, ["temporal='unix'"], id="bad-temporal"),
    ],
)
def test_invalid_column_settings(tmp_path, columns, fragments):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  assert_build_fails(tmp_path, errors.ConfigError, *fragments, sqlite_path=path,
                     query="SELECT * FROM p", columns=columns)


@pytest.mark.parametrize(
    "config, fragments",
    [
        pytest.param({"query": ""}, ["either `query`", "not both or neither"], id="no-query"),
        pytest.param({"split_queries": {"train": "SELECT 1"}}, ["not both or neither"], id="both"),
        pytest.param({"split_percent": {"train": 80, "test": 30}, "split_key": "id"},
                     ["sum to 100", "110"], id="percent-sum"),
        pytest.param({"split_percent": {"train": 100}}, ["needs both"], id="percent-no-key"),
        pytest.param({"split_key": "nope", "split_percent": {"train": 100}},
                     ["split_key names ['nope']"], id="unknown-split-key"),
        pytest.param({"order_by": ["id", "nope"]}, ["order_by names ['nope']"], id="unknown-order"),
        pytest.param({"partition_key": "n", "order_by": "id"}, ["first column of order_by"],
                     id="partition-not-first"),
        pytest.param({"driver": "mysql"}, ["driver='mysql'"], id="driver"),
        pytest.param({"dsn": "host=x"}, ["`dsn`/`dsn_env` are for PostgreSQL"], id="dsn-sqlite"),
        pytest.param({"nulls": "default"}, ["set it in `columns`"], id="global-default"),
        pytest.param({"fetch_size": 0}, ["at least 1"], id="fetch-size"),
        pytest.param({"numeric": "decimal"}, ["numeric='decimal'"], id="numeric"),
    ],
)
def test_invalid_configs(tmp_path, config, fragments):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  config = {"sqlite_path": path, "query": "SELECT * FROM p", **config}
  assert_build_fails(tmp_path, errors.ConfigError, *fragments, **config)


def test_missing_sqlite_file(tmp_path):
  assert_build_fails(tmp_path, errors.SourceError, "nope.sqlite not found", "data_root",
                     sqlite_path="nope.sqlite", data_root=str(tmp_path), query="SELECT 1")


# ---------------------------------------------------------- preprocessing --


PREP_TABLE = """
CREATE TABLE q (id INTEGER PRIMARY KEY, part TEXT, color TEXT, size INTEGER, x REAL);
INSERT INTO q VALUES
  (1, 'train', 'red', 3, 1.0), (2, 'train', 'blue', 1, 2.0), (3, 'train', 'red', NULL, NULL),
  (4, 'train', 'green', 3, 5.0), (5, 'test', 'purple', 10, 100.0), (6, 'test', 'red', NULL, 3.0);
"""
PREP_SPLITS = {"train": "SELECT * FROM q WHERE part = 'train'", "test": "SELECT * FROM q WHERE part = 'test'"}


def test_categorical_from_sql_distinct_and_from_vocabulary(tmp_path):
  path = sqlite_file(tmp_path, PREP_TABLE)
  builder = build(tmp_path, sqlite_path=path, split_queries=PREP_SPLITS, order_by="id",
                  columns={"color": {"categorical": True}, "size": {"nulls": "skip_row"}})
  names = builder.info.features["color"].names
  assert names == ["blue", "green", "purple", "red"]  # distinct over every split, sorted
  assert [names[i] for i in column(builder, "color", "test")] == ["purple"]
  vocab = build(tmp_path / "v", sqlite_path=path, split_queries=PREP_SPLITS, order_by="id",
                columns={"color": {"vocabulary": ["red", "green", "blue"], "unknown": "<unk>"},
                         "size": {"nulls": "skip_row"}})
  assert vocab.info.features["color"].names == ["red", "green", "blue", "<unk>"]
  assert list(column(vocab, "color", "train")) == [0, 2, 1]
  assert list(column(vocab, "color", "test")) == [3]


def test_unseen_category_is_an_error_by_default(tmp_path):
  path = sqlite_file(tmp_path, PREP_TABLE)
  assert_build_fails(tmp_path, errors.SchemaError, "the row with id='4'", "'green'",
                     "not one of its 2 classes", "set `unknown` to a class name", sqlite_path=path,
                     split_queries=PREP_SPLITS, order_by="id",
                     columns={"color": {"vocabulary": ["red", "blue"]}, "size": {"nulls": "mask"},
                              "x": {"nulls": "mask"}})


def test_integer_categorical(tmp_path):
  path = sqlite_file(tmp_path, PREP_TABLE)
  builder = build(tmp_path, sqlite_path=path, query="SELECT id, size FROM q WHERE size IS NOT NULL",
                  order_by="id", columns={"size": {"categorical": True}})
  assert builder.info.features["size"].names == ["1", "3", "10"]
  assert list(column(builder, "size")) == [1, 0, 1, 2]  # sizes 3, 1, 3, 10


@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_normalization_uses_training_split_only(tmp_path, method):
  path = sqlite_file(tmp_path, PREP_TABLE)
  builder = build(tmp_path, sqlite_path=path, split_queries=PREP_SPLITS, order_by="id",
                  columns={"x": {"normalize": method, "nulls": "mask"}, "size": {"nulls": "mask"}})
  train_x = np.array([1.0, 2.0, 5.0])
  shift, scale = (train_x.mean(), train_x.std()) if method == "standard" else (1.0, 4.0)
  assert builder.info.features["x"].np_dtype == np.float32
  np.testing.assert_array_equal(column(builder, "x", "test"),
                                np.float32((np.array([100.0, 3.0]) - shift) / scale))
  record = builder.info.metadata["preprocessing"]["x"]["normalize"]
  assert record["split"] == "train" and record["applied"] is True and record["method"] == method
  if method == "standard":
    assert record["mean"] == pytest.approx(shift) and record["std"] == pytest.approx(scale)
  else:
    assert (record["min"], record["max"]) == (1.0, 5.0)


def test_normalization_recorded_but_not_applied(tmp_path):
  path = sqlite_file(tmp_path, PREP_TABLE)
  builder = build(tmp_path, sqlite_path=path, split_queries=PREP_SPLITS, order_by="id",
                  columns={"x": {"normalize": "standard", "apply": False, "nulls": "mask"},
                           "size": {"nulls": "mask"}})
  assert builder.info.features["x"].np_dtype == np.float64
  assert list(column(builder, "x", "test")) == [100.0, 3.0]
  record = builder.info.metadata["preprocessing"]["x"]["normalize"]
  assert record["applied"] is False and record["mean"] == pytest.approx(8 / 3)


@pytest.mark.parametrize("statistic, expected", [
    ("median", 3), ("mode", 3), ("min", 1), ("max", 3),
])
def test_imputation_by_sql_statistic_of_training_split(tmp_path, statistic, expected):
  path = sqlite_file(tmp_path, PREP_TABLE)
  builder = build(tmp_path, sqlite_path=path, split_queries=PREP_SPLITS, order_by="id",
                  columns={"size": {"impute": statistic}, "x": {"impute": "mean"}})
  assert [int(v) for v in column(builder, "size", "train")] == [3, 1, expected, 3]
  assert [int(v) for v in column(builder, "size", "test")] == [10, expected]
  assert column(builder, "x", "train")[2] == pytest.approx(8 / 3)
  record = builder.info.metadata["preprocessing"]["size"]["impute"]
  assert record == {"statistic": statistic, "value": expected, "split": "train"}


def test_constant_normalization_is_refused(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE c (x REAL); INSERT INTO c VALUES (2.0), (2.0);")
  assert_build_fails(tmp_path, errors.SchemaError, "'x' is constant", "apply=false",
                     sqlite_path=path, query="SELECT x FROM c", columns={"x": {"normalize": "standard"}})


def test_statistics_need_a_training_split(tmp_path):
  path = sqlite_file(tmp_path, PREP_TABLE)
  assert_build_fails(tmp_path, errors.ConfigError, "statistics_split", sqlite_path=path,
                     split_queries={"fit": PREP_SPLITS["train"]},
                     columns={"x": {"impute": "mean"}, "size": {"nulls": "mask"}})


# ------------------------------------------------------ splits and order --


def _id_table(count: int) -> str:
  values = ", ".join(f"({i}, 'row {i}')" for i in range(1, count + 1))
  return f"CREATE TABLE k (id INTEGER PRIMARY KEY, label TEXT); INSERT INTO k VALUES {values};"


def test_hash_split_is_stable_per_key(tmp_path):
  path = sqlite_file(tmp_path, _id_table(60))
  config = dict(sqlite_path=path, query="SELECT * FROM k", order_by="id",
                split_percent={"train": 50, "validation": 30, "test": 20}, split_key="id",
                split_seed=7)
  builder = build(tmp_path, **config)
  edges = {"train": (0, 0.5), "validation": (0.5, 0.8), "test": (0.8, 1.0)}
  for split, (low, high) in edges.items():
    expected = [i for i in range(1, 61) if low * 2**32 <= bucket(i, 7) < high * 2**32]
    assert [int(i) for i in column(builder, "id", split)] == expected
  # More rows later: the earlier keys keep their split.
  connection = sqlite3.connect(path)
  connection.executemany("INSERT INTO k VALUES (?, ?)", [(i, f"row {i}") for i in range(61, 200)])
  connection.commit()
  connection.close()
  grown = build(tmp_path / "grown", **config)
  for split in edges:
    old = [int(i) for i in column(grown, "id", split) if i <= 60]
    assert old == [int(i) for i in column(builder, "id", split)]


def test_order_by_makes_builds_identical_and_no_order_is_recorded(tmp_path, caplog):
  path = sqlite_file(tmp_path, _id_table(30))
  config = dict(sqlite_path=path, query="SELECT * FROM k", order_by=["label", "id"])
  first, second = build(tmp_path / "a", **config), build(tmp_path / "b", **config)
  assert records(first) == records(second)
  assert first.info.metadata["provenance"]["order"] == {"order_by": ["label", "id"]}
  labels = [bytes(v).decode() for v in column(first, "label")]
  assert labels == sorted(labels)
  with caplog.at_level(logging.WARNING):
    unordered = build(tmp_path / "c", sqlite_path=path, query="SELECT * FROM k")
  assert "not guaranteed" in unordered.info.metadata["provenance"]["order"]
  assert any("row order is not guaranteed" in r.getMessage() for r in caplog.records)


def test_order_by_that_is_not_unique_is_refused(tmp_path):
  path = sqlite_file(tmp_path, "CREATE TABLE d (g INTEGER, v TEXT); INSERT INTO d VALUES (1, 'a'), (1, 'b');")
  assert_build_fails(tmp_path, errors.SchemaError, "order_by ['g'] is not unique", "g='1'",
                     "Add columns to order_by", sqlite_path=path, query="SELECT * FROM d", order_by="g")


def test_split_queries_with_different_columns_are_refused(tmp_path):
  path = sqlite_file(tmp_path, PREP_TABLE)
  assert_build_fails(tmp_path, errors.SchemaError, "Split 'test' returns columns id int",
                     "same column names and types", sqlite_path=path,
                     split_queries={"train": "SELECT id, part FROM q", "test": "SELECT id FROM q"})


def test_quoted_identifiers_and_bound_parameters(tmp_path):
  path = sqlite_file(tmp_path, 'CREATE TABLE w ("we""ird Name" INTEGER, v TEXT); '
                               "INSERT INTO w VALUES (2, 'b'), (1, 'a''); DROP TABLE w; --');")
  hostile = "a'); DROP TABLE w; --"
  builder = build(tmp_path, sqlite_path=path, query="SELECT * FROM w WHERE v = ? OR v = 'b'",
                  params=[hostile], order_by='we"ird Name',
                  split_percent={"train": 100}, split_key='we"ird Name')
  assert [e["v"] for e in examples(builder)] == [hostile.encode(), b"b"]
  assert sqlite3.connect(path).execute("SELECT count(*) FROM w").fetchone() == (2,)


def test_split_with_no_rows(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  assert_build_fails(tmp_path, errors.SourceError, "'train' has no examples",
                     sqlite_path=path, query="SELECT * FROM p WHERE id > 100")


def test_failed_build_leaves_no_dataset_and_rerun_succeeds(tmp_path):
  path = sqlite_file(tmp_path, POLICY_TABLE)
  config = dict(name="mine", sqlite_path=path, query="SELECT * FROM p", order_by="id")
  data_dir = tmp_path / "tfds"
  assert_build_fails(tmp_path, errors.SchemaError, "is NULL", **config)
  assert_no_dataset(data_dir, data_dir / "database" / "mine" / "1.0.0")
  builder = build(tmp_path, **{**config, "nulls": "mask"})
  assert builder.info.splits["train"].num_examples == 3
  loaded = tfds.load("database/mine", data_dir=str(data_dir), split="train", download=False)
  assert len(list(loaded)) == 3


def test_registered_by_name_and_provenance(tmp_path):
  assert "database" in tfds.list_builders(with_community_datasets=False)
  assert "database" in tfds_builders.BUILDERS
  builder = tfds.builder("database/demo", data_dir=str(tmp_path))
  builder.download_and_prepare()
  record = provenance.read_provenance(builder.data_dir)
  assert record["builder"] == "database" and record["config"]["name"] == "demo"
  assert record["source"]["driver"] == "sqlite"
  assert record["source"]["path"] == str(DUMMY_DATA / "demo.sqlite")
  assert record["split_mode"]["mode"] == "hash split"
  assert record["columns"]["bill_length_mm"] == {
      "source_type": "REAL (declared)", "type": "float64", "stored_as": "float32", "nulls": "default"}
  assert record["queries"]["train"]["params"] == ["0", 0, 3 * 2**30 - 1]


def test_tfds_build_cli_builds_the_default_config_without_a_server(tmp_path):
  tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
  result = subprocess.run(
      [str(tfds_cli), "build", str(BUILDER_DIR), "--config_idx", "0", "--data_dir", str(tmp_path)],
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True,
      timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  builder = tfds.builder_from_directory(str(tmp_path / "database/demo/1.0.0"))
  assert builder.info.splits["train"].num_examples == 19


# ------------------------------------------------------------ PostgreSQL --


@dataclasses.dataclass
class Postgres:
  dsn: str
  schema: str
  admin: Any  # an autocommit psycopg2 connection

  def run(self, statement: str, params=None) -> list[tuple]:
    with self.admin.cursor() as cursor:
      cursor.execute(statement, params)
      return cursor.fetchall() if cursor.description else []


EVERY_TYPE_DDL = """
CREATE TYPE {schema}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {schema}.every_type (
  id int4 PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 real, f8 float8, num numeric, flag boolean,
  txt text, vc varchar(8), ch char(3), raw bytea, d date, ts timestamp, tstz timestamptz,
  tm time, js json, jsb jsonb, m {schema}.mood, u uuid, ints int8[], floats float8[],
  reals real[], texts text[], flags boolean[], dates date[], nums numeric[], moods {schema}.mood[]
);
INSERT INTO {schema}.every_type VALUES
  (1, -32768, 2147483647, -9223372036854775808, 3.4028235e38, '-0', 12345678901234567890.0123456789,
   true, 'héllo, 世界', 'varchar', 'ab', '\\x00ff10', '2024-02-29', '2024-02-29 12:34:56.789012',
   '2024-02-29 12:34:56.789012+02', '23:59:59.5', '{{"b": 1,  "a": [1, 2]}}', '{{"b": 1, "a": [1, 2]}}',
   'happy', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{1,-2,9223372036854775807}}',
   '{{1.5,-Infinity,NaN}}', '{{0.25}}', '{{"a","b c",""}}', '{{true,false}}', '{{2024-01-01}}',
   '{{1.5,-0.000000001}}', '{{sad,ok}}'),
  (2, 0, 0, 0, 0, 0, 0, false, '', '', '', '', '1970-01-01', '1970-01-01 00:00:00',
   '1970-01-01 00:00:00+00', '00:00', '0', '0', 'sad', '00000000-0000-0000-0000-000000000000',
   '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE {schema}.odd (id int4 PRIMARY KEY, span interval, spot point, grid int4[], holes int4[]);
INSERT INTO {schema}.odd VALUES (1, '1 day', '(1,2)', '{{{{1,2}},{{3,4}}}}', '{{1,NULL}}');
CREATE SEQUENCE {schema}.counter;
"""


@pytest.fixture(scope="module")
def pg(postgres_dsn):
  """A schema of this module's own in the test database, dropped afterwards."""
  import psycopg2  # pylint: disable=import-outside-toplevel
  from psycopg2 import sql  # pylint: disable=import-outside-toplevel

  schema = f"tfds_database_test_{os.getpid()}"
  admin = psycopg2.connect(postgres_dsn)
  admin.autocommit = True
  with admin.cursor() as cursor:
    cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}").format(
        sql.Identifier(schema)))
    cursor.execute(EVERY_TYPE_DDL.format(schema=schema))
  try:
    yield Postgres(postgres_dsn, schema, admin)
  finally:
    with admin.cursor() as cursor:
      cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    admin.close()


def test_postgres_every_type_round_trips_through_tfds_load(tmp_path, pg):
  builder = build(tmp_path, name="every", dsn=pg.dsn, query=f"SELECT * FROM {pg.schema}.every_type",
                  order_by="id", nulls="mask")
  features = builder.info.features
  kinds = {name: (features[name].np_dtype, features[name].shape)
           for name in features if not name.endswith("_is_null")}
  text, ints, floats = (np.object_, ()), (np.int64, ()), (np.float64, ())
  assert kinds == {
      "id": ints, "i2": ints, "i4": ints, "i8": ints, "f4": (np.float32, ()), "f8": floats,
      "num": floats, "flag": (np.bool_, ()), "txt": text, "vc": text, "ch": text, "raw": text,
      "d": text, "ts": text, "tstz": text, "tm": text, "js": text, "jsb": text, "m": text,
      "u": text, "ints": (np.int64, (None,)), "floats": (np.float64, (None,)),
      "reals": (np.float32, (None,)), "texts": (np.object_, (None,)), "flags": (np.bool_, (None,)),
      "dates": (np.object_, (None,)), "nums": (np.float64, (None,)), "moods": (np.object_, (None,)),
  }
  loaded = list(tfds.as_numpy(tfds.load("database/every", data_dir=str(tmp_path / "tfds"),
                                        split="train", download=False)))
  first, zeros, nulls = loaded
  assert (first["i2"], first["i4"], first["i8"]) == (-32768, 2**31 - 1, -(2**63))
  assert first["f4"] == np.finfo(np.float32).max
  assert float_bits(first["f8"]) == float_bits(-0.0)
  assert first["num"] == 12345678901234567890.0123456789
  assert first["flag"] and first["txt"] == "héllo, 世界".encode()
  assert (first["vc"], first["ch"], first["raw"]) == (b"varchar", b"ab ", b"\x00\xff\x10")
  assert (first["d"], first["tm"]) == (b"2024-02-29", b"23:59:59.500000")
  assert first["ts"] == b"2024-02-29T12:34:56.789012"
  assert first["tstz"] == b"2024-02-29T10:34:56.789012+00:00"  # stored in UTC
  assert first["js"] == b'{"b": 1,  "a": [1, 2]}'  # json keeps its text
  assert first["jsb"] == b'{"a": [1, 2], "b": 1}'  # jsonb as PostgreSQL prints it
  assert (first["m"], first["u"]) == (b"happy", b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
  np.testing.assert_array_equal(first["ints"], [1, -2, 2**63 - 1])
  assert [float_bits(v) for v in first["floats"]] == [float_bits(v) for v in (1.5, -np.inf)] + [
      float_bits(first["floats"][2])] and np.isnan(first["floats"][2])
  np.testing.assert_array_equal(first["reals"], np.float32([0.25]))
  assert list(first["texts"]) == [b"a", b"b c", b""]
  assert list(first["flags"]) == [True, False]
  assert list(first["dates"]) == [b"2024-01-01"] and list(first["moods"]) == [b"sad", b"ok"]
  np.testing.assert_array_equal(first["nums"], [1.5, -1e-9])
  # 0, '', false, empty arrays and '0' are values: no mask is set.
  assert not any(zeros[name] for name in zeros if name.endswith("_is_null"))
  assert (zeros["i8"], zeros["f8"], zeros["txt"], zeros["flag"], zeros["raw"]) == (0, 0.0, b"", False, b"")
  assert zeros["ch"] == b"   " and zeros["js"] == b"0" and list(zeros["ints"]) == []
  # NULL in every nullable column: masked, with placeholders.
  assert all(nulls[name] for name in nulls if name.endswith("_is_null") and name != "id_is_null")
  assert (nulls["i8"], nulls["f8"], nulls["txt"], nulls["flag"], list(nulls["ints"])) == (0, 0.0, b"", False, [])
  assert_tfds_encodes_the_same(builder)


def test_postgres_exact_numeric_and_epoch_temporal(tmp_path, pg):
  builder = build(tmp_path, dsn=pg.dsn, order_by="id", nulls="mask", numeric="string",
                  temporal="epoch",
                  query=f"SELECT id, num, nums, d, ts, tstz, tm, dates FROM {pg.schema}.every_type")
  first, zeros, _ = examples(builder)
  assert first["num"] == b"12345678901234567890.0123456789"
  assert list(first["nums"]) == [b"1.5", b"-0.000000001"]
  assert first["d"] == (datetime.date(2024, 2, 29) - datetime.date(1970, 1, 1)).days
  stamp = datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)
  assert first["ts"] == (stamp - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1)
  assert first["tstz"] == first["ts"] - 2 * 3600 * 10**6
  assert first["tm"] == (23 * 3600 + 59 * 60 + 59) * 10**6 + 500_000
  assert list(first["dates"]) == [19723]
  assert (zeros["d"], zeros["ts"], zeros["tstz"], zeros["tm"]) == (0, 0, 0, 0)
  assert builder.info.features["tstz"].np_dtype == np.int64


def test_postgres_infinity_is_kept_as_text_or_refused_as_epoch(tmp_path, pg):
  query = "SELECT 1 AS id, 'infinity'::date AS d, '-infinity'::timestamptz AS t"
  builder = build(tmp_path, dsn=pg.dsn, query=query)
  (example,) = examples(builder)
  assert (example["d"], example["t"]) == (b"infinity", b"-infinity")
  assert_build_fails(tmp_path / "e", errors.SchemaError, "column 'd'", "'infinity' has no epoch",
                     dsn=pg.dsn, query=query, temporal="epoch")


def test_postgres_per_column_type_overrides(tmp_path, pg):
  builder = build(tmp_path, dsn=pg.dsn, order_by="id",
                  query=f"SELECT id, i4, f8, num, d, span FROM {pg.schema}.every_type "
                        f"CROSS JOIN (SELECT '1 day'::interval::text AS span) AS s WHERE id < 3",
                  columns={"i4": {"type": "float32"}, "f8": {"type": "float32"},
                           "num": {"numeric": "string"}, "d": {"temporal": "epoch"},
                           "span": {"type": "text"}})
  features = builder.info.features
  assert (features["i4"].np_dtype, features["f8"].np_dtype) == (np.float32, np.float32)
  first, _ = examples(builder)
  assert first["i4"] == np.float32(2**31 - 1) and first["num"] == b"12345678901234567890.0123456789"
  assert first["d"] == 19782 and first["span"] == b"P1D"


@pytest.mark.parametrize("query, fragments", [
    pytest.param("SELECT id, span FROM {schema}.odd",
                 ["Column 'span' has type 'interval'", "span::text"], id="interval"),
    pytest.param("SELECT id, spot FROM {schema}.odd", ["'point'", "spot::text"], id="point"),
    pytest.param("SELECT id, grid FROM {schema}.odd", ["column 'grid'", "multi-dimensional"], id="2d"),
    pytest.param("SELECT id, holes FROM {schema}.odd", ["column 'holes'", "NULL elements",
                                                        "array_remove"], id="null-element"),
])
def test_postgres_unsupported_values_name_the_column(tmp_path, pg, query, fragments):
  error = errors.SchemaError
  assert_build_fails(tmp_path, error, *fragments, dsn=pg.dsn, query=query.format(schema=pg.schema),
                     order_by="id")


def test_postgres_null_policies_and_error_key(tmp_path, pg):
  query = f"SELECT id, i8, txt FROM {pg.schema}.every_type"
  assert_build_fails(tmp_path, errors.SchemaError, "Column 'i8' is NULL in the row with id='3'",
                     dsn=pg.dsn, query=query, order_by="id")
  skipped = build(tmp_path / "s", dsn=pg.dsn, query=query, order_by="id", nulls="skip_row")
  assert [int(i) for i in column(skipped, "id")] == [1, 2]
  filled = build(tmp_path / "d", dsn=pg.dsn, query=query, order_by="id",
                 columns={"i8": {"default": 42}, "txt": {"default": "none"}})
  assert [(int(e["i8"]), e["txt"]) for e in examples(filled)][2] == (42, b"none")


def test_postgres_splits_hash_and_per_query(tmp_path, pg):
  query = "SELECT g AS id, 'name ' || g AS name FROM generate_series(1, 200) AS g WHERE 'a%' LIKE 'a%'"
  builder = build(tmp_path, dsn=pg.dsn, query=query, order_by="id",
                  split_percent={"train": 80, "test": 20}, split_key="id", split_seed=3)
  for split, keep in (("train", lambda b: b < 0.8 * 2**32), ("test", lambda b: b >= 0.8 * 2**32)):
    assert [int(i) for i in column(builder, "id", split)] == [i for i in range(1, 201) if keep(bucket(i, 3))]
  per_query = build(tmp_path / "q", dsn=pg.dsn, order_by="id", params={"cut": 150},
                    split_queries={"train": "SELECT g AS id FROM generate_series(1, 200) g WHERE g < %(cut)s",
                                   "test": "SELECT g AS id FROM generate_series(1, 200) g WHERE g >= %(cut)s"})
  assert per_query.info.splits["train"].num_examples == 149
  assert per_query.info.splits["test"].num_examples == 51


def test_postgres_preprocessing_in_sql(tmp_path, pg):
  query = ("SELECT g AS id, (ARRAY['b', 'a', 'c'])[1 + g % 3] AS letter, "
           "CASE WHEN g % 5 = 0 THEN NULL ELSE g * 1.5 END AS x, "
           "CASE WHEN g % 7 = 0 THEN NULL ELSE g % 4 END AS small FROM generate_series(1, 40) g")
  builder = build(tmp_path, dsn=pg.dsn, order_by="id",
                  split_queries={"train": query + " WHERE g <= 30", "test": query + " WHERE g > 30"},
                  columns={"letter": {"categorical": True}, "x": {"normalize": "standard", "impute": "mean"},
                           "small": {"impute": "median"}})
  train_x = np.array([g * 1.5 for g in range(1, 31) if g % 5])
  mean = train_x.mean()  # imputed first: the statistics are those of the stored values
  std = np.array([g * 1.5 if g % 5 else mean for g in range(1, 31)]).std()
  assert builder.info.features["letter"].names == ["a", "b", "c"]
  got = examples(builder, "test")
  for example in got:
    g = int(example["id"])
    x = g * 1.5 if g % 5 else mean
    assert example["x"] == pytest.approx(np.float32((x - mean) / std), rel=1e-6)
  small = sorted(g % 4 for g in range(1, 31) if g % 7)
  assert builder.info.metadata["preprocessing"]["small"]["impute"]["value"] == small[(len(small) - 1) // 2]


def test_postgres_bound_parameters_and_quoted_identifiers(tmp_path, pg):
  pg.run(f'CREATE TABLE {pg.schema}.hostile ("Key; DROP TABLE x" int PRIMARY KEY, v text)')
  pg.run(f"INSERT INTO {pg.schema}.hostile VALUES (2, 'b'), (1, %s)", ["a'); DROP TABLE x; --"])
  builder = build(tmp_path, dsn=pg.dsn, query=f"SELECT * FROM {pg.schema}.hostile WHERE v = %s OR v = 'b'",
                  params=["a'); DROP TABLE x; --"], order_by="Key; DROP TABLE x",
                  split_percent={"train": 100}, split_key="Key; DROP TABLE x")
  assert [int(e["Key; DROP TABLE x"]) for e in examples(builder)] == [1, 2]
  sql = builder.info.metadata["provenance"]["queries"]["train"]["sql"]
  assert 'ORDER BY "Key; DROP TABLE x"' in sql and "DROP TABLE x; --" not in sql


@pytest.mark.parametrize("query", [
    "INSERT INTO {schema}.every_type (id) VALUES (99) RETURNING *",
    "WITH gone AS (DELETE FROM {schema}.every_type RETURNING *) SELECT * FROM gone",
    "SELECT nextval('{schema}.counter') AS n",
    "SELECT * FROM {schema}.every_type FOR UPDATE",
])
def test_postgres_writing_query_fails_clearly(tmp_path, pg, query):
  assert_build_fails(tmp_path, errors.ConfigError, "tries to modify the database", "READ ONLY",
                     dsn=pg.dsn, query=query.format(schema=pg.schema))
  assert pg.run(f"SELECT count(*) FROM {pg.schema}.every_type") == [(3,)]


@pytest.mark.parametrize("query, fragments", [
    ("SELECT 1 +", ["syntax error", "Fix the SQL syntax"]),
    ("SELECT * FROM no_such_table", ["no_such_table", "Check the table name"]),
    ("SELECT no_such_column FROM {schema}.every_type", ["no_such_column", "Check the column names"]),
])
def test_postgres_query_errors(tmp_path, pg, query, fragments):
  message = assert_build_fails(tmp_path, errors.SourceError, *fragments,
                               dsn=pg.dsn, query=query.format(schema=pg.schema))
  assert PASSWORD_MARK not in message


@pytest.mark.parametrize("query, params, driver", [
    ("SELECT 1 AS one WHERE 'x%' LIKE %(pattern)s", {"pattern": "x%"}, "postgresql"),
    ("SELECT %s AS one, %s AS two", [1], "postgresql"),
    ("SELECT ? AS one, ? AS two", [1], "sqlite"),
])
def test_parameters_that_do_not_match_placeholders(tmp_path, request, query, params, driver):
  connection = ({"dsn": request.getfixturevalue("postgres_dsn")} if driver == "postgresql"
                else {"sqlite_path": sqlite_file(tmp_path, "CREATE TABLE e (x INTEGER);")})
  assert_build_fails(tmp_path, errors.ConfigError, "parameters do not match its placeholders",
                     "list for positional or a dict for named", query=query, params=params,
                     **connection)


def _with_password(dsn: str, password: str) -> str:
  from psycopg2.extensions import make_dsn, parse_dsn  # pylint: disable=import-outside-toplevel
  return make_dsn(**{**parse_dsn(dsn), "password": password})


def test_postgres_wrong_password_never_shows_it(tmp_path, pg):
  secret = "Wr0ng-Secret-4711"
  with pytest.raises(errors.SourceError) as excinfo:
    build(tmp_path, dsn=_with_password(pg.dsn, secret), query="SELECT 1 AS one")
  text = "".join(traceback.format_exception(excinfo.value))
  assert "Cannot connect" in text and "Check the password" in text
  assert secret not in text
  assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None


def test_postgres_bad_dsn(tmp_path):
  message = assert_build_fails(
      tmp_path, errors.ConfigError, "Cannot parse the PostgreSQL DSN", "key=value pairs",
      dsn="host=127.0.0.1 password=Secret-0815 garbage", query="SELECT 1")
  assert "Secret-0815" not in message
  message = assert_build_fails(
      tmp_path, errors.SourceError, "Cannot connect", "port",
      dsn="host=127.0.0.1 port=1 password=Secret-0815 connect_timeout=2", query="SELECT 1")
  assert "Secret-0815" not in message


def test_postgres_libpq_environment_and_dsn_env(tmp_path, pg, monkeypatch):
  from psycopg2.extensions import parse_dsn  # pylint: disable=import-outside-toplevel

  for key, value in parse_dsn(pg.dsn).items():
    monkeypatch.setenv({"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE",
                        "user": "PGUSER", "password": "PGPASSWORD"}[key], value)
  builder = build(tmp_path, driver="postgresql", query="SELECT 7 AS seven")
  assert column(builder, "seven") == [7]
  source = builder.info.metadata["provenance"]["source"]
  assert source["connection"] == "PostgreSQL via libpq environment variables"
  assert source["user"] == parse_dsn(pg.dsn)["user"]
  monkeypatch.setenv("MY_DSN", pg.dsn)
  via_env = build(tmp_path / "env", dsn_env="MY_DSN", query="SELECT 8 AS eight")
  assert via_env.info.metadata["provenance"]["source"]["connection"] == "PostgreSQL DSN from $MY_DSN"
  assert_build_fails(tmp_path / "unset", errors.ConfigError, "'UNSET_DSN'", "not set",
                     dsn_env="UNSET_DSN", query="SELECT 1")


def test_postgres_password_is_in_no_file_of_the_dataset(tmp_path, pg, caplog):
  assert PASSWORD_MARK in pg.dsn
  with caplog.at_level(logging.DEBUG):
    builder = build(tmp_path, dsn=pg.dsn, query=f"SELECT * FROM {pg.schema}.every_type",
                    order_by="id", nulls="mask",
                    columns={"m": {"categorical": True, "unknown": "<missing>"}})
  files = [path for path in (tmp_path / "tfds").rglob("*") if path.is_file()]
  assert {path.name for path in files} >= {"dataset_info.json", "features.json", "metadata.json"}
  for path in files:
    assert PASSWORD_MARK.encode() not in path.read_bytes(), path
  assert PASSWORD_MARK not in caplog.text
  record = builder.info.metadata["provenance"]
  assert "password=***" in record["config"]["dsn"]
  assert PASSWORD_MARK not in repr(builder.builder_config)


def test_postgres_tfds_build_cli_keeps_the_password_out_of_its_output(tmp_path, pg):
  config = json.dumps({"name": "cli", "dsn": pg.dsn, "order_by": "id",
                       "query": f"SELECT id, txt FROM {pg.schema}.every_type WHERE id < 3"})
  tfds_cli = pathlib.Path(sys.executable).parent / "tfds"
  result = subprocess.run(
      [str(tfds_cli), "build", str(BUILDER_DIR), "--data_dir", str(tmp_path), "--config", config],
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True, text=True,
      timeout=300, check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert PASSWORD_MARK not in result.stdout + result.stderr
  for path in tmp_path.rglob("*"):
    assert not path.is_file() or PASSWORD_MARK.encode() not in path.read_bytes(), path
  assert tfds.builder_from_directory(str(tmp_path / "database/cli/1.0.0")).info.splits[
      "train"].num_examples == 2


def test_postgres_one_snapshot_shared_with_other_sessions(pg):
  pg.run(f"CREATE TABLE {pg.schema}.growing (id int)")
  pg.run(f"INSERT INTO {pg.schema}.growing VALUES (1)")
  spec = sql_connections.ConnectionSpec("postgresql", dsn=pg.dsn)
  count = f"SELECT count(*) FROM {pg.schema}.growing"
  with sql_connections.open_session(spec) as session:
    assert session.fetch_all(count, None) == [(1,)]
    pg.run(f"INSERT INTO {pg.schema}.growing VALUES (2)")  # committed meanwhile
    assert session.fetch_all(count, None) == [(1,)]
    snapshot = session.export_snapshot()
    with sql_connections.open_session(spec, snapshot=snapshot) as worker:
      assert worker.fetch_all(count, None) == [(1,)]
      assert list(worker.rows(count, None)) == [(1,)]
    assert list(sql_connections.stream_query(spec, count)) == [(2,)]
    assert session.facts()["isolation"] == "REPEATABLE READ, READ ONLY"


def test_postgres_dropped_connection_fails_clearly_and_leaves_no_dataset(tmp_path, pg):
  app = f"tfds_drop_test_{os.getpid()}"
  config = dict(name="dropped", dsn=pg.dsn, application_name=app, fetch_size=500, order_by="id",
                query="SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 400000) g")
  seen: list[str] = []

  def terminate_once_streaming() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
      rows = pg.run("SELECT pid, query FROM pg_stat_activity WHERE application_name = %s "
                    "AND query LIKE 'FETCH%%'", [app])
      if rows:
        seen.append(rows[0][1])
        pg.run("SELECT pg_terminate_backend(%s)", [rows[0][0]])
        return
      time.sleep(0.005)

  killer = threading.Thread(target=terminate_once_streaming)
  builder = make_builder(tmp_path, **config)  # planning connects before the killer starts
  killer.start()
  try:
    with pytest.raises(errors.SourceError) as excinfo:
      builder.download_and_prepare()
  finally:
    killer.join()
  message = str(excinfo.value)
  assert "Lost the connection" in message and "while reading split 'train' after" in message
  assert "Nothing was written as a dataset; rerun" in message
  assert seen and seen[0].startswith("FETCH FORWARD 500 FROM")  # a server-side cursor
  data_dir = tmp_path / "tfds"
  assert_no_dataset(data_dir, data_dir / "database" / "dropped" / "1.0.0")
  rerun = build(tmp_path, **{**config, "query": config["query"].replace("400000", "1000")})
  assert rerun.info.splits["train"].num_examples == 1000


def test_sql_type_mapping_tables():
  assert sql_types.postgres_type("int8") == sql_types.SqlType("int", source="int8")
  assert sql_types.postgres_type("_text", element="varchar").describe() == "text[]"
  assert sql_types.postgres_type("mood", is_enum=True).kind == "enum"
  assert sql_types.postgres_type("interval") is None
  declared = {name: sql_types.sqlite_declared_type(name).kind for name in (
      "INTEGER", "BIGINT", "VARCHAR(3)", "CLOB", "DOUBLE", "FLOAT", "BOOLEAN", "DATE",
      "DATETIME", "TIMESTAMP WITH TIME ZONE", "DECIMAL(10,2)", "MONEY", "BLOB", "JSON")}
  assert declared == {
      "INTEGER": "int", "BIGINT": "int", "VARCHAR(3)": "text", "CLOB": "text",
      "DOUBLE": "float64", "FLOAT": "float64", "BOOLEAN": "bool", "DATE": "date",
      "DATETIME": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz",
      "DECIMAL(10,2)": "numeric", "MONEY": "numeric", "BLOB": "bytes", "JSON": "json"}
  assert sql_types.sqlite_declared_type("") is None


def test_split_bucket_matches_postgres(pg):
  keys = [1, 42, "abc", "héllo"]
  found = pg.run(
      "SELECT k, ('x' || substr(md5('5:' || k), 1, 8))::bit(32)::bigint FROM unnest(%s::text[]) k",
      [[str(k) for k in keys]])
  assert [row[1] for row in found] == [sql_connections.split_bucket("5", k) for k in keys]
  assert [sql_connections.split_bucket("5", k) for k in keys] == [bucket(k, 5) for k in keys]


def _partitioned_records(builder: Builder, split: str) -> tuple[int, list[bytes]]:
  """Runs a split's Beam partitions in sequence, each pickled as Beam would ship it."""
  plan = builder._plan  # pylint: disable=protected-access
  with sql_connections.open_session(plan.spec) as coordinator:
    jobs = plan.prepare(coordinator, on_beam=True).jobs[split]
    partitions = [pickle.loads(pickle.dumps(functools.partial(reading.read_partition, job)))
                  for job in jobs]
    return len(jobs), [serialized for partition in partitions for _, serialized in partition()]


def test_postgres_partitions_concatenate_to_the_serial_path(tmp_path, pg):
  # With parameters, psycopg2 wants every literal % doubled.
  query = ("SELECT g AS id, chr(97 + g %% 26) || g AS name, g %% 3 = 0 AS flag "
           "FROM generate_series(1, 500) AS g WHERE 'x%%' LIKE %(pattern)s")
  config = dict(dsn=pg.dsn, query=query, params={"pattern": "x%"}, order_by=["name", "id"],
                partition_key="name", num_partitions=5, split_percent={"train": 60, "test": 40},
                split_key="id")
  serial = build(tmp_path, **config)
  for split in ("train", "test"):
    count, parted = _partitioned_records(make_builder(tmp_path / "beam", **config), split)
    assert count == 5
    assert parted == records(serial, split)


def test_sqlite_partitions_concatenate_to_the_serial_path(tmp_path):
  builder = tfds.builder("database/demo", data_dir=str(tmp_path))
  builder.download_and_prepare()
  count, parted = _partitioned_records(builder, "train")
  assert count == 3 and parted == records(builder, "train")
