"""The concatenated block copy gives the record-by-record copy's keys and bytes, and fails as it does."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders.concatenated import BuilderConfig
from tfds_builders.concatenated import plan as plan_lib
from tfds_builders.concatenated import records
from tfds_builders.core import errors
from tfds_builders.core import shard_writer

from tests import helpers

_FEATURES = {
    "image": tfds.features.Tensor(shape=(), dtype=np.str_),
    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
}


def _record(index: int) -> bytes:
  """An Example of 0-2999 bytes of image: records of every size, ~1.5 MB a thousand (several blocks)."""
  image = bytes([index % 251]) * (index * 7919 % 3000)
  return tf.train.Example(features=tf.train.Features(feature={
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
  })).SerializeToString()


def _files(tmp_path: pathlib.Path, counts: list[int], compression: str = "") -> list[pathlib.Path]:
  paths, first = [], 0
  for number, count in enumerate(counts):
    paths.append(helpers.write_records(tmp_path / f"part-{number}.tfrecord",
                                       [_record(first + i) for i in range(count)], compression))
    first += count
  return paths


def _prepared(tmp_path: pathlib.Path, counts: list[int]) -> str:
  """A prepared dataset of one split whose shards are the files of `counts` records (hard-linked)."""
  version_dir = tmp_path / "prepared" / "shards" / "1.0.0"
  version_dir.mkdir(parents=True)
  for number, path in enumerate(_files(tmp_path, counts)):
    path.rename(version_dir / f"shards-train.tfrecord-{number:05d}-of-{len(counts):05d}")
  tfds.folder_dataset.write_metadata(
      data_dir=version_dir, features=tfds.features.FeaturesDict(_FEATURES),
      split_infos=[tfds.core.SplitInfo(name="train", shard_lengths=counts, num_bytes=0)],
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", check_data=False,
  )
  return str(version_dir)


def _tasks(sources: list[dict], **options) -> list[records.CopyTask]:
  plan = plan_lib.ConcatenationPlan.from_config(BuilderConfig(name="blocks", sources=sources, **options))
  return [task for tasks in plan.streams("train") for task in tasks]


def _both(task: records.CopyTask) -> tuple[list, list]:
  """The task's (key, record) pairs from the block copy and from the record-by-record copy."""
  return list(shard_writer.unblocked(records.copy_blocks(task))), list(records.copy_records(task))


@pytest.mark.parametrize("provenance", [True, False])
def test_prepared_shards_copy_as_blocks_with_the_same_keys_and_bytes(tmp_path, provenance):
  # 9 -> 10, 99 -> 100, 999 -> 1000 and 1024 (the single records' end) are crossed; the second shard
  # numbers its split slices from 1100.
  tasks = _tasks([{"name": "s", "dataset_dir": _prepared(tmp_path, [1100, 2300])}],
                 per_example_provenance=provenance)
  assert [task.part.first_index for task in tasks] == [0, 1100]
  for task in tasks:
    blocks, one_by_one = _both(task)
    assert len(blocks) == task.part.num_records
    assert blocks == one_by_one
  if provenance:
    assert blocks[0][0] == "s:train:1100"
    assert blocks[0][1].endswith(b"train[1100:1101]")


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_raw_files_copy_as_blocks_with_the_same_keys_and_bytes(tmp_path, compression):
  paths = _files(tmp_path, [1500, 30], compression)
  tasks = _tasks([{"name": "r", "tfrecords": [str(path) for path in paths]}])
  for task in tasks:
    blocks, one_by_one = _both(task)
    assert blocks == one_by_one
  assert blocks[-1][0] == "r:train:1529"
  assert blocks[-1][1].endswith(b"part-1.tfrecord:29")


def _big_record(index: int) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes([index % 251]) * 40_000])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
  })).SerializeToString()


