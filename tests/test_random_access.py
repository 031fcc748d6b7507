"""Random access: `tfds build --file_format array_record|parquet` builds read by index through tfds.data_source and Grain."""

from __future__ import annotations

import numpy as np
import pytest

from tests import helpers
from tests.faults import REPO, TFDS, run_command

# Each builder's default config (its first), and the one split all of them have.
DEFAULTS = {
    "numpy_arrays": "demo",
    "concatenated": "demo",
    "cross_product": "product",
    "database": "demo",
    "augmented": "demo",
}
FORMATS = ("tfrecord", "array_record", "parquet")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> dict[str, object]:
  """Every builder's default config, built once per file format, one `tfds build` per format."""
  root = tmp_path_factory.mktemp("random_access")
  folders = [str(REPO / "tfds_builders" / name) for name in DEFAULTS]
  for file_format in FORMATS:
    run_command([TFDS, "build", *folders, "--config_idx", "0", "--file_format", file_format,
                 "--data_dir", str(root / file_format)], timeout=600)
  return {file_format: root / file_format for file_format in FORMATS}


def _builder(data_dirs, file_format: str, name: str):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  return tfds.builder_from_directory(str(helpers.version_dir(data_dirs[file_format], name, DEFAULTS[name])))


def _reference(data_dirs, name: str) -> list[dict]:
  """The tfrecord build's train examples, in stored order."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  dataset = _builder(data_dirs, "tfrecord", name).as_dataset(split="train", shuffle_files=False)
  return [tfds.core.utils.flatten_nest_dict(example) for example in tfds.as_numpy(dataset)]


def _assert_same(actual: dict, expected: dict, where: str) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  actual = tfds.core.utils.flatten_nest_dict(actual)
  assert sorted(actual) == sorted(expected), where
  for feature, value in expected.items():
    value = np.asarray(value)
    got = np.asarray(actual[feature])
    assert got.shape == value.shape, f"{where} {feature}: {got.shape}"
    if value.dtype.kind in "OSU":
      assert got.tolist() == value.tolist(), f"{where} {feature}: {got!r} != {value!r}"
      continue
    # TFDS's NumPy parser (data sources) gives a float32 scalar as a Python float: compare its value as float32.
    assert got.dtype == value.dtype or (got.shape == () and got.dtype.kind == value.dtype.kind), \
        f"{where} {feature}: {got.dtype} != {value.dtype}"
    assert got.astype(value.dtype).tobytes() == value.tobytes(), f"{where} {feature}: {got!r} != {value!r}"


@pytest.mark.slow
@pytest.mark.parametrize("file_format", ["array_record", "parquet"])
@pytest.mark.parametrize("name", list(DEFAULTS))
def test_data_source_reads_by_index(data_dirs, name: str, file_format: str):
  import grain  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  expected = _reference(data_dirs, name)
  builder = _builder(data_dirs, file_format, name)
  assert builder.info.file_format.value == file_format
  assert builder.info.splits["train"].num_examples == len(expected) > 1
  source = tfds.data_source(f"{name}/{DEFAULTS[name]}", split="train", data_dir=str(data_dirs[file_format]))
  assert len(source) == len(expected)
  picks = sorted({0, 1, len(expected) // 2, len(expected) - 1})
  for index in reversed(picks):  # out of order: random access, not a scan
    _assert_same(source[index], expected[index], f"{name} {file_format} [{index}]")
  for index, example in zip(picks, source.__getitems__(picks)):
    _assert_same(example, expected[index], f"{name} {file_format} batch [{index}]")
  with pytest.raises((IndexError, ValueError)):  # array_record's reader raises ValueError
    source[len(expected)]

  dataset = grain.MapDataset.source(source)
  assert len(dataset) == len(expected)
  _assert_same(dataset[len(expected) - 1], expected[-1], f"{name} {file_format} grain")
  loader = grain.DataLoader(
      data_source=source,
      sampler=grain.samplers.IndexSampler(num_records=len(source), shuffle=False, num_epochs=1, seed=0),
      worker_count=0,
  )
  loaded = list(loader)
  assert len(loaded) == len(expected)
  for index, example in enumerate(loaded):
    _assert_same(example, expected[index], f"{name} {file_format} DataLoader [{index}]")


@pytest.mark.slow
def test_every_split_reads_equal_to_tfrecord(data_dirs):
  """Every example of every split, in order: parquet through tfds.load, array_record through its data source.

  TFDS 4.9.10 has no tf.data reader for ArrayRecord (`as_dataset` raises
  NotImplementedError), so an array_record build is read by index only.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  for name in DEFAULTS:
    splits = _builder(data_dirs, "tfrecord", name).info.splits
    for file_format in ("array_record", "parquet"):
      builder = _builder(data_dirs, file_format, name)
      assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
          split: info.num_examples for split, info in splits.items()}
      for split in splits:
        read = tfds.data_source if file_format == "array_record" else tfds.load
        loaded = read(f"{name}/{DEFAULTS[name]}", split=split, data_dir=str(data_dirs[file_format]))
        loaded = loaded if file_format == "array_record" else tfds.as_numpy(loaded)
        reference = tfds.as_numpy(_builder(data_dirs, "tfrecord", name).as_dataset(split=split, shuffle_files=False))
        count = 0
        for count, (example, expected) in enumerate(zip(loaded, reference, strict=True), start=1):
          _assert_same(example, tfds.core.utils.flatten_nest_dict(expected), f"{name} {file_format} {split}")
        assert count == splits[split].num_examples
