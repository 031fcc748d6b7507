"""overlay_source: random reads by index, tfds.data_source of an ArrayRecord base against augmented_source of an overlay on it."""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from benchmarks import harness

HELP = ("examples/s of random reads by index ([i] and __getitems__ of 64): tfds.data_source of an "
        "ArrayRecord base (32x32 PNG, id, caption) against augmented_source of a side-table overlay on it")
SMOKE = {"sizes": [harness.MB]}
READS = 5_000  # random indices per phase, the same order for the base and the overlay
BATCH = 64  # examples per __getitems__, a Grain batch
IMAGE_SHAPE = (32, 32, 3)
_BASE_SHARDS = 4
# (phase suffix, read as the ratio table names it, batch size or None for single [i] reads)
_READS = (("", "source[i]", None), ("_batched", f"__getitems__ of {BATCH}", BATCH))


def add_arguments(parser: argparse.ArgumentParser) -> None:
  del parser  # sized by --size alone: records are a small PNG, an id and a caption


def _features() -> Any:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds.features.FeaturesDict({
      "id": tfds.features.Scalar(np.int64),
      "image": tfds.features.Image(shape=IMAGE_SHAPE),
      "caption": tfds.features.Text(),
  })


def _example(rng: np.random.Generator, index: int) -> dict[str, Any]:
  # Noise pixels: PNG cannot shrink them, so decoding costs what a real small photo's does.
  return {"id": index, "image": rng.integers(0, 256, IMAGE_SHAPE, dtype=np.uint8),
          "caption": f"caption {index} " * 3}


def _examples(count: int) -> Iterator[tuple[int, dict[str, Any]]]:
  rng = np.random.default_rng(0)
  for index in range(count):
    yield index, _example(rng, index)


def record_bytes() -> int:
  """Serialized bytes of one base example (its PNG holds noise, so every example's is about the same)."""
  return len(_features().serialize_example(_example(np.random.default_rng(0), 0)))


def write_base(work_dir: pathlib.Path, size: int) -> tuple[pathlib.Path, int]:
  """A prepared ArrayRecord base of about `size` serialized bytes, in 4 shards.

  Returns:
    The base's version directory and its number of examples.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  count = max(1, size // record_bytes())
  with harness.quiet_stdout():
    builder = tfds.dataset_builders.store_as_tfds_dataset(
        name="overlay_source_base", version="1.0.0", features=_features(),
        split_datasets={"train": _examples(count)}, data_dir=work_dir / "base",
        file_format="array_record", download_config=tfds.download.DownloadConfig(num_shards=_BASE_SHARDS),
    )
  os.sync()  # flush the writes now, not during a timed phase
  return pathlib.Path(builder.data_path), count


def build_overlay(base_dir: pathlib.Path, count: int, work_dir: pathlib.Path) -> pathlib.Path:
  """A side-table overlay adding `label` and `weight` (joined on id) to the base; returns its version directory."""
  from tfds_builders.augmented import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.augmented import BuilderConfig  # pylint: disable=g-import-not-at-top

  table_path = work_dir / "labels.csv"
  with open(table_path, "w") as table:
    table.write("id,label,weight\n")
    table.writelines(f"{index},{index % 10},{index / 7}\n" for index in range(count))
  config = BuilderConfig(name="bench_source", base=str(base_dir), mode="overlay", side_table=str(table_path),
                         join_key="id")
  with harness.quiet_stdout():
    builder = Builder(config=config, data_dir=str(work_dir / "overlay"))
    builder.download_and_prepare()
  return pathlib.Path(builder.data_path)


def read_at(source: Any, order: Sequence[int], batch: int | None) -> None:
  """Reads `order` from `source`: one `[i]` each, or `__getitems__` of `batch` consecutive indices."""
  if batch is None:
    for index in order:
      source[index]
    return
  for start in range(0, len(order), batch):
    source.__getitems__(order[start:start + batch])


def _phase(name: str, source: Any, order: Sequence[int], batch: int | None, role: str) -> harness.Phase:
  return harness.Phase(name, lambda out: read_at(source, order, batch), role=role, examples=len(order))


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """Per size: the four read phases (best of --repeat, round-robin) and overlay/base time per read kind."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  import tfds_builders  # pylint: disable=g-import-not-at-top

  rows: list[harness.Row] = []
  ratios: list[dict[str, Any]] = []
  for size in args.sizes:
    what = f"overlay_source: writing a {harness.format_size(size)} ArrayRecord base and its overlay"
    size_dir = harness.input_dir(work_dir, size, what)
    base_dir, count = write_base(size_dir, size)
    overlay_dir = build_overlay(base_dir, count, size_dir)
    base_files = sorted(path for path in base_dir.glob("*.array_record-*") if path.is_file())
    for path in base_files:
      harness.warm_page_cache(path)
    input_bytes = sum(path.stat().st_size for path in base_files)
    # Distinct indices in one random order, read alike from both sources.
    order = np.random.default_rng(1).permutation(count)[:READS].tolist()
    base = tfds.builder_from_directory(str(base_dir)).as_data_source(split="train")
    overlay = tfds_builders.augmented_source(str(overlay_dir), "train")
    for source in (base, overlay):
      read_at(source, order[:BATCH], BATCH)  # opens each file's reader before any timer starts
    phases = []
    for suffix, _, batch in _READS:
      phases += [_phase(f"base_source{suffix}", base, order, batch, "physical"),
                 _phase(f"overlay_source{suffix}", overlay, order, batch, "builder")]
    measured = harness.measure(
        "overlay_source", phases, input_bytes=input_bytes, examples=len(order),
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    rows += measured
    by_phase = {row.phase: row for row in measured}
    for suffix, read, _ in _READS:
      base_row, overlay_row = by_phase[f"base_source{suffix}"], by_phase[f"overlay_source{suffix}"]
      ratios.append({
          "input_bytes": input_bytes, "read": read,
          "base_examples_per_s": base_row.examples_per_s, "overlay_examples_per_s": overlay_row.examples_per_s,
          "overlay_base_time": harness.time_ratio(overlay_row, base_row),
      })
    del base, overlay  # their readers hold the files open
    shutil.rmtree(size_dir)
  return harness.Result(rows, ratios=ratios)
