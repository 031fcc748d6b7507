"""The numpy_arrays seed (/work/shared/seeds/002_*.txt): its example 3, verbatim but for the TensorFlow import."""

from __future__ import annotations

import pathlib

import numpy as np


# The seed has the TensorFlow import at module level; here it is per call.
def serialize_batch_numpy_array(arrays):
  """Serializes a batch of NumPy arrays into a list of tf.train.Example."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  serialized_examples = []
  for array in arrays:
    array_shape = array.shape
    array_bytes = array.tobytes()
    feature = {
        'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=array_shape)),
        'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[array_bytes])),
    }
    example_proto = tf.train.Example(features=tf.train.Features(feature=feature))
    serialized_examples.append(example_proto.SerializeToString())
  return serialized_examples


def write_batch_numpy_to_tfrecord(numpy_arrays, filename):
  """Writes a batch of NumPy arrays to a TFRecord file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  serialized_arrays = serialize_batch_numpy_array(numpy_arrays)
  with tf.io.TFRecordWriter(filename) as writer:
    for serialized_array in serialized_arrays:
      writer.write(serialized_array)


def seed_write(npy_path: pathlib.Path, out_path: pathlib.Path) -> None:
  """The seed peer: load the array into memory, then the seed's example 3."""
  write_batch_numpy_to_tfrecord(np.load(npy_path), str(out_path))
