"""augmented: fields joined from a CSV onto a TFRecord base, materialize and overlay, beside a floor and the seed."""

from __future__ import annotations

import argparse
import pathlib
import shutil
from typing import Any

from benchmarks import harness
from benchmarks import inputs
from benchmarks.seeds import augmented as seed

HELP = ("new fields joined from a CSV onto a TFRecord base: materialize and overlay, "
        "raw and prepared base (floor: parse + add + TFRecordWriter; seed: example 1)")
SMOKE = {"sizes": [harness.MB]}
# Which phases make each base's materialize/floor and materialize/overlay ratios.
_BASES = (("prepared", "materialize_prepared", "overlay_prepared"), ("raw TFRecords", "builder", "overlay"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("augmented options")
  group.add_argument(
      "--record-bytes", type=harness.parse_size, default=harness.parse_size("10KB"), metavar="SIZE",
      help="bytes of each base record's `image` feature (default 10KB); the new "
      "fields (label int64, weight float64) add about 30 bytes",
  )


def floor_write(raw_path: pathlib.Path, table_path: pathlib.Path, out_path: pathlib.Path) -> None:
  """The floor: read, parse, add the two fields (joined on id from a dict), serialize, one TFRecordWriter."""
  import csv  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with open(table_path, newline="") as table:
    rows = {int(row["id"]): (int(row["label"]), float(row["weight"])) for row in csv.DictReader(table)}
  with tf.io.TFRecordWriter(str(out_path)) as writer:
    for record in tf.compat.v1.io.tf_record_iterator(str(raw_path)):
      example = tf.train.Example.FromString(record)
      features = example.features.feature
      label, weight = rows[features["id"].int64_list.value[0]]
      features["label"].int64_list.value.append(label)
      features["weight"].float_list.value.append(weight)
      writer.write(example.SerializeToString())


def builder_write(base: dict[str, object], table_path: pathlib.Path, mode: str, data_dir: pathlib.Path) -> None:
  """The augmented builder joining labels.csv on id, into a fresh data_dir."""
  from tfds_builders.augmented import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.augmented import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", side_table=str(table_path), join_key="id", mode=mode, **base)
  with harness.quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def ratios(rows: list[harness.Row], record_bytes: int) -> list[dict[str, Any]]:
  """materialize/floor and materialize/overlay per input size and base kind."""
  lines = []
  for size in sorted({row.input_bytes for row in rows}):
    group = {row.phase: row for row in rows if row.input_bytes == size}
    for base, materialize, overlay in _BASES:
      lines.append({
          "input_bytes": size, "record_size": harness.format_size(record_bytes), "base": base,
          "materialize_floor": harness.time_ratio(group.get(materialize), group.get("floor")),
          "materialize_overlay": harness.time_ratio(group.get(materialize), group.get(overlay)),
      })
  return lines


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """materialize and overlay, on a raw and a prepared base, vs floor and seed, per size."""
  rows: list[harness.Row] = []
  for size in args.sizes:
    size_dir = harness.input_dir(work_dir, size, f"augmented: writing a {harness.format_size(size)} base")
    raw_path, prepared_dir, table_path, count = inputs.write_augmented_base(size_dir, size, args.record_bytes)
    harness.warm_page_cache(raw_path)
    raw_base = {"base_records": {"train": [str(raw_path)]}}
    prepared_base = {"base": str(prepared_dir)}
    # The copy floor copies a materialized build's shards; the build also warms what the phases use.
    builder_write(raw_base, table_path, "materialize", size_dir / "reference")
    phases = [
        harness.Phase("builder", lambda out: builder_write(raw_base, table_path, "materialize", out), role="builder"),
        harness.Phase("floor", lambda out: floor_write(raw_path, table_path, out / "floor.tfrecord"), role="peer"),
        harness.copy_floor(harness.built_shards(size_dir / "reference")),
        harness.Phase("overlay", lambda out: builder_write(raw_base, table_path, "overlay", out)),
        harness.Phase("materialize_prepared",
                      lambda out: builder_write(prepared_base, table_path, "materialize", out)),
        harness.Phase("overlay_prepared", lambda out: builder_write(prepared_base, table_path, "overlay", out)),
    ]
    if not args.skip_seed:
      phases.append(harness.Phase("seed", lambda out: seed.append_field(str(raw_path), str(out / "seed.tfrecord")),
                                  role="seed"))
    rows += harness.measure(
        "augmented", phases, input_bytes=raw_path.stat().st_size, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      for mode, base in (("materialize", raw_base), ("overlay", prepared_base)):
        harness.print_profile(f"{mode} run ({next(iter(base))}) on {harness.format_size(size)}",
                              lambda out: builder_write(base, table_path, mode, out), work_dir, args.profile_top)
    shutil.rmtree(size_dir)
  return harness.Result(rows, ratios=ratios(rows, args.record_bytes))
