"""augmented joins on an integer key that the base stores as raw bytes (numpy_arrays' `label`)."""

from __future__ import annotations

import csv
import pathlib
import re
import sqlite3
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

import tfds_builders  # pylint: disable=unused-import  # registers the builders
from tfds_builders.augmented import Builder as AugmentedBuilder
from tfds_builders.augmented import BuilderConfig as AugmentedConfig
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tfds_builders.numpy_arrays import Builder as ArraysBuilder
from tfds_builders.numpy_arrays import BuilderConfig as ArraysConfig

from tests import faults

tfds.disable_progress_bar()

REPO = pathlib.Path(__file__).resolve().parents[2]
CLASS_WEIGHTS = REPO / "dummy_data" / "augmented" / "class_weights.csv"
# The bundled numpy_arrays demo's labels, in stored order (9 has no row in class_weights.csv).
DEMO_LABELS = {"train": [2, 4, 3, 2, 9, 3, 6, 5], "test": [5, 4]}
UINT8_LABELS = [0, 7, 200, 255, 7]
INT32_LABELS = [-5, 70000, 3, -2**31, 2**31 - 1]


def _weights() -> dict[int, float]:
  with CLASS_WEIGHTS.open() as file:
    return {int(row["label"]): float(row["class_weight"]) for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """A data_dir with numpy_arrays/demo and one-split bases whose `label` is uint8, int32 and float32."""
  root = tmp_path_factory.mktemp("join_keys")
  data_dir = root / "tfds"
  tfds.builder("numpy_arrays/demo", data_dir=str(data_dir)).download_and_prepare()
  for name, labels in (("uint8", np.array(UINT8_LABELS, np.uint8)), ("int32", np.array(INT32_LABELS, np.int32)),
                       ("float32", np.array([0.5, 1.5], np.float32))):
    path = root / f"{name}.npz"
    np.savez(path, label=labels, x=np.arange(len(labels), dtype=np.int16))
    config = ArraysConfig(name=name, splits={"train": [str(path)]})
    ArraysBuilder(config=config, data_dir=str(data_dir)).download_and_prepare()
  return data_dir


def _augment(
    bases: pathlib.Path, out: pathlib.Path, base: str, join_key: str = "label", **config: Any
) -> AugmentedBuilder:
  builder = AugmentedBuilder(
      config=AugmentedConfig(name="joined", base=base, base_data_dir=str(bases), join_key=join_key, **config),
      data_dir=str(out),
  )
  builder.download_and_prepare()
  return builder


def _rows(dataset: Any) -> list[tuple[int, Any]]:
  return [(int(example["label"]), example["class_weight"].item()) for example in tfds.as_numpy(dataset)]


@pytest.mark.slow
def test_tfds_build_skip_joins_the_label_and_names_a_mismatch(bases: pathlib.Path, tmp_path: pathlib.Path):
  weights = _weights()
  config = {"name": "w", "base": "numpy_arrays/demo:1.0.0", "base_data_dir": str(bases),
            "side_table": str(CLASS_WEIGHTS), "join_key": "label", "missing_policy": "skip"}
  faults.tfds_build("augmented", config, tmp_path / "out")
  builder = tfds.builder("augmented/w", data_dir=str(tmp_path / "out"))
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {"train": 7, "test": 2}
  assert builder.info.features["label"].np_dtype == np.int64
  for split, labels in DEMO_LABELS.items():
    got = _rows(builder.as_dataset(split=split))
    assert got == [(label, pytest.approx(weights[label])) for label in labels if label in weights]

  # Keys that exist nowhere in the base: the build names both sides instead of "Split has no examples".
  far_keys = tmp_path / "far.csv"
  far_keys.write_text("label,class_weight\n100,1.0\n101,2.0\n")
  with pytest.raises(faults.CommandFailed) as failure:
    faults.tfds_build("augmented", {**config, "name": "far", "side_table": str(far_keys)}, tmp_path / "far")
  faults.assert_message(failure.value.stderr, [re.escape(fragment) for fragment in (
      "SourceError: join_key 'label' matched none of the 8 base examples of split 'train'",
      f"in side table {far_keys} (2 rows, key column 'label')",
      r"the first base example has label=2 (compared as b'\x02\x00\x00\x00\x00\x00\x00\x00')",
      r"the table's first key is 100 (compared as b'd\x00\x00\x00\x00\x00\x00\x00')",
      "Check that join_key and the key column hold the same values",
  )])
  assert "has no examples" not in failure.value.stderr


def test_default_policy_and_overlay(bases: pathlib.Path, tmp_path: pathlib.Path):
  weights = _weights()
  builder = _augment(bases, tmp_path / "default", "numpy_arrays/demo", side_table=str(CLASS_WEIGHTS),
                     missing_policy="default", missing_defaults={"class_weight": -1.0})
  assert _rows(builder.as_dataset(split="train")) == [
      (label, pytest.approx(weights.get(label, -1.0))) for label in DEMO_LABELS["train"]]
  assert builder.info.metadata["augmented"]["missing"] == {"train": 0, "test": 0}

  # An overlay reads only the join keys, through the compiled frame walk: the same raw bytes must match.
  overlay = _augment(bases, tmp_path / "overlay", "numpy_arrays/demo", side_table=str(CLASS_WEIGHTS),
                     missing_policy="skip", mode="overlay")
  assert overlay.info.metadata["augmented"]["missing"] == {"train": 1, "test": 0}
  got = _rows(load_augmented(overlay.data_dir, split="train", base_data_dir=str(bases)))
  assert got == [(label, pytest.approx(weights[label])) for label in DEMO_LABELS["train"] if label != 9]


def test_uint8_and_int32_keys_from_parquet_csv_and_sql(bases: pathlib.Path, tmp_path: pathlib.Path):
  # uint8 from Parquet (typed int64 keys): 255 is one byte 0xff in the base, not the text "255".
  parquet = tmp_path / "uint8.parquet"
  pq.write_table(pa.table({"label": pa.array([255, 0, 7], pa.int64()), "class_weight": [2.5, 0.5, 7.5]}), parquet)
  builder = _augment(bases, tmp_path / "u8", "numpy_arrays/uint8", side_table=str(parquet), missing_policy="skip")
  assert _rows(builder.as_dataset(split="train")) == [(0, 0.5), (7, 7.5), (255, 2.5), (7, 7.5)]

  # int32 from CSV, negative and extreme keys included; 3 has no row.
  table = tmp_path / "int32.csv"
  table.write_text("label,class_weight\n-5,1.0\n70000,2.0\n-2147483648,3.0\n2147483647,4.0\n")
  builder = _augment(bases, tmp_path / "i32", "numpy_arrays/int32", side_table=str(table), missing_policy="skip")
  assert _rows(builder.as_dataset(split="train")) == [(-5, 1.0), (70000, 2.0), (-2**31, 3.0), (2**31 - 1, 4.0)]

  # The same int32 join from a SQL query (SQLite).
  database = tmp_path / "weights.db"
  with sqlite3.connect(database) as connection:
    connection.execute("CREATE TABLE w (label INTEGER, class_weight REAL)")
    connection.executemany("INSERT INTO w VALUES (?, ?)", [(70000, 9.0), (3, 8.0)])
  builder = _augment(bases, tmp_path / "sql", "numpy_arrays/int32", side_table_sql="SELECT label, class_weight FROM w",
                     side_table_connection={"driver": "sqlite", "sqlite_path": str(database)}, missing_policy="skip")
  assert _rows(builder.as_dataset(split="train")) == [(70000, 9.0), (3, 8.0)]


def test_keys_that_cannot_match_are_refused(bases: pathlib.Path, tmp_path: pathlib.Path):
  with pytest.raises(errors.ConfigError) as float_key:
    _augment(bases, tmp_path / "f", "numpy_arrays/float32", side_table=str(CLASS_WEIGHTS))
  faults.assert_message(float_key.value, [re.escape(fragment) for fragment in (
      "join_key 'label' is a Tensor of dtype float32, shape (), encoding 'bytes'",
      "Join on a scalar integer or string feature")])

  with pytest.raises(errors.ConfigError) as array_key:
    _augment(bases, tmp_path / "img", "numpy_arrays/demo", side_table=str(CLASS_WEIGHTS), join_key="image")
  faults.assert_message(
      array_key.value, [re.escape("join_key 'image' is a Tensor of dtype uint8, shape (4, 4, 3), encoding 'bytes'")])

  # 256 does not fit the base's uint8 label: refused naming the row (CSV line, Parquet row).
  too_big = tmp_path / "too_big.csv"
  too_big.write_text("label,class_weight\n0,1.0\n7,2.0\n256,3.0\n")
  with pytest.raises(errors.SchemaError) as csv_range:
    _augment(bases, tmp_path / "r1", "numpy_arrays/uint8", side_table=str(too_big))
  faults.assert_message(csv_range.value, [re.escape(fragment) for fragment in (
      f"Side table {too_big}: line 4: join key 256 in column 'label'",
      "outside [0, 255], the range of the base's uint8 join key", "Fix or drop the row")])
  negative = tmp_path / "negative.parquet"
  pq.write_table(pa.table({"label": pa.array([1, -1], pa.int64()), "class_weight": [1.0, 2.0]}), negative)
  with pytest.raises(errors.SchemaError) as parquet_range:
    _augment(bases, tmp_path / "r2", "numpy_arrays/uint8", side_table=str(negative))
  faults.assert_message(
      parquet_range.value, [re.escape("row 1: join key -1 in column 'label'"), re.escape("outside [0, 255]")])
