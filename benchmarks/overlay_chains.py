"""overlay_chains: reading a prepared base alone against load_augmented of the base and a 3-link overlay chain."""

from __future__ import annotations

import argparse
import pathlib
import shutil
from typing import Any

from benchmarks import harness
from benchmarks import inputs

HELP = ("examples/s reading a prepared TFRecord base alone (tfds) against load_augmented of the "
        "base + a 3-link overlay chain, same decode, one run (uses --record-bytes)")
SMOKE = {"sizes": [harness.MB]}
CHAIN_CASE = "base + 3-link chain"
# The links: each joins its own side table on id (the first is the benchmark inputs' labels.csv).
_LINKS = (("link1", None), ("link2", ("score", "{index} * 0.5")), ("link3", ("tag", "t{index_mod}")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
  del parser  # the base's record size is augmented's --record-bytes


def build_chain(prepared_dir: pathlib.Path, table_path: pathlib.Path, count: int, data_dir: pathlib.Path) -> pathlib.Path:
  """Three overlays, each on the one before, the first on the prepared base; returns the last's directory."""
  from tfds_builders.augmented import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.augmented import BuilderConfig  # pylint: disable=g-import-not-at-top

  base = str(prepared_dir)
  for name, column in _LINKS:
    table = table_path
    if column:
      table = data_dir / f"{name}.csv"
      with open(table, "w") as out:
        out.write(f"id,{column[0]}\n")
        out.writelines(f"{index},{column[1].format(index=index, index_mod=index % 5)}\n" for index in range(count))
    config = BuilderConfig(name=name, base=base, mode="overlay", side_table=str(table), join_key="id")
    with harness.quiet_stdout():
      builder = Builder(config=config, data_dir=str(data_dir))
      builder.download_and_prepare()
    base = str(builder.data_path)
  return pathlib.Path(base)


def _count(dataset: Any) -> int:
  """Iterates a dataset to its end inside TensorFlow (no Python per example); returns how many it held."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


def read_base(prepared_dir: pathlib.Path, count: int) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  dataset = tfds.builder_from_directory(str(prepared_dir)).as_dataset(split="train", shuffle_files=False)
  _check(_count(dataset), count, "the base")


def read_chain(chain_dir: pathlib.Path, count: int) -> None:
  from tfds_builders.augmented import load_augmented  # pylint: disable=g-import-not-at-top

  _check(_count(load_augmented(str(chain_dir), split="train")), count, "the chain")


def _check(found: int, count: int, what: str) -> None:
  if found != count:
    raise RuntimeError(f"reading {what} gave {found} examples, not {count}")


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """Per size: the base read and the chain read, timed back to back (best of --repeat), and their ratio."""
  rows: list[harness.Row] = []
  ratios: list[dict[str, Any]] = []
  for size in args.sizes:
    what = f"overlay_chains: writing a {harness.format_size(size)} prepared base and 3 links"
    size_dir = harness.input_dir(work_dir, size, what)
    raw_path, prepared_dir, table_path, count = inputs.write_augmented_base(size_dir, size, args.record_bytes)
    chain_dir = build_chain(prepared_dir, table_path, count, size_dir / "links")
    harness.warm_page_cache(raw_path)
    read_chain(chain_dir, count)  # warms the links' files and TensorFlow's first-use costs
    phases = [
        harness.Phase("base_read", lambda out: read_base(prepared_dir, count), role="physical"),
        harness.Phase("chain_read", lambda out: read_chain(chain_dir, count), role="builder"),
    ]
    measured = harness.measure(
        "overlay_chains", phases, input_bytes=raw_path.stat().st_size, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    rows += measured
    base_row, chain_row = measured
    ratios.append({
        "input_bytes": raw_path.stat().st_size, "case": CHAIN_CASE,
        "base_examples_per_s": base_row.examples_per_s, "chain_examples_per_s": chain_row.examples_per_s,
        "chain_base_time": harness.time_ratio(chain_row, base_row),
    })
    shutil.rmtree(size_dir)
  return harness.Result(rows, ratios=ratios)
