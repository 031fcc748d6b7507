"""The measuring harness: sizes, timing, peak RSS, the load note and JSON results."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import dataclasses
import datetime
import gc
import io
import json
import math
import os
import pathlib
import platform
import pstats
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# One unit vocabulary for every benchmark: MB is decimal, MiB binary.
MB = 10**6
MIB = 2**20
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": MB, "mib": MIB,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_READ_BLOCK = 8 * MIB
RESULTS_DIR = pathlib.Path(__file__).parent / "results"


# --------------------------------------------------------------------------
# Sizes and counts on the command line.
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


def parse_count(text: str) -> int:
  """Parses `10000`, `1e7`, `10k` or `10M` (k = 10**3, M = 10**6) into a count."""
  match = re.match(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmg]?)\s*$", text, re.IGNORECASE)
  if not match:
    raise argparse.ArgumentTypeError(f"invalid count {text!r}: use e.g. 10000, 1e7, 10k or 10M")
  count = int(float(match.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()])
  if count <= 0:
    raise argparse.ArgumentTypeError(f"count {text!r} must be positive")
  return count


def parse_counts(text: str) -> list[int]:
  """Parses a comma-separated list of counts, e.g. `1e4,1e7`."""
  return [parse_count(part) for part in text.split(",") if part.strip()]


def add_count_arguments(group: Any, name: str, default: int, help_text: str,
                        sweep_help: str) -> None:
  """`--NAME COUNT` or `--NAME-sweep COUNTS` (one of the two): a case sized in counts, not bytes."""
  counts = group.add_mutually_exclusive_group()
  counts.add_argument(f"--{name}", type=parse_count, default=default, metavar="COUNT", help=help_text)
  counts.add_argument(f"--{name}-sweep", type=parse_counts, metavar="COUNTS", help=sweep_help)


def format_size(num_bytes: float) -> str:
  """`2000000000` -> `2GB`, in the decimal units the CLI accepts."""
  for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", MB), ("KB", 10**3)):
    if num_bytes >= factor:
      return f"{num_bytes / factor:.4g}{unit}"
  return f"{int(num_bytes)}B"


def format_count(count: int) -> str:
  """`10000` -> `10k`, `10000000` -> `10M`: the counts `parse_count` accepts."""
  for unit, factor in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
    if count >= factor and count % factor == 0:
      return f"{count // factor}{unit}"
  return str(count)


# --------------------------------------------------------------------------
# Memory.
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------


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
  role: str = "other"
  load_before: float | None = None  # 1-minute load average around the best run
  load_after: float | None = None
  load_max: float = 0.0  # the highest 1-minute load around any of its runs

  @property
  def mb_per_s(self) -> float:
    return self.input_bytes / self.seconds / MB

  @property
  def examples_per_s(self) -> float:
    return self.examples / self.seconds


@dataclasses.dataclass(frozen=True)
class Measured:
  """What a phase timed itself (a build in another process): it replaces the harness's own figures."""

  seconds: float
  cpu_seconds: float
  peak_rss_mb: float
  delta_rss_mb: float


@dataclasses.dataclass
class Phase:
  """One timed contender: `run(out_dir)` does the work, writing under `out_dir`.

  Attributes:
    name: The phase as tables name it.
    run: Does the work; may return the `Measured` figures of a run in another process.
    role: `builder` (ours), `physical` (a physical floor: a copy of the same bytes, the
      raw read), `peer` (the best other way to the same output), `seed`, `baseline`
      (ours, an older checkout: `NAME@baseline` beside `NAME`) or `other`.
    examples: Examples this phase writes, when not the case's count (skip_row).
  """

  name: str
  run: Callable[[pathlib.Path], Measured | None]
  role: str = "other"
  examples: int | None = None


def one_minute_load() -> float | None:
  try:
    return os.getloadavg()[0]
  except OSError:
    return None


def warn_if_loaded(load: float | None, what: str) -> bool:
  """Prints a warning line when the 1-minute load exceeds the cores; returns whether it did."""
  cores = os.cpu_count() or 1
  if load is None or load <= cores:
    return False
  print(f"warning: 1-minute load average {load:.2f} > {cores} cores {what}: these figures are "
        "noisy; repeat the run on an idle machine", flush=True)
  return True


