"""Benchmarks a builder against a raw-TFRecord floor and a seed peer, in one process."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import dataclasses
import datetime
import gc
import io
import os
import pathlib
import platform
import pstats
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MB = 1_000_000
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_READ_BLOCK = 8 * 1024 * 1024


# --------------------------------------------------------------------------
# Shared helpers: sizes, memory, timing, reporting.
# --------------------------------------------------------------------------


def parse_size(text: str) -> int:
  """Parses `100MB`, `2GB`, `1.5GiB` or `4096` into bytes (MB = 10**6, MiB = 2**20)."""
  match = _SIZE.match(text)
  unit = match.group(2).lower() if match else None
  if unit not in _UNITS:
    raise argparse.ArgumentTypeError(
        f"invalid size {text!r}: use a number with an optional unit, e.g. "
        "100MB, 2GB, 512MiB (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
    )
  size = int(float(match.group(1)) * _UNITS[unit])
  if size <= 0:
    raise argparse.ArgumentTypeError(f"size {text!r} must be positive")
  return size


def parse_sizes(text: str) -> list[int]:
  """Parses a comma-separated list of sizes, e.g. `100MB,2GB`."""
  return [parse_size(part) for part in text.split(",") if part.strip()]


def parse_shape(text: str) -> tuple[int, ...]:
  """Parses `32,32,3` or `32x32x3` into a shape tuple."""
  try:
    shape = tuple(int(part) for part in re.split(r"[,x]", text.strip()) if part)
  except ValueError:
    shape = ()
  if not shape or min(shape) <= 0:
    raise argparse.ArgumentTypeError(
        f"invalid shape {text!r}: use positive ints, e.g. 32,32,3"
    )
  return shape


def format_size(num_bytes: float) -> str:
  """`2000000000` -> `2GB`, in the decimal units the CLI accepts."""
  for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
    if num_bytes >= factor:
      return f"{num_bytes / factor:.4g}{unit}"
  return f"{int(num_bytes)}B"


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise OSError(f"/proc/self/status has no {field}")


def current_rss_mb() -> float:
  """Resident set size of this process now, in MB (10**6 bytes)."""
  return _status_kib("VmRSS") * 1024 / MB


def _clear_refs() -> None:
  with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")


def clear_refs_works() -> bool:
  """Whether writing 5 to /proc/self/clear_refs resets VmHWM (Linux >= 4.0)."""
  try:
    spike = bytearray(64 * MB)  # touched: bytearray zero-fills every page
    del spike
    _clear_refs()
    return _status_kib("VmHWM") <= _status_kib("VmRSS") + 16 * 1024
  except OSError:
    return False


def release_free_memory() -> None:
  """Collects garbage and hands freed malloc pages back to the OS (glibc)."""
  gc.collect()
  with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRss:
  """Peak resident memory of one phase, by VmHWM reset or by 10 ms sampling."""

  def __init__(self, method: str):
    self.method = method
    self.start_mb = 0.0
    self.peak_mb = 0.0
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def __enter__(self) -> PeakRss:
    self.start_mb = current_rss_mb()
    self.peak_mb = self.start_mb
    if self.method == "clear_refs":
      _clear_refs()
    else:
      self._stop.clear()
      self._thread = threading.Thread(target=self._sample, daemon=True)
      self._thread.start()
    return self

  def _sample(self) -> None:
    while not self._stop.wait(0.01):
      self.peak_mb = max(self.peak_mb, current_rss_mb())

  def __exit__(self, *exc_info: object) -> None:
    if self.method == "clear_refs":
      self.peak_mb = _status_kib("VmHWM") * 1024 / MB
    else:
      self._stop.set()
      assert self._thread is not None
      self._thread.join()
      self.peak_mb = max(self.peak_mb, current_rss_mb())


@dataclasses.dataclass
class Row:
  """The best of `repeat` runs of one phase on one input size."""

  case: str
  phase: str
  input_bytes: int
  examples: int
  seconds: float = float("inf")
  cpu_seconds: float = float("inf")
  peak_rss_mb: float = 0.0
  delta_rss_mb: float = 0.0

  @property
  def mb_per_s(self) -> float:
    return self.input_bytes / self.seconds / MB

  @property
  def examples_per_s(self) -> float:
    return self.examples / self.seconds


@dataclasses.dataclass
class Phase:
  """One timed contender: `run(out_dir)` does the work, writing under `out_dir`."""

  name: str
  run: Callable[[pathlib.Path], None]


def run_once(phase: Phase, row: Row, out_dir: pathlib.Path, rss_method: str) -> None:
  """Times one run of `phase` and folds it into `row` (best time, highest peak)."""
  release_free_memory()
  out_dir.mkdir(parents=True)
  with PeakRss(rss_method) as rss:
    cpu_start, start = time.process_time(), time.perf_counter()
    phase.run(out_dir)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  row.seconds = min(row.seconds, seconds)
  row.cpu_seconds = min(row.cpu_seconds, cpu)
  row.peak_rss_mb = max(row.peak_rss_mb, rss.peak_mb)
  row.delta_rss_mb = max(row.delta_rss_mb, rss.peak_mb - rss.start_mb)
  shutil.rmtree(out_dir)
  release_free_memory()
  os.sync()  # write-back of this run's output must not land in the next one


def measure(
    case: str,
    phases: Sequence[Phase],
    *,
    input_bytes: int,
    examples: int,
    repeat: int,
    work_dir: pathlib.Path,
    rss_method: str,
) -> list[Row]:
  """Runs the phases round-robin `repeat` times; each keeps its best time.

  Round-robin order (A, B, C, A, B, C, ...) spreads the machine's noise over
  every phase instead of letting one phase absorb a slow period.
  """
  rows = [Row(case, phase.name, input_bytes, examples) for phase in phases]
  for attempt in range(repeat):
    for phase, row in zip(phases, rows):
      print(f"  {phase.name} run {attempt + 1}/{repeat} ...", file=sys.stderr, flush=True)
      run_once(phase, row, work_dir / f"out-{phase.name}-{attempt}", rss_method)
  return rows


def warm_page_cache(path: pathlib.Path) -> None:
  """Reads a file once so every timed phase finds it in the page cache."""
  buffer = bytearray(_READ_BLOCK)
  with open(path, "rb", buffering=0) as file:
    while file.readinto(buffer):
      pass


def profile_call(function: Callable[[], None], top: int) -> str:
  """Runs `function` under cProfile; returns the top entries by self and cumulative time."""
  profiler = cProfile.Profile()
  profiler.runcall(function)
  text = io.StringIO()
  stats = pstats.Stats(profiler, stream=text).strip_dirs()
  for order in ("tottime", "cumulative"):
    text.write(f"\n--- top {top} by {order} ---\n")
    stats.sort_stats(order).print_stats(top)
  return text.getvalue()


def _ratio(numerator: Row | None, denominator: Row | None, field: str) -> str:
  if numerator is None or denominator is None:
    return "-"
  return f"{getattr(numerator, field) / getattr(denominator, field):.2f}"


def format_table(rows: Sequence[Row]) -> str:
  """A Markdown table of rows, with builder/floor and seed/builder time ratios."""
  lines = [
      "| input | phase | examples | seconds | cpu s | MB/s | examples/s "
      "| peak RSS MB | Δ RSS MB | builder/floor | seed/builder |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for size in sorted({row.input_bytes for row in rows}):
    group = {row.phase: row for row in rows if row.input_bytes == size}
    builder = group.get("builder")
    for row in group.values():
      to_floor = _ratio(builder, group.get("floor"), "seconds") if row.phase == "builder" else ""
      seed = _ratio(group.get("seed"), builder, "seconds") if row.phase == "builder" else ""
      lines.append(
          f"| {format_size(size)} | {row.phase} | {row.examples} | {row.seconds:.3f} "
          f"| {row.cpu_seconds:.3f} | {row.mb_per_s:.0f} | {row.examples_per_s:.0f} "
          f"| {row.peak_rss_mb:.0f} | {row.delta_rss_mb:.0f} | {to_floor} | {seed} |"
      )
  return "\n".join(lines)


def format_rss_sweep(rows: Sequence[Row]) -> str:
  """Per phase: peak RSS at the largest input over the smallest one."""
  sizes = sorted({row.input_bytes for row in rows})
  if len(sizes) < 2:
    return ""
  small, large = sizes[0], sizes[-1]
  lines = [
      f"RSS sweep {format_size(small)} -> {format_size(large)} "
      "(goal for the builder: peak ratio <= 1.15)",
      "| phase | peak RSS MB small | peak RSS MB large | peak large/small "
      "| Δ RSS MB small | Δ RSS MB large |",
      "|---|---:|---:|---:|---:|---:|",
  ]
  by_key = {(row.phase, row.input_bytes): row for row in rows}
  for phase in dict.fromkeys(row.phase for row in rows):
    low, high = by_key.get((phase, small)), by_key.get((phase, large))
    if low and high:
      lines.append(
          f"| {phase} | {low.peak_rss_mb:.0f} | {high.peak_rss_mb:.0f} "
          f"| {high.peak_rss_mb / low.peak_rss_mb:.2f} "
          f"| {low.delta_rss_mb:.0f} | {high.delta_rss_mb:.0f} |"
      )
  return "\n".join(lines)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
  """Silences TFDS's progress prints so they do not interleave with the table."""
  with contextlib.redirect_stdout(io.StringIO()):
    yield


