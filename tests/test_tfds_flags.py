"""`tfds build` flags and `tfds.load` options on our builders: shards, order, shuffle, formats, Beam."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_datasets.core.utils import shard_utils

from tests import faults
from tests import helpers
from tfds_builders.core import errors
from tfds_builders.core import shard_plan
from tfds_builders.numpy_arrays import Builder as NumpyArraysBuilder
from tfds_builders.numpy_arrays import BuilderConfig as NumpyArraysConfig


_BEAM_ONE_WORKER = "--beam_pipeline_options=direct_running_mode=in_memory,direct_num_workers=1"
_MIB = 1 << 20


def _rows(tmp_path: pathlib.Path, name: str, start: int, count: int) -> pathlib.Path:
  """An .npy of `count` int64 rows `start, start+1, ...` (one example each)."""
  path = tmp_path / "src" / name
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, np.arange(start, start + count, dtype=np.int64))
  return path


def _prepared(data_dir: pathlib.Path, name: str = "numpy_arrays/mine") -> tfds.core.DatasetBuilder:
  return tfds.builder_from_directory(str(next((data_dir / name).iterdir())))


def _stored(builder: tfds.core.DatasetBuilder, split: str, feature: str = "array") -> list:
  """A split's values in stored order (files in order, one at a time)."""
  read = tfds.ReadConfig(interleave_cycle_length=1)
  dataset = builder.as_dataset(split=split, shuffle_files=False, read_config=read)
  return [int(example[feature]) for example in tfds.as_numpy(dataset)]


def _shard_files(builder: tfds.core.DatasetBuilder, split: str) -> list[pathlib.Path]:
  return [pathlib.Path(builder.data_path) / name for name in builder.info.splits[split].filenames]


def _lengths(num_examples: int, num_shards: int) -> list[int]:
  ends = shard_utils.get_shard_boundaries(num_examples, num_shards)
  return [stop - start for start, stop in zip([0, *ends[:-1]], ends)]


@pytest.mark.parametrize("total_bytes, num_examples", [
    (0, 1), (10 * _MIB, 100), (64 * _MIB, 10), (300 * _MIB, 300), (500 * _MIB, 500), (500 * _MIB, 3),
    (5 << 30, 10_000), (80 << 30, 2_000_000), (3 << 40, 10_000_000), (200 * _MIB, 1),
])
def test_shard_count_is_tfds_rule(total_bytes, num_examples) -> None:
  expected = shard_utils.ShardConfig().get_number_shards(total_bytes, num_examples)
  assert shard_plan.ShardSizing().number_of_shards(total_bytes, num_examples) == expected


def test_shard_count_honours_a_max_below_the_min_and_num_shards() -> None:
  # TFDS 4.9.10's rule reads the class defaults and would give 1 shard of 10 MiB here.
  one_mib = shard_plan.ShardSizing.of(shard_utils.ShardConfig(max_shard_size=_MIB))
  assert one_mib.number_of_shards(10 * _MIB, 1000) == 11  # (10 MiB + 1000 frames) / 1 MiB, rounded up
  assert shard_plan.ShardSizing(num_shards=3).shard_lengths(10, 10) == [3, 4, 3]
  with pytest.raises(errors.ConfigError, match=r"Split 'test' has 2 examples, fewer than --num_shards 3"):
    shard_plan.ShardSizing(num_shards=3).shard_lengths(10, 2, "test")


@pytest.mark.slow
def test_shuffle_files_works_on_unordered_outputs_and_is_refused_on_ordered_ones(tmp_path) -> None:
  data_dir = tmp_path / "tfds"
  faults.run_command([
      faults.TFDS, "build", "--imports", "tfds_builders", "--data_dir", str(data_dir),
      "numpy_arrays/demo", "concatenated/demo", "cross_product/product", "augmented/demo",
      "augmented/demo_overlay", "database/demo",
  ])
  unordered = {"numpy_arrays/demo": 8, "concatenated/demo": 9, "cross_product/product": 20, "augmented/demo": 10}
  for name, count in unordered.items():
    builder = tfds.builder_from_directory(str(helpers.version_dir(data_dir, name)))
    assert not builder.info.disable_shuffling, name
    assert len(list(builder.as_dataset(split="train", shuffle_files=True))) == count, name
  # The user sorted the rows (order_by); an overlay is zipped with its base by position.
  for name in ("database/demo", "augmented/demo_overlay"):
    builder = tfds.builder_from_directory(str(helpers.version_dir(data_dir, name)))
    assert builder.info.disable_shuffling, name
    with pytest.raises(ValueError, match="Dataset is an ordered dataset"):
      builder.as_dataset(split="train", shuffle_files=True)
    assert len(list(builder.as_dataset(split="train"))) == builder.info.splits["train"].num_examples


@pytest.mark.slow
def test_max_shard_size_with_array_record(tmp_path) -> None:
  # ~5.3 MB of 1 KiB random rows under a 1 MiB cap: TFDS's rule finds no power of two, so cut at the cap.
  rows = np.random.default_rng(0).integers(0, 256, size=(5000, 1024), dtype=np.uint8)
  big = tmp_path / "big.npy"
  np.save(big, rows)
  array_record_dir = tmp_path / "array_record"
  faults.tfds_build("numpy_arrays", {"name": "mine", "splits": {"train": [str(big)]}}, array_record_dir,
             "--max_shard_size_mb", "1", "--file_format", "array_record")
  builder = _prepared(array_record_dir)
  lengths = builder.info.splits["train"].shard_lengths
  files = _shard_files(builder, "train")
  assert len(lengths) == 6 and sum(lengths) == 5000
  assert lengths == _lengths(5000, 6)
  assert all(path.stat().st_size <= _MIB for path in files), [p.stat().st_size for p in files]
  source_rows = builder.as_data_source(split="train")
  assert len(source_rows) == 5000
  for index in (0, 833, 834, 2500, 4999):
    np.testing.assert_array_equal(source_rows[index]["array"], rows[index])


