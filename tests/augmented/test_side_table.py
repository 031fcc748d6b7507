"""Side tables: CSV, Parquet and SQL, their checks, and the columnar path agreeing with the row-by-row one."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sqlite3
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from etils import epath

from tfds_builders.augmented import Builder
from tfds_builders.augmented import fields
from tfds_builders.augmented import load_augmented
from tfds_builders.augmented import side_table as side_table_lib
from tfds_builders.core import errors
from tests import helpers
from tests.augmented.common import examples
from tests.augmented.common import labels_csv
from tests.augmented.common import raw_base
from tests.helpers import write_csv

make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)


# ---------------------------------------------------------- side tables --


def test_parquet_side_table_with_typed_and_list_columns_on_a_string_key(tmp_path):
  sources = raw_base(tmp_path / "raw")
  texts = [f"word{i} more" for i in range(100, 110)]
  table = pa.table({
      "text": texts,
      "rank": pa.array(range(10), pa.int16()),
      "ratio": pa.array([i / 3 for i in range(10)], pa.float32()),
      "tags": [[f"t{i}", "x"][: 1 + i % 2] for i in range(10)],
      "good": [i % 2 == 0 for i in range(10)],
  })
  pq.write_table(table, tmp_path / "side.parquet")
  builder = build(tmp_path, base_records=sources, side_table="side.parquet", data_root=str(tmp_path), join_key="text")
  features = builder.info.features
  assert features["rank"].np_dtype == np.int16
  assert features["ratio"].np_dtype == np.float32
  assert features["tags"].shape == (None,)
  assert features["good"].np_dtype == np.bool_
  got = examples(builder.as_dataset(split="train")) + examples(builder.as_dataset(split="test"))
  for example in got:
    i = texts.index(example["text"].decode())
    assert example["rank"] == i and example["ratio"] == np.float32(i / 3) and example["good"] == (i % 2 == 0)
    assert list(example["tags"]) == [f"t{i}".encode(), b"x"][: 1 + i % 2]


def test_csv_declared_types_and_column_choice(tmp_path):
  table = write_csv(tmp_path / "t.csv", ["key", "a", "b", "c"], ([i, i, "yes" if i % 2 else "no", "z"] for i in range(100, 110)))
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                  side_table_key="key", side_table_columns=["a", "b"], features={"a": "int16", "b": "bool"})
  assert set(builder.info.features) == {"id", "text", "score", "tokens", "a", "b"}
  got = examples(builder.as_dataset(split="train"))
  assert [e["b"] for e in got] == [bool(e["id"] % 2) for e in got]
  assert got[0]["a"].dtype == np.int16


def test_duplicate_side_table_keys(tmp_path):
  table = write_csv(tmp_path / "dup.csv", ["id", "label"], [[100, 1], [101, 2], [100, 3]])
  with pytest.raises(errors.SourceError, match=r"has join key 100 twice \(line 2 and line 4\)"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id")


def test_join_key_missing_from_the_base(tmp_path):
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  with pytest.raises(errors.ConfigError, match=r"join_key 'uid' is not a feature of the base .*\['id', 'score', 'text', 'tokens'\]"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="uid")
  with pytest.raises(errors.ConfigError, match=r"join_key 'tokens' is int64_list\[\*\] in the base"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="tokens")


@pytest.mark.parametrize("content, fragment", [
    ("id,label\n100,1\nx,2\n", "join key 'x' in column 'id' is not an integer"),
    ("id,label\n100,1\n101\n", "line 3 has 1 cells, the header has 2"),
    ("label\n1\n", "has no key column 'id'"),
    ("", "is empty; it needs a header row"),
])
def test_bad_csv_side_tables(tmp_path, content, fragment):
  (tmp_path / "bad.csv").write_text(content)
  with pytest.raises((errors.SourceError, errors.ConfigError, errors.SchemaError), match=fragment):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(tmp_path / "bad.csv"), join_key="id")


def test_declared_csv_column_with_an_empty_cell(tmp_path):
  table = write_csv(tmp_path / "t.csv", ["id", "label"], [[100, 1], [101, ""]])
  with pytest.raises(errors.SourceError, match="line 3, column 'label' is empty"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                 features={"label": "int64"})


def test_sqlite_side_table(tmp_path):
  database = tmp_path / "labels.db"
  with sqlite3.connect(database) as connection:
    connection.execute("CREATE TABLE labels (id INTEGER, label INTEGER, name TEXT)")
    connection.executemany("INSERT INTO labels VALUES (?, ?, ?)", [(i, i % 3, f"n{i}") for i in range(100, 110)])
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), join_key="id",
                  side_table_sql="SELECT id, label, name FROM labels",
                  side_table_connection={"driver": "sqlite", "sqlite_path": "labels.db"}, data_root=str(tmp_path))
  got = examples(builder.as_dataset(split="train"))
  assert [(e["label"], e["name"]) for e in got] == [(e["id"] % 3, f"n{e['id']}".encode()) for e in got]
  assert builder.info.metadata["provenance"]["side_table"]["source"].startswith("SQL query on SQLite")


def test_postgresql_side_table(tmp_path, postgres_connection, postgres_dsn):
  with postgres_connection.cursor() as cursor:
    cursor.execute("DROP TABLE IF EXISTS augmented_labels")
    cursor.execute("CREATE TABLE augmented_labels (id bigint, label integer, weight double precision, tag text)")
    cursor.executemany("INSERT INTO augmented_labels VALUES (%s, %s, %s, %s)",
                       [(i, i % 3, i / 8, f"t{i}") for i in range(100, 110)])
  postgres_connection.commit()
  try:
    os.environ["AUGMENTED_TEST_DSN"] = postgres_dsn
    builder = build(tmp_path, mode="overlay", base_records=raw_base(tmp_path / "raw"), join_key="id",
                    side_table_sql="SELECT id, label, weight, tag FROM augmented_labels",
                    side_table_connection={"driver": "postgresql", "dsn_env": "AUGMENTED_TEST_DSN"})
    got = examples(load_augmented(builder.data_dir, split="train"))
    assert [(e["label"], e["weight"], e["tag"]) for e in got] == [(e["id"] % 3, e["id"] / 8, f"t{e['id']}".encode()) for e in got]
    assert "password" not in json.dumps(builder.info.metadata["provenance"]).replace("***", "")
  finally:
    del os.environ["AUGMENTED_TEST_DSN"]
    with postgres_connection.cursor() as cursor:
      cursor.execute("DROP TABLE augmented_labels")
    postgres_connection.commit()


# -- the columnar side-table path agrees with the row-by-row path -------------


COLUMNAR_TABLES = {
    "numbers and words": "id,label,weight,name,neg\n" + "".join(
        f"{i},{i % 10},{i / 7!r},w{i}é,{-i * 1000003}\n" for i in range(300)),
    "decimal forms": "id,x\n1,5.\n2,.5\n3,-1e5\n4,2.5E-3\n5,7\n6,0.1\n",
    "tsv windows lines": "id\tlabel\r\n1\tcat\r\n2\tdog\r\n",
    "empty strings": "id,name\n1,\n2,x\n",
    "an empty cell makes numbers text": "id,x\n1,\n2,3\n",
    "hex is text": "id,x\n1,0x1F\n2,0x20\n",
    "bom and padded header": "\ufeff id , name \n1,a\n2,b\n",
}
ROW_PATH_TABLES = {  # read (or refused) only by the row-by-row path, which decides
    "quoted": 'id,name\n1,"a,b"\n2,"c"\n',
    "spaces around numbers": "id,x\n1, 5\n2,6\n",
    "underscores": "id,x\n1,1_000\n2,2\n",
    "inf": "id,x\n1,inf\n2,1.5\n",
    "plus sign key": "id,x\n+1,a\n2,b\n",
    "huge int": "id,x\n1,99999999999999999999\n",
    "duplicate key": "id,x\n1,a\n1,b\n",
    "short row": "id,x\n1\n2,3\n",
    "lone carriage returns": "id,x\r1,a\r2,b\r",
}


def read_side_table(path: pathlib.Path, columnar: bool, monkeypatch, **options) -> Any:
  with monkeypatch.context() as patch:
    if not columnar:
      patch.setattr(side_table_lib, "_columnar", lambda *args: None)
    options = {"table_format": "auto", "key_column": "id", "columns": [], "key_kind": "int64_list", "declared": {}, **options}
    return side_table_lib.read_file(epath.Path(path), **options)


def side_table_view(table: Any, keys: list[Any]) -> tuple:
  rows = table.index.rows(np.array(keys, np.int64) if keys and isinstance(keys[0], int) else keys)
  return table.specs, [None if row < 0 else table.entries.item(row) for row in rows.tolist()]


@pytest.mark.parametrize("name", sorted(COLUMNAR_TABLES))
def test_columnar_csv_tables_equal_the_row_by_row_path(tmp_path, monkeypatch, name):
  path = tmp_path / ("t.tsv" if "tsv" in name else "t.csv")
  path.write_bytes(COLUMNAR_TABLES[name].encode())
  data = path.read_bytes()
  assert side_table_lib._columnar(data, str(path), "csv", "id", [], "int64_list", {}, "") is not None
  keys = list(range(-2, 305))
  fast, slow = (read_side_table(path, columnar, monkeypatch) for columnar in (True, False))
  assert side_table_view(fast, keys) == side_table_view(slow, keys)
  assert len(fast) == len(slow) and fast.sha256 == slow.sha256


@pytest.mark.parametrize("name", sorted(ROW_PATH_TABLES))
def test_csv_tables_the_columnar_path_declines_read_as_before(tmp_path, monkeypatch, name):
  path = tmp_path / "t.csv"
  path.write_bytes(ROW_PATH_TABLES[name].encode())
  assert side_table_lib._columnar(path.read_bytes(), str(path), "csv", "id", [], "int64_list", {}, "") is None
  outcomes = []
  for columnar in (True, False):
    try:
      outcomes.append(side_table_view(read_side_table(path, columnar, monkeypatch), [1, 2]))
    except errors.TfdsBuildersError as error:
      outcomes.append(str(error))
  assert outcomes[0] == outcomes[1]


def test_columnar_declared_types_string_keys_and_parquet_equal_the_row_by_row_path(tmp_path, monkeypatch):
  csv_path = tmp_path / "t.csv"
  csv_path.write_text("id,small,ratio,text\n" + "".join(f"k{i},{i % 100},{i / 3!r},{i}\n" for i in range(50)))
  declared = {"small": fields.parse_declared("small", "int8", ""), "ratio": fields.parse_declared("ratio", "float32", ""),
              "text": fields.parse_declared("text", "string", "")}
  keys = [f"k{i}".encode() for i in range(-1, 52)]
  fast, slow = (read_side_table(csv_path, columnar, monkeypatch, key_kind="bytes_list", declared=declared)
                for columnar in (True, False))
  assert side_table_view(fast, keys) == side_table_view(slow, keys)
  parquet_path = tmp_path / "t.parquet"
  pq.write_table(pa.table({
      "id": pa.array(range(40), pa.int32()), "f": pa.array(np.arange(40) / 9, pa.float32()),
      "flag": pa.array([i % 3 == 0 for i in range(40)]), "name": pa.array([f"n{i}" for i in range(40)]),
      "blob": pa.array([bytes([i]) * i for i in range(40)], pa.binary()),
  }), parquet_path)
  assert side_table_lib._columnar(parquet_path.read_bytes(), str(parquet_path), "parquet", "id", [], "int64_list", {}, "")
  fast, slow = (read_side_table(parquet_path, columnar, monkeypatch) for columnar in (True, False))
  assert side_table_view(fast, list(range(-1, 42))) == side_table_view(slow, list(range(-1, 42)))


def test_declared_int_out_of_range_is_named_by_row(tmp_path, monkeypatch):
  path = tmp_path / "t.csv"
  path.write_text("id,small\n1,5\n2,300\n")
  with pytest.raises(errors.SchemaError, match=r"t.csv: line 3, column 'small': 300 is out of the range of int8"):
    read_side_table(path, True, monkeypatch, declared={"small": fields.parse_declared("small", "int8", "")})


@pytest.mark.parametrize("keys", [list(range(0, 100, 3)), [5, -2**63, 2**63 - 1, 0]])
def test_key_index_finds_dense_and_sparse_int_keys(keys):
  index = side_table_lib.KeyIndex(np.array(keys, np.int64))
  probes = keys + [1, -1, 2**62, -(2**63) + 1, 101]
  expected = [keys.index(key) if key in keys else -1 for key in probes]
  assert index.rows(np.array(probes, np.int64)).tolist() == expected
  assert len(index) == len(keys)
