"""Byte identity: every regression case writes the shards and features.json recorded before the refactor."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import pathlib
import sys
import tempfile
import time

import pytest
import tensorflow_datasets as tfds

# Top-level, not `tests.`: the augmented cases name their user function
# `regression_cases:score_features`, and recording runs this file as a script
# next to another checkout's package.
sys.path.insert(0, str(pathlib.Path(__file__).parent))
import regression_cases  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position

# Record (from the pre-refactor checkout, never from the code under test):
#   cd /tmp/base13 && PYTHONPATH=/tmp/base13 NO_GCE_CHECK=true TF_CPP_MIN_LOG_LEVEL=2 \
#     /work/main/.venv/bin/python /work/main/tests/test_regression_bytes.py --record [--only CASE_ID ...]
# Check that checkout reproduces its recording (bypassing this tree's conftest):
#   cd /tmp/base13 && PYTHONPATH=/tmp/base13 /work/main/.venv/bin/python -m pytest --noconftest \
#     --import-mode=append /work/main/tests/test_regression_bytes.py
HASHES_PATH = pathlib.Path(__file__).parent / "data" / "regression_hashes.json"
# Shard names of every TFDS file format; dataset_info.json, metadata.json and
# croissant.json are left out: they hold paths and times.
_SHARD_MARKERS = (".tfrecord", ".array_record", ".parquet")


def build_case(case: regression_cases.Case, tmp_path: pathlib.Path) -> dict[str, str]:
  """Builds a case under `tmp_path` and hashes its output.

  Args:
    case: The case to build.
    tmp_path: An empty directory for the inputs (`in/`) and the data_dir (`tfds/`).

  Returns:
    File name (relative to the version dir) -> sha256 of every shard and of features.json.
  """
  module = importlib.import_module(f"tfds_builders.{case.builder}")
  if isinstance(case.config, str):
    config = case.config
  else:
    inputs = tmp_path / "in"
    inputs.mkdir(parents=True, exist_ok=True)
    config = case.config(inputs)
  kwargs = {"file_format": case.file_format} if case.file_format else {}
  builder = module.Builder(config=config, data_dir=str(tmp_path / "tfds"), **kwargs)
  download_config = tfds.download.DownloadConfig(
      num_shards=case.num_shards, beam_runner="DirectRunner" if case.beam else None
  )
  builder.download_and_prepare(download_config=download_config)
  version_dir = pathlib.Path(builder.data_dir)
  hashes = {
      path.relative_to(version_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
      for path in sorted(version_dir.rglob("*"))
      if path.is_file() and (path.name == "features.json" or any(m in path.name for m in _SHARD_MARKERS))
  }
  if "features.json" not in hashes or len(hashes) < 2:
    raise AssertionError(f"{case.case_id}: no shards or no features.json under {version_dir}: {sorted(hashes)}")
  return hashes


def _recorded() -> dict[str, dict[str, str]]:
  return json.loads(HASHES_PATH.read_text()) if HASHES_PATH.exists() else {}


def _first_difference(want: dict[str, str], got: dict[str, str]) -> str:
  for name in sorted(set(want) | set(got)):
    if name not in got:
      return f"{name} is missing (recorded sha256 {want[name][:12]})"
    if name not in want:
      return f"{name} is new (not in the recording)"
    if want[name] != got[name]:
      return f"{name} differs: sha256 {got[name][:12]}, recorded {want[name][:12]}"
  return ""


def _needs_postgres(case: regression_cases.Case) -> None:
  """Skips a PostgreSQL case without a server, or fails it on CI (as conftest's `postgres_dsn`)."""
  dsn = os.environ.get(regression_cases.PG_DSN_ENV, "").strip()
  problem = "" if dsn else f"{regression_cases.PG_DSN_ENV} is not set"
  if not problem:
    try:
      import psycopg2  # pylint: disable=import-outside-toplevel

      psycopg2.connect(dsn, connect_timeout=5).close()
    except Exception as error:  # pylint: disable=broad-except  # ImportError or any driver error
      problem = f"cannot connect: {type(error).__name__}"
  if problem:
    message = f"PostgreSQL unavailable for {case.case_id}: {problem}"
    if os.environ.get("CI") == "true":
      pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    pytest.param(case, id=case.case_id, marks=[pytest.mark.postgres] if case.postgres else [])
    for case in regression_cases.CASES
])
def test_output_bytes_match_the_recording(case: regression_cases.Case, tmp_path: pathlib.Path) -> None:
  recorded = _recorded()
  assert case.case_id in recorded, (
      f"{case.case_id}: no recorded hashes in {HASHES_PATH}; record them from the pre-refactor checkout "
      "(see this module's docstring)"
  )
  if case.postgres:
    _needs_postgres(case)
  try:
    got = build_case(case, tmp_path)
  finally:
    if case.postgres:
      regression_cases.pg_cleanup()
  difference = _first_difference(recorded[case.case_id], got)
  assert not difference, f"{case.case_id}: output bytes changed: {difference}"


def test_case_ids_are_unique_and_all_recorded() -> None:
  ids = [case.case_id for case in regression_cases.CASES]
  assert len(ids) == len(set(ids))
  assert sorted(_recorded()) == sorted(ids)


def _record(argv: list[str]) -> int:
  """Builds every case and writes the hashes; refuses a checkout other than /tmp/base13 unless told."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--record", action="store_true", required=True)
  parser.add_argument("--allow-current", action="store_true",
                      help="record from whatever tfds_builders imports (not the pre-refactor base)")
  parser.add_argument("--only", nargs="*", default=None, help="case ids to (re)record; others are kept")
  args = parser.parse_args(argv)
  import tfds_builders  # pylint: disable=import-outside-toplevel

  checkout = pathlib.Path(tfds_builders.__file__).resolve().parents[1]
  print(f"tfds_builders: {tfds_builders.__file__}")
  bundled = pathlib.Path(importlib.import_module("tfds_builders.numpy_arrays").Builder.BUILDER_CONFIGS[0].data_root)
  print(f"dummy_data: {bundled}")
  if not bundled.resolve().is_relative_to(checkout):
    print(f"refusing: bundled data {bundled} is not in the checkout {checkout}", file=sys.stderr)
    return 2
  if checkout != pathlib.Path("/tmp/base13") and not args.allow_current:
    print(f"refusing: {checkout} is not the pre-refactor checkout /tmp/base13 (pass --allow-current)",
          file=sys.stderr)
    return 2
  hashes = _recorded() if args.only else {}
  for case in regression_cases.CASES:
    if args.only is not None and case.case_id not in args.only:
      continue
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
      try:
        hashes[case.case_id] = build_case(case, pathlib.Path(tmp))
      finally:
        if case.postgres:
          regression_cases.pg_cleanup()
    print(f"{case.case_id}: {len(hashes[case.case_id])} files, {time.perf_counter() - start:.1f} s", flush=True)
  HASHES_PATH.parent.mkdir(parents=True, exist_ok=True)
  HASHES_PATH.write_text(json.dumps(dict(sorted(hashes.items())), indent=1, sort_keys=True) + "\n")
  print(f"wrote {len(hashes)} cases to {HASHES_PATH}")
  return 0


if __name__ == "__main__":
  sys.exit(_record(sys.argv[1:]))
