"""The byte-identity regression set: every bundled config, and custom configs covering every mode."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# Top-level, not `tests.`, as test_regression_bytes imports this module: recording runs it
# beside another checkout's package, where `tests` is not this folder.
import helpers  # pylint: disable=g-bad-import-order

PG_DSN_ENV = "TFDS_BUILDERS_PG_DSN"
THIS_MODULE = pathlib.Path(__file__).stem  # user functions below are referenced as f"{THIS_MODULE}:name"
# One schema per process, so that concurrent runs (xdist, two engineers) never share a table.
PG_SCHEMA = f"regression_bytes_{os.getpid()}"

# A case's setup writes its inputs under the directory it gets, deterministically
# (fixed values and seeds, no clock), and returns its builder's config. Only
# public APIs of the builders, TFDS and NumPy are used: the same table runs
# against the pre-refactor checkout that recorded the hashes.
Setup = Callable[[pathlib.Path], Any]  # input dir -> BuilderConfig of the case's builder


@dataclasses.dataclass(frozen=True)
class Case:
  """One build of the regression set.

  Attributes:
    builder: Package name under `tfds_builders` (`numpy_arrays`, ...).
    name: The case's name; the pytest id is `builder/name`.
    config: A bundled config's name, or a function making the inputs under a
      directory and returning the config.
    num_shards: DownloadConfig(num_shards=...), as `--num_shards`.
    beam: Build on Beam's in-process DirectRunner.
    file_format: TFDS file format (`array_record`, `parquet`); None: tfrecord.
    postgres: Needs the PostgreSQL server of `TFDS_BUILDERS_PG_DSN`.
  """

  builder: str
  name: str
  config: str | Setup
  num_shards: int | None = None
  beam: bool = False
  file_format: str | None = None
  postgres: bool = False

  @property
  def case_id(self) -> str:
    return f"{self.builder}/{self.name}"


# ------------------------------------------------------ user functions --


def score_features(example: dict[str, Any]) -> dict[str, Any]:
  """New fields of several dtypes and shapes, for the augmented function cases."""
  score = float(example["score"])
  return {
      "double_score": np.float64(score * 2 + 1e-12),
      "score32": np.float32(score / 3),
      "id_u32": np.uint32(int(example["id"]) * 7),
      "small": np.int8(int(example["id"]) % 100 - 50),
      "positive": bool(score > 26),
      "words": example["text"].split(),
      "grid": np.arange(6, dtype=np.int32).reshape(2, 3) * int(example["id"]),
      "caption": f"id {int(example['id'])}",
  }


# ------------------------------------------------------------- helpers --


def write_records(path: pathlib.Path, records: Iterable[bytes], compression: str = "") -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type=compression)) as writer:
    for record in records:
      writer.write(record)
  return str(path)


def sqlite_file(path: pathlib.Path, script: str) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  connection = sqlite3.connect(path)
  connection.executescript(script)
  connection.commit()
  connection.close()
  return str(path)


def raw_base(root: pathlib.Path, counts: Mapping[str, list[int]] | None = None) -> dict[str, list[str]]:
  """A raw augmented base: per split, files of records with id, text, score, tokens."""
  return helpers.write_split_files(root, counts or {"train": [5, 4], "test": [3]}, lambda n: helpers.example_bytes(
      id=[n], text=[f"word{n} more text".encode()], score=[n / 4], tokens=list(range(n % 3 + 1))))


def _module(builder: str):
  import importlib  # pylint: disable=import-outside-toplevel

  return importlib.import_module(f"tfds_builders.{builder}")


def _config(builder: str, name: str, **kwargs) -> Any:
  # TFDS refuses a custom config named like a bundled one.
  return _module(builder).BuilderConfig(name=f"r_{name}", **kwargs)


# -------------------------------------------------------- numpy_arrays --


def _np_rows_dtypes(root: pathlib.Path) -> Any:
  """Paired .npy features of many dtypes, multi-dim, rows layout, two splits."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(13)
  splits = {}
  for split, rows in (("train", (7, 5)), ("test", (4,))):
    features = {"x64": [], "u32": [], "flag": [], "img": [], "c64": [], "i8": [], "h": []}
    for index, count in enumerate(rows):
      arrays = {
          "x64": rng.standard_normal((count, 3)),  # float64
          "u32": rng.integers(0, 2**32, (count,), dtype=np.uint32),
          "flag": rng.integers(0, 2, (count, 2)).astype(bool),
          "img": rng.integers(0, 256, (count, 4, 3, 2), dtype=np.uint8),
          "c64": (rng.standard_normal((count,)) + 1j * rng.standard_normal((count,))).astype(np.complex64),
          "i8": rng.integers(-128, 128, (count, 5), dtype=np.int8),
          "h": rng.standard_normal((count, 2)).astype(np.float16),
      }
      for feature, array in arrays.items():
        path = root / split / f"{feature}-{index}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
        features[feature].append(str(path))
    splits[split] = features
  return _config("numpy_arrays", "rows_dtypes", splits=splits)


