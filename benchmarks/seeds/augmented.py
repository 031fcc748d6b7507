"""The augmented seed (/work/shared/seeds/003_*.txt): its example 1, verbatim but for `example_pb2`."""

from __future__ import annotations


# `example_pb2` is the write-up's stand-in for the Example proto: tf.train here.
def append_field(tfrecord_path_in, tfrecord_path_out):
  """Appends a bytes `label` computed from each example's image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(tfrecord_path_out) as writer:
    for raw_record in tf.data.TFRecordDataset(tfrecord_path_in):
      example = tf.train.Example()
      example.ParseFromString(raw_record.numpy())

      # Add the new field; replace with your actual logic
      new_label = calculate_label(example.features.feature['image'].bytes_list.value[0])  # example logic
      example.features.feature['label'].bytes_list.value.append(new_label.encode())

      writer.write(example.SerializeToString())


def calculate_label(image_bytes):
  """The seed's placeholder label."""
  del image_bytes
  return "somelabel"
