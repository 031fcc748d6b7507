"""The database card: its bundled configs, config checks, registration and the `tfds build` command."""

from __future__ import annotations

import datetime
import os
import pathlib
import sqlite3
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_builders
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.database import Builder

from tests.database.common import POLICY_TABLE
from tests.database.common import DUMMY_DATA
from tests.database.common import BUILDER_DIR
from tests.database.common import build
from tests.database.common import examples
from tests.database.common import column
from tests.database.common import assert_build_fails
from tests.database.common import sqlite_file
from tests.database.common import bucket
from tests.database.common import assert_no_dataset


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


# --------------------------------------------- configs -> expected splits --

# Config -> examples per split: each split mode of the card, on the bundled penguins (ids 1..24).
_PENGUINS = {"data_root": str(DUMMY_DATA), "sqlite_path": "demo.sqlite"}
SPLIT_CASES = {
    "demo": ({"bundled": "demo"}, {"train": 19, "test": 5}),
    "split_queries": ({"bundled": "split_queries"}, {"train": 14, "test": 7}),
    "one_query_is_train": ({"query": "SELECT id FROM penguins", "order_by": "id"}, {"train": 24}),
    "one_query_per_split": ({"split_queries": {"low": "SELECT id FROM penguins WHERE id <= 10",
                                               "high": "SELECT id FROM penguins WHERE id > 10"}},
                            {"low": 10, "high": 14}),
    "hash_split": ({"query": "SELECT id FROM penguins", "split_percent": {"train": 75, "test": 25},
                    "split_key": "id"}, {"train": 19, "test": 5}),
}


@pytest.mark.parametrize("config, splits", SPLIT_CASES.values(), ids=SPLIT_CASES)
def test_config_gives_splits(tmp_path, config, splits):
  if "bundled" in config:
    builder = tfds.builder(f"database/{config['bundled']}", data_dir=str(tmp_path))
    builder.download_and_prepare()
  else:
    builder = build(tmp_path, **_PENGUINS, **config)
  assert {name: info.num_examples for name, info in builder.info.splits.items()} == splits


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


@pytest.mark.slow  # a `tfds build` subprocess
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