def _np_npz_fractions(root: pathlib.Path) -> Any:
  """.npz archives (features members) divided by split_fractions with a seed."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  paths = []
  for index in range(3):
    path = root / f"part-{index}.npz"
    np.savez(path, x=rng.standard_normal((10, 2)).astype(np.float32),
             y=rng.integers(0, 10, (10,), dtype=np.int64),
             m=rng.integers(0, 2**16, (10, 2, 2), dtype=np.uint16))
    paths.append(str(path))
  return _config("numpy_arrays", "npz_fractions", paths=paths,
                 split_fractions={"train": 0.6, "validation": 0.15, "test": 0.25}, split_seed=5)


def _np_npz_examples(root: pathlib.Path) -> Any:
  """npz_members='examples', files layout: each member one example of varying shape."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(3)
  path = root / "members.npz"
  np.savez_compressed(path, **{f"m{i:02d}": rng.standard_normal((i + 1, 3)) for i in range(6)})
  return _config("numpy_arrays", "npz_examples", splits={"train": [str(path)]},
                 layout="files", npz_members="examples", feature_name="cloud")


def _np_files_layout(root: pathlib.Path) -> Any:
  """One .npy per example with varying shape; data_root with relative globs."""
  rng = np.random.default_rng(11)
  for split, count in (("train", 5), ("test", 2)):
    (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(count):
      np.save(root / split / f"e{i}.npy", rng.integers(0, 2**31, (i + 1, 2), dtype=np.int32))
  return _config("numpy_arrays", "files_layout", splits={"train": ["train/*.npy"], "test": ["test"]},
                 layout="files", feature_name="points", data_root=str(root))


def _np_shuffled(root: pathlib.Path) -> Any:
  """The rows config written in TFDS's hashed-key order (`shuffle: true`)."""
  return dataclasses.replace(_np_npz_fractions(root), name="r_shuffled", shuffle=True)


# -------------------------------------------------------- concatenated --


def _site(path: pathlib.Path, first: int, count: int, lengths=(2,), extra: bool = False) -> str:
  return write_records(path, [
      helpers.example_bytes(id=[first + i], tokens=list(range(lengths[i % len(lengths)])),
                            name=[f"n{first + i}".encode()], **({"score": [float(i) / 3]} if extra else {}))
      for i in range(count)
  ])


def _three_sites(root: pathlib.Path) -> list[dict[str, Any]]:
  return [
      {"name": "a", "tfrecords": {"train": _site(root / "a/train.tfrecord", 0, 7, (1, 3)),
                                  "test": _site(root / "a/test.tfrecord", 100, 2)}},
      {"name": "b", "tfrecords": {"train": [_site(root / "b/train-0.tfrecord", 200, 3, (2, 0)),
                                            _site(root / "b/train-1.tfrecord", 300, 4, (4,))],
                                  "test": _site(root / "b/test.tfrecord", 400, 3)}},
      {"name": "c", "tfrecords": {"train": write_records(root / "c/train.tfrecord.gz", [
                                      helpers.example_bytes(id=[500 + i], tokens=list(range(i + 1)),
                                                            name=[f"n{500 + i}".encode()]) for i in range(5)
                                  ], "GZIP"),
                                  "test": _site(root / "c/test.tfrecord", 600, 1)}},
  ]


def _concat(name: str, **kwargs) -> Setup:
  def setup(root: pathlib.Path) -> Any:
    return _config("concatenated", name, sources=_three_sites(root), **kwargs)
  return setup


def _interleave(name: str, **kwargs) -> Setup:
  return _concat(name, mixing="interleave", seed=3, **kwargs)


def _concat_rules(root: pathlib.Path) -> Any:
  """Split rules, a renamed provenance feature, zlib-compressed tokens."""
  return _config("concatenated", "rules_zlib", sources=_three_sites(root),
                 splits="a:train + b:test -> train; c:train + a:test -> test",
                 provenance_feature="origin", zlib_features=["tokens"])


def _concat_no_provenance(root: pathlib.Path) -> Any:
  return _config("concatenated", "no_provenance", sources=_three_sites(root), per_example_provenance=False,
                 splits={"train": ["a:train", "b:train"], "test": ["c:test"]})


def _prepared(root: pathlib.Path, name: str, features: dict, splits: dict[str, list[dict]]) -> str:
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version="1.0.0", features=tfds.features.FeaturesDict(features),
      split_datasets={split: list(enumerate(rows)) for split, rows in splits.items()},
      data_dir=str(root / "prepared"), disable_shuffling=True,
  )
  # TFDS serializes with protobuf's per-process map order; rewrite the same
  # records with sorted keys (same lengths, so dataset_info.json still holds).
  for shard in pathlib.Path(builder.data_path).glob("*.tfrecord*"):
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(shard))]
    write_records(shard, (record.SerializeToString(deterministic=True) for record in records))
  return str(builder.data_path)


