"""docs/index.md's "TFDS flag / option" table: each row names a test that exists, and the rows no other file covers."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import faults

_TABLE_HEADING = "## TFDS flags and options"
_TEST_NAME = re.compile(r"`(test_\w+)`")


def _table_rows() -> list[str]:
  text = (faults.REPO / "docs" / "index.md").read_text()
  assert _TABLE_HEADING in text, f"docs/index.md lost its {_TABLE_HEADING!r} section"
  section = text.split(_TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
  return [line for line in section.splitlines() if line.startswith("| `")]


def _defined_tests() -> set[str]:
  return {
      match for path in (faults.REPO / "tests").rglob("test_*.py")
      for match in re.findall(r"^\s*def (test_\w+)", path.read_text(), re.MULTILINE)
  }


def test_every_row_names_tests_that_exist() -> None:
  rows = _table_rows()
  assert len(rows) >= 15, rows
  defined = _defined_tests()
  for row in rows:
    named = _TEST_NAME.findall(row)
    assert named, f"a row names no test: {row}"
    missing = [name for name in named if name not in defined]
    assert not missing, f"{missing} named in docs/index.md do not exist: {row}"


def _train_count(data_dir: pathlib.Path) -> int:
  builder = tfds.builder_from_directory(str(data_dir / "numpy_arrays" / "demo" / "1.0.0"))
  return builder.info.splits["train"].num_examples


@pytest.mark.slow
def test_max_examples_per_split_overwrite_and_config_idx_locally(tmp_path: pathlib.Path) -> None:
  # --config_idx 0 is numpy_arrays' first bundled config, `demo` (8 train, 2 test).
  flags = ("--config_idx", "0")
  folder = str(faults.REPO / "tfds_builders" / "numpy_arrays")
  faults.run_command([faults.TFDS, "build", folder, "--data_dir", str(tmp_path), *flags,
                      "--max_examples_per_split", "3"])
  assert _train_count(tmp_path) == 3
  shard = tmp_path / "numpy_arrays" / "demo" / "1.0.0" / "numpy_arrays-train.tfrecord-00000-of-00001"
  first = shard.read_bytes()
  # Without --overwrite a prepared version is kept as it is, as TFDS does.
  faults.run_command([faults.TFDS, "build", folder, "--data_dir", str(tmp_path), *flags])
  assert _train_count(tmp_path) == 3 and shard.read_bytes() == first
  faults.run_command([faults.TFDS, "build", folder, "--data_dir", str(tmp_path), *flags, "--overwrite"])
  assert _train_count(tmp_path) == 8
  info = json.loads((tmp_path / "numpy_arrays" / "demo" / "1.0.0" / "dataset_info.json").read_text())
  assert [int(n) for split in info["splits"] for n in split["shardLengths"]] == [8, 2]


def test_as_supervised_with_configured_keys_on_the_builders_without_a_default(tmp_path: pathlib.Path) -> None:
  import dataclasses  # pylint: disable=import-outside-toplevel

  import tfds_builders.cross_product  # pylint: disable=import-outside-toplevel
  import tfds_builders.database  # pylint: disable=import-outside-toplevel

  cases = {  # builder class, bundled config, (input, target)
      "database": (tfds_builders.database.Builder, "demo", ("bill_length_mm", "species")),
      "cross_product": (tfds_builders.cross_product.Builder, "product", ("left", "right")),
  }
  for name, (builder_cls, bundled, keys) in cases.items():
    config = next(c for c in builder_cls.BUILDER_CONFIGS if c.name == bundled)
    builder = builder_cls(config=dataclasses.replace(config, name="supervised", supervised_keys=list(keys)),
                          data_dir=str(tmp_path))
    builder.download_and_prepare()
    reread = tfds.builder_from_directory(builder.data_path)
    assert reread.info.supervised_keys == keys, name
    full = list(reread.as_dataset(split="train", read_config=tfds.ReadConfig(interleave_cycle_length=1)))
    pairs = list(reread.as_dataset(split="train", as_supervised=True,
                                   read_config=tfds.ReadConfig(interleave_cycle_length=1)))
    assert len(pairs) == len(full) == reread.info.splits["train"].num_examples > 0, name
    for (inputs, targets), example in zip(pairs, full):
      for got, want in ((inputs, example[keys[0]]), (targets, example[keys[1]])):
        tf.nest.assert_same_structure(got, want)
        assert all(bool(tf.reduce_all(a == b)) for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want))), name