def run_once(phase: Phase, row: Row, out_dir: pathlib.Path, rss_method: str) -> None:
  """Times one run of `phase` and folds it into `row` (best time, highest peak, load around it)."""
  release_free_memory()
  out_dir.mkdir(parents=True)
  load_before = one_minute_load()
  with PeakRss(rss_method) as rss:
    cpu_start, start = time.process_time(), time.perf_counter()
    measured = phase.run(out_dir)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  load_after = one_minute_load()
  peak, delta = rss.peak_mb, rss.peak_mb - rss.start_mb
  if isinstance(measured, Measured):
    seconds, cpu, peak, delta = (measured.seconds, measured.cpu_seconds, measured.peak_rss_mb,
                                 measured.delta_rss_mb)
  if seconds < row.seconds:
    row.load_before, row.load_after = load_before, load_after
  row.seconds = min(row.seconds, seconds)
  row.cpu_seconds = min(row.cpu_seconds, cpu)
  row.peak_rss_mb = max(row.peak_rss_mb, peak)
  row.delta_rss_mb = max(row.delta_rss_mb, delta)
  row.load_max = max(row.load_max, load_before or 0.0, load_after or 0.0)
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
  rows = [Row(case, phase.name, input_bytes, examples if phase.examples is None else phase.examples,
               role=phase.role) for phase in phases]
  for attempt in range(repeat):
    for phase, row in zip(phases, rows):
      print(f"  {phase.name} run {attempt + 1}/{repeat} ...", file=sys.stderr, flush=True)
      run_once(phase, row, work_dir / f"out-{phase.name}-{attempt}", rss_method)
  loaded = [row for row in rows if row.load_max > (os.cpu_count() or 1)]
  if loaded:
    warn_if_loaded(max(row.load_max for row in loaded),
                   f"around {', '.join(row.phase for row in loaded)} ({format_size(input_bytes)} input)")
  return rows


def copy_files(sources: Sequence[pathlib.Path], out_path: pathlib.Path) -> None:
  """The physical floor of a build: `cat` of the same bytes, page cache to one new file."""
  buffer = bytearray(_READ_BLOCK)
  view = memoryview(buffer)
  with open(out_path, "wb", buffering=0) as out:
    for source in sources:
      with open(source, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
          written = 0
          while written < count:  # a raw write may take part of the block
            written += out.write(view[written:count])


def built_shards(data_dir: pathlib.Path) -> list[pathlib.Path]:
  """The TFRecord shards a build wrote under `data_dir`, in name order."""
  return sorted(path for path in data_dir.rglob("*.tfrecord-*") if path.is_file())


def copy_floor(shards: Sequence[pathlib.Path]) -> Phase:
  """The `copy_floor` phase: `cat` of a build's shards (warmed here), whose bytes the build writes."""
  if not shards:
    raise ValueError("copy_floor needs the shards of a reference build; the build wrote none")
  for shard in shards:
    warm_page_cache(shard)
  return Phase("copy_floor", lambda out: copy_files(shards, out / "copy.tfrecord"), role="physical")


class Baseline:
  """Builds with another checkout's tfds_builders in one long-lived process (`baseline_worker.py`).

  The worker imports once and times each build itself, as `run_once` does in
  process, so `NAME@baseline` and `NAME` compare like for like, interleaved.
  """

  def __init__(self, checkout: pathlib.Path):
    checkout = checkout.resolve()
    if not (checkout / "tfds_builders" / "__init__.py").is_file():
      raise SystemExit(f"--baseline {checkout}: no tfds_builders package there")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(checkout), *filter(None, [os.environ.get("PYTHONPATH", "")])])}
    self._process = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).with_name("baseline_worker.py"))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
    )
    ready = self._reply()
    if pathlib.Path(ready.get("ready", "")).resolve() != checkout:
      self.close()
      raise SystemExit(f"--baseline {checkout}: the worker imported tfds_builders from {ready}")
    self.checkout = checkout
    self._warmed: set[str] = set()

  def _reply(self) -> dict[str, Any]:
    assert self._process.stdout is not None
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError("the baseline worker exited: see its stderr above")
    return json.loads(line)

  def build(self, builder: str, config: dict[str, Any], data_dir: pathlib.Path) -> Measured:
    """Builds `builder` with the BuilderConfig fields `config` (JSON values) into `data_dir`."""
    assert self._process.stdin is not None
    self._process.stdin.write(json.dumps({"builder": builder, "config": config, "data_dir": str(data_dir)}) + "\n")
    answer = self._reply()
    if "error" in answer:
      raise RuntimeError(f"baseline build of {builder} failed: {answer['error']}")
    return Measured(**answer)

  def phase(self, name: str, builder: str, config: dict[str, Any], work_dir: pathlib.Path, **options: Any) -> Phase:
    """`NAME@baseline`: the build of `config` by the baseline checkout.

    The first phase of each builder builds once untimed under `work_dir`, as the
    case's own reference build warms this process: imports and compiled kernels.
    """
    if builder not in self._warmed:
      warm_dir = work_dir / f"baseline-warm-{builder}"
      self.build(builder, config, warm_dir)
      shutil.rmtree(warm_dir, ignore_errors=True)
      self._warmed.add(builder)
    return Phase(f"{name}@baseline", lambda out: self.build(builder, config, out), role="baseline", **options)

  def close(self) -> None:
    if self._process.stdin:
      self._process.stdin.close()
    self._process.wait(timeout=60)


