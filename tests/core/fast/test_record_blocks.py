"""core.fast.record_blocks: column encoders and TFRecord framing, checked against protobuf, struct and TF's own writer."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tensorflow as tf

from tfds_builders.core import serialization
from tfds_builders.core.fast import record_blocks

KEY = serialization.FeatureKey("label")
INT64_EDGES = [0, 1, 127, 128, 16383, 16384, 2**21, 2**35, 2**63 - 1, -1, -128, -(2**63)]


def parsed(entries: list[bytes]) -> list[tf.train.Feature]:
  return [tf.train.Example.FromString(serialization.example_from_entries([entry])).features.feature["label"]
          for entry in entries]


def test_int64_entries_equal_protobuf_and_the_scalar_encoder() -> None:
  values = np.array(INT64_EDGES + np.random.default_rng(0).integers(-2**62, 2**62, 500).tolist(), np.int64)
  entries = record_blocks.int64_entries(KEY, values).items()
  assert [list(feature.int64_list.value) for feature in parsed(entries)] == [[int(v)] for v in values]
  encode = serialization.int64_scalar_encoder(KEY)
  assert entries == [encode(int(v)) for v in values]


@pytest.mark.parametrize("sizes", [[0, 1, 127, 128, 16383, 16384, 200_000], []])
def test_bytes_entries_equal_protobuf(sizes: list[int]) -> None:
  values = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
  entries = record_blocks.bytes_entries(KEY, record_blocks.ByteColumn.from_items(values)).items()
  assert [list(feature.bytes_list.value) for feature in parsed(entries)] == [[v] for v in values]
  assert entries == [b"".join(serialization.bytes_feature(KEY, v)) for v in values]


def test_fixed_entries_hold_float32_lists_and_float64_bytes() -> None:
  values = np.array([0.0, -0.0, 1.5, np.pi, -1e30, np.inf, np.nan], np.float64)
  as_float32 = parsed(record_blocks.fixed_entries(KEY, values.astype("<f4"), "float_list").items())
  np.testing.assert_array_equal([f.float_list.value[0] for f in as_float32], values.astype(np.float32))
  as_bytes = parsed(record_blocks.fixed_entries(KEY, values.astype("<f8"), "bytes").items())
  assert [f.bytes_list.value[0] for f in as_bytes] == [struct.pack("<d", v) for v in values]


def test_joined_rows_concatenate_item_by_item() -> None:
  left = record_blocks.ByteColumn.from_items([b"a", b"", b"cc", b""])
  right = record_blocks.ByteColumn.from_items([b"1", b"22", b"", b""])
  assert record_blocks.joined_rows([left, right, left]).items() == [b"a1a", b"22", b"cccc", b""]


def test_framed_records_are_what_tensorflow_writes(tmp_path) -> None:
  records = [b"", b"x", bytes(range(256)) * 40, b"y" * 7, b"z" * 9]  # lengths around the CRC's 8-byte steps
  path = tmp_path / "tf.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  framed = record_blocks.framed(records)
  assert framed.data.tobytes() == path.read_bytes()
  assert framed.records() == records
  head, tail = framed.split(2)
  assert head.records() == records[:2] and tail.records() == records[2:]


def test_framed_examples_gather_rows_fallback_and_fixed_entries(tmp_path) -> None:
  rows = record_blocks.int64_entries(KEY, np.array([5, 300, -7]))
  marker = serialization.FeatureKey("m")
  fixed = np.array([np.frombuffer(b"".join(serialization.int64_feature(marker, (n,))), np.uint8) for n in (1, 2, 3, 4)])
  fallback = b"".join(serialization.int64_feature(KEY, (0,)))
  framed = record_blocks.framed_examples(rows, np.array([2, -1, 0, 2]), fixed, fallback)
  path = tmp_path / "examples.tfrecord"
  path.write_bytes(framed.data.tobytes())
  read = [tf.train.Example.FromString(r.numpy()).features.feature for r in tf.data.TFRecordDataset(str(path))]
  assert [(f["label"].int64_list.value[0], f["m"].int64_list.value[0]) for f in read] == [(-7, 1), (0, 2), (5, 3), (-7, 4)]
  assert framed.records() == [
      serialization.example_from_entries([rows.item(2), fixed[0].tobytes()]),
      serialization.example_from_entries([fallback, fixed[1].tobytes()]),
      serialization.example_from_entries([rows.item(0), fixed[2].tobytes()]),
      serialization.example_from_entries([rows.item(2), fixed[3].tobytes()]),
  ]
