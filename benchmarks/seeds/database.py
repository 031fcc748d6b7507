"""The database seed (/work/shared/seeds/004_*.txt): pandas read_sql -> tf.data from_tensor_slices -> TFRecord."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


def row_example(id_, label, score, ratio, name, flag) -> bytes:
  """One row as a tf.train.Example via protobuf, as hand-written code does it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  feature = tf.train.Feature
  return tf.train.Example(features=tf.train.Features(feature={
      "id": feature(int64_list=tf.train.Int64List(value=[id_])),
      "label": feature(int64_list=tf.train.Int64List(value=[label])),
      "score": feature(float_list=tf.train.FloatList(value=[score])),
      "ratio": feature(float_list=tf.train.FloatList(value=[ratio])),
      "name": feature(bytes_list=tf.train.BytesList(value=[name])),
      "flag": feature(int64_list=tf.train.Int64List(value=[flag])),
  })).SerializeToString()


def read_sql_to_tfrecord(
    connect: Callable[[], AbstractContextManager[Any]], query: str, out_path: pathlib.Path,
    batch_size: int | None = None,
) -> None:
  """The seed's path: pandas read_sql -> tf.data from_tensor_slices -> Examples -> TFRecord.

  With `batch_size`, the dataset is iterated in batches and rows are taken
  from the batch arrays: the same path, tuned (per-element tf.data iteration
  costs more than the rest).
  """
  import warnings  # pylint: disable=g-import-not-at-top

  import pandas as pd  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with connect() as connection, warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pandas prefers SQLAlchemy connectables
    frame = pd.read_sql(query, connection)
  dataset = tf.data.Dataset.from_tensor_slices(dict(frame))
  with tf.io.TFRecordWriter(str(out_path)) as writer:
    if not batch_size:
      for row in dataset.as_numpy_iterator():
        writer.write(row_example(
            int(row["id"]), int(row["label"]), float(row["score"]), float(row["ratio"]),
            row["name"], int(row["flag"])))
      return
    for batch in dataset.batch(batch_size).as_numpy_iterator():
      for id_, label, score, ratio, name, flag in zip(
          batch["id"].tolist(), batch["label"].tolist(), batch["score"].tolist(),
          batch["ratio"].tolist(), batch["name"].tolist(), batch["flag"].tolist()):
        writer.write(row_example(id_, label, score, ratio, name, int(flag)))
