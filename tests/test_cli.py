"""Tests of the `tfds-builders` command: list, inspect, exit codes and error lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tfds_builders import cli
from tfds_builders.numpy_arrays import Builder


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> str:
  builder = Builder(config="demo", data_dir=str(tmp_path_factory.mktemp("data")))
  builder.download_and_prepare()
  return str(builder.data_path)


def test_list_names_every_builder_and_config(capsys) -> None:
  assert cli.main(["list"]) == cli.EXIT_OK
  out = capsys.readouterr().out
  assert "numpy_arrays: NumPy arrays as a TFDS dataset, bit-exact." in out
  assert "numpy_arrays/demo:" in out and "numpy_arrays/variable_shapes:" in out


def test_inspect_prints_features_splits_and_provenance(demo_dir, capsys) -> None:
  assert cli.main(["inspect", demo_dir]) == cli.EXIT_OK
  out = capsys.readouterr().out
  assert out.startswith("numpy_arrays/demo:1.0.0  (tfrecord)")
  assert "train: 8 examples, 1 shards," in out and "test: 2 examples" in out
  assert '"builder": "numpy_arrays"' in out


def test_inspect_json_is_machine_readable(demo_dir, capsys) -> None:
  assert cli.main(["inspect", demo_dir, "--json"]) == cli.EXIT_OK
  described = json.loads(capsys.readouterr().out)
  assert described["features"] == {
      "image": {"dtype": "uint8", "shape": [4, 4, 3]},
      "label": {"dtype": "int64", "shape": []},
  }
  assert described["splits"]["train"]["num_examples"] == 8
  assert described["provenance"]["config"]["name"] == "demo"


def test_bad_input_is_one_line_on_stderr_with_exit_1(tmp_path, capsys) -> None:
  assert cli.main(["inspect", str(tmp_path)]) == cli.EXIT_ERROR
  err = capsys.readouterr().err
  assert err.count("\n") == 1
  assert err.startswith("tfds-builders inspect: error: ")
  assert "dataset_info.json not found" in err


def test_debug_shows_the_traceback(tmp_path) -> None:
  # --debug lets the error propagate (pytest sees it) instead of the one-line report and exit 1.
  with pytest.raises(FileNotFoundError, match=r"dataset_info\.json not found: pass a prepared dataset version directory"):
    cli.main(["--debug", "inspect", str(tmp_path)])


@pytest.mark.slow
def test_console_script_help_and_usage_error() -> None:
  ok = subprocess.run([sys.executable, "-m", "tfds_builders.cli", "--help"], capture_output=True, text=True)
  assert ok.returncode == 0 and "inspect" in ok.stdout and "Exit codes" in ok.stdout
  bad = subprocess.run([sys.executable, "-m", "tfds_builders.cli", "nope"], capture_output=True, text=True)
  assert bad.returncode == cli.EXIT_USAGE and "invalid choice" in bad.stderr


def test_compact_is_listed_with_its_arguments() -> None:
  ok = subprocess.run([sys.executable, "-m", "tfds_builders.cli", "compact", "--help"], capture_output=True, text=True)
  assert ok.returncode == 0
  assert "usage: tfds-builders compact [-h] [--data_dir DATA_DIR] [--name NAME]" in ok.stdout
  assert "overlay out_data_dir" in " ".join(ok.stdout.split())
  bad = subprocess.run([sys.executable, "-m", "tfds_builders.cli", "compact"], capture_output=True, text=True)
  assert bad.returncode == cli.EXIT_USAGE and "the following arguments are required: overlay, out_data_dir" in bad.stderr
