"""Benchmarks of every builder beside a raw-TFRecord floor and its seed peer: `python -m benchmarks`."""