def warm_page_cache(path: pathlib.Path) -> None:
  """Reads a file once so every timed phase finds it in the page cache."""
  buffer = bytearray(_READ_BLOCK)
  with open(path, "rb", buffering=0) as file:
    while file.readinto(buffer):
      pass


def print_profile(what: str, write: Callable[[pathlib.Path], None], work_dir: pathlib.Path, top: int) -> None:
  """Runs `write(out)` once more under cProfile, prints the top entries by self and cumulative time, removes `out`.

  Args:
    what: The run, as the heading names it (`builder run on 500MB`).
    write: Writes the case's output under the folder it gets.
    work_dir: The case's work folder; `out-profile` below it is written and removed.
    top: Entries printed per ordering.
  """
  out = work_dir / "out-profile"
  print(f"\ncProfile of one {what}:")
  profiler = cProfile.Profile()
  profiler.runcall(write, out)
  text = io.StringIO()
  stats = pstats.Stats(profiler, stream=text).strip_dirs()
  for order in ("tottime", "cumulative"):
    text.write(f"\n--- top {top} by {order} ---\n")
    stats.sort_stats(order).print_stats(top)
  print(text.getvalue())
  shutil.rmtree(out)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
  """Silences TFDS's progress prints so they do not interleave with the table."""
  with contextlib.redirect_stdout(io.StringIO()):
    yield


def time_ratio(numerator: Row | None, denominator: Row | None) -> float | None:
  """Wall-time ratio of two rows, None when either phase did not run."""
  if numerator is None or denominator is None:
    return None
  return numerator.seconds / denominator.seconds


# --------------------------------------------------------------------------
# Results: what a run measured, as printed tables and as JSON.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
  """Everything one run measured: its rows plus the case's own summaries.

  Attributes:
    rows: One per phase and input size, in measuring order.
    ratios: The case's ratio table (augmented, concatenated), one dict per line.
    compression: concatenated's `--compression-table` lines.
    rss_labels: How the RSS sweep names its smallest and largest input.
    sweep_sizes: The inputs (`input_bytes`) the RSS sweep spans; None: all of them.
  """

  rows: list[Row]
  ratios: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  compression: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  rss_labels: tuple[str, str] | None = None
  sweep_sizes: tuple[int, ...] | None = None


def row_record(row: Row, group: dict[str, Row]) -> dict[str, Any]:
  """One row as JSON; the builder row also carries builder/floor and seed/builder."""
  record: dict[str, Any] = {
      "phase": row.phase, "input_bytes": row.input_bytes, "examples": row.examples,
      "seconds": row.seconds, "cpu_seconds": row.cpu_seconds, "mb_per_s": row.mb_per_s,
      "examples_per_s": row.examples_per_s, "peak_rss_mb": row.peak_rss_mb,
      "delta_rss_mb": row.delta_rss_mb, "role": row.role, "load_before": row.load_before,
      "load_after": row.load_after, "load_max": row.load_max,
  }
  if row.phase == "builder":
    record["builder_floor"] = time_ratio(row, group.get("floor"))
    record["seed_builder"] = time_ratio(group.get("seed"), row)
  return record


