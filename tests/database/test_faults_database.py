"""Fault suite: real-data correctness of the database builder's NULL policies and statistics, on SQLite and PostgreSQL.

Each bug found by checking a dataset value by value has a regression here:
imputing text and timestamps, a categorical `default` checked against the
classes from the data, masked NULLs of categorical columns, masks only on
nullable columns, normalization statistics over the imputed values, and a
failed build that leaves no folder behind. Failures run through
`faults.check_fault` (one of them through `tfds build`); wrong successes are
plain value assertions.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import sqlite3
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import faults
from tests.faults import FaultCase
from tfds_builders.core import errors
from tfds_builders.database import Builder
from tfds_builders.database import BuilderConfig

# Times t1 < ... < t5; names in code-point order 'Zebra' < 'fig' < 'kiwi' < 'pear' < 'plum'.
T1, T2, T3, T4, T5 = ("2023-06-01 00:00:00", "2024-01-02 03:04:05", "2024-07-15 12:00:00",
                      "2025-12-31 23:59:59", "2026-01-01 00:00:00")
TABLES = {
    # name, timestamp and JSON columns with one NULL row (id 5).
    "things": ("id INTEGER PRIMARY KEY, name TEXT, seen TIMESTAMP, doc JSON", [
        (1, "pear", T3, '{"a": 1}'), (2, "Zebra", T1, "{}"), (3, "fig", T4, "[]"),
        (4, "kiwi", T2, "{}"), (5, None, None, None), (6, "pear", T4, "{}"), (7, "plum", T5, "1"),
    ]),
    "colors": ("id INTEGER PRIMARY KEY, color TEXT, label TEXT NOT NULL", [
        (1, "red", "p"), (2, None, "q"), (3, "blue", "p"), (4, "green", "r"),
    ]),
    "tags": ("id INTEGER PRIMARY KEY, tag TEXT NOT NULL", [(1, "one"), (3, "three")]),
    "measures": ("id INTEGER PRIMARY KEY, x DOUBLE PRECISION", [(1, 1.0), (2, 3.0), (3, None)]),
}
SQLITE, POSTGRES = "sqlite", "postgresql"
# Both engines; PostgreSQL is reached through `request.getfixturevalue`, which conftest's automatic mark misses.
ENGINES = [SQLITE, pytest.param(POSTGRES, marks=pytest.mark.postgres)]
FIXTURES = {SQLITE: "sqlite_source", POSTGRES: "postgres_source"}


# ---------------------------------------------------------------- sources --


@dataclasses.dataclass
class Source:
  """TABLES on one engine, and how a builder config reaches them."""

  engine: str
  prefix: str  # "" or "schema."
  connection: dict[str, Any]
  files: list[pathlib.Path]
  admin: Any = None  # PostgreSQL: an autocommit connection

  def sql(self, template: str) -> str:
    return template.format(**{name: self.prefix + name for name in TABLES})

  def digest(self) -> Any:
    """A checksum of every table's rows (PostgreSQL); the SQLite file is hashed by `files`."""
    if self.admin is None:
      return None
    with self.admin.cursor() as cursor:
      found = []
      for name in TABLES:
        cursor.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {self.prefix}{name} t")
        found.append(cursor.fetchone()[0])
      return found


@pytest.fixture(scope="module")
def sqlite_source(tmp_path_factory) -> Source:
  folder = tmp_path_factory.mktemp("sqlite")
  path = folder / "faults.sqlite"
  connection = sqlite3.connect(path)
  for name, (columns, rows) in TABLES.items():
    connection.execute(f"CREATE TABLE {name} ({columns})")
    marks = ", ".join("?" * len(rows[0]))
    connection.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
  connection.commit()
  connection.close()
  return Source(SQLITE, "", {"sqlite_path": str(path)}, [folder])


