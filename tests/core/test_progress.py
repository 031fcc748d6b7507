"""core.progress: the bar a terminal shows, the log lines everyone gets, and Beam's counters."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from tests import faults
from tfds_builders.core import progress
from tfds_builders.core.fast import record_blocks

# A bar frame as tqdm draws it with our unit and the bytes postfix.
BAR_FRAME = re.compile(
    r"Generating (\w+) examples: [^\r\n]*?(\d+)(?:/\d+)?(?: examples)? \[[^\]\r\n]*? examples/s, [\d.]+ [KMG]iB\]")
SUMMARY = re.compile(r"Generated (\d+) (\w+) examples, (\d+) bytes \([\d.]+ \w+\), in [\d.]+ s: \d+ examples/s\.")


def run_in_terminal(argv: list[str], timeout: float = 120) -> str:
  """Runs a command with a 120-column pseudo-terminal as stdin/stdout/stderr; returns what it wrote.

  A pty created by a program starts 0x0, and tqdm draws nothing at width 0,
  so the size of a real terminal is set first.
  """
  leader, follower = pty.openpty()
  fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
  process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=faults.ENV)
  os.close(follower)
  chunks = []
  deadline = time.monotonic() + timeout
  try:
    while time.monotonic() < deadline:
      if not select.select([leader], [], [], 1)[0]:
        continue
      try:
        data = os.read(leader, 1 << 16)
      except OSError:  # EIO: every writer of the terminal has exited
        break
      if not data:
        break
      chunks.append(data)
  finally:
    os.close(leader)
    if process.poll() is None:
      process.kill()
  assert process.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
  return b"".join(chunks).decode(errors="replace")


def _stream() -> list:
  items = [(i, b"s" * (i % 13 + 1)) for i in range(1000)]
  items.insert(500, (range(1000, 1300), record_blocks.framed([b"b" * (k % 5 + 2) for k in range(300)])))
  items.append(((), record_blocks.framed([])))  # an empty block counts nothing
  return items


def test_tracked_passes_every_item_through_and_logs_the_totals(caplog):
  items = _stream()
  with caplog.at_level(logging.INFO):
    passed = list(progress.tracked(items, "validation", total=1300))

  assert len(passed) == len(items) and all(out is given for out, given in zip(passed, items))
  expected_bytes = sum((i % 13 + 1) for i in range(1000)) + sum(k % 5 + 2 for k in range(300))
  (line,) = [r.getMessage() for r in caplog.records if "Generated" in r.getMessage()]
  assert SUMMARY.fullmatch(line).groups() == ("1300", "validation", str(expected_bytes)), line

  # Stopped early (e.g. by --max_examples_per_split's cut), no totals are claimed.
  caplog.clear()
  with caplog.at_level(logging.INFO):
    stream = progress.tracked(items, "validation")
    next(stream)
    stream.close()
  assert not [r for r in caplog.records if "Generated" in r.getMessage()]


_SCRIPT = """
import time
from absl import logging
import tensorflow_datasets as tfds
from tfds_builders.core import progress

logging.set_verbosity(logging.INFO)
example = bytes(1000)

def slow():  # 30000 examples of 1000 bytes over ~0.6 s, so the bar redraws a few times
  for i in range(30000):
    if i % 1000 == 0:
      time.sleep(0.02)
    yield i, example

