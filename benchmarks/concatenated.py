"""concatenated: sources copied into one dataset beside a copying floor; export beside the seed's zip."""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import time
from typing import Any

from benchmarks import harness
from benchmarks import inputs
from benchmarks.seeds import concatenated as seed

HELP = ("sources copied into one dataset (peer (floor): read + TFRecordWriter; physical floor: a copy "
        "of the output); export "
        "to npz/tfrecord zip vs the seed's example 2 (list -> np.array -> savez_compressed -> zip)")
SMOKE = {"sizes": [harness.MB]}
_SOURCE_KINDS = {"tfds": "prepared TFDS", "tfrecord": "raw TFRecord"}
_COMPRESSION_VARIANTS = {
    "tfrecord": {},
    "tfrecord + zlib_features=[tokens]": {"zlib_features": ["tokens"]},
    "array_record (TFDS: group_size:1, zstd)": {"file_format": "array_record"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("concatenated options")
  group.add_argument(
      "--num-sources", type=int, default=2, metavar="N",
      help="number of sources the input is divided into (default 2)",
  )
  group.add_argument(
      "--source-kind", choices=tuple(_SOURCE_KINDS), default="tfds",
      help="sources as prepared TFDS datasets (default) or raw TFRecord globs, "
      "whose schema inference reads every record once more before writing",
  )
  group.add_argument(
      "--compression-table", action="store_true",
      help="also build with zlib_features=[tokens] and --file_format array_record, "
      "and on the bundled dummy_data; print size and build time of each",
  )


def floor_write(paths: list[pathlib.Path], out_path: pathlib.Path) -> None:
  """The floor: every source record, read and written as it is with one TFRecordWriter."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(str(out_path)) as writer:
    for path in paths:
      for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        writer.write(record)


def builder_write(sources: list[dict], data_dir: pathlib.Path, **options) -> object:
  """The concatenated builder on the sources, into a fresh data_dir; returns it."""
  from tfds_builders.concatenated import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.concatenated import BuilderConfig  # pylint: disable=g-import-not-at-top

  file_format = options.pop("file_format", None)
  config = BuilderConfig(name="bench", sources=sources, **options)
  with harness.quiet_stdout():
    builder = Builder(config=config, data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare()
  return builder


def ratios(rows: list[harness.Row], source_kind: str) -> list[dict[str, Any]]:
  """build/floor, build/copy of the output and seed/export time ratios per input size."""
  lines = []
  for size in sorted({row.input_bytes for row in rows}):
    group = {row.phase: row for row in rows if row.input_bytes == size}
    exported = group.get("seed-export")
    lines.append({
        "input_bytes": size, "sources": _SOURCE_KINDS[source_kind],
        "builder_floor": harness.time_ratio(group.get("builder"), group.get("floor")),
        "builder_copy": harness.time_ratio(group.get("builder"), group.get("copy_floor")),
        "seed_npz_stored": harness.time_ratio(exported, group.get("export-npz-stored")),
        "seed_npz_deflate": harness.time_ratio(exported, group.get("export-npz-deflate")),
        "seed_tfrecord": harness.time_ratio(exported, group.get("export-tfrecord")),
    })
  return lines


def compression_lines(sources: list[dict], work_dir: pathlib.Path, label: str) -> list[dict[str, Any]]:
  """Size and build time of each output compression TFDS offers, plus the zip of each export."""
  from tfds_builders import archive  # pylint: disable=g-import-not-at-top

  lines = []
  for name, options in _COMPRESSION_VARIANTS.items():
    out = work_dir / "out-compression"
    start = time.perf_counter()
    builder = builder_write(sources, out, **dict(options))
    seconds = time.perf_counter() - start
    zips: dict[str, int | None] = {"stored": None, "deflate": None}
    if "file_format" not in options:
      for compression in zips:
        zip_path = archive.export(builder.data_path, work_dir / "out.zip", compression=compression)
        zips[compression] = os.path.getsize(zip_path)
        zip_path.unlink()
    lines.append({
        "input": label, "output": name, "build_seconds": seconds,
        "dataset_bytes": inputs.dir_bytes(pathlib.Path(builder.data_path)),
        "zip_stored": zips["stored"], "zip_deflate": zips["deflate"],
    })
    shutil.rmtree(out)
  return lines


def _bundled_sources() -> list[dict]:
  """The bundled demo config's sources, with absolute paths."""
  from tfds_builders.concatenated import Builder  # pylint: disable=g-import-not-at-top

  demo = Builder.BUILDER_CONFIGS[0]
  return [dict(s, tfrecords={split: str(pathlib.Path(demo.data_root) / p) for split, p in s["tfrecords"].items()})
          for s in demo.sources]


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """Build vs floor, and export (npz, tfrecord) vs the seed, per size."""
  from tfds_builders import archive  # pylint: disable=g-import-not-at-top

  rows: list[harness.Row] = []
  compression = []
  if args.compression_table:
    compression += compression_lines(_bundled_sources(), work_dir, "dummy_data")
  for size in args.sizes:
    size_dir = work_dir / f"input-{size}"
    size_dir.mkdir()
    print(f"concatenated: writing {args.num_sources} sources of {harness.format_size(size)} in all",
          file=sys.stderr)
    raw_paths, prepared_dirs, count = inputs.write_concatenated_sources(size_dir, size, args.num_sources)
    inputs.warm(raw_paths)
    if args.source_kind == "tfds":
      sources = [{"name": d.parent.name, "dataset_dir": str(d)} for d in prepared_dirs]
    else:
      sources = [{"name": p.stem, "tfrecords": str(p)} for p in raw_paths]
    input_bytes = sum(p.stat().st_size for p in raw_paths)
    built = builder_write(sources, size_dir / "built")
    built_dir = pathlib.Path(built.data_path)
    phases = [
        harness.Phase("builder", lambda out: builder_write(sources, out), role="builder"),
        harness.Phase("floor", lambda out: floor_write(raw_paths, out / "floor.tfrecord"), role="peer"),
        harness.copy_floor(harness.built_shards(built_dir)),
        harness.Phase("export-npz-stored", lambda out: archive.export(built_dir, out / "a.zip", "npz")),
        harness.Phase("export-npz-deflate",
                      lambda out: archive.export(built_dir, out / "a.zip", "npz", compression="deflate")),
        harness.Phase("export-tfrecord", lambda out: archive.export(built_dir, out / "a.zip", "tfrecord")),
    ]
    if args.baseline_builds:
      phases.append(args.baseline_builds.phase("builder", "concatenated", {"sources": sources}, work_dir))
    if not args.skip_seed:
      phases.append(harness.Phase("seed-export", lambda out: seed.concatenate_and_zip(prepared_dirs, out)))
    rows += harness.measure(
        "concatenated", phases, input_bytes=input_bytes, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.compression_table:
      compression += compression_lines(sources, work_dir, harness.format_size(input_bytes))
    if args.profile:
      harness.print_profile(f"builder run on {harness.format_size(input_bytes)}",
                            lambda out: builder_write(sources, out), work_dir, args.profile_top)
    shutil.rmtree(size_dir)
  return harness.Result(rows, ratios=ratios(rows, args.source_kind), compression=compression)