@pytest.fixture(scope="module")
def postgres_source(postgres_dsn) -> Source:
  import psycopg2  # pylint: disable=import-outside-toplevel

  schema = f"tfds_faults_database_{os.getpid()}"
  admin = psycopg2.connect(postgres_dsn)
  admin.autocommit = True
  with admin.cursor() as cursor:
    cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    for name, (columns, rows) in TABLES.items():
      cursor.execute(f"CREATE TABLE {schema}.{name} ({columns})")
      marks = ", ".join(["%s"] * len(rows[0]))
      cursor.executemany(f"INSERT INTO {schema}.{name} VALUES ({marks})", rows)
  try:
    yield Source(POSTGRES, f"{schema}.", {"dsn": postgres_dsn}, [], admin)
  finally:
    with admin.cursor() as cursor:
      cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.close()


@pytest.fixture(params=ENGINES)
def source(request) -> Source:
  return request.getfixturevalue(FIXTURES[request.param])


def build(data_dir: pathlib.Path, source: Source, query: str, name: str = "t", **config) -> Builder:
  builder = Builder(
      config=BuilderConfig(name=name, query=source.sql(query), order_by="id",
                           **source.connection, **config),
      data_dir=str(data_dir),
  )
  builder.download_and_prepare()
  return builder


def rows(builder: Builder) -> list[dict[str, Any]]:
  return list(tfds.as_numpy(builder.as_dataset(split="train")))


def tree(folder: pathlib.Path) -> list[str]:
  """Every path below `folder` (folders included), relative."""
  return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# ------------------------------------------------------------ fault table --


def _class_of(name: str) -> Callable[[Builder], int]:
  return lambda builder: builder.info.features["color"].str2int(name)


FAULTS = [
    # A `default` of a categorical column is checked once its classes are known:
    # 'red' passes (it used to be "not one of its 0 classes"), 'purple' names them.
    FaultCase("categorical-default-not-a-class", errors.ConfigError, [
        r"Column 'color': default 'purple' is not one of its 3 classes \['blue', 'green', 'red'\]",
        r"set `unknown` to 'purple' to add it as a class",
    ]).param({"color": {"categorical": True, "default": "purple"}},
             {"color": {"categorical": True, "default": "purple", "unknown": "purple"}},
             ["blue", "green", "red", "purple"], "purple", None),
    # A masked NULL of a categorical column used to be class 0 ('blue'), a real class.
    FaultCase("masked-categorical-null-without-unknown", errors.ConfigError, [
        r"Column 'color': nulls='mask' on a categorical column would store a NULL as class 0, a real class",
        r"Set `unknown` to a class name that masked NULLs take",
    ]).param({"color": {"categorical": True, "nulls": "mask"}},
             {"color": {"categorical": True, "nulls": "mask", "unknown": "<missing>"}},
             ["blue", "green", "red", "<missing>"], "<missing>", True),
]


@pytest.mark.parametrize("case, bad, fixed, names, null_class, masked", FAULTS)
def test_categorical_null_faults(tmp_path, source, case, bad, fixed, names, null_class, masked):
  data_dir = tmp_path / "tfds"
  columns = {"value": bad}

  def repair() -> None:
    assert not data_dir.exists(), f"the failed build left {tree(data_dir)}"
    columns["value"] = fixed

  builder = faults.check_fault(
      case, lambda: build(data_dir, source, "SELECT id, color FROM {colors}", columns=columns["value"]),
      repair, source.files, data_dir, source.digest,
  )
  assert builder.info.features["color"].names == names
  got = rows(builder)
  assert [int(example["color"]) for example in got] == [
      names.index(name) for name in ("red", null_class, "blue", "green")]
  if masked:
    assert [bool(example["color_is_null"]) for example in got] == [False, True, False, False]
  else:
    assert "color_is_null" not in builder.info.features


def test_categorical_default_from_the_data_is_accepted(tmp_path, source):
  builder = build(tmp_path, source, "SELECT id, color FROM {colors}",
                  columns={"color": {"categorical": True, "default": "red"}})
  assert builder.info.features["color"].names == ["blue", "green", "red"]
  assert [int(example["color"]) for example in rows(builder)] == [2, 2, 0, 1]  # NULL -> 'red'


