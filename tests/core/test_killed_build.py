"""A build killed mid-write leaves no dataset that TFDS accepts, and a rerun succeeds."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import faults

pytestmark = pytest.mark.slow  # every test runs `tfds build` in a subprocess


def test_a_killed_tfds_build_leaves_nothing_loadable_and_a_rerun_succeeds(tmp_path) -> None:
  rows = np.random.default_rng(0).standard_normal((12_000, 32, 32, 3), dtype=np.float32)  # 150 MB
  np.save(tmp_path / "rows.npy", rows)
  data_dir = tmp_path / "data"
  config = {"name": "big", "splits": {"train": [str(tmp_path / "rows.npy")]}}
  faults.kill_tfds_build_while_writing("numpy_arrays", config, data_dir)
  config_dir = data_dir / "numpy_arrays" / "big"

  assert not (config_dir / "1.0.0").exists()
  with pytest.raises(Exception, match="Could not read dataset info"):
    tfds.builder_from_directory(str(config_dir / "1.0.0"))
  with pytest.raises(ValueError, match="BuilderConfig big not found"):
    tfds.load("numpy_arrays/big", data_dir=str(data_dir), download=False, split="train")

  faults.tfds_build("numpy_arrays", config, data_dir)
  builder = tfds.builder_from_directory(str(config_dir / "1.0.0"))
  assert builder.info.splits["train"].num_examples == 12_000
  last = next(iter(tfds.as_numpy(builder.as_dataset(split="train[-1:]"))))
  assert last["array"].tobytes() == rows[-1].tobytes()
