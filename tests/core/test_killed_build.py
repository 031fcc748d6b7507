"""A build killed mid-write leaves no dataset that TFDS accepts, and a rerun succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import helpers

pytestmark = pytest.mark.slow  # every test runs `tfds build` in a subprocess


def test_a_killed_tfds_build_leaves_nothing_loadable_and_a_rerun_succeeds(tmp_path) -> None:
  rows = np.random.default_rng(0).standard_normal((12_000, 32, 32, 3), dtype=np.float32)  # 150 MB
  np.save(tmp_path / "rows.npy", rows)
  data_dir = tmp_path / "data"
  command = [
      str(Path(sys.executable).parent / "tfds"), "build", str(helpers.REPO / "tfds_builders" / "numpy_arrays"),
      "--data_dir", str(data_dir),
      "--config", f'{{"name": "big", "splits": {{"train": ["{tmp_path / "rows.npy"}"]}}}}',
  ]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  build = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  config_dir = data_dir / "numpy_arrays" / "big"
  deadline = time.monotonic() + 120
  while not any(config_dir.glob("incomplete.*/*.tmp")):  # shards are being written
    assert build.poll() is None, "the build ended before it could be killed"
    assert time.monotonic() < deadline, "the build never started writing"
    time.sleep(0.01)
  build.send_signal(signal.SIGKILL)
  build.wait(timeout=30)

  assert not (config_dir / "1.0.0").exists()
  with pytest.raises(Exception, match="Could not read dataset info"):
    tfds.builder_from_directory(str(config_dir / "1.0.0"))
  with pytest.raises(ValueError, match="BuilderConfig big not found"):
    tfds.load("numpy_arrays/big", data_dir=str(data_dir), download=False, split="train")

  subprocess.run(command, env=env, check=True, capture_output=True)
  builder = tfds.builder_from_directory(str(config_dir / "1.0.0"))
  assert builder.info.splits["train"].num_examples == 12_000
  last = next(iter(tfds.as_numpy(builder.as_dataset(split="train[-1:]"))))
  assert last["array"].tobytes() == rows[-1].tobytes()
