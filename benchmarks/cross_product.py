"""cross_product: all pairs of two TFRecord files, beside a byte-concatenating floor and the seed's example 2;
and the same pairs read at random from `VirtualPairs` over the inputs as ArrayRecord (nothing written)."""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks import inputs
from benchmarks.seeds import cross_product as seed

HELP = ("all pairs of two TFRecord files (sizes: --pairs; peer (floor): rename once + "
        "byte concat + TFRecordWriter; physical floor: a copy of the output; seed: example 2); "
        "virtual_random_access: as many random pairs read from VirtualPairs (--virtual-reads)")
# The sampled virtual source holds 1/16 of the pairs of the same inputs: its RSS beside the full one's.
VIRTUAL_SAMPLE_RATE = 1 / 16
SMOKE = {"pairs": 10**4, "pairs_sweep": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("cross_product options (sizes are pair counts, not bytes)")
  harness.add_count_arguments(
      group, "pairs", 10**6, "pairs to write, N = M = ceil(sqrt(COUNT)) records per side (default 1M)",
      "comma-separated pair counts, e.g. 1e4,1e7: measure each and report peak RSS largest/smallest",
  )
  group.add_argument(
      "--name-bytes", type=int, default=16, help="bytes of each record's `name` feature (default 16)",
  )
  group.add_argument(
      "--embedding-size", type=int, default=8,
      help="floats in each record's `embedding` feature (default 8: records of about 100 bytes; "
      "0 drops it and `tags`, for small records of about 50 bytes)",
  )
  group.add_argument(
      "--virtual-reads", type=harness.parse_count, default=10**6, metavar="COUNT",
      help="random pairs each virtual phase reads, at most the pairs (default 1M)",
  )
  group.add_argument(
      "--memory-budget", type=harness.parse_size, metavar="SIZE",
      help="the builder's memory_budget_bytes (default: the builder's, 256MiB); a budget "
      "below the right side's size measures the blocked path (right side re-read per left row)",
  )


def floor_write(left_path: pathlib.Path, right_path: pathlib.Path, out_path: pathlib.Path) -> None:
  """The floor: rename each side's keys once, then byte-concatenate every pair into one writer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  left = inputs.prefixed_records(left_path, "left/")
  right = inputs.prefixed_records(right_path, "right/")
  with tf.io.TFRecordWriter(str(out_path)) as writer:
    write = writer.write
    for left_record in left:
      for right_record in right:
        write(left_record + right_record)


def config_fields(left_path: pathlib.Path, right_path: pathlib.Path, memory_budget: int | None) -> dict[str, Any]:
  """The BuilderConfig fields (JSON values) of the default product with the prefix policy."""
  budget = {"memory_budget_bytes": memory_budget} if memory_budget else {}
  return {"left": [str(left_path)], "right": [str(right_path)], **budget}


def builder_write(
    left_path: pathlib.Path, right_path: pathlib.Path, data_dir: pathlib.Path, memory_budget: int | None = None
) -> None:
  """The cross_product builder (default product, prefix policy), into a fresh data_dir."""
  from tfds_builders.cross_product import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.cross_product import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", **config_fields(left_path, right_path, memory_budget))
  with harness.quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def to_array_record(tfrecord_path: pathlib.Path) -> pathlib.Path:
  """The records of a TFRecord file copied into an ArrayRecord file beside it."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from tfds_builders.core import fast  # pylint: disable=g-import-not-at-top
  from tfds_builders.core import tfrecord_io  # pylint: disable=g-import-not-at-top

  out_path = tfrecord_path.with_suffix(".array_record")
  (source,) = tfrecord_io.expand(str(tfrecord_path))
  writer = array_record_module.ArrayRecordWriter(str(out_path), "group_size:1")
  for record in fast.record_index.read_records(source):
    writer.write(record)
  writer.close()
  return out_path


def virtual_reads(left_path: pathlib.Path, right_path: pathlib.Path, sample_rate: float, reads: int) -> None:
  """VirtualPairs over both inputs (loaded in the phase), then `reads` pairs at random indices, one at a time."""
  from tfds_builders.cross_product import VirtualPairs  # pylint: disable=g-import-not-at-top

  pairs = VirtualPairs({"left": [str(left_path)], "right": [str(right_path)], "sample_rate": sample_rate})
  rng = np.random.default_rng(0)
  for start in range(0, reads, 65536):  # indices drawn a chunk at a time: the RSS is the source's, not theirs
    for index in rng.integers(0, len(pairs), min(65536, reads - start)).tolist():
      pairs[index]  # pylint: disable=pointless-statement


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """builder vs floor vs seed on two files of N = M = ceil(sqrt(pairs)) records."""
  rows: list[harness.Row] = []
  wanted_counts = sorted(args.pairs_sweep or [args.pairs])
  for wanted in wanted_counts:
    side = int(np.ceil(np.sqrt(wanted)))
    left_path, right_path = work_dir / f"left-{side}.tfrecord", work_dir / f"right-{side}.tfrecord"
    print(f"cross_product: writing {side} x {side} records", file=sys.stderr)
    inputs.write_cross_product_side(left_path, side, args.name_bytes, args.embedding_size)
    inputs.write_cross_product_side(right_path, side, args.name_bytes, args.embedding_size)
    left_array, right_array = to_array_record(left_path), to_array_record(right_path)
    inputs.warm([left_path, right_path, left_array, right_array])
    reads = min(side * side, args.virtual_reads)
    # "input" is the bytes of the pairs the floor writes: the size of the work.
    pair_bytes = side * sum(len(r) for r in inputs.prefixed_records(left_path, "left/")) + side * sum(
        len(r) for r in inputs.prefixed_records(right_path, "right/"))
    # The copy floor copies what a build writes: one reference build, also warming what the phases use.
    reference_dir = work_dir / "reference"
    builder_write(left_path, right_path, reference_dir, args.memory_budget)
    phases = [
        harness.Phase("builder", lambda out: builder_write(left_path, right_path, out, args.memory_budget),
                      role="builder"),
        harness.Phase("floor", lambda out: floor_write(left_path, right_path, out / "floor.tfrecord"), role="peer"),
        harness.copy_floor(harness.built_shards(reference_dir)),
        harness.Phase("virtual_random_access", lambda out: virtual_reads(left_array, right_array, 1.0, reads),
                      examples=reads),
        harness.Phase("virtual_random_access_sampled",
                      lambda out: virtual_reads(left_array, right_array, VIRTUAL_SAMPLE_RATE, reads), examples=reads),
    ]
    if args.baseline_builds:
      phases.append(args.baseline_builds.phase(
          "builder", "cross_product", config_fields(left_path, right_path, args.memory_budget), work_dir))
    if not args.skip_seed:
      phases.append(harness.Phase("seed", lambda out: seed.combine_tfrecords_with_overlap_handling(
          str(left_path), str(right_path), str(out / "seed.tfrecord")), role="seed"))
    rows += harness.measure(
        "cross_product", phases, input_bytes=pair_bytes, examples=side * side,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      harness.print_profile(f"builder run on {side * side} pairs",
                            lambda out: builder_write(left_path, right_path, out, args.memory_budget), work_dir,
                            args.profile_top)
    shutil.rmtree(reference_dir)
    for path in (left_path, right_path, left_array, right_array):
      path.unlink()
  labels = tuple(f"{harness.format_count(count)} pairs" for count in (wanted_counts[0], wanted_counts[-1]))
  return harness.Result(rows, rss_labels=labels)
