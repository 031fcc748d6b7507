"""Writes the bundled sources of the concatenated builder: two sites of raw TFRecords.

Run from the repository root: `.venv/bin/python dummy_data/concatenated/make_dummy_data.py`.
Both sites share one schema: `image` (4x4x3 uint8 pixels as PNG bytes),
`label` (int64), `tokens` (int64 list) and `score` (float). site_a's token
lists all have 3 values; site_b's vary from 1 to 5, so the concatenation
infers `tokens` as a variable-length (None,) feature. The output is
deterministic (fixed seed, fixed PNG encoder settings).
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parent
# file -> (first example number, number of examples, token lengths cycle)
FILES = {
    "site_a/train.tfrecord": (0, 4, [3]),
    "site_a/test.tfrecord": (4, 2, [3]),
    "site_b/train-00000-of-00002.tfrecord": (10, 3, [1, 4, 2]),
    "site_b/train-00001-of-00002.tfrecord": (13, 2, [5, 3]),
    "site_b/test.tfrecord": (15, 1, [2]),
}


def example(number: int, num_tokens: int) -> bytes:
  rng = np.random.default_rng(number)
  pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  feature = {
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(pixels).numpy()])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[number % 3])),
      "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=list(range(number, number + num_tokens)))),
      "score": tf.train.Feature(float_list=tf.train.FloatList(value=[number / 4])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def main() -> None:
  for name, (first, count, lengths) in FILES.items():
    path = ROOT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
      for offset in range(count):
        writer.write(example(first + offset, lengths[offset % len(lengths)]))
    print(f"wrote {count} examples to {path.relative_to(ROOT)}")


if __name__ == "__main__":
  main()
