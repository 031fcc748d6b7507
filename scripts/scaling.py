#!/usr/bin/env python
"""Checks the Beam cost model of docs/scaling.md by simulation at small scale.

For a workload (numpy_arrays by default), builds the same data with Beam's
DirectRunner in multi-processing mode while varying the number of partitions
P, the data size S and the number of workers W, then fits the model

    T(P, S, W) = t_pipeline + W * t_worker + P * t_partition / min(P, W)
                 + S / (r * min(P, W))

where r is the in-process build throughput (measured), t_pipeline the fixed
cost of a pipeline, t_worker the start of one worker process (it imports
TensorFlow) and t_partition the fixed cost of one partition. The three
constants are fitted on the smallest size only; the model's prediction for
every larger size is printed beside the measurement, with the error.

Example:
  python scripts/scaling.py --sizes 64MB,256MB --partitions 1,2,4,8 --workers 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MB = 1024 * 1024
_ROW_SHAPE = (32, 32, 3)  # float32 rows of 12 KiB, as in the numpy_arrays benchmark


def parse_sizes(text: str) -> list[int]:
  """`64MB,1GB` -> byte counts."""
  units = {"KB": 1024, "MB": MB, "GB": 1024 * MB}
  sizes = []
  for item in text.split(","):
    item = item.strip().upper()
    unit = next((u for u in units if item.endswith(u)), "")
    sizes.append(int(float(item[: -len(unit)] if unit else item) * units.get(unit, 1)))
  return sizes


def parse_ints(text: str) -> list[int]:
  return [int(item) for item in text.split(",") if item.strip()]


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


_PAIR_BYTES = 340  # one output pair of the benchmark's default records


def cross_product_workload(work_dir: pathlib.Path, size: int, partitions: int) -> Callable[..., object]:
  """Two TFRecord inputs whose product writes about `size` bytes in `partitions` left blocks."""
  sys.path.insert(0, str(pathlib.Path(__file__).parent))
  import benchmark  # pylint: disable=g-import-not-at-top  # the benchmark's record generator
  from tfds_builders.cross_product import Builder, BuilderConfig  # pylint: disable=g-import-not-at-top

  side = max(2, int((size / _PAIR_BYTES) ** 0.5))
  inputs = work_dir / f"pairs-{size}-{partitions}"
  inputs.mkdir(parents=True)
  for name in ("left", "right"):
    benchmark.write_cross_product_side(inputs / f"{name}.tfrecord", side, 16, 8)
  config = BuilderConfig(
      name="scaling", left=[str(inputs / "left.tfrecord")], right=[str(inputs / "right.tfrecord")],
      left_rows_per_partition=-(-side // partitions),
  )
  return lambda data_dir: Builder(config=config, data_dir=str(data_dir))


WORKLOADS = {"numpy_arrays": numpy_arrays_workload, "cross_product": cross_product_workload}


def build_seconds(make_builder: Callable[..., object], data_dir: pathlib.Path, workers: int | None) -> float:
  """Wall time of one build: in-process when `workers` is None, else on Beam."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top

  download_config = None
  if workers is not None:
    options = PipelineOptions(["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
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


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workload", choices=sorted(WORKLOADS), default="numpy_arrays")
  parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("64MB,256MB"), help="data sizes (default 64MB,256MB)")
  parser.add_argument("--partitions", type=parse_ints, default=[1, 2, 4, 8], help="partition counts (default 1,2,4,8)")
  parser.add_argument("--workers", type=parse_ints, default=[1, 2], help="Beam worker processes (default 1,2)")
  parser.add_argument("--work-dir", type=pathlib.Path, default=None, help="scratch directory (default: a temp dir)")
  args = parser.parse_args(argv)

  work_dir = pathlib.Path(tempfile.mkdtemp(dir=args.work_dir))
  try:
    workload = WORKLOADS[args.workload]
    points = []
    local_rate = 0.0
    for size in args.sizes:
      for partitions in args.partitions:
        make_builder = workload(work_dir, size, partitions)
        if partitions == args.partitions[0]:
          local = build_seconds(make_builder, work_dir / "local", None)
          local_rate = max(local_rate, size / local)
          print(f"local  S={size / MB:6.0f}MB: {local:6.2f}s ({size / MB / local:.0f} MB/s)", flush=True)
        for workers in args.workers:
          seconds = build_seconds(make_builder, work_dir / "beam", workers)
          points.append((size, partitions, workers, seconds))
          print(f"beam   S={size / MB:6.0f}MB P={partitions:3d} W={workers}: {seconds:6.2f}s", flush=True)
    calibration = [p for p in points if p[0] == min(args.sizes)]
    constants = fit(calibration, local_rate)
    t_pipeline, t_worker, t_partition = constants
    print(f"\nmodel (fitted on S={min(args.sizes) / MB:.0f}MB only): r = {local_rate / MB:.0f} MB/s, "
          f"t_pipeline = {t_pipeline:.2f} s, t_worker = {t_worker:.2f} s, t_partition = {t_partition:.3f} s")
    print("| S (MB) | P | W | measured s | predicted s | error | |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for size, partitions, workers, seconds in points:
      expected = predict(size, partitions, workers, local_rate, constants)
      role = "fit" if size == min(args.sizes) else "prediction"
      print(f"| {size / MB:.0f} | {partitions} | {workers} | {seconds:.2f} | {expected:.2f} | "
            f"{(expected - seconds) / seconds:+.0%} | {role} |")
    for size in args.sizes:
      by_workers = {w: s for sz, p, w, s in points if sz == size and p == args.partitions[-1]}
      if 1 in by_workers and 2 in by_workers:
        print(f"2-worker speed-up at S={size / MB:.0f}MB, P={args.partitions[-1]}: {by_workers[1] / by_workers[2]:.2f}x")
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
