"""Inputs and user functions shared by the augmented tests."""

from __future__ import annotations

import pathlib
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import helpers
from tfds_builders.core import provenance

REPO = pathlib.Path(__file__).resolve().parents[2]
DUMMY_DATA = REPO / "dummy_data" / "augmented"
BUILDER_DIR = REPO / "tfds_builders" / "augmented"
FUNCTIONS = __name__  # the user functions below, referenced as f"{FUNCTIONS}:name"


# ------------------------------------------------------- user functions --


def score_and_words(example: dict[str, Any]) -> dict[str, Any]:
  return {"double_score": float(example["score"]) * 2, "words": example["text"].split()}


def type_changes_at_five(example: dict[str, Any]) -> dict[str, Any]:
  return {"flag": "five" if example["id"] == 105 else int(example["id"])}


def type_changes_at_ten(example: dict[str, Any]) -> dict[str, Any]:
  return {"flag": "ten" if example["id"] == 110 else int(example["id"])}


def raises_at_nine(example: dict[str, Any]) -> dict[str, Any]:
  if example["id"] == 109:
    raise ZeroDivisionError("no score for 109")
  return {"flag": 1}


def drops_a_field_at_nine(example: dict[str, Any]) -> dict[str, Any]:
  return {"flag": 1} if example["id"] == 109 else {"flag": 1, "other": 2}


def returns_a_list(example: dict[str, Any]) -> list[int]:
  return [int(example["id"])]


def new_score(example: dict[str, Any]) -> dict[str, Any]:
  return {"score": np.float32(-example["score"])}


def caption_length(example: dict[str, Any]) -> dict[str, Any]:
  return {"caption_length": len(example["caption"]), "mean_pixel": float(np.mean(example["image"]))}


def label_from_function(example: dict[str, Any]) -> dict[str, Any]:
  return {"label": 1}


# -------------------------------------------------------------- helpers --


def read_records(paths: Iterable[Any]) -> list[bytes]:
  return [record.numpy() for record in tf.data.TFRecordDataset([str(p) for p in paths])]


def frames_of(paths: Iterable[Any]) -> list[tuple[int, int]]:
  """(length, stored masked CRC) of every record, parsed here with struct: the overlay's fingerprint oracle."""
  frames = []
  for path in paths:
    data = pathlib.Path(path).read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack_from("<Q", data, offset)
      (crc,) = struct.unpack_from("<I", data, offset + 12 + length)
      frames.append((length, crc))
      offset += 16 + length
  return frames


def raw_base(root: pathlib.Path, counts: Mapping[str, list[int]] | None = None) -> dict[str, list[str]]:
  """A raw base: per split, files of records with id, text, score, tokens."""
  return helpers.write_split_files(root, counts or {"train": [4, 3], "test": [3]}, lambda n: helpers.example_bytes(
      id=[n], text=[f"word{n} more".encode()], score=[n / 4], tokens=list(range(n % 3 + 1))))


def labels_csv(path: pathlib.Path, ids: Iterable[int]) -> pathlib.Path:
  return helpers.write_csv(path, ["id", "label", "weight"], ([i, i % 3, i / 8] for i in ids))


def weights_csv(path: pathlib.Path, ids: Iterable[int]) -> pathlib.Path:
  return helpers.write_csv(path, ["id", "weight"], ([i, i / 8] for i in ids))






def stored(builder: tfds.core.DatasetBuilder, split: str = "train") -> list[bytes]:
  """The stored records of a split, in order."""
  return read_records(builder.info.splits[split].filepaths)


def examples(dataset: tf.data.Dataset) -> list[dict[str, Any]]:
  return list(tfds.as_numpy(dataset))


def assert_examples_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
  assert len(got) == len(want)
  for left, right in zip(got, want):
    assert left.keys() == right.keys()
    for name in left:
      np.testing.assert_array_equal(left[name], right[name], err_msg=name)
      assert np.asarray(left[name]).dtype == np.asarray(right[name]).dtype, name




def features_of(record: bytes) -> dict[str, tf.train.Feature]:
  return dict(tf.train.Example.FromString(record).features.feature)


def values_of(feature: tf.train.Feature) -> list[Any]:
  kind = feature.WhichOneof("kind")
  return list(getattr(feature, kind).value) if kind else []


def assert_nothing_loadable(data_dir: pathlib.Path) -> None:
  assert not list(data_dir.rglob("dataset_info.json")), list(data_dir.rglob("dataset_info.json"))
  assert not list(data_dir.rglob("*.tfrecord*"))

def prepared_dir(data_dir: pathlib.Path, version: str = "1.2.0") -> pathlib.Path:
  return data_dir / "augmented_test_base" / version

def provenance_of(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  return builder.info.metadata[provenance.PROVENANCE_KEY]


