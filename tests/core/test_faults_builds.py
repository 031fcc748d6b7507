"""Stale build dirs: the next build removes a dead build's incomplete.* dir and keeps a live one's."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import tfds_internals
from tfds_builders.core import streaming_builder
from tfds_builders.core.streaming_builder import BuildOwner
from tfds_builders.numpy_arrays import Builder
from tfds_builders.numpy_arrays import BuilderConfig

from tests import faults


DAY = 24 * 3600


def dead_pid() -> int:
  """The pid of a process that has ended (and been reaped)."""
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def fake_build_dir(config_dir: pathlib.Path, name: str, owner: BuildOwner | None,
                   age_seconds: float = 0) -> pathlib.Path:
  """An incomplete dir as a build leaves it: a partial shard, and the owner's marker."""
  build_dir = config_dir / name
  build_dir.mkdir(parents=True)
  (build_dir / "numpy_arrays-train.tfrecord-00000-of-00001").write_bytes(b"\0" * 4096)
  if owner is not None:
    (build_dir / streaming_builder.OWNER_MARKER).write_text(json.dumps(dataclasses.asdict(owner)))
  if age_seconds:
    past = time.time() - age_seconds
    for path in [*build_dir.iterdir(), build_dir]:
      os.utime(path, (past, past))
  return build_dir


@pytest.mark.slow
def test_a_build_removes_dead_builds_dirs_and_keeps_live_ones(tmp_path):
  np.save(tmp_path / "rows.npy", np.arange(12, dtype=np.int32).reshape(4, 3))
  data_dir = tmp_path / "tfds"
  config_dir = data_dir / "numpy_arrays" / "stale"
  here = BuildOwner.current()
  dead = fake_build_dir(config_dir, "incomplete.DEAD01_1.0.0", dataclasses.replace(here, pid=dead_pid()))
  reused = fake_build_dir(  # our pid, but started at another time: a reused pid
      config_dir, "incomplete.REUSE1_1.0.0", dataclasses.replace(here, start_ticks="1"))
  rebooted = fake_build_dir(
      config_dir, "incomplete.BOOT01_1.0.0", dataclasses.replace(here, boot_id="an-earlier-boot"))
  abandoned = fake_build_dir(config_dir, "incomplete.OLD001_1.0.0", None, age_seconds=2 * DAY)
  live = fake_build_dir(config_dir, "incomplete.LIVE01_1.0.0", here)
  other_host = fake_build_dir(
      config_dir, "incomplete.HOST01_1.0.0", dataclasses.replace(here, host="elsewhere", pid=dead_pid()))
  unmarked_recent = fake_build_dir(config_dir, "incomplete.NEW001_1.0.0", None, age_seconds=3600)
  # Not TFDS's naming (an archive import's staging dir): never touched, whatever its age.
  staging = fake_build_dir(config_dir, "incomplete.0a1b2c3d.1.0.0", None, age_seconds=2 * DAY)

  builder = Builder(config=BuilderConfig(name="stale", splits={"train": [str(tmp_path / "rows.npy")]}),
                    data_dir=str(data_dir))
  builder.download_and_prepare()

  for removed in (dead, reused, rebooted, abandoned):
    assert not removed.exists(), f"{removed.name} was left behind"
  for kept in (live, other_host, unmarked_recent, staging):
    assert (kept / "numpy_arrays-train.tfrecord-00000-of-00001").stat().st_size == 4096, kept.name
  assert sorted(path.name for path in config_dir.iterdir()) == [
      "1.0.0", "incomplete.0a1b2c3d.1.0.0", "incomplete.HOST01_1.0.0",
      "incomplete.LIVE01_1.0.0", "incomplete.NEW001_1.0.0"]
  # The marker was the build's own; the finished dataset does not carry it.
  assert not (config_dir / "1.0.0" / streaming_builder.OWNER_MARKER).exists()
  assert tfds.builder_from_directory(str(config_dir / "1.0.0")).info.splits["train"].num_examples == 4


def test_unreadable_or_forged_markers_are_judged_by_age(tmp_path):
  config_dir = tmp_path / "numpy_arrays" / "forged"
  garbled = fake_build_dir(config_dir, "incomplete.GARBL1_1.0.0", None)
  (garbled / streaming_builder.OWNER_MARKER).write_text("{not json")
  # A marker that parses but names no process this machine can check: kept, however old.
  zero_pid = fake_build_dir(config_dir, "incomplete.ZERO01_1.0.0",
                            dataclasses.replace(BuildOwner.current(), pid=0), age_seconds=2 * DAY)
  old_garbled = fake_build_dir(config_dir, "incomplete.GARBL2_1.0.0", None, age_seconds=2 * DAY)
  (old_garbled / streaming_builder.OWNER_MARKER).write_text("[]")
  os.utime(old_garbled / streaming_builder.OWNER_MARKER, (time.time() - 2 * DAY,) * 2)
  os.utime(old_garbled, (time.time() - 2 * DAY,) * 2)

  removed = streaming_builder.remove_stale_builds(config_dir)

  assert [path.name for path in removed] == ["incomplete.GARBL2_1.0.0"]
  assert garbled.exists() and zero_pid.exists() and not old_garbled.exists()


@pytest.mark.slow
def test_a_killed_tfds_build_is_cleaned_up_by_the_next_build(tmp_path):
  rows = np.random.default_rng(0).standard_normal((3_000, 32, 32, 3), dtype=np.float32)  # 37 MB
  np.save(tmp_path / "rows.npy", rows)
  data_dir = tmp_path / "tfds"
  config = {"name": "killed", "splits": {"train": [str(tmp_path / "rows.npy")]}}
  killed_pid = faults.kill_tfds_build_while_writing("numpy_arrays", config, data_dir)
  config_dir = data_dir / "numpy_arrays" / "killed"
  (left,) = config_dir.glob("incomplete.*")
  assert BuildOwner.read(left).pid == killed_pid
  assert not (config_dir / "1.0.0").exists()

  faults.tfds_build("numpy_arrays", config, data_dir)

  assert not list(config_dir.glob("incomplete.*")), "the killed build's dir was left behind"
  builder = tfds.builder_from_directory(str(config_dir / "1.0.0"))
  assert builder.info.splits["train"].num_examples == 3_000
  last = next(iter(tfds.as_numpy(builder.as_dataset(split="train[-1:]"))))
  assert last["array"].tobytes() == rows[-1].tobytes()


@pytest.mark.parametrize("name", ["incomplete.AB12CD_1.0.0", f"incomplete.{'0' * 32}.1.0.0"])
def test_tfds_incomplete_dir_names_are_recognised(name):
  assert tfds_internals.incomplete_dir_pattern().match(name)


def test_the_pattern_matches_what_this_tfds_creates(tmp_path):
  """Guards the naming contract with TFDS: a renamed scheme would silently disable the cleanup."""
  from tensorflow_datasets.core.utils import file_utils  # pylint: disable=import-outside-toplevel

  with file_utils.incomplete_dir(tmp_path / "1.0.0") as build_dir:
    assert tfds_internals.incomplete_dir_pattern().match(pathlib.Path(build_dir).name)
