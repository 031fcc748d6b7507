"""Copying source records into the output: provenance tags, optional zlib re-encoding."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2

from tfds_builders.concatenated import mixing
from tfds_builders.concatenated import sources
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import shard_writer
from tfds_builders.core import tfrecord_io

KeySerialized = tuple[str, bytes]
# The shard writer plans a split's shards from its head: its first 1024 records, or fewer if they reach
# 16 MiB first (shard_writer._SAMPLE_EXAMPLES, _SAMPLE_BYTES). Blocks must end where that head ends, as
# records given one by one do, or the plan (and so the shards' bytes) would change.
_SAMPLE_RECORDS = 1024
_SAMPLE_BYTES = 16 * 1024 * 1024
# Records copied (and written) at a time: a block that stays in the CPU's cache from source to file is
# copied ~1.5x faster than a 16 MiB one, whose fresh pages are also faulted in.
_BLOCK_BYTES = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ZlibEncoder:
  """Re-encodes chosen numeric features as TFDS `Tensor(encoding="zlib")` does.

  Attributes:
    features: (name, output dtype) of each feature to compress.
  """

  features: tuple[tuple[str, str], ...]

  def __call__(self, record: bytes) -> bytes:
    example = tf_example_pb2.Example.FromString(record)
    feature_map = example.features.feature
    for name, dtype in self.features:
      feature = feature_map[name]
      kind = feature.WhichOneof("kind")
      wire_dtype = np.int64 if kind == "int64_list" else np.float32
      values = np.asarray(getattr(feature, kind).value, dtype=wire_dtype)
      feature.Clear()
      # TFDS's own encoder: the values' bytes in the feature dtype, zlib level 6.
      feature.bytes_list.value.append(zlib.compress(values.astype(dtype).tobytes()))
    return example.SerializeToString(deterministic=True)


@dataclasses.dataclass(frozen=True)
class CopyTask:
  """One record file of one source split, copied as one partition.

  Attributes:
    source: Source name.
    source_id: Index of the source in the `source` ClassLabel.
    split: The source's split.
    part: The record file and its place in the split.
    typed: Prepared TFDS source (keys as split slices) or raw (file:record).
    provenance_feature: Name of the provenance features, or None for none.
    zlib: Re-encoder of compressed features, or None.
  """

  source: str
  source_id: int
  split: str
  part: sources.RecordPart
  typed: bool
  provenance_feature: str | None
  zlib: ZlibEncoder | None


def copy_records(task: CopyTask, key_suffix: str = "") -> Iterator[KeySerialized]:
  """Yields `(key, record)` for every record of the task's file, tagged.

  The record bytes are the source's own; the provenance features are a
  second serialized Example appended to them, which parsers merge into one.

  Raises:
    SourceError: naming the source, file and record index of a corrupt
      record, or the file and both counts if it holds another number of
      records than the source said.
  """
  part = task.part
  provenance_head = _Provenance(task.provenance_feature, task.source_id).head if task.provenance_feature else None
  zlib_encoder, typed = task.zlib, task.typed
  key_prefix = f"{task.source}:{task.split}:"
  split_index = part.first_index
  # Where in the source, as the provenance key says: a TFDS split slice or file:record.
  where_prefix = f"{task.split}[" if typed else f"{part.file_name}:"
  try:
    for index, record in enumerate(_checked_records(part, typed)):
      if zlib_encoder:
        record = zlib_encoder(record)
      if provenance_head is not None:
        where = (f"{where_prefix}{split_index}:{split_index + 1}]" if typed else f"{where_prefix}{index}").encode()
        record = b"".join((record, provenance_head(len(where)), where))
      yield f"{key_prefix}{split_index}{key_suffix}", record
      split_index += 1
  except errors.SourceError as error:  # read_records names the file and record
    raise errors.SourceError(f"source {task.source!r}: {error}") from error


def copy_file(task: CopyTask, split_position: int = 0) -> Iterator[shard_writer.StreamItem]:
  """One partition of a concatenation: the task's records as framed blocks, or one by one if re-encoded.

  Args:
    task: The file to copy.
    split_position: How many records of the output split come before the file's.
  """
  return copy_records(task) if task.zlib else copy_blocks(task, split_position)


def copy_blocks(task: CopyTask, split_position: int = 0) -> Iterator[shard_writer.StreamItem]:
  """`copy_records` of a task without zlib re-encoding, as framed blocks: the same keys and bytes.

  Each run of about `_BLOCK_BYTES` of source records is copied,
  CRC-checked and reframed with its provenance in one compiled pass
  (`fast.record_index.reframed`), so no Python runs per record; the new
  frame's CRC carries on from the source data's. The count check is `copy_records`' own: a block is given
  only once the next one is read, and the last once the file's count is
  known to match. Blocks end where the shard writer's sample of the split
  ends (see `_Head`), so its shards are those of a record-by-record stream.

  Raises:
    SourceError: as `copy_records` words it.
  """
  part = task.part
  provenance = _Provenance(task.provenance_feature, task.source_id) if task.provenance_feature else None
  key_prefix = f"{task.source}:{task.split}:"
  # Where in the source, as the provenance key says: a TFDS split slice or file:record.
  where_prefix = (f"{task.split}[" if task.typed else f"{part.file_name}:").encode()
  expected = part.num_records
  found = 0
  pending: shard_writer.FramedBlock | None = None
  head = _Head(split_position)
  try:
    for block in _blocks(part):
      # Provenance numbers: the record's place in its split (prepared) or in its file (raw).
      number = block.first + part.first_index if task.typed else block.first
      suffixes = provenance.suffixes(where_prefix, number, len(block), task.typed) if provenance else None
      frames = fast.record_index.reframed(part.file, block, suffixes)
      del block  # its window is unmapped once nothing refers to it
      if found + len(frames) > expected:
        raise _count_mismatch(part, task.typed, found + len(frames) + _count_rest(part, found + len(frames)))
      first_key = part.first_index + found
      keys = shard_writer.LazyKeys(range(first_key, first_key + len(frames)), functools.partial(_prefixed, key_prefix))
      if pending is not None:
        yield from head.cut(pending)
      pending = keys, frames
      found += len(frames)
    if found != expected:
      raise _count_mismatch(part, task.typed, found)
    if pending is not None:
      yield from head.cut(pending)
  except errors.SourceError as error:  # scan and reframed name the file and record
    raise errors.SourceError(f"source {task.source!r}: {error}") from error


def _blocks(part: sources.RecordPart) -> Iterator[Any]:
  """The file's records in blocks of about `_BLOCK_BYTES` (a `fast.record_index.Block` each)."""
  for window in fast.record_index.scan(part.file, with_window=True, as_reader=True):
    start = 0
    while start < len(window):
      stop = max(int(np.searchsorted(window.offsets, window.offsets[start] + _BLOCK_BYTES)), start + 1)
      yield window.rows(start, stop)
      start = stop
    del window  # unmapped before scan maps the next one


