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
      "--name-bytes", type=int, default=16,
      help="bytes of each record's `name` feature (default 16: records of about 50 bytes)",
  )


def write_cross_product_side(path: pathlib.Path, count: int, name_bytes: int) -> None:
  """`count` Examples: `id` int64, `name` bytes (shared with the other side), `score` float."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tf.io.TFRecordWriter(str(path)) as writer:
    for index in range(count):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
          "name": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[f"{path.stem}-{index}".encode().ljust(name_bytes, b".")])),
          "score": tf.train.Feature(float_list=tf.train.FloatList(value=[index / 7])),
      })).SerializeToString())
  os.sync()


def _prefixed_records(path: pathlib.Path, prefix: str) -> list[bytes]:
  """Every record of a file with `prefix` before each feature name, via protobuf."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  renamed = []
  for record in tf.compat.v1.io.tf_record_iterator(str(path)):
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


def cross_product_builder(left_path: pathlib.Path, right_path: pathlib.Path, data_dir: pathlib.Path) -> None:
  """The cross_product builder (default product, prefix policy), into a fresh data_dir."""
  from tfds_builders.cross_product import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.cross_product import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", left=[str(left_path)], right=[str(right_path)])
  with quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def run_cross_product(args: argparse.Namespace, work_dir: pathlib.Path) -> list[Row]:
  """builder vs floor vs seed on two files of N = M = ceil(sqrt(pairs)) records."""
  rows: list[Row] = []
  for wanted in sorted(args.pairs_sweep or [args.pairs]):
    side = int(np.ceil(np.sqrt(wanted)))
    left_path, right_path = work_dir / f"left-{side}.tfrecord", work_dir / f"right-{side}.tfrecord"
    print(f"cross_product: writing {side} x {side} records", file=sys.stderr)
    write_cross_product_side(left_path, side, args.name_bytes)
    write_cross_product_side(right_path, side, args.name_bytes)
    for path in (left_path, right_path):
      warm_page_cache(path)
    # "input" is the bytes of the pairs the floor writes: the size of the work.
    pair_bytes = side * sum(len(r) for r in _prefixed_records(left_path, "left/")) + side * sum(
        len(r) for r in _prefixed_records(right_path, "right/"))
    phases = [
        Phase("builder", lambda out: cross_product_builder(left_path, right_path, out)),
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
      print(profile_call(lambda: cross_product_builder(left_path, right_path, out), args.profile_top))
      shutil.rmtree(out)
    left_path.unlink()
    right_path.unlink()
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
    # concatenated, augmented, database: not yet measured.
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
