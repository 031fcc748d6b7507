"""Checks the Beam cost model of docs/scaling.md by simulation at small scale.

For a workload (numpy_arrays by default), builds the same data with Beam's
DirectRunner in multi-processing mode while varying the number of partitions
P, the data size S and the number of workers W, then fits the model

    T(P, S, W) = t_pipeline + W * t_worker + P * t_partition / min(P, W)
                 + S / (r * min(P, W))

where r is the in-process build throughput (measured), t_pipeline the fixed
cost of a pipeline, t_worker the start of one worker process (it imports
Beam's SDK harness, TFDS and Numba; no longer TensorFlow) and t_partition the
fixed cost of one partition. numpy_arrays writes P files, but on Beam a split
of local `.npy` files is cut where its shards end (core/streaming_builder.py
`RangePartitions`), so its partitions are its shards whatever P is. The three
constants are fitted on the smallest size only; the model's prediction for
every larger size is printed beside the measurement, with the error.
Sizes are in MiB (2**20 bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks import inputs

HELP = ("the Beam cost model of docs/scaling.md: builds on the DirectRunner with P partitions "
        "and W workers (--workload, --sizes, --partitions, --workers)")
# The smoke size runs Beam in this process: a worker process would import Beam's harness again.
SMOKE = {"scaling_sizes": [harness.MIB], "partitions": [2], "workers": [1], "beam_mode": "in_memory"}
_ROW_SHAPE = (32, 32, 3)  # float32 rows of 12 KiB, as in the numpy_arrays benchmark
_PAIR_BYTES = 340  # one output pair of the benchmark's default records


def parse_ints(text: str) -> list[int]:
  return [int(item) for item in text.split(",") if item.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("scaling options")
  group.add_argument("--workload", choices=("cross_product", "numpy_arrays"), default="numpy_arrays",
                     help="what the Beam builds build (default numpy_arrays)")
  group.add_argument("--sizes", dest="scaling_sizes", type=harness.parse_sizes,
                     default=harness.parse_sizes("64MiB,256MiB"), metavar="SIZES",
                     help="data sizes (default 64MiB,256MiB)")
  group.add_argument("--partitions", type=parse_ints, default=[1, 2, 4, 8], help="partition counts (default 1,2,4,8)")
  group.add_argument("--workers", type=parse_ints, default=[1, 2], help="Beam worker processes (default 1,2)")
  group.add_argument("--beam-mode", choices=("in_memory", "multi_processing"), default="multi_processing",
                     help="the DirectRunner's running mode (default multi_processing: one process per worker)")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
  """Hides TFDS's progress output while a build runs."""
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    yield


