"""overlays: a constant field on a prepared base, as an overlay (metadata only) and materialized."""

from __future__ import annotations

import argparse
import pathlib
import shutil
from typing import Any

from benchmarks import harness
from benchmarks import inputs

HELP = ("a constant field on a prepared TFRecord base: the overlay (no data bytes) against "
        "materialize of the same field, time and bytes written (uses --record-bytes)")
SMOKE = {"sizes": [harness.MB]}
CONSTANT_CASE = "constant field"
# A constant and a per-split constant, as a config would give them.
_CONSTANTS = {"source": "web", "split_weight": {"train": 0.5}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  del parser  # the base's record size is augmented's --record-bytes


def constant_build(prepared_dir: pathlib.Path, mode: str, data_dir: pathlib.Path) -> pathlib.Path:
  """The augmented builder adding `_CONSTANTS` to the prepared base; returns the version directory."""
  from tfds_builders.augmented import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.augmented import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench_constant", base=str(prepared_dir), mode=mode, constant_fields=_CONSTANTS)
  with harness.quiet_stdout():
    builder = Builder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare()
  return pathlib.Path(builder.data_path)


def bytes_written(version_dir: pathlib.Path) -> int:
  """Every file the build left in its version directory (shards, dataset_info, metadata, croissant)."""
  return sum(path.stat().st_size for path in version_dir.rglob("*") if path.is_file())


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """Per size: both builds timed (best of --repeat), then each built once more to count its bytes."""
  rows: list[harness.Row] = []
  ratios: list[dict[str, Any]] = []
  for size in args.sizes:
    what = f"overlays: writing a {harness.format_size(size)} prepared base"
    size_dir = harness.input_dir(work_dir, size, what)
    raw_path, prepared_dir, _, count = inputs.write_augmented_base(size_dir, size, args.record_bytes)
    harness.warm_page_cache(raw_path)
    phases = [
        harness.Phase("constant_overlay", lambda out: constant_build(prepared_dir, "overlay", out), role="builder"),
        harness.Phase("constant_materialize", lambda out: constant_build(prepared_dir, "materialize", out)),
    ]
    measured = harness.measure(
        "overlays", phases, input_bytes=raw_path.stat().st_size, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    rows += measured
    written = {mode: bytes_written(constant_build(prepared_dir, mode, size_dir / f"bytes-{mode}"))
               for mode in ("overlay", "materialize")}
    overlay, materialize = measured
    ratios.append({
        "input_bytes": raw_path.stat().st_size, "case": CONSTANT_CASE,
        "overlay_seconds": overlay.seconds, "materialize_seconds": materialize.seconds,
        "materialize_overlay_time": harness.time_ratio(materialize, overlay),
        "overlay_bytes": written["overlay"], "materialize_bytes": written["materialize"],
        "materialize_overlay_bytes": written["materialize"] / written["overlay"],
    })
    shutil.rmtree(size_dir)
  return harness.Result(rows, ratios=ratios)