for _ in progress.tracked(slow(), "train", total=30000): pass
tfds.disable_progress_bar()
for _ in progress.tracked(slow(), "test"): pass
"""


@pytest.mark.slow
def test_the_bar_shows_on_a_terminal_only_and_obeys_tfds_switch(tmp_path):
  script = tmp_path / "bars.py"
  script.write_text(_SCRIPT)
  argv = ["env", f"PYTHONPATH={faults.REPO}", sys.executable, str(script)]

  on_terminal = run_in_terminal(argv)
  piped_run = faults.run_command(argv)
  piped = piped_run.stderr + piped_run.stdout

  frames = BAR_FRAME.findall(on_terminal)
  assert frames and {split for split, _ in frames} == {"train"}, on_terminal[-2000:]  # "test" ran disabled
  assert re.search(r"Generating train examples: +\d+%\|.*\| \d+/30000 \[", on_terminal)  # the total is known
  counts = [int(count) for _, count in frames]
  assert counts == sorted(counts) and all(count % 4096 == 0 for count in counts)  # the clock is read every 4096
  for output in (on_terminal, piped):
    summaries = [match.groups() for match in SUMMARY.finditer(output)]
    assert summaries == [("30000", "train", "30000000"), ("30000", "test", "30000000")], output[-2000:]
  assert "examples/s," not in piped and "Generating train examples:" not in piped


@pytest.mark.slow
def test_tfds_build_shows_a_bar_on_a_terminal_and_a_log_line_elsewhere(tmp_path):
  np.save(tmp_path / "rows.npy", np.arange(60_000 * 128, dtype=np.float32).reshape(60_000, 128))
  config = json.dumps({"name": "rows", "splits": {"train": [str(tmp_path / "rows.npy")]}})
  command = [faults.TFDS, "build", str(faults.REPO / "tfds_builders" / "numpy_arrays"), "--config", config]

  on_terminal = run_in_terminal([*command, "--data_dir", str(tmp_path / "tty")])
  piped_run = faults.run_command([*command, "--data_dir", str(tmp_path / "piped")])
  piped = piped_run.stderr + piped_run.stdout  # the tfds CLI logs through tqdm.write, to stdout

  assert BAR_FRAME.search(on_terminal), on_terminal[-3000:]
  assert not BAR_FRAME.search(piped) and "Generating train examples:" not in piped
  shards = sorted((tmp_path / "piped" / "numpy_arrays" / "rows").glob("*/*.tfrecord*"))
  record_bytes = sum(shard.stat().st_size for shard in shards) - 60_000 * 16  # minus TFRecord frames
  for output in (on_terminal, piped):
    assert [m.groups() for m in SUMMARY.finditer(output)] == [("60000", "train", str(record_bytes))], output[-3000:]
  # The planning step before any example (here: reading the array headers) is logged as a phase.
  assert re.search(r"numpy_arrays/rows: planning \(the arrays' headers\): done in \d+\.\d s\.", piped), piped[-3000:]


def test_beam_counters_are_read_back_from_the_pipeline_result():
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  from apache_beam.metrics.metric import MetricsFilter  # pylint: disable=import-outside-toplevel

  count = progress.beam_counted("train")
  assert pickle.loads(pickle.dumps(count)).__class__ is count.__class__  # ships to workers
  pipeline = beam.Pipeline(runner="DirectRunner")
  _ = (pipeline
       | beam.Create([(3, 300), (4, 4000), (5, 50000)])
       | beam.Map(lambda sizes: count(*sizes)))
  result = pipeline.run()
  result.wait_until_finish()

  counters = result.metrics().query(MetricsFilter().with_namespace("tfds_builders"))["counters"]
  committed = {counter.key.metric.name: counter.committed for counter in counters}
  assert committed == {"train_examples": 12, "train_bytes": 54300}


def test_phase_lines_name_the_phase_and_its_seconds(caplog):
  with caplog.at_level(logging.INFO):
    progress.phase("Schema pass over %d files", 3)
    with progress.timed_phase("Merging %s shards", "train"):
      time.sleep(0.05)
    with pytest.raises(KeyError), progress.timed_phase("Spilling"):
      raise KeyError("x")

  lines = [record.getMessage() for record in caplog.records]
  assert lines[0] == "Schema pass over 3 files"
  assert lines[1] == "Merging train shards..."
  assert re.fullmatch(r"Merging train shards: done in 0\.[01] s\.", lines[2]), lines[2]
  assert lines[3] == "Spilling..." and re.fullmatch(r"Spilling: failed in 0\.0 s\.", lines[4]), lines
