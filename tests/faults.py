"""The fault suite's four checks: clear error, nothing loadable, sources untouched, rerun succeeds."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from tests.helpers import REPO

TFDS = str(pathlib.Path(sys.executable).parent / "tfds")
CLI = str(pathlib.Path(sys.executable).parent / "tfds-builders")
# No GCE metadata look-ups, quiet TF: as scripts/test.sh sets them.
ENV = {**os.environ, "NO_GCE_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "3"}


def tree_hashes(paths: Iterable[pathlib.Path | str]) -> dict[str, str]:
  """sha256 of every file at or below each path (a file, or a folder walked recursively)."""
  found: dict[str, str] = {}
  for root in map(pathlib.Path, paths):
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
      found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
  return found


def loadable_dirs(data_dir: pathlib.Path | str) -> list[pathlib.Path]:
  """Every folder below data_dir that `tfds.builder_from_directory` would accept."""
  data_dir = pathlib.Path(data_dir)
  if not data_dir.exists():
    return []
  return sorted(
      info.parent for info in data_dir.rglob("dataset_info.json")
      if not any(part.startswith("incomplete.") for part in info.parts)
  )


def assert_nothing_loadable(data_dir: pathlib.Path | str) -> None:
  """No dataset folder that TFDS would load is left in data_dir."""
  assert not loadable_dirs(data_dir), f"a failed build left loadable datasets: {loadable_dirs(data_dir)}"


def assert_message(error: BaseException | str, fragments: Sequence[str]) -> None:
  """Every fragment (a regex) occurs in the error's message."""
  message = str(error)
  for fragment in fragments:
    assert re.search(fragment, message), f"{fragment!r} not in the message: {message}"


@dataclasses.dataclass
class FaultCase:
  """One row of a fault table.

  Attributes:
    id: The pytest id.
    error: The documented exception type the fault must raise.
    fragments: Regexes its message must contain (file, record or column, and the remedy).
  """

  id: str
  error: type[BaseException]
  fragments: Sequence[str]

  def param(self, *values: Any) -> Any:
    # By convention a case run through the command line says so in its id ("cli", "tfds_build"):
    # a subprocess importing TensorFlow, so `slow`.
    marks = [pytest.mark.slow] if _COMMAND_LINE_ID.search(self.id) else []
    return pytest.param(self, *values, id=self.id, marks=marks)


_COMMAND_LINE_ID = re.compile(r"(^|[_-])(cli|tfds_build)([_-]|$)")


def check_fault(
    case: FaultCase,
    run: Callable[[], Any],
    repair: Callable[[], None],
    sources: Iterable[pathlib.Path | str],
    data_dir: pathlib.Path | str | None,
    source_digest: Callable[[], Any] | None = None,
) -> Any:
  """Runs the four checks of one fault case.

  1. `run()` raises `case.error` with every fragment in its message;
  2. nothing loadable is left in `data_dir`;
  3. every file below `sources` is byte-identical (and `source_digest()`, e.g. a table checksum, unchanged);
  4. after `repair()`, `run()` succeeds.

  Args:
    case: The expected error type and message fragments.
    run: The build, load or command under test.
    repair: Removes the fault's cause (never by touching what `sources` guards unless it must).
    sources: Files or folders the run must only read.
    data_dir: Where the run writes, or None when it writes nothing.
    source_digest: Optional extra fingerprint of a source that is not a file (a SQL table).

  Returns:
    What the rerun returned.
  """
  sources = list(sources)
  before = tree_hashes(sources)
  digest_before = source_digest() if source_digest else None
  with pytest.raises(case.error) as raised:
    run()
  assert_message(raised.value, case.fragments)
  if data_dir is not None:
    assert_nothing_loadable(data_dir)
  assert tree_hashes(sources) == before, "the failed run modified a source"
  if source_digest:
    assert source_digest() == digest_before, "the failed run modified a source table"
  repair()
  return run()


class CommandFailed(Exception):
  """A command line exited non-zero; the message is its exit code and stderr."""

  def __init__(self, returncode: int, stderr: str):
    super().__init__(f"exit {returncode}: {stderr}")
    self.returncode = returncode
    self.stderr = stderr


def run_command(argv: Sequence[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
  """Runs a command line as a user types it; raises CommandFailed on a non-zero exit.

  A crash (a signal) is a failure of the test, never a CommandFailed.
  """
  result = subprocess.run(
      list(argv), env={**ENV, **env}, capture_output=True, text=True, timeout=timeout, check=False,
  )
  assert result.returncode >= 0, f"{argv[:3]} died of signal {-result.returncode}:\n{result.stderr[-3000:]}"
  if result.returncode != 0:
    raise CommandFailed(result.returncode, result.stderr)
  return result


def _tfds_build_argv(folder: str, config: str | dict, data_dir: pathlib.Path | str, *flags: str) -> list[str]:
  import json  # pylint: disable=import-outside-toplevel

  config_text = config if isinstance(config, str) else json.dumps(config)
  return [TFDS, "build", str(REPO / "tfds_builders" / folder), "--data_dir", str(data_dir), "--config", config_text,
          *flags]


def tfds_build(folder: str, config: str | dict, data_dir: pathlib.Path | str, *flags: str) -> subprocess.CompletedProcess:
  """`tfds build tfds_builders/<folder> --config JSON --data_dir D [flags]`, as typed on a shell."""
  return run_command(_tfds_build_argv(folder, config, data_dir, *flags))


def build_in_process_or_cli(builder_cls: type, config: dict, options: dict | str, data_dir: pathlib.Path) -> Any:
  """Builds `config` in-process with the extra fields `options`, or, for options "cli", with `tfds build`.

  Returns:
    The built builder (for "cli", the one TFDS reads back from the version folder).
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  if options == "cli":
    tfds_build(builder_cls.name, config, data_dir)
    return tfds.builder_from_directory(str(data_dir / builder_cls.name / config["name"] / str(builder_cls.VERSION)))
  config_cls = type(builder_cls.BUILDER_CONFIGS[0])
  builder = builder_cls(config=config_cls(**config, **options), data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def kill_tfds_build_while_writing(folder: str, config: dict, data_dir: pathlib.Path) -> int:
  """Starts `tfds_build(...)` and SIGKILLs it once its shards are being written (`incomplete.*/*.tmp`).

  Returns:
    The killed build's pid.
  """
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  build = subprocess.Popen(_tfds_build_argv(folder, config, data_dir), env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  config_dir = data_dir / folder / config["name"]
  deadline = time.monotonic() + 120
  while not any(config_dir.glob("incomplete.*/*.tmp")):
    assert build.poll() is None, "the build ended before it could be killed"
    assert time.monotonic() < deadline, "the build never started writing"
    time.sleep(0.005)
  build.send_signal(signal.SIGKILL)
  assert build.wait(timeout=30) == -signal.SIGKILL
  return build.pid


def tfds_builders_cli(*args: str) -> subprocess.CompletedProcess:
  """`tfds-builders ARGS...`, as typed on a shell."""
  return run_command([CLI, *args])


def run_python(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
  """Runs Python code in a fresh interpreter, for crash classes: a segfault fails the test, not pytest.

  Returns:
    The completed process (exit code 0, or CommandFailed with its stderr).
  """
  return run_command([sys.executable, "-c", textwrap.dedent(code)], timeout=timeout, **env)