def _concat_promotions(root: pathlib.Path) -> Any:
  """Differing sources: two prepared TFDS datasets and raw records, every promotion."""
  first = _prepared(root, "p1", {"x": tfds.features.Tensor(shape=(3,), dtype=np.int32),
                                 "f": tfds.features.Tensor(shape=(), dtype=np.float32),
                                 "label": tfds.features.ClassLabel(names=["cat", "dog"])},
                    {"train": [{"x": [1, -2, 2**31 - 1], "f": 0.1, "label": 1},
                               {"x": [4, 5, 6], "f": -2.5, "label": 0}]})
  second = _prepared(root, "p2", {"x": tfds.features.Tensor(shape=(2,), dtype=np.int64),
                                  "f": tfds.features.Tensor(shape=(), dtype=np.float64),
                                  "label": tfds.features.ClassLabel(names=["cat", "dog"])},
                     {"train": [{"x": [2**40, 5], "f": 0.25, "label": 1}]})
  del second  # found again by name under data_dir
  return _config("concatenated", "promotions", promotions=["integers", "floats", "shapes"],
                 sources=[{"name": "p1", "dataset_dir": first},
                          {"name": "p2", "dataset": "p2:1.0.0", "data_dir": str(root / "prepared")}])


def _concat_prepared_and_raw(root: pathlib.Path) -> Any:
  raw = write_records(root / "raw.tfrecord", [helpers.example_bytes(v=[1, 2]), helpers.example_bytes(v=[1, 2, 3])])
  typed = _prepared(root, "fixed", {"v": tfds.features.Tensor(shape=(2,), dtype=np.int64)},
                    {"train": [{"v": [7, 8]}, {"v": [9, 10]}]})
  return _config("concatenated", "prepared_and_raw", promotions=["shapes"],
                 sources=[{"name": "typed", "dataset_dir": typed}, {"name": "raw", "tfrecords": raw}])


# ------------------------------------------------------- cross_product --