class _Head:
  """Cuts a file's blocks where the shard writer's sample of the split's head ends.

  The sample takes whole stream items until it holds `_SAMPLE_RECORDS`
  records or `_SAMPLE_BYTES` of them. The first file of a split cuts one
  block at that point; a later file within the split's first
  `_SAMPLE_RECORDS` records, not knowing the bytes before it, gives those
  records one per block.
  """

  def __init__(self, split_position: int):
    self._position = split_position  # of the next record in the output split
    self._sampled_bytes = 0 if split_position == 0 else None  # None: the bytes before the file are unknown
    self._done = split_position >= _SAMPLE_RECORDS

  def cut(self, block: shard_writer.FramedBlock) -> Iterator[shard_writer.FramedBlock]:
    keys, frames = block
    count, self._position = len(frames), self._position + len(frames)
    if self._done:
      yield block
      return
    left = _SAMPLE_RECORDS - (self._position - count)
    if self._sampled_bytes is None:
      singles = min(left, count)
      for row in range(singles):
        one, frames = frames.split(1)
        yield keys[row:row + 1], one
      if len(frames):
        yield keys[singles:], frames
      self._done = self._position >= _SAMPLE_RECORDS
      return
    totals = self._sampled_bytes + np.cumsum(frames.record_sizes())
    end = min(left, int(np.searchsorted(totals, _SAMPLE_BYTES)) + 1)  # records up to the sample's end
    self._sampled_bytes = int(totals[min(end, count) - 1])
    self._done = end <= count
    if end >= count:
      yield block
      return
    head, rest = frames.split(end)
    yield keys[:end], head
    yield keys[end:], rest


def _prefixed(prefix: str, number: int) -> str:
  return f"{prefix}{number}"


def _count_rest(part: sources.RecordPart, counted: int) -> int:
  """How many records the file holds after the first `counted`, each CRC-checked as `copy_records` reads them."""
  rest = 0
  for block in fast.record_index.scan(part.file, with_window=True, as_reader=True):
    if block.first + len(block) > counted:
      rest += len(fast.record_index.reframed(part.file, block)) - max(counted - block.first, 0)
  return rest


def _count_mismatch(part: sources.RecordPart, typed: bool, found: int) -> errors.SourceError:
  return tfrecord_io.count_mismatch(part.file.name, part.num_records, found, _source_of_count(typed))


def _source_of_count(typed: bool) -> str:
  return (
      "its dataset's dataset_info.json (shard_lengths)" if typed
      else "the count taken when its schema was inferred, earlier in this build"
  )


def _checked_records(part: sources.RecordPart, typed: bool) -> Iterator[bytes]:
  """The records of one file, which must be exactly as many as the source said.

  A prepared source's count is its dataset_info.json shard length, a raw
  one's what the schema pass counted: a file holding fewer or more records
  would otherwise change the dataset silently. Each record is given once the
  next one is read, so the count is checked before the last expected record
  leaves, also where the reader stops there (an interleaved stream's end).

  Raises:
    SourceError: naming the file and both counts, if they differ.
  """
  records = tfrecord_io.counted(
      fast.record_index.read_records(part.file), part.num_records, part.file.name, _source_of_count(typed))
  pending = next(records, _END)
  while pending is not _END:
    following = next(records, _END)
    yield pending
    pending = following


