"""Builds with another checkout's tfds_builders (`--baseline PATH`): one JSON request a line in, its figures out.

Run as a script with PYTHONPATH=PATH (never as `benchmarks.*`, whose package
the baseline checkout may hold too), by `harness.Baseline`. It imports what
the builds need once, so each timed build costs what it costs in process.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_MB = 10**6


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise OSError(f"/proc/self/status has no {field}")


def _build(request: dict) -> dict:
  """Builds `request["builder"]` with `request["config"]` into `request["data_dir"]`; returns its figures."""
  module = importlib.import_module(f"tfds_builders.{request['builder']}")
  config = module.BuilderConfig(name="bench", **request["config"])
  start_mb = _status_kib("VmRSS") * 1024 / _MB
  with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")
  cpu_start, start = time.process_time(), time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    module.Builder(config=config, data_dir=request["data_dir"]).download_and_prepare()
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  peak_mb = _status_kib("VmHWM") * 1024 / _MB
  return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_mb, "delta_rss_mb": peak_mb - start_mb}


def main() -> int:
  import absl.logging  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  import tfds_builders  # pylint: disable=g-import-not-at-top

  absl.logging.set_verbosity(absl.logging.ERROR)
  tfds.disable_progress_bar()
  with contextlib.suppress(Exception):  # an older checkout may not have it
    importlib.import_module("tfds_builders.tfds_internals").disable_gcs_access()
  reply = sys.stdout
  sys.stdout = sys.stderr  # only replies go to the pipe
  reply.write(json.dumps({"ready": os.path.dirname(os.path.dirname(tfds_builders.__file__))}) + "\n")
  reply.flush()
  for line in sys.stdin:
    try:
      answer = _build(json.loads(line))
    except Exception as error:  # pylint: disable=broad-except  # reported to the harness, which raises
      answer = {"error": f"{type(error).__name__}: {error}"}
    reply.write(json.dumps(answer) + "\n")
    reply.flush()
  return 0


if __name__ == "__main__":
  sys.exit(main())