def _left_rows(count: int) -> list[bytes]:
  return [
      helpers.example_bytes(name=[f"L{i}".encode()], id=[100 + i], vec=[i + 0.5, -i * 0.25],
                            tags=[f"t{k}".encode() for k in range(i % 3 + 1)])
      for i in range(count)
  ]


def _right_rows(count: int) -> list[bytes]:
  return [helpers.example_bytes(name=[f"R{j}".encode()], temp=[20.0 + j], code=[j * 3]) for j in range(count)]


def _cross(name: str, **kwargs) -> Setup:
  def setup(root: pathlib.Path) -> Any:
    left = write_records(root / "left.tfrecord", _left_rows(6))
    right = write_records(root / "right.tfrecord.gz", _right_rows(5), "GZIP")
    return _config("cross_product", name, left=[left], right=[right], **kwargs)
  return setup


def _cross_disjoint(name: str, **kwargs) -> Setup:
  """Sides without shared names, so that `collision_policy: error` builds."""
  def setup(root: pathlib.Path) -> Any:
    left = write_records(root / "left.tfrecord", [helpers.example_bytes(a=[i], b=[float(i)]) for i in range(4)])
    right = write_records(root / "right.tfrecord", [helpers.example_bytes(c=[f"c{j}".encode()]) for j in range(3)])
    return _config("cross_product", name, left=[left], right=[right], **kwargs)
  return setup


def _cross_combinations(root: pathlib.Path) -> Any:
  left = write_records(root / "left.tfrecord", _left_rows(7))
  return _config("cross_product", "combinations_sampled", left=[left], mode="combinations",
                 sample_rate=0.6, sample_seed=9)


# ----------------------------------------------------------- augmented --


def _labels_csv(root: pathlib.Path, ids: Iterable[int]) -> str:
  """`labels.csv` under `root`, by the name relative to it: features.json's descriptions quote it."""
  helpers.write_csv(root / "labels.csv", ["id", "label", "weight", "note"],
                    ([i, i % 3, i / 8, f"row {i}"] for i in ids))
  return "labels.csv"


def _aug_csv(name: str, ids: Iterable[int] = range(100, 112), **kwargs) -> Setup:
  def setup(root: pathlib.Path) -> Any:
    return _config("augmented", name, base_records=raw_base(root / "base"),
                   side_table=_labels_csv(root, ids), join_key="id", data_root=str(root), **kwargs)
  return setup


def _aug_function(name: str, function: str = f"{THIS_MODULE}:score_features", **kwargs) -> Setup:
  def setup(root: pathlib.Path) -> Any:
    return _config("augmented", name, base_records=raw_base(root / "base"), function=function, **kwargs)
  return setup


