"""Preprocessing computed in SQL: categorical vocabularies, normalization, imputation."""

from __future__ import annotations

import numpy as np
import pytest

from tfds_builders.core import errors

from tests.database.common import PREP_SPLITS
from tests.database.common import PREP_TABLE
from tests.database.common import build
from tests.database.common import column
from tests.database.common import assert_build_fails
from tests.database.common import sqlite_file


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