def row_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
  """Every row as JSON, ratios taken within each input size."""
  records = []
  for row in rows:
    group = {other.phase: other for other in rows if other.input_bytes == row.input_bytes}
    records.append(row_record(row, group))
  return records


def versus(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per builder row: its time over each physical floor's and over the best peer's, from the same run.

  Rows are compared within one input (same `input_bytes`). `NAME@baseline`,
  the same build from an older checkout, gives `NAME`'s speed-up over it.
  """
  lines = []
  for size in dict.fromkeys(record["input_bytes"] for record in records):
    group = [record for record in records if record["input_bytes"] == size]
    floors = [record for record in group if record.get("role") == "physical"]
    peers = [record for record in group if record.get("role") == "peer"]
    best_peer = min(peers, key=lambda record: record["seconds"], default=None)
    baselines = {record["phase"].removesuffix("@baseline"): record
                 for record in group if record.get("role") == "baseline"}
    for record in group:
      if record.get("role") != "builder":
        continue
      line: dict[str, Any] = {
          "input_bytes": size, "phase": record["phase"], "examples": record["examples"],
          "seconds": record["seconds"], "examples_per_s": record["examples_per_s"],
          "peak_rss_mb": record["peak_rss_mb"], "load": _load_span(record),
      }
      for floor in floors:
        line[f"vs_{floor['phase']}"] = record["seconds"] / floor["seconds"]
      if best_peer:
        line["best_peer"] = best_peer["phase"]
        line["vs_best_peer"] = record["seconds"] / best_peer["seconds"]
      if record["phase"] in baselines:
        line["baseline_speedup"] = baselines[record["phase"]]["seconds"] / record["seconds"]
      lines.append(line)
  return lines


def _load_span(record: dict[str, Any]) -> str:
  before, after = record.get("load_before"), record.get("load_after")
  if before is None or after is None:
    return "-"
  return f"{before:.2f}-{after:.2f}"


def rss_sweep(records: Sequence[dict[str, Any]], labels: tuple[str, str] | None) -> dict[str, Any] | None:
  """Per phase: peak RSS at the largest input over the smallest one (None for one size)."""
  sizes = sorted({record["input_bytes"] for record in records})
  if len(sizes) < 2:
    return None
  small, large = sizes[0], sizes[-1]
  by_key = {(record["phase"], record["input_bytes"]): record for record in records}
  phases = []
  for phase in dict.fromkeys(record["phase"] for record in records):
    low, high = by_key.get((phase, small)), by_key.get((phase, large))
    if low and high:
      phases.append({
          "phase": phase, "peak_small": low["peak_rss_mb"], "peak_large": high["peak_rss_mb"],
          "peak_ratio": high["peak_rss_mb"] / low["peak_rss_mb"],
          "delta_small": low["delta_rss_mb"], "delta_large": high["delta_rss_mb"],
      })
  small_label, large_label = labels or (format_size(small), format_size(large))
  return {"small": small_label, "large": large_label, "phases": phases}


def load_note() -> str:
  """The 1, 5 and 15 minute load averages: a shared machine's noise, said with the figures."""
  try:
    one, five, fifteen = os.getloadavg()
  except OSError:
    return "load average unknown"
  return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def machine() -> str:
  """Date, CPU, kernel and the library versions the figures depend on."""
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


def _finite(value: Any) -> Any:
  """JSON has no infinity: a phase that never ran is null."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {key: _finite(item) for key, item in value.items()}
  if isinstance(value, list):
    return [_finite(item) for item in value]
  return value


def write_result(path: pathlib.Path, document: dict[str, Any]) -> pathlib.Path:
  """Writes one run's JSON (sorted keys, one trailing newline) and returns its path."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(_finite(document), indent=2, sort_keys=True) + "\n", encoding="utf-8")
  return path


def read_result(path: pathlib.Path) -> dict[str, Any]:
  return json.loads(path.read_text(encoding="utf-8"))


def input_dir(work_dir: pathlib.Path, size: int, announce: str) -> pathlib.Path:
  """A fresh folder for one input size's files, announced on stderr (`announce`: what is written there)."""
  path = work_dir / f"input-{size}"
  path.mkdir()
  print(f"{announce} in {path}", file=sys.stderr)
  return path