_END = object()


class _Provenance:
  """The provenance Example appended to a record, encoded but for its key's text.

  Byte for byte `serialization.example([source entry, key entry])`: the
  source id is the same for every record of a task and the key's text
  changes only in length, so each length's head is built once.
  """

  def __init__(self, feature: str, source_id: int):
    self._source_entry = b"".join(
        serialization.int64_feature(serialization.FeatureKey(feature), [source_id]))
    self._key_field = serialization.FeatureKey(f"{feature}_key")
    self._heads: dict[int, bytes] = {}

  def head(self, key_size: int) -> bytes:
    """Everything before a key text of `key_size` bytes."""
    head = self._heads.get(key_size)
    if head is None:
      key_head = serialization.fixed_entry_head(self._key_field, "bytes", key_size)
      size = len(self._source_entry) + len(key_head) + key_size
      head = b"".join([serialization.example_head(size), self._source_entry, key_head])
      self._heads[key_size] = head
    return head

  def suffixes(self, where_prefix: bytes, first: int, count: int, as_slice: bool) -> Any:
    """The provenance Examples of `count` records numbered from `first`, as a `record_blocks.ByteColumn`.

    Byte for byte `head(len(where)) + where` per record, where `where` is
    `where_prefix` then the number, and with `as_slice` `:<number + 1>]`.
    """
    # The kernel indexes heads by key size without bounds checks: sizes outside them must never reach it.
    if first < 0 or count < 1 or first > _MAX_NUMBER - count:
      raise ValueError(f"Provenance numbers {first} + {count} out of range.")

    def key_size(number: int) -> int:
      return len(where_prefix) + len(str(number)) + (len(str(number + 1)) + 2 if as_slice else 0)

    smallest, largest = key_size(first), key_size(first + count - 1)  # sizes only grow with the number
    heads = fast.record_blocks.ByteColumn.from_items([self.head(size) for size in range(smallest, largest + 1)])
    data, offsets = _provenance_suffixes(heads.data, heads.offsets, smallest, np.frombuffer(where_prefix, np.uint8),
                                         first, count, as_slice)
    return fast.record_blocks.ByteColumn(data, offsets)


_MAX_NUMBER = 2**62  # record numbers (and the next one) stay int64 in the kernel


@fast.jit
def _provenance_suffixes(heads_data, heads_offsets, smallest, prefix, first, count, as_slice):
  """Per record number n from `first`: heads[key size] + prefix + n (and `:<n + 1>]` as a slice)."""

  def digit_count(value):
    size = 1
    while value >= 10:
      value //= 10
      size += 1
    return size

  def put_decimal(out, pos, value):  # returns the position after it
    end = pos + digit_count(value)
    at = end
    while True:
      at -= 1
      out[at] = 48 + value % 10  # "0"
      value //= 10
      if value == 0:
        return end

  def key_size(number):
    size = prefix.shape[0] + digit_count(number)
    return size + digit_count(number + 1) + 2 if as_slice else size

  offsets = np.empty(count + 1, np.int64)
  offsets[0] = 0
  for row in range(count):
    size = key_size(first + row)
    offsets[row + 1] = offsets[row] + heads_offsets[size - smallest + 1] - heads_offsets[size - smallest] + size
  data = np.empty(offsets[count], np.uint8)
  for row in range(count):
    number = first + row
    head = key_size(number) - smallest
    pos = offsets[row]
    head_size = heads_offsets[head + 1] - heads_offsets[head]
    data[pos:pos + head_size] = heads_data[heads_offsets[head]:heads_offsets[head + 1]]
    pos += head_size
    data[pos:pos + prefix.shape[0]] = prefix
    pos = put_decimal(data, pos + prefix.shape[0], number)
    if as_slice:
      data[pos] = 58  # ":"
      pos = put_decimal(data, pos + 1, number + 1)
      data[pos] = 93  # "]"
  return data, offsets


def copy_all(tasks: Sequence[CopyTask], key_suffix: str = "") -> Iterator[KeySerialized]:
  """The records of several tasks, one after another."""
  for task in tasks:
    yield from copy_records(task, key_suffix)


def interleave(
    streams: Sequence[Sequence[CopyTask]],
    lengths: Sequence[int],
    weights: Sequence[float] | None,
    seed: int,
    stopping_strategy: str,
) -> Iterator[KeySerialized]:
  """Mixes streams (one per source) in `mixing.schedule` order.

  One reader is open per stream at a time; a stream that starts over under
  `all_exhausted` is read again from its first file, and its repeated
  examples get keys ending in `#pass<N>`.
  """
  readers = [_passes(tasks) for tasks in streams]
  for stream in mixing.schedule(lengths, weights, seed, stopping_strategy):
    yield next(readers[stream])


def _passes(tasks: Sequence[CopyTask]) -> Iterator[KeySerialized]:
  for number in itertools.count():
    yield from copy_all(tasks, f"#pass{number}" if number else "")