@pytest.mark.parametrize(("record", "count", "split_position"), [
    (_record, 3000, 0),  # the sample ends on its records, inside a block
    (_record, 3000, 700),  # a later file: the split's records up to the sample's end one by one
    (_big_record, 500, 0),  # the sample ends on its bytes (16 MiB) before 1024 records
], ids=["records", "later-file", "bytes"])
def test_the_shard_writer_samples_blocks_as_records_given_one_by_one(tmp_path, record, count, split_position):
  assert (records._SAMPLE_RECORDS, records._SAMPLE_BYTES) == (shard_writer._SAMPLE_EXAMPLES, shard_writer._SAMPLE_BYTES)
  path = helpers.write_records(tmp_path / "a.tfrecord", [record(i) for i in range(count)])
  task = _tasks([{"name": "r", "tfrecords": str(path)}])[0]
  blocks = list(records.copy_blocks(task, split_position))
  sample, _ = shard_writer._sampled(iter(blocks))
  # What the sample holds of the file: the records before the file are taken as sampled one by one.
  one_by_one, _ = shard_writer._sampled(iter(list(records.copy_records(task))[:max(1024 - split_position, 0)]))
  if split_position:
    assert [len(frames) for _, frames in blocks[:1024 - split_position]] == [1] * (1024 - split_position)
  else:
    assert sample == shard_writer._sampled(iter(records.copy_records(task)))[0]
    assert [len(frames) for _, frames in blocks].count(1) <= 2  # cut once (and maybe a last record), not split up
  assert sample.num_examples >= one_by_one.num_examples
  assert sum(len(frames) for _, frames in blocks) == count


def _corrupt_data(path: pathlib.Path, index: int) -> int:
  """Flips a byte in record `index`'s data; returns its frame's offset."""
  data = bytearray(path.read_bytes())
  offset = 0
  for _ in range(index):
    offset += int.from_bytes(data[offset:offset + 8], "little") + 16
  data[offset + 12] ^= 0xFF
  path.write_bytes(bytes(data))
  return offset


def _failures_of_both_copies(task) -> list[str]:
  """The SourceError messages of the block copy and the record copy of `task`, checked to be equal."""
  messages = []
  for copy in (records.copy_blocks, records.copy_records):
    with pytest.raises(errors.SourceError) as raised:
      list(copy(task))
    messages.append(str(raised.value))
  assert messages[0] == messages[1]
  return messages


@pytest.mark.parametrize("index", [0, 1500])
def test_a_corrupt_record_fails_the_block_copy_as_the_record_copy(tmp_path, index):
  path = _files(tmp_path, [2000])[0]
  task = _tasks([{"name": "r", "tfrecords": str(path)}])[0]  # counted before the damage
  offset = _corrupt_data(path, index)
  messages = _failures_of_both_copies(task)
  assert f"source 'r': {path}: record {index} is corrupt or truncated (at byte {offset}: " in messages[0]
  assert "do not match their checksum" in messages[0]


@pytest.mark.parametrize("counts", [[1200, 5], [1200, -5]], ids=["more", "fewer"])
def test_a_file_of_another_count_fails_the_block_copy_as_the_record_copy(tmp_path, counts):
  version_dir = pathlib.Path(_prepared(tmp_path, [1200]))
  shard = version_dir / "shards-train.tfrecord-00000-of-00001"
  found = sum(counts)
  helpers.write_records(shard, [_record(i) for i in range(found)])
  task = _tasks([{"name": "s", "dataset_dir": str(version_dir)}])[0]
  messages = _failures_of_both_copies(task)
  assert f"holds {found} records, but its dataset's dataset_info.json (shard_lengths) says 1200" in messages[0]


def test_no_block_leaves_before_the_count_is_checked(tmp_path):
  version_dir = pathlib.Path(_prepared(tmp_path, [1100]))
  helpers.write_records(version_dir / "shards-train.tfrecord-00000-of-00001", [_record(i) for i in range(1099)])
  task = _tasks([{"name": "s", "dataset_dir": str(version_dir)}])[0]
  given = 0
  with pytest.raises(errors.SourceError, match="holds 1099 records"):
    for _, frames in records.copy_blocks(task):
      given += len(frames)
  assert given < 1099
