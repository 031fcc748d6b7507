"""numpy_arrays on Beam by row ranges cut where the shards end: the same shards as a local build."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from tfds_builders.core import shard_plan
from tfds_builders.core import streaming_builder
from tfds_builders.numpy_arrays import Builder
from tfds_builders.numpy_arrays import BuilderConfig
from tfds_builders.numpy_arrays import encoding


def _shards(version_dir: pathlib.Path) -> dict[str, bytes]:
  return {path.name: path.read_bytes() for path in sorted(version_dir.glob("*.tfrecord-*"))}


def _two_files(tmp_path: pathlib.Path) -> pathlib.Path:
  source = tmp_path / "arrays"
  source.mkdir()
  rng = np.random.default_rng(0)
  np.save(source / "a.npy", rng.standard_normal((301, 16, 4), dtype=np.float32))
  np.save(source / "b.npy", rng.integers(0, 9, (157, 16, 4), dtype=np.int64).astype(np.float32))
  return source


def _range_partitions(builder: Builder) -> streaming_builder.RangePartitions:
  streams = builder._split_streams(None, None)  # pylint: disable=protected-access
  assert isinstance(streams["train"], streaming_builder.RangePartitions)
  return streams["train"]


@pytest.mark.slow  # starts 2 Beam worker processes
def test_beam_by_row_ranges_writes_the_local_shards(tmp_path):
  config = BuilderConfig(name="ranges", splits={"train": [str(_two_files(tmp_path))]})
  # 64 KiB shards: 458 examples of ~280 bytes make 2-power shards that cut inside both files.
  sizes = {"min_shard_size": 32 << 10, "max_shard_size": 64 << 10}
  local = Builder(config=config, data_dir=str(tmp_path / "local"))
  local.download_and_prepare(download_config=tfds.download.DownloadConfig(**sizes))
  on_beam = Builder(config=config, data_dir=str(tmp_path / "beam"))
  on_beam.download_and_prepare(download_config=tfds.download.DownloadConfig(
      beam_options=PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"]), **sizes))
  local_shards, beam_shards = _shards(local.data_path), _shards(on_beam.data_path)
  assert len(local_shards) > 2
  assert beam_shards == local_shards
  assert on_beam.info.splits["train"].shard_lengths == local.info.splits["train"].shard_lengths


def test_the_cut_is_one_partition_per_shard_and_their_examples_are_the_local_ones(tmp_path):
  builder = Builder(config=BuilderConfig(name="cut", splits={"train": [str(_two_files(tmp_path))]}),
                    data_dir=str(tmp_path / "out"))
  split = _range_partitions(builder)
  sizing = shard_plan.ShardSizing(min_shard_bytes=32 << 10, max_shard_bytes=64 << 10)
  whole = list(split)
  lengths = sizing.shard_lengths(sum(len(serialized) for _, serialized in whole), len(whole))
  partitions = split.cut(sizing).generators
  assert [len(list(generate())) for generate in partitions] == lengths
  assert [item for generate in partitions for item in generate()] == whole
  head_bytes = sum(len(serialized) for _, serialized in whole[:300])
  assert [len(list(generate())) for generate in split.cut(sizing, max_examples=300).generators] == \
      sizing.shard_lengths(head_bytes, 300) == [150, 150]


def test_a_row_slice_has_the_keys_and_bytes_of_the_whole_file(tmp_path):
  builder = Builder(config=BuilderConfig(name="slice", splits={"train": [str(_two_files(tmp_path))]}),
                    data_dir=str(tmp_path / "out"))
  plan = builder._plan  # pylint: disable=protected-access
  groups = plan.groups_for("train")
  whole = [item for group in groups for item in encoding.group_examples(plan, "train", group, "rows")]
  cuts = [0, 1, 300, 301, 302, 458]
  pieces = [encoding.rows_partition(plan, "train", groups, start, stop) for start, stop in zip(cuts, cuts[1:])]
  assert [item for generate in pieces for item in generate()] == whole
  assert encoding.serialized_bytes(plan, "train", groups) == sum(len(serialized) for _, serialized in whole)


def test_a_hash_split_or_a_zip_archive_keeps_one_partition_per_file(tmp_path):
  source = _two_files(tmp_path)
  hashed = Builder(config=BuilderConfig(name="hashed", paths=[str(source)], split_percent={"train": 50, "test": 50}),
                   data_dir=str(tmp_path / "hashed"))
  assert isinstance(hashed._split_streams(None, None)["train"], streaming_builder.Partitions)  # pylint: disable=protected-access
  np.savez(tmp_path / "z.npz", x=np.zeros((4, 2), np.float32))
  zipped = Builder(config=BuilderConfig(name="zipped", splits={"train": [str(tmp_path / "z.npz")]}),
                   data_dir=str(tmp_path / "zipped"))
  assert isinstance(zipped._split_streams(None, None)["train"], streaming_builder.Partitions)  # pylint: disable=protected-access


def test_a_range_outside_the_array_is_refused(tmp_path):
  builder = Builder(config=BuilderConfig(name="bad", splits={"train": [str(_two_files(tmp_path))]}),
                    data_dir=str(tmp_path / "out"))
  source = next(iter(builder._plan.groups_for("train")[0].sources.values()))  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r"rows \[0, 302\) cannot be read alone"):
    list(source.iter_chunks(64, 0, 302))
