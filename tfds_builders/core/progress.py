"""What a build shows while it runs: TFDS-style progress bars, phase log lines and Beam counters."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from absl import logging

from tfds_builders import tfds_internals
from tfds_builders.core import wire

if TYPE_CHECKING:  # for the annotations only; a block is told apart without importing the writer
  from tfds_builders.core import shard_writer

# The bar is redrawn at most this often; between redraws an example costs a few additions.
REFRESH_SECONDS = 0.25
# Single examples are counted this many at a time before the clock is read.
_CHECK_EVERY = 4096
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _size(num_bytes: int) -> str:
  """`1.5 GiB`-style text for a byte count."""
  size, power = float(num_bytes), 0
  while size >= 1024 and power < len(_UNITS) - 1:
    size, power = size / 1024, power + 1
  return f"{size:.1f} {_UNITS[power]}" if power else f"{num_bytes} B"


def _open_bar(split: str, total: int | None) -> Any | None:
  """A tqdm bar on stderr, or None when TFDS's switch is off or stderr is not a terminal."""
  # disable=None hides the bar when stderr is not a TTY, as tqdm and TFDS do.
  return tfds_internals.progress_bar(
      desc=f"Generating {split} examples",
      unit=" examples",
      total=total,
      leave=False,
      disable=None,
      mininterval=REFRESH_SECONDS,
      miniters=1,
  )


def tracked(
    examples: Iterable[shard_writer.StreamItem], split: str, total: int | None = None
) -> Iterator[shard_writer.StreamItem]:
  """Passes a split's stream through unchanged while showing its progress.

  On a terminal, a TFDS-style bar "Generating <split> examples" shows the
  examples, examples/s and the serialized bytes so far. A block counts its
  `len(block)` examples and its records' bytes at once. When the stream
  ends, one INFO line gives the count, bytes, seconds and rate (the bar,
  like TFDS's, does not stay on screen); a stream closed early logs nothing.

  Args:
    examples: `(key, serialized)` pairs and `(keys, FramedRecords)` blocks.
    split: The split's name, shown in the bar and the log line.
    total: The split's example count, when known beforehand.

  Yields:
    Every item of `examples`, unchanged.
  """
  bar = _open_bar(split, total)
  count = num_bytes = shown = 0
  next_check = _CHECK_EVERY
  start = last_refresh = time.monotonic()
  try:
    for item in examples:
      value = item[1]
      if isinstance(value, bytes):
        count += 1
        num_bytes += len(value)
      else:
        # The records' bytes, record_sizes().sum(), without an array per block.
        frames = len(value)
        count += frames
        num_bytes += int(value.ends[-1]) - frames * wire.FRAME_BYTES if frames else 0
        next_check = count  # a block is many examples: always look at the clock
      yield item
      if count >= next_check:
        next_check = count + _CHECK_EVERY
        now = time.monotonic()
        if bar is not None and now - last_refresh >= REFRESH_SECONDS:
          last_refresh = now
          bar.set_postfix_str(_size(num_bytes), refresh=False)
          bar.update(count - shown)
          shown = count
  finally:
    if bar is not None:
      bar.close()
  seconds = time.monotonic() - start
  logging.info(
      "Generated %d %s examples, %d bytes (%s), in %.1f s: %.0f examples/s.",
      count, split, num_bytes, _size(num_bytes), seconds, count / seconds if seconds > 0 else 0.0,
  )


class _BeamCounters:
  """Adds to a split's Beam counters; a plain class so a DoFn holding it pickles."""

  def __init__(self, split: str):
    self._split = split
    self._open()

  def _open(self) -> None:
    from apache_beam import metrics  # pylint: disable=import-outside-toplevel

    self._examples = metrics.Metrics.counter("tfds_builders", f"{self._split}_examples")
    self._bytes = metrics.Metrics.counter("tfds_builders", f"{self._split}_bytes")

  def __getstate__(self) -> dict[str, str]:
    return {"split": self._split}

  def __setstate__(self, state: dict[str, str]) -> None:
    self._split = state["split"]
    self._open()

  def __call__(self, num_examples: int, num_bytes: int) -> None:
    self._examples.inc(num_examples)
    self._bytes.inc(num_bytes)


def beam_counted(split: str) -> Callable[[int, int], None]:
  """A function `(num_examples, num_bytes)` adding to the split's Beam counters.

  Call it inside a worker; the runner sums the counters
  `tfds_builders:<split>_examples` and `tfds_builders:<split>_bytes` over
  workers and shows them in its UI and in `PipelineResult.metrics()`.
  """
  return _BeamCounters(split)


def phase(message: str, *args: object) -> None:
  """Logs one build phase (schema pass, spill, partitions, shard merge) at INFO."""
  logging.info(message, *args)


@contextlib.contextmanager
def timed_phase(message: str, *args: object) -> Iterator[None]:
  """Logs a phase's start, then its end with the seconds it took (also when it fails)."""
  text = message % args if args else message
  logging.info("%s...", text)
  start = time.monotonic()
  outcome = "failed"
  try:
    yield
    outcome = "done"
  finally:
    logging.info("%s: %s in %.1f s.", text, outcome, time.monotonic() - start)
