"""The cross_product seed (/work/shared/seeds/001_*.txt): its example 2, verbatim."""

from __future__ import annotations


def combine_tfrecords_with_overlap_handling(file1_path, file2_path, output_path, prefix1="file1_", prefix2="file2_"):
  """Combines TFRecords, handling overlapping feature names by prefixing them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(output_path) as writer:
    for example1 in tf.compat.v1.python_io.tf_record_iterator(file1_path):
      for example2 in tf.compat.v1.python_io.tf_record_iterator(file2_path):
        example1_proto = tf.train.Example.FromString(example1)
        example2_proto = tf.train.Example.FromString(example2)
        combined_features = {}
        for key, value in example1_proto.features.feature.items():
          combined_features[prefix1 + key] = value
        for key, value in example2_proto.features.feature.items():
          combined_features[prefix2 + key] = value

        combined_example = tf.train.Example(features=tf.train.Features(feature=combined_features))
        writer.write(combined_example.SerializeToString())
