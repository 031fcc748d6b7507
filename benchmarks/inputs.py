"""Shared input generation: the files every case measures on, written before any timer starts."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from benchmarks import harness


def write_rows_npy(
    path: pathlib.Path, size: int, example_shape: tuple[int, ...], dtype: np.dtype
) -> int:
  """Writes a random `(N, *example_shape)` `.npy` of at most `size` data bytes.

  Returns:
    N, the number of rows (examples) written.
  """
  row_bytes = dtype.itemsize * int(np.prod(example_shape))
  rows = max(1, size // row_bytes)
  rng = np.random.default_rng(0)
  header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
            "shape": (rows, *example_shape)}
  chunk_rows = max(1, 64 * harness.MB // row_bytes)
  with open(path, "wb") as file:
    np.lib.format.write_array_header_1_0(file, header)
    for start in range(0, rows, chunk_rows):
      count = min(chunk_rows, rows - start)
      file.write(_random_values(rng, dtype, count * row_bytes // dtype.itemsize).tobytes())
  os.sync()  # flush the writes now, not during a timed phase
  return rows


def _random_values(rng: np.random.Generator, dtype: np.dtype, count: int) -> np.ndarray:
  """Normal floats for float32/float64, random bytes viewed as `dtype` otherwise."""
  if dtype in (np.float32, np.float64):
    return rng.standard_normal(count, dtype=dtype)
  return rng.integers(0, 256, size=count * dtype.itemsize, dtype=np.uint8).view(dtype)


def write_cross_product_side(path: pathlib.Path, count: int, name_bytes: int, embedding_size: int) -> None:
  """`count` Examples: `id` int64, `name` bytes (on both sides), `score` float;
  with `embedding_size`, also `embedding` floats and two `tags`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(count)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for index in range(count):
      feature = {
          "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
          "name": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[f"{path.stem}-{index}".encode().ljust(name_bytes, b".")])),
          "score": tf.train.Feature(float_list=tf.train.FloatList(value=[index / 7])),
      }
      if embedding_size:
        feature["embedding"] = tf.train.Feature(float_list=tf.train.FloatList(
            value=rng.standard_normal(embedding_size, dtype=np.float32)))
        feature["tags"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"tag-a", b"tag-b"]))
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  os.sync()


def prefixed_records(path: pathlib.Path, prefix: str) -> list[bytes]:
  """Every record of a file with `prefix` before each feature name, via protobuf."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.util import deprecation  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import

  renamed = []
  with deprecation.silence():  # deprecated for eager use, yet the fastest reader
    records = tf.compat.v1.io.tf_record_iterator(str(path))
  for record in records:
    features = tf.train.Example.FromString(record).features.feature
    renamed.append(tf.train.Example(features=tf.train.Features(
        feature={prefix + name: value for name, value in features.items()}
    )).SerializeToString())
  return renamed


def _register_prepared(raw_path: pathlib.Path, prepared_dir: pathlib.Path, features, count: int) -> None:
  """Registers a raw TFRecord file as a prepared TFDS dataset, hard-linked, without a rewrite."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  prepared_dir.mkdir(parents=True)
  os.link(raw_path, prepared_dir / f"{prepared_dir.parent.name}-train.tfrecord-00000-of-00001")
  with harness.quiet_stdout():
    tfds.folder_dataset.write_metadata(
        data_dir=prepared_dir,
        features=features,
        split_infos=[tfds.core.SplitInfo(name="train", shard_lengths=[count], num_bytes=raw_path.stat().st_size)],
        filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        check_data=False,
    )


def write_augmented_base(
    work_dir: pathlib.Path, size: int, record_bytes: int
) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path, int]:
  """A raw TFRecord base (`id`, `image`), the same file as a prepared TFDS dataset, and labels.csv.

  Returns:
    The raw file, the prepared dataset's version directory, the side table,
    and the number of records.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  count = max(1, size // record_bytes)
  raw_path = work_dir / "base.tfrecord"
  rng = np.random.default_rng(0)
  with tf.io.TFRecordWriter(str(raw_path)) as writer:
    for index in range(count):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
          "image": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[rng.integers(0, 256, record_bytes, dtype=np.uint8).tobytes()])),
      })).SerializeToString())
  table_path = work_dir / "labels.csv"
  with open(table_path, "w") as table:
    table.write("id,label,weight\n")
    table.writelines(f"{index},{index % 10},{index / 7}\n" for index in range(count))
  # The same records as a prepared dataset, registered without a rewrite: the
  # way to give TFDS (and the builder) existing TFRecords with known features.
  prepared_dir = work_dir / "prepared" / "bench_base" / "1.0.0"
  _register_prepared(raw_path, prepared_dir, tfds.features.FeaturesDict({
      "id": tfds.features.Scalar(np.int64),
      "image": tfds.features.Tensor(shape=(), dtype=np.str_),
  }), count)
  os.sync()
  return raw_path, prepared_dir, table_path, count


def write_concatenated_sources(
    work_dir: pathlib.Path, size: int, count: int
) -> tuple[list[pathlib.Path], list[pathlib.Path], int]:
  """Raw TFRecord sources of about `size` bytes in all, and the same files as prepared datasets.

  Each example: `image` (3072 bytes of low-entropy pixels, so compression has
  something to gain), `label` (int64) and `tokens` (0-63 int64 values).

  Returns:
    The raw files, the prepared datasets' version directories, the example count.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  total = max(count, size // 3300)
  raw_paths, prepared_dirs = [], []
  for number in range(count):
    raw_path = work_dir / f"site_{number}.tfrecord"
    examples = total // count
    with tf.io.TFRecordWriter(str(raw_path)) as writer:
      for index in range(examples):
        tokens = rng.integers(0, 1000, index % 64).tolist()
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[rng.integers(0, 16, 3072, dtype=np.uint8).tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 10])),
            "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=tokens)),
        })).SerializeToString())
    prepared_dir = work_dir / "prepared" / f"site_{number}" / "1.0.0"
    _register_prepared(raw_path, prepared_dir, tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(), dtype=np.str_),
        "label": tfds.features.ClassLabel(num_classes=10),
        "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int64),
    }), examples)
    raw_paths.append(raw_path)
    prepared_dirs.append(prepared_dir)
  os.sync()
  return raw_paths, prepared_dirs, (total // count) * count


def dir_bytes(path: pathlib.Path) -> int:
  """Bytes of every file under `path`."""
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def warm(paths: Sequence[pathlib.Path]) -> None:
  """Warms the page cache for every input file."""
  for path in paths:
    harness.warm_page_cache(path)
