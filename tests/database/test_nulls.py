"""NULL policies: error, default, mask and skip_row."""

from __future__ import annotations

from tfds_builders.core import errors

from tests.database.common import POLICY_TABLE
from tests.database.common import build
from tests.database.common import examples
from tests.database.common import column
from tests.database.common import assert_build_fails
from tests.database.common import sqlite_file


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