@pytest.mark.parametrize("engine", ENGINES)
def test_impute_on_json_is_refused_naming_the_column(tmp_path, request, engine):
  source = request.getfixturevalue(FIXTURES[engine])
  case = FaultCase("impute-json", errors.ConfigError, [
      r"columns\['doc'\]: impute='mode' needs values that can be ordered and compared",
      r"cast the column to text in the query, or use `default`",
  ])
  query = ["SELECT id, doc FROM {things}"]
  builder = faults.check_fault(
      case, lambda: build(tmp_path / "tfds", source, query[0], columns={"doc": {"impute": "mode"}}),
      lambda: query.__setitem__(0, "SELECT id, CAST(doc AS TEXT) AS doc FROM {things}"),
      source.files, tmp_path / "tfds", source.digest,
  )
  assert rows(builder)[4]["doc"] == b"{}"  # the NULL takes the mode of the JSON texts


def test_tfds_build_refuses_a_default_outside_the_classes_and_leaves_nothing(tmp_path, sqlite_source):
  data_dir = tmp_path / "tfds"
  config = {"name": "cli", "sqlite_path": sqlite_source.connection["sqlite_path"], "order_by": "id",
            "query": "SELECT id, color FROM colors",
            "columns": {"color": {"categorical": True, "default": "purple"}}}
  case = FaultCase("cli-categorical-default", faults.CommandFailed, [
      r"ConfigError: Column 'color': default 'purple' is not one of its 3 classes",
      r"set `unknown` to 'purple'",
  ])

  def repair() -> None:
    assert not data_dir.exists(), f"the failed build left {tree(data_dir)}"
    config["columns"]["color"]["unknown"] = "purple"

  faults.check_fault(case, lambda: faults.tfds_build("database", config, data_dir), repair,
                     sqlite_source.files, data_dir)
  built = tfds.builder_from_directory(str(data_dir / "database" / "cli" / "1.0.0"))
  assert built.info.features["color"].names == ["blue", "green", "red", "purple"]
  got = list(tfds.as_numpy(built.as_dataset(split="train")))
  assert [int(example["color"]) for example in got] == [2, 3, 0, 1]


# ------------------------------------------------- failed builds, folders --


def test_failed_build_removes_only_the_folders_it_created(tmp_path, source):
  bad = {"color": {"categorical": True, "default": "purple"}}  # fails after the statistics
  fresh = tmp_path / "fresh"
  with pytest.raises(errors.ConfigError, match="not one of its 3 classes"):
    build(fresh, source, "SELECT id, color FROM {colors}", columns=bad)
  assert not fresh.exists(), tree(fresh)

  shared = tmp_path / "shared"
  build(shared, source, "SELECT id, label FROM {colors}", name="other")
  older = shared / "database" / "t" / "0.9.0"  # another version of the failing config
  older.mkdir(parents=True)
  (older / "keep.txt").write_text("an older version")
  before = tree(shared)
  with pytest.raises(errors.ConfigError, match="not one of its 3 classes"):
    build(shared, source, "SELECT id, color FROM {colors}", columns=bad)
  assert tree(shared) == before
  assert (older / "keep.txt").read_text() == "an older version"
  assert tfds.builder_from_directory(str(shared / "database" / "other" / "1.0.0")).info.splits[
      "train"].num_examples == 4


# ------------------------------------------------------ wrong successes --


IMPUTED = {
    # statistic: (name, seen) over the 6 non-NULL values; median = lower middle (index 2).
    "min": ("Zebra", T1), "max": ("plum", T5), "median": ("kiwi", T3), "mode": ("pear", T4),
}


@pytest.mark.parametrize("statistic", sorted(IMPUTED))
def test_impute_text_and_timestamp_columns(tmp_path, source, statistic):
  builder = build(tmp_path, source, "SELECT id, name, seen FROM {things}",
                  columns={"name": {"impute": statistic}, "seen": {"impute": statistic}})
  name, seen = IMPUTED[statistic]
  null_row = rows(builder)[4]
  assert int(null_row["id"]) == 5
  assert null_row["name"] == name.encode()
  assert null_row["seen"] == seen.replace(" ", "T").encode()
  record = builder.info.metadata["preprocessing"]
  assert record["name"]["impute"] == {"statistic": statistic, "value": name, "split": "train"}
  assert datetime.datetime.fromisoformat(record["seen"]["impute"]["value"]) == (
      datetime.datetime.fromisoformat(seen))