# --------------------------------------------------------------------------
# Cases: one per builder. Each returns the rows of all sizes it measured.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
  """A builder's benchmark: its CLI options and the function that measures it."""

  help: str
  run: Callable[[argparse.Namespace, pathlib.Path], list[Row]]
  add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def _numpy_arrays_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("numpy_arrays options")
  group.add_argument(
      "--example-shape", type=parse_shape, default=(32, 32, 3), metavar="SHAPE",
      help="shape of one example (one row of the .npy), e.g. 32,32,3 (default)",
  )
  group.add_argument(
      "--dtype", default="float32", help="dtype of the array (default float32)",
  )


def write_rows_npy(
    path: pathlib.Path, size: int, example_shape: tuple[int, ...], dtype: np.dtype
) -> int:
  """Writes a random `(N, *example_shape)` `.npy` of at most `size` data bytes.

  Returns:
    N, the number of rows (examples) written.
  """
  row_bytes = dtype.itemsize * int(np.prod(example_shape))
  rows = max(1, size // row_bytes)
  rng = np.random.default_rng(0)
  header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
            "shape": (rows, *example_shape)}
  chunk_rows = max(1, 64 * MB // row_bytes)
  with open(path, "wb") as file:
    np.lib.format.write_array_header_1_0(file, header)
    for start in range(0, rows, chunk_rows):
      count = min(chunk_rows, rows - start)
      file.write(_random_values(rng, dtype, count * row_bytes // dtype.itemsize).tobytes())
  os.sync()  # flush the writes now, not during a timed phase
  return rows


def _random_values(rng: np.random.Generator, dtype: np.dtype, count: int) -> np.ndarray:
  """Normal floats for float32/float64, random bytes viewed as `dtype` otherwise."""
  if dtype in (np.float32, np.float64):
    return rng.standard_normal(count, dtype=dtype)
  return rng.integers(0, 256, size=count * dtype.itemsize, dtype=np.uint8).view(dtype)


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


# The seed write-up's example 3 (/work/shared/seeds/002_*.txt), verbatim but
# for the TensorFlow import, which the seed has at module level.
def serialize_batch_numpy_array(arrays):
  """Serializes a batch of NumPy arrays into a list of tf.train.Example."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  serialized_examples = []
  for array in arrays:
    array_shape = array.shape
    array_bytes = array.tobytes()
    feature = {
        'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=array_shape)),
        'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[array_bytes])),
    }
    example_proto = tf.train.Example(features=tf.train.Features(feature=feature))
    serialized_examples.append(example_proto.SerializeToString())
  return serialized_examples


def write_batch_numpy_to_tfrecord(numpy_arrays, filename):
  """Writes a batch of NumPy arrays to a TFRecord file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  serialized_arrays = serialize_batch_numpy_array(numpy_arrays)
  with tf.io.TFRecordWriter(filename) as writer:
    for serialized_array in serialized_arrays:
      writer.write(serialized_array)


def seed_write(npy_path: pathlib.Path, out_path: pathlib.Path) -> None:
  """The seed peer: load the array into memory, then the seed's example 3."""
  write_batch_numpy_to_tfrecord(np.load(npy_path), str(out_path))


def builder_write(npy_path: pathlib.Path, data_dir: pathlib.Path) -> None:
  """The numpy_arrays builder on one rows-layout `.npy`, into a fresh data_dir."""
  from tfds_builders.numpy_arrays import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.numpy_arrays import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", splits={"train": [str(npy_path)]})
  with quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def run_numpy_arrays(args: argparse.Namespace, work_dir: pathlib.Path) -> list[Row]:
  """builder vs floor vs seed on a rows `.npy` of each requested size."""
  dtype = np.dtype(args.dtype)
  rows: list[Row] = []
  for size in args.sizes:
    npy_path = work_dir / f"input-{size}.npy"
    print(f"numpy_arrays: writing {format_size(size)} input {npy_path}", file=sys.stderr)
    examples = write_rows_npy(npy_path, size, args.example_shape, dtype)
    input_bytes = examples * dtype.itemsize * int(np.prod(args.example_shape))
    warm_page_cache(npy_path)
    phases = [
        Phase("builder", lambda out: builder_write(npy_path, out)),
        Phase("floor", lambda out: floor_write(npy_path, out / "floor.tfrecord")),
    ]
    if not args.skip_seed:
      phases.append(Phase("seed", lambda out: seed_write(npy_path, out / "seed.tfrecord")))
    rows += measure(
        "numpy_arrays", phases, input_bytes=input_bytes, examples=examples,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      out = work_dir / "out-profile"
      print(f"\ncProfile of one builder run on {format_size(input_bytes)}:")
      print(profile_call(lambda: builder_write(npy_path, out), args.profile_top))
      shutil.rmtree(out)
    npy_path.unlink()
  return rows


# -- cross_product -----------------------------------------------------------


def parse_count(text: str) -> int:
  """Parses `10000`, `1e7`, `10k` or `10M` (k = 10**3, M = 10**6) into a count."""
  match = re.match(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmg]?)\s*$", text, re.IGNORECASE)
  if not match:
    raise argparse.ArgumentTypeError(f"invalid count {text!r}: use e.g. 10000, 1e7, 10k or 10M")
  count = int(float(match.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()])
  if count <= 0:
    raise argparse.ArgumentTypeError(f"count {text!r} must be positive")
  return count


def _cross_product_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("cross_product options (sizes are pair counts, not bytes)")
  counts = group.add_mutually_exclusive_group()
  counts.add_argument(
      "--pairs", type=parse_count, default=10**6, metavar="COUNT",
      help="pairs to write, N = M = ceil(sqrt(COUNT)) records per side (default 1M)",
  )
  counts.add_argument(
      "--pairs-sweep", type=lambda text: [parse_count(p) for p in text.split(",") if p.strip()],
      metavar="COUNTS", help="comma-separated pair counts, e.g. 1e4,1e7: measure each and "
      "report peak RSS largest/smallest",
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
      "--memory-budget", type=parse_size, metavar="SIZE",
      help="the builder's memory_budget_bytes (default: the builder's, 256MiB); a budget "
      "below the right side's size measures the blocked path (right side re-read per left row)",
  )


def write_cross_product_side(path: pathlib.Path, count: int, name_bytes: int, embedding_size: int) -> None:
  """`count` Examples: `id` int64, `name` bytes (on both sides), `score` float;
  with `embedding_size`, also `embedding` floats and two `tags`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(count)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for index in range(count):
      feature = {
          "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
          "name": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[f"{path.stem}-{index}".encode().ljust(name_bytes, b".")])),
          "score": tf.train.Feature(float_list=tf.train.FloatList(value=[index / 7])),
      }
      if embedding_size:
        feature["embedding"] = tf.train.Feature(float_list=tf.train.FloatList(
            value=rng.standard_normal(embedding_size, dtype=np.float32)))
        feature["tags"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"tag-a", b"tag-b"]))
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  os.sync()


def _prefixed_records(path: pathlib.Path, prefix: str) -> list[bytes]:
  """Every record of a file with `prefix` before each feature name, via protobuf."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.util import deprecation  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import

  renamed = []
  with deprecation.silence():  # deprecated for eager use, yet the fastest reader
    records = tf.compat.v1.io.tf_record_iterator(str(path))
  for record in records:
    features = tf.train.Example.FromString(record).features.feature
    renamed.append(tf.train.Example(features=tf.train.Features(
        feature={prefix + name: value for name, value in features.items()}
    )).SerializeToString())
  return renamed


def cross_product_floor(left_path: pathlib.Path, right_path: pathlib.Path, out_path: pathlib.Path) -> None:
  """The floor: rename each side's keys once, then byte-concatenate every pair into one writer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  left = _prefixed_records(left_path, "left/")
  right = _prefixed_records(right_path, "right/")
  with tf.io.TFRecordWriter(str(out_path)) as writer:
    write = writer.write
    for left_record in left:
      for right_record in right:
        write(left_record + right_record)


# The seed write-up's example 2 (/work/shared/seeds/001_*.txt), verbatim.
def combine_tfrecords_with_overlap_handling(file1_path, file2_path, output_path, prefix1="file1_", prefix2="file2_"):
  """Combines TFRecords, handling overlapping feature names by prefixing them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(output_path) as writer:
    for example1 in tf.compat.v1.python_io.tf_record_iterator(file1_path):
      for example2 in tf.compat.v1.python_io.tf_record_iterator(file2_path):
        example1_proto = tf.train.Example.FromString(example1)
        example2_proto = tf.train.Example.FromString(example2)
        combined_features = {}
        for key, value in example1_proto.features.feature.items():
          combined_features[prefix1 + key] = value
        for key, value in example2_proto.features.feature.items():
          combined_features[prefix2 + key] = value

        combined_example = tf.train.Example(features=tf.train.Features(feature=combined_features))
        writer.write(combined_example.SerializeToString())


def cross_product_builder(
    left_path: pathlib.Path, right_path: pathlib.Path, data_dir: pathlib.Path, memory_budget: int | None = None
) -> None:
  """The cross_product builder (default product, prefix policy), into a fresh data_dir."""
  from tfds_builders.cross_product import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.cross_product import BuilderConfig  # pylint: disable=g-import-not-at-top

  budget = {"memory_budget_bytes": memory_budget} if memory_budget else {}
  config = BuilderConfig(name="bench", left=[str(left_path)], right=[str(right_path)], **budget)
  with quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def run_cross_product(args: argparse.Namespace, work_dir: pathlib.Path) -> list[Row]:
  """builder vs floor vs seed on two files of N = M = ceil(sqrt(pairs)) records."""
  rows: list[Row] = []
  for wanted in sorted(args.pairs_sweep or [args.pairs]):
    side = int(np.ceil(np.sqrt(wanted)))
    left_path, right_path = work_dir / f"left-{side}.tfrecord", work_dir / f"right-{side}.tfrecord"
    print(f"cross_product: writing {side} x {side} records", file=sys.stderr)
    write_cross_product_side(left_path, side, args.name_bytes, args.embedding_size)
    write_cross_product_side(right_path, side, args.name_bytes, args.embedding_size)
    for path in (left_path, right_path):
      warm_page_cache(path)
    # "input" is the bytes of the pairs the floor writes: the size of the work.
    pair_bytes = side * sum(len(r) for r in _prefixed_records(left_path, "left/")) + side * sum(
        len(r) for r in _prefixed_records(right_path, "right/"))
    phases = [
        Phase("builder", lambda out: cross_product_builder(left_path, right_path, out, args.memory_budget)),
        Phase("floor", lambda out: cross_product_floor(left_path, right_path, out / "floor.tfrecord")),
    ]
    if not args.skip_seed:
      phases.append(Phase("seed", lambda out: combine_tfrecords_with_overlap_handling(
          str(left_path), str(right_path), str(out / "seed.tfrecord"))))
    rows += measure(
        "cross_product", phases, input_bytes=pair_bytes, examples=side * side,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      out = work_dir / "out-profile"
      print(f"\ncProfile of one builder run on {side * side} pairs:")
      print(profile_call(
          lambda: cross_product_builder(left_path, right_path, out, args.memory_budget), args.profile_top))
      shutil.rmtree(out)
    left_path.unlink()
    right_path.unlink()
  return rows


# -- augmented ---------------------------------------------------------------


def _augmented_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("augmented options")
  group.add_argument(
      "--record-bytes", type=parse_size, default=parse_size("10KB"), metavar="SIZE",
      help="bytes of each base record's `image` feature (default 10KB); the new "
      "fields (label int64, weight float64) add about 30 bytes",
  )


def write_augmented_base(work_dir: pathlib.Path, size: int, record_bytes: int) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path, int]:
  """A raw TFRecord base (`id`, `image`), the same file as a prepared TFDS dataset, and labels.csv.

  Returns:
    The raw file, the prepared dataset's version directory, the side table,
    and the number of records.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  count = max(1, size // record_bytes)
  raw_path = work_dir / "base.tfrecord"
  rng = np.random.default_rng(0)
  with tf.io.TFRecordWriter(str(raw_path)) as writer:
    for index in range(count):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
          "image": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[rng.integers(0, 256, record_bytes, dtype=np.uint8).tobytes()])),
      })).SerializeToString())
  table_path = work_dir / "labels.csv"
  with open(table_path, "w") as table:
    table.write("id,label,weight\n")
    table.writelines(f"{index},{index % 10},{index / 7}\n" for index in range(count))
  # The same records as a prepared dataset, registered without a rewrite: the
  # way to give TFDS (and the builder) existing TFRecords with known features.
  prepared_dir = work_dir / "prepared" / "bench_base" / "1.0.0"
  prepared_dir.mkdir(parents=True)
  os.link(raw_path, prepared_dir / "bench_base-train.tfrecord-00000-of-00001")
  with quiet_stdout():
    tfds.folder_dataset.write_metadata(
        data_dir=prepared_dir,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "image": tfds.features.Tensor(shape=(), dtype=np.str_),
        }),
        split_infos=[tfds.core.SplitInfo(name="train", shard_lengths=[count], num_bytes=raw_path.stat().st_size)],
        filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        check_data=False,
    )
  os.sync()
  return raw_path, prepared_dir, table_path, count


def augmented_floor(raw_path: pathlib.Path, table_path: pathlib.Path, out_path: pathlib.Path) -> None:
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


# The seed write-up's example 1 (/work/shared/seeds/003_*.txt), verbatim but for
# `example_pb2`, the write-up's stand-in for the Example proto: tf.train here.
def append_field(tfrecord_path_in, tfrecord_path_out):
  """Appends a bytes `label` computed from each example's image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(tfrecord_path_out) as writer:
    for raw_record in tf.data.TFRecordDataset(tfrecord_path_in):
      example = tf.train.Example()
      example.ParseFromString(raw_record.numpy())

      # Add the new field; replace with your actual logic
      new_label = calculate_label(example.features.feature['image'].bytes_list.value[0])  # example logic
      example.features.feature['label'].bytes_list.value.append(new_label.encode())

      writer.write(example.SerializeToString())


def calculate_label(image_bytes):
  """The seed's placeholder label."""
  del image_bytes
  return "somelabel"


def augmented_builder(base: dict[str, object], table_path: pathlib.Path, mode: str, data_dir: pathlib.Path) -> None:
  """The augmented builder joining labels.csv on id, into a fresh data_dir."""
  from tfds_builders.augmented import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.augmented import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", side_table=str(table_path), join_key="id", mode=mode, **base)
  with quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def format_augmented_ratios(rows: Sequence[Row]) -> str:
  """materialize/floor and materialize/overlay time ratios, per input size and base kind."""
  lines = [
      "| input | base | materialize/floor (goal <= 1.5) | materialize/overlay (goal >= 10) |",
      "|---|---|---:|---:|",
  ]
  for size in sorted({row.input_bytes for row in rows}):
    group = {row.phase: row for row in rows if row.input_bytes == size}
    for label, materialize, overlay in (("raw TFRecords", "builder", "overlay"),
                                        ("prepared", "materialize_prepared", "overlay_prepared")):
      lines.append(
          f"| {format_size(size)} | {label} | {_ratio(group.get(materialize), group.get('floor'), 'seconds')} "
          f"| {_ratio(group.get(materialize), group.get(overlay), 'seconds')} |"
      )
  return "\n".join(lines)


def run_augmented(args: argparse.Namespace, work_dir: pathlib.Path) -> list[Row]:
  """materialize and overlay, on a raw and a prepared base, vs floor and seed, per size."""
  rows: list[Row] = []
  for size in args.sizes:
    size_dir = work_dir / f"input-{size}"
    size_dir.mkdir()
    print(f"augmented: writing a {format_size(size)} base in {size_dir}", file=sys.stderr)
    raw_path, prepared_dir, table_path, count = write_augmented_base(size_dir, size, args.record_bytes)
    warm_page_cache(raw_path)
    raw_base = {"base_records": {"train": [str(raw_path)]}}
    prepared_base = {"base": str(prepared_dir)}
    phases = [
        Phase("builder", lambda out: augmented_builder(raw_base, table_path, "materialize", out)),
        Phase("floor", lambda out: augmented_floor(raw_path, table_path, out / "floor.tfrecord")),
        Phase("overlay", lambda out: augmented_builder(raw_base, table_path, "overlay", out)),
        Phase("materialize_prepared", lambda out: augmented_builder(prepared_base, table_path, "materialize", out)),
        Phase("overlay_prepared", lambda out: augmented_builder(prepared_base, table_path, "overlay", out)),
    ]
    if not args.skip_seed:
      phases.append(Phase("seed", lambda out: append_field(str(raw_path), str(out / "seed.tfrecord"))))
    rows += measure(
        "augmented", phases, input_bytes=raw_path.stat().st_size, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      for mode, base in (("materialize", raw_base), ("overlay", prepared_base)):
        out = work_dir / "out-profile"
        print(f"\ncProfile of one {mode} run ({next(iter(base))}) on {format_size(size)}:")
        print(profile_call(lambda: augmented_builder(base, table_path, mode, out), args.profile_top))
        shutil.rmtree(out)
    shutil.rmtree(size_dir)
  print(f"\naugmented ratios (builder = materialize on the raw base):\n{format_augmented_ratios(rows)}")
  return rows


# -- concatenated ------------------------------------------------------------


def _concatenated_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("concatenated options")
  group.add_argument(
      "--num-sources", type=int, default=2, metavar="N",
      help="number of sources the input is divided into (default 2)",
  )
  group.add_argument(
      "--source-kind", choices=("tfds", "tfrecord"), default="tfds",
      help="sources as prepared TFDS datasets (default) or raw TFRecord globs, "
      "whose schema inference reads every record once more before writing",
  )
  group.add_argument(
      "--compression-table", action="store_true",
      help="also build with zlib_features=[tokens] and --file_format array_record, "
      "and on the bundled dummy_data; print size and build time of each",
  )


def write_concatenated_sources(work_dir: pathlib.Path, size: int, count: int) -> tuple[list[pathlib.Path], list[pathlib.Path], int]:
  """Raw TFRecord sources of about `size` bytes in all, and the same files as prepared datasets.

  Each example: `image` (3072 bytes of low-entropy pixels, so compression has
  something to gain), `label` (int64) and `tokens` (0-63 int64 values).

  Returns:
    The raw files, the prepared datasets' version directories, the example count.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  total = max(count, size // 3300)
  raw_paths, prepared_dirs = [], []
  for number in range(count):
    raw_path = work_dir / f"site_{number}.tfrecord"
    examples = total // count
    with tf.io.TFRecordWriter(str(raw_path)) as writer:
      for index in range(examples):
        tokens = rng.integers(0, 1000, index % 64).tolist()
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[rng.integers(0, 16, 3072, dtype=np.uint8).tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 10])),
            "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=tokens)),
        })).SerializeToString())
    prepared_dir = work_dir / "prepared" / f"site_{number}" / "1.0.0"
    prepared_dir.mkdir(parents=True)
    os.link(raw_path, prepared_dir / f"site_{number}-train.tfrecord-00000-of-00001")
    with quiet_stdout():
      tfds.folder_dataset.write_metadata(
          data_dir=prepared_dir,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Tensor(shape=(), dtype=np.str_),
              "label": tfds.features.ClassLabel(num_classes=10),
              "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int64),
          }),
          split_infos=[tfds.core.SplitInfo(name="train", shard_lengths=[examples],
                                           num_bytes=raw_path.stat().st_size)],
          filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
          check_data=False,
      )
    raw_paths.append(raw_path)
    prepared_dirs.append(prepared_dir)
  os.sync()
  return raw_paths, prepared_dirs, (total // count) * count


def concatenated_floor(paths: Sequence[pathlib.Path], out_path: pathlib.Path) -> None:
  """The floor: every source record, read and written as it is with one TFRecordWriter."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(str(out_path)) as writer:
    for path in paths:
      for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        writer.write(record)


def concatenated_builder(sources: list[dict], data_dir: pathlib.Path, **options) -> object:
  """The concatenated builder on the sources, into a fresh data_dir; returns it."""
  from tfds_builders.concatenated import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.concatenated import BuilderConfig  # pylint: disable=g-import-not-at-top

  file_format = options.pop("file_format", None)
  config = BuilderConfig(name="bench", sources=sources, **options)
  with quiet_stdout():
    builder = Builder(config=config, data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare()
  return builder


# The seed write-up's example 2 (/work/shared/seeds/000_*.txt), with its two
# datasets being our sources read by TFDS and concatenated by tf.data; tokens,
# which vary in length, are padded as in its example 3.
def seed_concatenate_and_zip(dataset_dirs: Sequence[pathlib.Path], out_dir: pathlib.Path) -> None:
  """list -> np.array -> np.savez_compressed -> zip, as the seed does."""
  import zipfile  # pylint: disable=g-import-not-at-top

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  datasets = [tfds.builder_from_directory(str(d)).as_dataset(split="train") for d in dataset_dirs]
  concatenated_dataset = datasets[0]
  for dataset in datasets[1:]:
    concatenated_dataset = concatenated_dataset.concatenate(dataset)
  images = []
  labels = []
  sequences = []
  for example in concatenated_dataset:
    images.append(example["image"].numpy())
    labels.append(example["label"].numpy())
    sequences.append(example["tokens"].numpy())
  max_length = max(len(seq) for seq in sequences)
  padded_sequences = [np.pad(seq, (0, max_length - len(seq)), "constant") for seq in sequences]
  images_array = np.array(images)
  labels_array = np.array(labels)
  padded_array = np.array(padded_sequences)
  npz_path = out_dir / "concatenated_images.npz"
  np.savez_compressed(npz_path, images=images_array, labels=labels_array, tokens=padded_array)
  with zipfile.ZipFile(out_dir / "concatenated_images.zip", "w") as zipf:
    zipf.write(npz_path)
  os.remove(npz_path)


def _dir_bytes(path: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def format_concatenated_ratios(rows: Sequence[Row]) -> str:
  """build/floor and seed/export time ratios per input size."""
  lines = [
      "| input | builder/floor (goal <= 1.5) | seed/export-npz-stored (goal >= 3) "
      "| seed/export-npz-deflate | seed/export-tfrecord |",
      "|---|---:|---:|---:|---:|",
  ]
  for size in sorted({row.input_bytes for row in rows}):
    group = {row.phase: row for row in rows if row.input_bytes == size}
    seed = group.get("seed-export")
    lines.append(
        f"| {format_size(size)} | {_ratio(group.get('builder'), group.get('floor'), 'seconds')} "
        f"| {_ratio(seed, group.get('export-npz-stored'), 'seconds')} "
        f"| {_ratio(seed, group.get('export-npz-deflate'), 'seconds')} "
        f"| {_ratio(seed, group.get('export-tfrecord'), 'seconds')} |"
    )
  return "\n".join(lines)


_COMPRESSION_HEADER = (
    "| input | output | build s | dataset bytes | tfrecord zip stored | tfrecord zip deflate |\n"
    "|---|---|---:|---:|---:|---:|"
)


def concatenated_compression_rows(sources: list[dict], work_dir: pathlib.Path, label: str) -> list[str]:
  """Size and build time of each output compression TFDS offers, plus the zip of each export."""
  from tfds_builders import archive  # pylint: disable=g-import-not-at-top

  variants = {
      "tfrecord": {},
      "tfrecord + zlib_features=[tokens]": {"zlib_features": ["tokens"]},
      "array_record (TFDS: group_size:1, zstd)": {"file_format": "array_record"},
  }
  lines = []
  for name, options in variants.items():
    out = work_dir / "out-compression"
    start = time.perf_counter()
    builder = concatenated_builder(sources, out, **dict(options))
    seconds = time.perf_counter() - start
    sizes = ["-", "-"]
    if "file_format" not in options:
      sizes = []
      for compression in ("stored", "deflate"):
        zip_path = archive.export(builder.data_path, work_dir / "out.zip", compression=compression)
        sizes.append(str(os.path.getsize(zip_path)))
        zip_path.unlink()
    lines.append(f"| {label} | {name} | {seconds:.2f} | {_dir_bytes(pathlib.Path(builder.data_path))} "
                 f"| {sizes[0]} | {sizes[1]} |")
    shutil.rmtree(out)
  return lines


def run_concatenated(args: argparse.Namespace, work_dir: pathlib.Path) -> list[Row]:
  """Build vs floor, and export (npz, tfrecord) vs the seed, per size."""
  from tfds_builders import archive  # pylint: disable=g-import-not-at-top

  rows: list[Row] = []
  compression_rows = []
  if args.compression_table:
    from tfds_builders.concatenated import Builder  # pylint: disable=g-import-not-at-top

    demo = Builder.BUILDER_CONFIGS[0]
    compression_rows += concatenated_compression_rows(
        [dict(s, tfrecords={split: str(pathlib.Path(demo.data_root) / p) for split, p in s["tfrecords"].items()})
         for s in demo.sources], work_dir, "dummy_data")
  for size in args.sizes:
    size_dir = work_dir / f"input-{size}"
    size_dir.mkdir()
    print(f"concatenated: writing {args.num_sources} sources of {format_size(size)} in all", file=sys.stderr)
    raw_paths, prepared_dirs, count = write_concatenated_sources(size_dir, size, args.num_sources)
    for path in raw_paths:
      warm_page_cache(path)
    if args.source_kind == "tfds":
      sources = [{"name": d.parent.name, "dataset_dir": str(d)} for d in prepared_dirs]
    else:
      sources = [{"name": p.stem, "tfrecords": str(p)} for p in raw_paths]
    input_bytes = sum(p.stat().st_size for p in raw_paths)
    built = concatenated_builder(sources, size_dir / "built")
    built_dir = pathlib.Path(built.data_path)
    phases = [
        Phase("builder", lambda out: concatenated_builder(sources, out)),
        Phase("floor", lambda out: concatenated_floor(raw_paths, out / "floor.tfrecord")),
        Phase("export-npz-stored", lambda out: archive.export(built_dir, out / "a.zip", "npz")),
        Phase("export-npz-deflate", lambda out: archive.export(built_dir, out / "a.zip", "npz", compression="deflate")),
        Phase("export-tfrecord", lambda out: archive.export(built_dir, out / "a.zip", "tfrecord")),
    ]
    if not args.skip_seed:
      phases.append(Phase("seed-export", lambda out: seed_concatenate_and_zip(prepared_dirs, out)))
    rows += measure(
        "concatenated", phases, input_bytes=input_bytes, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.compression_table:
      compression_rows += concatenated_compression_rows(sources, work_dir, format_size(input_bytes))
    if args.profile:
      out = work_dir / "out-profile"
      print(f"\ncProfile of one builder run on {format_size(input_bytes)}:")
      print(profile_call(lambda: concatenated_builder(sources, out), args.profile_top))
      shutil.rmtree(out)
    shutil.rmtree(size_dir)
  if compression_rows:
    print("\nconcatenated compression (dataset bytes: every file of the version directory):")
    print("\n".join([_COMPRESSION_HEADER, *compression_rows]))
  print(f"\nconcatenated ratios ({args.source_kind} sources):\n{format_concatenated_ratios(rows)}")
  return rows


# -- database ----------------------------------------------------------------


_DATABASE_QUERY = "SELECT id, label, score, ratio, name, flag FROM tfds_bench.rows_{rows}"


def _database_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "database options (sizes are row counts of a generated PostgreSQL table; needs "
      "TFDS_BUILDERS_PG_DSN: `source scripts/start_postgres.sh`)")
  counts = group.add_mutually_exclusive_group()
  counts.add_argument(
      "--db-rows", type=parse_count, default=10**6, metavar="COUNT",
      help="rows of the table, e.g. 1M (default)",
  )
  counts.add_argument(
      "--db-rows-sweep", type=lambda text: [parse_count(p) for p in text.split(",") if p.strip()],
      metavar="COUNTS", help="comma-separated row counts, e.g. 100k,1M,10M: RSS sweep",
  )
  group.add_argument(
      "--db-keep-tables", action="store_true",
      help="keep the generated tables (schema tfds_bench) for the next run",
  )


def database_dsn() -> str:
  dsn = os.environ.get("TFDS_BUILDERS_PG_DSN", "")
  if not dsn:
    sys.exit("database: TFDS_BUILDERS_PG_DSN is not set; run `source scripts/start_postgres.sh`")
  return dsn


def database_table(dsn: str, rows: int) -> int:
  """Creates tfds_bench.rows_N with generate_series (unless it exists); returns its bytes."""
  import psycopg2  # pylint: disable=g-import-not-at-top

  table = f"tfds_bench.rows_{rows}"
  with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
    cursor.execute("CREATE SCHEMA IF NOT EXISTS tfds_bench")
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    if not cursor.fetchone()[0]:
      print(f"database: generating {table}", file=sys.stderr)
      cursor.execute(
          f"CREATE TABLE {table} AS SELECT g::int8 AS id, (g % 10)::int4 AS label, "
          "(g * 0.001)::float8 AS score, (g % 997)::float4 AS ratio, 'item ' || g AS name, "
          f"(g % 2 = 0) AS flag FROM generate_series(1, {int(rows)}) AS g"
      )
      cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
      cursor.execute(f"ANALYZE {table}")
    cursor.execute(f"SELECT count(*) FROM {table}")  # warms the server's cache
    cursor.execute("SELECT pg_table_size(%s::regclass)", [table])
    return cursor.fetchone()[0]


def database_drop_table(dsn: str, rows: int) -> None:
  import psycopg2  # pylint: disable=g-import-not-at-top

  with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
    cursor.execute(f"DROP TABLE IF EXISTS tfds_bench.rows_{int(rows)}")


def _database_example(id_, label, score, ratio, name, flag) -> bytes:
  """One row as a tf.train.Example via protobuf, as hand-written code does it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  feature = tf.train.Feature
  return tf.train.Example(features=tf.train.Features(feature={
      "id": feature(int64_list=tf.train.Int64List(value=[id_])),
      "label": feature(int64_list=tf.train.Int64List(value=[label])),
      "score": feature(float_list=tf.train.FloatList(value=[score])),
      "ratio": feature(float_list=tf.train.FloatList(value=[ratio])),
      "name": feature(bytes_list=tf.train.BytesList(value=[name])),
      "flag": feature(int64_list=tf.train.Int64List(value=[flag])),
  })).SerializeToString()


class _CopyToTFRecord(io.RawIOBase):
  """A file object for `copy_expert`: parses COPY text lines, writes Examples."""

  def __init__(self, writer, encode):
    super().__init__()
    self._writer = writer
    self._encode = encode
    self._rest = b""

  def writable(self) -> bool:
    return True

  def write(self, data) -> int:
    lines = (self._rest + bytes(data)).split(b"\n")
    self._rest = lines.pop()
    for line in lines:
      id_, label, score, ratio, name, flag = line.split(b"\t")
      self._writer.write(self._encode(
          int(id_), int(label), float(score), float(ratio), name, int(flag == b"t")))
    return len(data)


def _database_wire_encoder() -> Callable[..., bytes]:
  """Builds `_database_example`'s Example with core.serialization (the builder's encoder)."""
  from tfds_builders.core import serialization as wire  # pylint: disable=g-import-not-at-top

  keys = [wire.FeatureKey(name) for name in ("id", "label", "score", "ratio", "name", "flag")]

  def encode(id_, label, score, ratio, name, flag) -> bytes:
    return wire.example([
        wire.int64_feature(keys[0], (id_,)), wire.int64_feature(keys[1], (label,)),
        wire.float_feature(keys[2], np.array([score], np.float32)),
        wire.float_feature(keys[3], np.array([ratio], np.float32)),
        wire.bytes_feature(keys[4], name), wire.int64_feature(keys[5], (flag,)),
    ])

  return encode


def database_floor(dsn: str, query: str, out_path: pathlib.Path, wire: bool = False) -> None:
  """The floor: COPY (query) TO STDOUT, parse each line, tf.train.Example, TFRecordWriter.

  With `wire`, examples are built with core.serialization instead of protobuf
  objects: the floor with the builder's encoder.
  """
  import psycopg2  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
    with tf.io.TFRecordWriter(str(out_path)) as writer:
      target = _CopyToTFRecord(writer, _database_wire_encoder() if wire else _database_example)
      cursor.copy_expert(f"COPY ({query}) TO STDOUT", target, size=1 << 16)


def database_seed(dsn: str, query: str, out_path: pathlib.Path, batch_size: int | None = None) -> None:
  """The seed's path: pandas read_sql -> tf.data from_tensor_slices -> Examples -> TFRecord.

  With `batch_size`, the dataset is iterated in batches and rows are taken
  from the batch arrays: the same path, tuned (per-element tf.data iteration
  costs more than the rest).
  """
  import warnings  # pylint: disable=g-import-not-at-top

  import pandas as pd  # pylint: disable=g-import-not-at-top
  import psycopg2  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with psycopg2.connect(dsn) as connection, warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pandas prefers SQLAlchemy connectables
    frame = pd.read_sql(query, connection)
  dataset = tf.data.Dataset.from_tensor_slices(dict(frame))
  with tf.io.TFRecordWriter(str(out_path)) as writer:
    if not batch_size:
      for row in dataset.as_numpy_iterator():
        writer.write(_database_example(
            int(row["id"]), int(row["label"]), float(row["score"]), float(row["ratio"]),
            row["name"], int(row["flag"])))
      return
    for batch in dataset.batch(batch_size).as_numpy_iterator():
      for id_, label, score, ratio, name, flag in zip(
          batch["id"].tolist(), batch["label"].tolist(), batch["score"].tolist(),
          batch["ratio"].tolist(), batch["name"].tolist(), batch["flag"].tolist()):
        writer.write(_database_example(id_, label, score, ratio, name, int(flag)))


def database_builder(dsn: str, query: str, data_dir: pathlib.Path, **options) -> None:
  """The database builder on `query`, into a fresh data_dir."""
  from tfds_builders.database import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.database import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", dsn=dsn, query=query, **options)
  with quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def run_database(args: argparse.Namespace, work_dir: pathlib.Path) -> list[Row]:
  """builder vs floor (COPY) vs seed (pandas) on generated PostgreSQL tables."""
  dsn = database_dsn()
  rows: list[Row] = []
  for count in sorted(args.db_rows_sweep or [args.db_rows]):
    table_bytes = database_table(dsn, count)
    query = _DATABASE_QUERY.format(rows=count)
    phases = [
        Phase("builder", lambda out: database_builder(dsn, query, out)),
        Phase("floor", lambda out: database_floor(dsn, query, out / "floor.tfrecord")),
        Phase("floor_wire", lambda out: database_floor(dsn, query, out / "floor.tfrecord", wire=True)),
        Phase("builder_ordered", lambda out: database_builder(dsn, query, out, order_by="id")),
    ]
    if not args.skip_seed:
      phases += [
          Phase("seed", lambda out: database_seed(dsn, query, out / "seed.tfrecord")),
          Phase("seed_batched", lambda out: database_seed(dsn, query, out / "seed.tfrecord", 1024)),
      ]
    rows += measure(
        "database", phases, input_bytes=table_bytes, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      out = work_dir / "out-profile"
      print(f"\ncProfile of one builder run on {count} rows:")
      print(profile_call(lambda: database_builder(dsn, query, out), args.profile_top))
      shutil.rmtree(out)
    if not args.db_keep_tables:
      database_drop_table(dsn, count)
  return rows


CASES: dict[str, Case] = {
    "numpy_arrays": Case(
        help="rows-layout .npy -> TFRecord (floor: np.load mmap + tf.train.Example)",
        run=run_numpy_arrays,
        add_arguments=_numpy_arrays_arguments,
    ),
    "cross_product": Case(
        help="all pairs of two TFRecord files (sizes: --pairs; floor: rename once + "
        "byte concat + TFRecordWriter; seed: example 2)",
        run=run_cross_product,
        add_arguments=_cross_product_arguments,
    ),
    "augmented": Case(
        help="new fields joined from a CSV onto a TFRecord base: materialize and overlay, "
        "raw and prepared base (floor: parse + add + TFRecordWriter; seed: example 1)",
        run=run_augmented,
        add_arguments=_augmented_arguments,
    ),
    "concatenated": Case(
        help="sources copied into one dataset (floor: read + TFRecordWriter); export "
        "to npz/tfrecord zip vs the seed's example 2 (list -> np.array -> savez_compressed -> zip)",
        run=run_concatenated,
        add_arguments=_concatenated_arguments,
    ),
    "database": Case(
        help="rows of a generated PostgreSQL table (sizes: --db-rows; floor: COPY TO "
        "STDOUT + tf.train.Example + TFRecordWriter; seed: pandas read_sql + from_tensor_slices)",
        run=run_database,
        add_arguments=_database_arguments,
    ),
}


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  """The CLI: a builder name, the input size(s) and the measurement options."""
  cases = "\n".join(f"  {name:14s} {case.help}" for name, case in sorted(CASES.items()))
  parser = argparse.ArgumentParser(
      description=(
          "Times a builder, a raw TFRecord floor and the seed peer back to back in "
          "one process (page cache warmed, best of --repeat, round-robin), with "
          "per-phase peak RSS. Prints Markdown tables."
      ),
      epilog=f"builders:\n{cases}\n\nexample:\n  %(prog)s numpy_arrays --size 500MB\n"
      "  %(prog)s numpy_arrays --rss-sweep 100MB,2GB --skip-seed",
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
      "builder", metavar="BUILDER", choices=sorted(CASES),
      help=f"which builder to measure: {', '.join(sorted(CASES))}",
  )
  sizes = parser.add_mutually_exclusive_group()
  sizes.add_argument(
      "--size", type=parse_size, default=parse_size("500MB"),
      help="input data size, e.g. 100MB, 2GB, 512MiB (default 500MB)",
  )
  sizes.add_argument(
      "--rss-sweep", type=parse_sizes, metavar="SIZES",
      help="comma-separated sizes, e.g. 100MB,2GB: measure each (fresh files) and "
      "report peak RSS largest/smallest",
  )
  parser.add_argument(
      "--repeat", type=int, default=3, help="timed runs per phase; the best is kept (default 3)",
  )
  parser.add_argument(
      "--skip-seed", action="store_true",
      help="leave out the seed peer, which holds the whole dataset in memory "
      "(meant for inputs > 1GB)",
  )
  parser.add_argument(
      "--workdir", type=pathlib.Path,
      help="where inputs and outputs go (a temporary subdirectory, removed at the "
      "end; default: the system temp dir)",
  )
  parser.add_argument(
      "--rss-method", choices=("auto", "clear_refs", "sample"), default="auto",
      help="peak RSS by resetting VmHWM via /proc/self/clear_refs, or by sampling "
      "VmRSS every 10 ms (auto: clear_refs when it works)",
  )
  parser.add_argument(
      "--profile", action="store_true",
      help="after timing, run the builder once more under cProfile and print the top entries",
  )
  parser.add_argument(
      "--profile-top", type=int, default=25, metavar="N",
      help="how many cProfile entries to print per ordering (default 25)",
  )
  for case in CASES.values():
    if case.add_arguments:
      case.add_arguments(parser)
  return parser


def _versions() -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  cpu = "unknown"
  with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), cpu)
  return (
      f"{datetime.date.today()} | {os.cpu_count()} x {cpu} | Linux {platform.release()} | "
      f"Python {platform.python_version()} | TF {tf.__version__} | "
      f"TFDS {tfds.__version__} | NumPy {np.__version__}"
  )


def _quiet_tfds() -> None:
  import absl.logging  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.utils import gcs_utils  # pylint: disable=g-import-not-at-top

  gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
  absl.logging.set_verbosity(absl.logging.ERROR)
  tfds.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.repeat < 1:
    parser.error("--repeat must be at least 1")
  args.sizes = sorted(args.rss_sweep) if args.rss_sweep else [args.size]
  if not args.skip_seed and max(args.sizes) > 10**9:
    print("warning: the seed peer holds the whole input and its examples in "
          "memory (about 2x the input); pass --skip-seed to leave it out",
          file=sys.stderr)
  if args.rss_method == "auto":
    args.rss_method = "clear_refs" if clear_refs_works() else "sample"
  elif args.rss_method == "clear_refs" and not clear_refs_works():
    parser.error("/proc/self/clear_refs does not reset VmHWM here; use --rss-method sample")
  _quiet_tfds()
  print(f"machine: {_versions()}")
  print(f"method: best of {args.repeat}, round-robin, page cache warmed, "
        f"peak RSS via {args.rss_method}")
  if args.workdir:
    args.workdir.mkdir(parents=True, exist_ok=True)
  work_dir = pathlib.Path(tempfile.mkdtemp(prefix="tfds_bench_", dir=args.workdir))
  try:
    rows = CASES[args.builder].run(args, work_dir)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  print(f"\n{args.builder}:\n{format_table(rows)}")
  sweep = format_rss_sweep(rows)
  if sweep:
    print(f"\n{sweep}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