@pytest.mark.slow
def test_beam_num_shards_and_max_examples_per_split_match_the_local_build(tmp_path) -> None:
  sources = [str(_rows(tmp_path, f"part{i}.npy", 100 * i, 2)) for i in range(4)]
  config = {"name": "mine", "splits": {"train": sources}}
  beam_dir = tmp_path / "beam"
  faults.tfds_build("numpy_arrays", config, beam_dir,
                    "--num_shards", "3", "--max_examples_per_split", "5", _BEAM_ONE_WORKER)
  on_beam = _prepared(beam_dir)
  assert on_beam.info.splits["train"].shard_lengths == [2, 1, 2]
  assert len(_shard_files(on_beam, "train")) == 3
  assert _stored(on_beam, "train") == [0, 1, 100, 101, 200]  # the first 5 in dataset order
  leftovers = (".tmp", ".shard_plan.json", ".shard_bytes.json")
  assert [p.name for p in pathlib.Path(on_beam.data_path).iterdir() if p.name.endswith(leftovers)] == []

  local = NumpyArraysBuilder(config=NumpyArraysConfig(**config), data_dir=str(tmp_path / "local"))
  local.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3, max_examples_per_split=5))
  assert local.info.splits["train"].shard_lengths == [2, 1, 2]
  local_bytes = [p.read_bytes() for p in _shard_files(local, "train")]
  assert local_bytes == [p.read_bytes() for p in _shard_files(on_beam, "train")]

  # Without flags, the four 2-example partitions are far below TFDS's min shard size: one shard.
  merged = NumpyArraysBuilder(config=NumpyArraysConfig(**config), data_dir=str(tmp_path / "merged"))
  merged.download_and_prepare(download_config=tfds.download.DownloadConfig(
      beam_options=PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])))
  assert merged.info.splits["train"].shard_lengths == [8]
  assert _stored(merged, "train") == [0, 1, 100, 101, 200, 201, 300, 301]

  too_many = NumpyArraysBuilder(config=NumpyArraysConfig(**config), data_dir=str(tmp_path / "too_many"))
  with pytest.raises(errors.ConfigError, match=r"Split 'train' has 8 examples, fewer than --num_shards 9"):
    too_many.download_and_prepare(download_config=tfds.download.DownloadConfig(
        num_shards=9, beam_options=PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])))


@pytest.mark.slow
def test_shuffle_and_num_shards_with_parquet(tmp_path) -> None:
  source = _rows(tmp_path, "a.npy", 0, 300)
  config = {"name": "mine", "splits": {"train": [str(source)]}, "shuffle": True}
  faults.tfds_build("numpy_arrays", config, tmp_path / "cli", "--num_shards", "3", "--file_format", "parquet")
  builder = _prepared(tmp_path / "cli")
  assert builder.info.splits["train"].shard_lengths == [100, 100, 100]
  assert [p.name for p in _shard_files(builder, "train")] == [
      f"numpy_arrays-train.parquet-{i:05d}-of-00003" for i in range(3)]
  assert builder.info.splits["train"].num_bytes == sum(p.stat().st_size for p in _shard_files(builder, "train"))
  from_cli = _stored(builder, "train")
  assert sorted(from_cli) == list(range(300))  # every example once, in another order
  assert from_cli != list(range(300))
  assert not builder.info.disable_shuffling
  assert len(list(builder.as_dataset(split="train", shuffle_files=True))) == 300

  # The order is the keys' hashes: another build (here TFRecord, one shard) stores the same sequence.
  again = NumpyArraysBuilder(config=NumpyArraysConfig(**config), data_dir=str(tmp_path / "again"))
  again.download_and_prepare()
  assert _stored(again, "train") == from_cli
  assert not list((tmp_path / "again").rglob(".shuffle-*"))
  with pytest.raises(errors.ConfigError, match="sets both ordered: true and shuffle: true"):
    both = NumpyArraysBuilder(config=NumpyArraysConfig(**config, ordered=True), data_dir=str(tmp_path / "both"))
    both.info  # noqa: B018


@pytest.mark.slow
def test_a_300_mb_build_gets_tfds_shard_count(tmp_path) -> None:
  rows = np.random.default_rng(1).integers(0, 256, size=(300, _MIB), dtype=np.uint8)
  big = tmp_path / "src" / "big.npy"
  big.parent.mkdir()
  np.save(big, rows)
  del rows
  faults.tfds_build("numpy_arrays", {"name": "mine", "splits": {"train": [str(big)]}}, tmp_path / "tfds")
  builder = _prepared(tmp_path / "tfds")
  split = builder.info.splits["train"]
  files = _shard_files(builder, "train")
  assert split.num_bytes == sum(p.stat().st_size for p in files)
  serialized = split.num_bytes - 300 * shard_plan.RECORD_OVERHEAD
  expected = shard_utils.ShardConfig().get_number_shards(serialized, 300)
  assert expected == 4
  assert split.shard_lengths == _lengths(300, expected) == [75, 75, 75, 75]
  assert [p.name for p in files] == [f"numpy_arrays-train.tfrecord-{i:05d}-of-00004" for i in range(4)]
  last = tf.data.TFRecordDataset([str(files[-1])])
  assert sum(1 for _ in last) == 75
  assert not [p for p in pathlib.Path(builder.data_path).iterdir() if p.suffix == ".tmp"]