def _mask_features(builder: Builder) -> set[str]:
  return {name for name in builder.info.features if name.endswith("_is_null")}


def test_config_wide_mask_skips_not_null_columns(tmp_path, source):
  builder = build(tmp_path, source, "SELECT * FROM {colors}", nulls="mask")
  # id is the primary key and label NOT NULL: no always-false mask for them.
  assert set(builder.info.features) == {"id", "color", "label", "color_is_null"}
  features = json.loads((pathlib.Path(builder.data_path) / "features.json").read_text())
  assert "id_is_null" not in json.dumps(features) and "color_is_null" in json.dumps(features)
  assert [bool(example["color_is_null"]) for example in rows(builder)] == [False, True, False, False]
  # Renamed in a subquery and a CTE, still NOT NULL; an expression may be NULL.
  nested = build(tmp_path / "nested", source,
                 "WITH c AS (SELECT id AS key, label FROM {colors}) "
                 "SELECT key AS id, label AS tag, label || '' AS shout FROM (SELECT * FROM c) AS s",
                 nulls="mask")
  assert _mask_features(nested) == {"shout_is_null"}


def test_config_wide_mask_keeps_masks_an_outer_join_needs(tmp_path, source):
  builder = build(tmp_path, source,
                  "SELECT c.id, c.label, t.tag FROM {colors} c LEFT JOIN {tags} t ON t.id = c.id",
                  nulls="mask")
  # tag is NOT NULL in its table, but the outer join makes it NULL for ids 2 and 4.
  assert [bool(example["tag_is_null"]) for example in rows(builder)] == [False, True, False, True]
  assert [example["tag"] for example in rows(builder)] == [b"one", b"", b"three", b""]
  if source.engine == SQLITE:  # the bytecode shows which table's rows can be missing
    assert _mask_features(builder) == {"tag_is_null"}
  else:  # PostgreSQL: an outer join anywhere keeps every mask (documented limit)
    assert _mask_features(builder) == {"id_is_null", "label_is_null", "tag_is_null"}


STD_OF_1_3_2 = math.sqrt(2 / 3)
STD_OF_1_3_0 = math.sqrt(14 / 9)
NORMALIZED = [
    # settings of x (train values 1, 3, NULL), the recorded statistics, the stored NULL.
    pytest.param({"impute": "mean", "normalize": "standard"},
                 {"method": "standard", "mean": 2.0, "std": STD_OF_1_3_2, "count": 3}, 0.0,
                 id="impute-mean-then-standard"),
    pytest.param({"default": 0.0, "normalize": "standard"},
                 {"method": "standard", "mean": 4 / 3, "std": STD_OF_1_3_0, "count": 3},
                 (0 - 4 / 3) / STD_OF_1_3_0, id="default-then-standard"),
    pytest.param({"nulls": "mask", "normalize": "minmax"},
                 {"method": "minmax", "min": 1.0, "max": 3.0, "count": 2}, 0.0,
                 id="masked-placeholder-not-counted"),
    pytest.param({"nulls": "mask", "default": 5.0, "normalize": "minmax"},
                 {"method": "minmax", "min": 1.0, "max": 5.0, "count": 3}, 1.0,
                 id="masked-default-counted"),
]


@pytest.mark.parametrize("settings, statistics, stored_null", NORMALIZED)
def test_normalization_statistics_are_those_of_the_imputed_column(
    tmp_path, source, settings, statistics, stored_null):
  builder = build(tmp_path, source, "SELECT id, x FROM {measures}", columns={"x": settings})
  record = builder.info.metadata["preprocessing"]["x"]["normalize"]
  numbers = {key: value for key, value in statistics.items() if key != "method"}
  assert record["method"] == statistics["method"] and record["split"] == "train"
  assert {key: record[key] for key in numbers} == pytest.approx(numbers, rel=1e-12)
  shift, scale = ((record["mean"], record["std"]) if "mean" in record
                  else (record["min"], record["max"] - record["min"]))
  stored = [example["x"] for example in rows(builder)]
  assert stored == [np.float32((1.0 - shift) / scale), np.float32((3.0 - shift) / scale),
                    np.float32(stored_null)]
