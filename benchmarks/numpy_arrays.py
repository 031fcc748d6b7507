"""numpy_arrays: a rows-layout .npy to TFRecord, beside the protobuf floor and the seed's example 3."""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks import inputs
from benchmarks.seeds import numpy_arrays as seed

HELP = ("rows-layout .npy -> TFRecord (peer (floor): np.load mmap + tf.train.Example; physical "
        "floor: a copy of the output)")
SMOKE = {"sizes": [harness.MB]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("numpy_arrays options")
  group.add_argument(
      "--example-shape", type=harness.parse_shape, default=(32, 32, 3), metavar="SHAPE",
      help="shape of one example (one row of the .npy), e.g. 32,32,3 (default)",
  )
  group.add_argument(
      "--dtype", default="float32", help="dtype of the array (default float32)",
  )


def floor_write(npy_path: pathlib.Path, out_path: pathlib.Path) -> None:
  """The floor: per row, a one-bytes-feature Example via protobuf, one TFRecordWriter."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  array = np.load(npy_path, mmap_mode="r")
  with tf.io.TFRecordWriter(str(out_path)) as writer:
    for row in array:
      example = tf.train.Example(features=tf.train.Features(feature={
          "array": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])),
      }))
      writer.write(example.SerializeToString())


def config_fields(npy_path: pathlib.Path) -> dict[str, Any]:
  """The BuilderConfig fields (JSON values) of one rows-layout `.npy` as the train split."""
  return {"splits": {"train": [str(npy_path)]}}


def builder_write(npy_path: pathlib.Path, data_dir: pathlib.Path) -> None:
  """The numpy_arrays builder on one rows-layout `.npy`, into a fresh data_dir."""
  from tfds_builders.numpy_arrays import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.numpy_arrays import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", **config_fields(npy_path))
  with harness.quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """builder vs floor vs seed on a rows `.npy` of each requested size."""
  dtype = np.dtype(args.dtype)
  rows: list[harness.Row] = []
  for size in args.sizes:
    npy_path = work_dir / f"input-{size}.npy"
    print(f"numpy_arrays: writing {harness.format_size(size)} input {npy_path}", file=sys.stderr)
    examples = inputs.write_rows_npy(npy_path, size, args.example_shape, dtype)
    input_bytes = examples * dtype.itemsize * int(np.prod(args.example_shape))
    harness.warm_page_cache(npy_path)
    reference_dir = work_dir / "reference"  # what the copy floor copies; the build also warms the phases
    builder_write(npy_path, reference_dir)
    phases = [
        harness.Phase("builder", lambda out: builder_write(npy_path, out), role="builder"),
        harness.Phase("floor", lambda out: floor_write(npy_path, out / "floor.tfrecord"), role="peer"),
        harness.copy_floor(harness.built_shards(reference_dir)),
    ]
    if args.baseline_builds:
      phases.append(args.baseline_builds.phase("builder", "numpy_arrays", config_fields(npy_path), work_dir))
    if not args.skip_seed:
      phases.append(harness.Phase("seed", lambda out: seed.seed_write(npy_path, out / "seed.tfrecord"), role="seed"))
    rows += harness.measure(
        "numpy_arrays", phases, input_bytes=input_bytes, examples=examples,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      harness.print_profile(f"builder run on {harness.format_size(input_bytes)}",
                            lambda out: builder_write(npy_path, out), work_dir, args.profile_top)
    shutil.rmtree(reference_dir)
    npy_path.unlink()
  return harness.Result(rows)