def numpy_arrays_workload(work_dir: pathlib.Path, size: int, partitions: int) -> Callable[..., object]:
  """`partitions` .npy files of `size` bytes in all; returns a builder factory."""
  from tfds_builders.numpy_arrays import Builder, BuilderConfig  # pylint: disable=g-import-not-at-top

  source_dir = work_dir / f"npy-{size}-{partitions}"
  source_dir.mkdir(parents=True)
  row_bytes = 4 * int(np.prod(_ROW_SHAPE))
  rows_per_file = max(1, size // partitions // row_bytes)
  rng = np.random.default_rng(0)
  for index in range(partitions):
    np.save(source_dir / f"part-{index:04d}.npy", rng.standard_normal((rows_per_file, *_ROW_SHAPE), dtype=np.float32))
  config = BuilderConfig(name="scaling", splits={"train": [str(source_dir)]})
  return lambda data_dir: Builder(config=config, data_dir=str(data_dir))


def cross_product_workload(work_dir: pathlib.Path, size: int, partitions: int) -> Callable[..., object]:
  """Two TFRecord inputs whose product writes about `size` bytes in `partitions` left blocks."""
  from tfds_builders.cross_product import Builder, BuilderConfig  # pylint: disable=g-import-not-at-top

  side = max(2, int((size / _PAIR_BYTES) ** 0.5))
  pairs_dir = work_dir / f"pairs-{size}-{partitions}"
  pairs_dir.mkdir(parents=True)
  for name in ("left", "right"):
    inputs.write_cross_product_side(pairs_dir / f"{name}.tfrecord", side, 16, 8)
  config = BuilderConfig(
      name="scaling", left=[str(pairs_dir / "left.tfrecord")], right=[str(pairs_dir / "right.tfrecord")],
      left_rows_per_partition=-(-side // partitions),
  )
  return lambda data_dir: Builder(config=config, data_dir=str(data_dir))


WORKLOADS = {"numpy_arrays": numpy_arrays_workload, "cross_product": cross_product_workload}


def build_seconds(
    make_builder: Callable[..., object], data_dir: pathlib.Path, workers: int | None,
    beam_mode: str = "multi_processing",
) -> float:
  """Wall time of one build: in-process when `workers` is None, else on Beam."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top

  download_config = None
  if workers is not None:
    options = PipelineOptions([f"--direct_running_mode={beam_mode}", f"--direct_num_workers={workers}"])
    download_config = tfds.download.DownloadConfig(beam_options=options)
  builder = make_builder(data_dir)
  start = time.perf_counter()
  with _quiet():
    builder.download_and_prepare(download_config=download_config)
  seconds = time.perf_counter() - start
  shutil.rmtree(data_dir)
  return seconds


def _terms(partitions: int, workers: int) -> list[float]:
  return [1.0, float(workers), partitions / min(partitions, workers)]


def fit(points: Sequence[tuple[int, int, int, float]], local_rate: float) -> np.ndarray:
  """Least-squares (t_pipeline, t_worker, t_partition), with r fixed to the local rate."""
  rows = [_terms(partitions, workers) for _, partitions, workers, _ in points]
  targets = [seconds - size / (local_rate * min(partitions, workers)) for size, partitions, workers, seconds in points]
  constants, *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
  return constants


def predict(size: int, partitions: int, workers: int, local_rate: float, constants: np.ndarray) -> float:
  return float(np.dot(_terms(partitions, workers), constants)) + size / (local_rate * min(partitions, workers))


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> dict[str, Any]:
  """Measures every (S, P, W) point, fits the model and prints it beside the measurements.

  Returns:
    The JSON result: the points, the local rate and the fitted constants.
  """
  mib = harness.MIB
  sizes = args.scaling_sizes
  workload = WORKLOADS[args.workload]
  points = []
  local_rate = 0.0
  for size in sizes:
    for partitions in args.partitions:
      make_builder = workload(work_dir, size, partitions)
      if partitions == args.partitions[0]:
        local = build_seconds(make_builder, work_dir / "local", None)
        local_rate = max(local_rate, size / local)
        print(f"local  S={size / mib:6.0f}MiB: {local:6.2f}s ({size / mib / local:.0f} MiB/s)", flush=True)
      for workers in args.workers:
        seconds = build_seconds(make_builder, work_dir / "beam", workers, args.beam_mode)
        points.append((size, partitions, workers, seconds))
        print(f"beam   S={size / mib:6.0f}MiB P={partitions:3d} W={workers}: {seconds:6.2f}s", flush=True)
  calibration = [p for p in points if p[0] == min(sizes)]
  constants = fit(calibration, local_rate)
  t_pipeline, t_worker, t_partition = constants
  print(f"\nmodel (fitted on S={min(sizes) / mib:.0f}MiB only): r = {local_rate / mib:.0f} MiB/s, "
        f"t_pipeline = {t_pipeline:.2f} s, t_worker = {t_worker:.2f} s, t_partition = {t_partition:.3f} s")
  print("| S (MiB) | P | W | measured s | predicted s | error | |")
  print("|---:|---:|---:|---:|---:|---:|---|")
  records = []
  for size, partitions, workers, seconds in points:
    expected = predict(size, partitions, workers, local_rate, constants)
    role = "fit" if size == min(sizes) else "prediction"
    print(f"| {size / mib:.0f} | {partitions} | {workers} | {seconds:.2f} | {expected:.2f} | "
          f"{(expected - seconds) / seconds:+.0%} | {role} |")
    records.append({"size_bytes": size, "partitions": partitions, "workers": workers,
                    "seconds": seconds, "predicted_seconds": expected, "role": role})
  for size in sizes:
    by_workers = {w: s for sz, p, w, s in points if sz == size and p == args.partitions[-1]}
    if 1 in by_workers and 2 in by_workers:
      print(f"2-worker speed-up at S={size / mib:.0f}MiB, P={args.partitions[-1]}: "
            f"{by_workers[1] / by_workers[2]:.2f}x")
  return {
      "builder": "scaling", "workload": args.workload, "beam_mode": args.beam_mode,
      "points": records, "local_bytes_per_s": local_rate,
      "model": {"t_pipeline": float(t_pipeline), "t_worker": float(t_worker), "t_partition": float(t_partition)},
  }