def _aug_parquet(root: pathlib.Path) -> Any:
  """A typed Parquet side table joined on a string key, declared features."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

  base = {}
  for split, ids in (("train", range(8)), ("test", range(8, 11))):
    base[split] = [write_records(root / f"base-{split}.tfrecord", [
        helpers.example_bytes(key=[f"k{i:03d}".encode()], x=[float(i)]) for i in ids])]
  table = pa.table({
      "code": [f"k{i:03d}" for i in range(0, 11, 1) if i != 4],
      "value64": pa.array([i * 1.25 for i in range(0, 11) if i != 4], pa.float64()),
      "count": pa.array([i * 1000 for i in range(0, 11) if i != 4], pa.int32()),
      "ok": pa.array([i % 2 == 0 for i in range(0, 11) if i != 4], pa.bool_()),
      "text": [f"t{i}" for i in range(0, 11) if i != 4],
  })
  pq.write_table(table, root / "side.parquet")
  return _config("augmented", "parquet_string_key", base_records=base, side_table="side.parquet", data_root=str(root),
                 join_key="key", side_table_key="code", side_table_columns=["value64", "count", "ok", "text"],
                 missing_policy="default",
                 missing_defaults={"value64": -1.0, "count": -1, "ok": False, "text": "none"},
                 features={"count": "int64"})


def _aug_sqlite(name: str, mode: str) -> Setup:
  def setup(root: pathlib.Path) -> Any:
    rows = ",".join(f"({i}, {i % 4}, '{'x' * (i % 3)}', {i / 3})" for i in range(100, 112) if i != 105)
    sqlite_file(root / "labels.db", "CREATE TABLE labels (id INTEGER, label INTEGER, name TEXT, ratio REAL);"
                f"INSERT INTO labels VALUES {rows};")
    return _config("augmented", name, base_records=raw_base(root / "base"), mode=mode,
                   side_table_sql="SELECT id, label, name, ratio FROM labels",
                   side_table_connection={"driver": "sqlite", "sqlite_path": "labels.db"},
                   join_key="id", missing_policy="skip", data_root=str(root))
  return setup


def _aug_overwrite(root: pathlib.Path) -> Any:
  helpers.write_csv(root / "scores.csv", ["id", "score"], ([i, -i / 2] for i in range(100, 112)))
  return _config("augmented", "overwrite_fields", base_records=raw_base(root / "base"), side_table="scores.csv",
                 data_root=str(root),
                 join_key="id", overwrite_fields=["score"], features={"score": "float32"})


def _aug_prepared_base(name: str, mode: str) -> Setup:
  """A prepared TFDS base (a numpy_arrays build) joined by an integer key."""
  def setup(root: pathlib.Path) -> Any:
    (root / "arrays").mkdir(parents=True, exist_ok=True)
    np.save(root / "arrays" / "ids.npy", np.arange(10, dtype=np.int64))
    np.save(root / "arrays" / "vals.npy", np.linspace(0, 1, 20).reshape(10, 2))
    arrays = _module("numpy_arrays").Builder(
        config=_config("numpy_arrays", "base", splits={"train": {"id": [str(root / "arrays/ids.npy")],
                                                                 "vals": [str(root / "arrays/vals.npy")]}}),
        data_dir=str(root / "prepared"))
    arrays.download_and_prepare()
    helpers.write_csv(root / "side.csv", ["id", "label"], ([i, i * i] for i in range(0, 10, 2)))
    return _config("augmented", name, base=str(arrays.data_dir), mode=mode, side_table="side.csv",
                   data_root=str(root),
                   join_key="id", missing_policy="default", missing_defaults={"label": -7})
  return setup


# ------------------------------------------------------------ database --

_DB_SCRIPT = """
CREATE TABLE items (
  id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, name TEXT, kind TEXT, price REAL, amount NUMERIC,
  active BOOLEAN, payload BLOB, doc JSON, day DATE, at TIME, seen TIMESTAMP, score REAL
);
"""


def _db_rows() -> str:
  values = []
  kinds = ("red", "green", "blue", None)
  for i in range(1, 41):
    name = "NULL" if i % 7 == 0 else f"'item {i}'"
    kind = kinds[i % 4]
    kind = "NULL" if kind is None else f"'{kind}'"
    price = "NULL" if i % 5 == 0 else repr(i * 1.1 + 0.123456789012)
    amount = f"'{i}.{i:02d}'"
    active = i % 2
    payload = f"X'{i:02x}ff00'"
    doc = f"'{{\"i\": {i}}}'"
    day = f"'2008-{(i % 12) + 1:02d}-{(i % 27) + 1:02d}'"
    at = f"'{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}'"
    seen = "NULL" if i % 9 == 0 else f"'2009-03-{(i % 28) + 1:02d} 10:{i % 60:02d}:00.{i:06d}'"
    score = "NULL" if i % 6 == 0 else repr(i / 7)
    values.append(f"({i}, {i % 5}, {name}, {kind}, {price}, {amount}, {active}, {payload}, {doc}, "
                  f"{day}, {at}, {seen}, {score})")
  return "INSERT INTO items VALUES " + ",\n".join(values) + ";"


def _db(name: str, **kwargs) -> Setup:
  def setup(root: pathlib.Path) -> Any:
    sqlite_file(root / "items.sqlite", _DB_SCRIPT + _db_rows())
    return _config("database", name, sqlite_path="items.sqlite", data_root=str(root), **kwargs)
  return setup


_DB_MASKED_COLUMNS = {
    "name": {"nulls": "default", "default": "anon"},
    "kind": {"categorical": True, "unknown": "other", "nulls": "mask"},
    "price": {"impute": "median", "normalize": "minmax"},
    "score": {"impute": "mean", "normalize": "standard"},
    "seen": {"nulls": "mask"},
}


# -------------------------------------------------------------- postgres --


def _pg_dsn() -> str:
  return os.environ.get(PG_DSN_ENV, "").strip()


def _pg_setup(root: pathlib.Path) -> Any:
  """A table of typed PostgreSQL columns in a schema of this process; dropped by `pg_cleanup`."""
  del root  # the rows live in the server
  import psycopg2  # pylint: disable=import-outside-toplevel

  connection = psycopg2.connect(_pg_dsn(), connect_timeout=5)
  try:
    with connection, connection.cursor() as cursor:
      cursor.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
      cursor.execute(f"CREATE SCHEMA {PG_SCHEMA}")
      cursor.execute(
          f"CREATE TABLE {PG_SCHEMA}.items (id int8 PRIMARY KEY, small int2, f4 float4, f8 float8, "
          "amount numeric(12, 4), flag bool, name text, blob bytea, doc jsonb, day date, "
          "moment timestamptz, tags text[], nums int4[])"
      )
      cursor.execute(
          f"INSERT INTO {PG_SCHEMA}.items SELECT g, (g % 300)::int2, g / 3.0, g / 7.0, "
          "(g * 1.2345)::numeric(12, 4), g % 2 = 0, CASE WHEN g % 6 = 0 THEN NULL ELSE 'name ' || g END, "
          "decode(lpad(to_hex(g), 4, '0'), 'hex'), jsonb_build_object('g', g), "
          "DATE '2020-01-01' + g, TIMESTAMPTZ '2021-06-01 00:00:00+00' + g * INTERVAL '90 minutes', "
          "ARRAY['t' || (g % 3), 'u'], ARRAY[g, g * 2, g * 3] "
          "FROM generate_series(1, 60) AS g"
      )
  finally:
    connection.close()
  return _config(
      "database", "postgres", dsn_env=PG_DSN_ENV,
      query=f"SELECT * FROM {PG_SCHEMA}.items",
      split_percent={"train": 70, "test": 30}, split_key="id", order_by="id",
      nulls="mask", temporal="epoch",
      columns={"small": {"categorical": True, "nulls": "error"}, "amount": {"numeric": "string"},
               "f8": {"normalize": "standard"}, "name": {"nulls": "default", "default": ""}},
  )


def pg_cleanup() -> None:
  """Drops the schema `_pg_setup` made, if the server is there."""
  import psycopg2  # pylint: disable=import-outside-toplevel

  connection = psycopg2.connect(_pg_dsn(), connect_timeout=5)
  try:
    with connection, connection.cursor() as cursor:
      cursor.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
  finally:
    connection.close()


# ---------------------------------------------------------------- cases --

CASES: list[Case] = [
    # Every bundled config.
    Case("numpy_arrays", "demo", "demo"),
    Case("numpy_arrays", "variable_shapes", "variable_shapes"),
    Case("concatenated", "demo", "demo"),
    Case("concatenated", "interleaved", "interleaved"),
    Case("cross_product", "product", "product"),
    Case("cross_product", "combinations", "combinations"),
    Case("augmented", "demo", "demo"),
    Case("augmented", "demo_overlay", "demo_overlay"),
    Case("augmented", "demo_function", "demo_function"),
    Case("database", "demo", "demo"),
    Case("database", "split_queries", "split_queries"),
    # numpy_arrays.
    Case("numpy_arrays", "rows-dtypes", _np_rows_dtypes),
    Case("numpy_arrays", "npz-split-fractions", _np_npz_fractions),
    Case("numpy_arrays", "npz-members-examples", _np_npz_examples),
    Case("numpy_arrays", "files-layout-data-root", _np_files_layout),
    Case("numpy_arrays", "shuffle", _np_shuffled),
    Case("numpy_arrays", "num-shards-3", _np_rows_dtypes, num_shards=3),
    Case("numpy_arrays", "beam-direct", _np_rows_dtypes, beam=True),
    Case("numpy_arrays", "array-record", _np_npz_fractions, file_format="array_record"),
    # concatenated.
    Case("concatenated", "interleave-turns", _interleave("turns")),
    Case("concatenated", "interleave-first-exhausted",
         _interleave("first", weights={"a": 1.0, "b": 2.0, "c": 0.5})),
    Case("concatenated", "interleave-all-exhausted",
         _interleave("all", weights={"a": 3.0, "b": 1.0, "c": 1.0}, stopping_strategy="all_exhausted")),
    Case("concatenated", "interleave-without-replacement",
         _interleave("norepl", weights={"a": 1.0, "b": 1.0, "c": 4.0},
                     stopping_strategy="all_exhausted_without_replacement")),
    Case("concatenated", "split-rules-zlib", _concat_rules),
    Case("concatenated", "no-provenance", _concat_no_provenance),
    Case("concatenated", "promotions-prepared", _concat_promotions),
    Case("concatenated", "prepared-and-raw", _concat_prepared_and_raw),
    Case("concatenated", "shuffle", _interleave("shuffled", shuffle=True)),
    Case("concatenated", "num-shards-4", _concat("sharded"), num_shards=4),
    Case("concatenated", "array-record", _concat_rules, file_format="array_record"),
    Case("concatenated", "parquet", _concat_no_provenance, file_format="parquet"),
    # cross_product.
    Case("cross_product", "product-prefix", _cross("prefix")),
    Case("cross_product", "left-wins", _cross("left_wins", collision_policy="left_wins")),
    Case("cross_product", "right-wins", _cross("right_wins", collision_policy="right_wins")),
    Case("cross_product", "collision-error-disjoint", _cross_disjoint("error", collision_policy="error")),
    Case("cross_product", "sampled-spill-partitions",
         _cross("sampled", sample_rate=0.5, sample_seed=4, memory_budget_bytes=64, left_rows_per_partition=2)),
    Case("cross_product", "declared-schema",
         _cross_disjoint("schema", left_schema={"a": "int64_list[1]", "b": "float_list[1]"},
                         right_schema={"c": "bytes_list[*]"})),
    Case("cross_product", "combinations-sampled", _cross_combinations),
    Case("cross_product", "num-shards-3", _cross("sharded"), num_shards=3),
    # augmented.
    Case("augmented", "csv-materialize-error", _aug_csv("csv_error")),
    Case("augmented", "csv-materialize-skip", _aug_csv("csv_skip", ids=range(100, 112, 2), missing_policy="skip")),
    Case("augmented", "csv-materialize-default",
         _aug_csv("csv_default", ids=range(100, 112, 3), missing_policy="default",
                  missing_defaults={"label": -1, "weight": 0.0, "note": ""})),
    Case("augmented", "csv-overlay-skip",
         _aug_csv("overlay_skip", ids=range(101, 112, 2), mode="overlay", missing_policy="skip")),
    Case("augmented", "csv-overlay-default-columns",
         _aug_csv("overlay_default", ids=range(100, 110), mode="overlay", missing_policy="default",
                  side_table_columns=["weight"], missing_defaults={"weight": -1.0})),
    Case("augmented", "csv-overlay-verify-base",
         _aug_csv("overlay_verify", mode="overlay", verify_base=True, features={"label": "int32"})),
    Case("augmented", "function-materialize", _aug_function("function")),
    Case("augmented", "function-overlay", _aug_function("function_overlay", mode="overlay")),
    Case("augmented", "function-two-workers",
         _aug_function("workers", num_workers=2,
                       function="tfds_builders.augmented.example_functions:text_statistics")),
    Case("augmented", "function-declared",
         _aug_function("function_declared", features={"score32": "float32", "words": "string[None]"})),
    Case("augmented", "parquet-string-key-default", _aug_parquet),
    Case("augmented", "sqlite-sql-materialize-skip", _aug_sqlite("sql_materialize", "materialize")),
    Case("augmented", "sqlite-sql-overlay-skip", _aug_sqlite("sql_overlay", "overlay")),
    Case("augmented", "overwrite-fields", _aug_overwrite),
    Case("augmented", "prepared-base-materialize", _aug_prepared_base("prepared", "materialize")),
    Case("augmented", "prepared-base-overlay", _aug_prepared_base("prepared_overlay", "overlay")),
    Case("augmented", "shuffle", _aug_csv("shuffled", shuffle=True)),
    Case("augmented", "num-shards-3", _aug_csv("sharded"), num_shards=3),
    # database (SQLite).
    Case("database", "custom-split-percent",
         _db("percent", query="SELECT * FROM items", split_percent={"train": 60, "validation": 15, "test": 25},
             split_key="id", split_seed=3, order_by=["id"], nulls="mask")),
    Case("database", "hashed-text-key-partitions",
         _db("partitions", query="SELECT id, grp, name, price, active FROM items WHERE name IS NOT NULL",
             split_percent={"train": 50, "test": 50}, split_key="name", order_by=["id"],
             partition_key="id", num_partitions=3, nulls="skip_row")),
    Case("database", "split-queries-named-params",
         _db("split_queries", split_queries={"train": "SELECT id, grp, kind, score FROM items WHERE grp < :cut",
                                             "test": "SELECT id, grp, kind, score FROM items WHERE grp >= :cut"},
             params={"cut": 3}, order_by=["id"], nulls="mask",
             columns={"kind": {"categorical": True, "default": "red"}, "score": {"impute": "max"}})),
    Case("database", "positional-params-two-order-columns",
         _db("positional", query="SELECT id, grp, price, day, at, seen FROM items WHERE id > ? ORDER BY id",
             params=[4], order_by=["grp", "id"], nulls="mask", temporal="iso")),
    Case("database", "masks-impute-normalize",
         _db("masks", query="SELECT id, name, kind, price, score, seen FROM items",
             order_by=["id"], columns=_DB_MASKED_COLUMNS)),
    Case("database", "epoch-numeric-string",
         _db("epoch", query="SELECT id, amount, day, at, seen, payload, doc FROM items",
             order_by=["id"], temporal="epoch", numeric="string", nulls="mask")),
    Case("database", "vocabulary-overrides",
         _db("vocabulary", query="SELECT id, kind, grp, price, amount, active FROM items",
             order_by=["id"], nulls="mask",
             columns={"kind": {"vocabulary": ["blue", "red"], "unknown": "other"},
                      "grp": {"categorical": True}, "price": {"normalize": "standard", "apply": False},
                      "amount": {"type": "float32"}})),
    Case("database", "skip-row", _db("skip_row", query="SELECT id, name, price FROM items", order_by=["id"],
                                    nulls="skip_row")),
    Case("database", "shuffle", _db("shuffled", query="SELECT id, grp, amount FROM items", nulls="mask",
                                    split_percent={"train": 80, "test": 20}, split_key="id", shuffle=True)),
    Case("database", "num-shards-3", _db("sharded", query="SELECT id, name, score FROM items",
                                        order_by=["id"], nulls="mask"), num_shards=3),
    Case("database", "parquet", _db("parquet", query="SELECT id, grp, kind, price, day FROM items",
                                    order_by=["id"], nulls="mask"), file_format="parquet"),
    # database (PostgreSQL).
    Case("database", "postgres", _pg_setup, postgres=True),
]
