"""Streams pre-serialized examples into size-bounded shards, in generation order."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core import naming

from tfds_builders.core import errors
from tfds_builders.core import tfrecord_io

KeySerialized = tuple[object, bytes]


@dataclasses.dataclass(frozen=True)
class FramedRecords:
  """Consecutive records already framed as TFRecords, end to end (see `core.record_blocks`).

  A generator may yield `(keys, FramedRecords)` between `(key, serialized)`
  pairs: a TFRecord shard stores the block with one write, other formats get
  its records one by one.

  Attributes:
    data: The frames' bytes (uint8).
    ends: Where each frame ends in `data`.
  """

  data: np.ndarray
  ends: np.ndarray

  def __len__(self) -> int:
    return len(self.ends)

  def records(self) -> list[bytes]:
    """The records without their frames."""
    blob = self.data.tobytes()
    starts = [0, *self.ends[:-1].tolist()]
    return [blob[start + tfrecord_io.FRAME_HEADER_BYTES:end - tfrecord_io.FRAME_CRC_BYTES]
            for start, end in zip(starts, self.ends.tolist())]

  def record_sizes(self) -> np.ndarray:
    return np.diff(self.ends, prepend=0) - tfrecord_io.FRAME_BYTES

  def split(self, count: int) -> tuple[FramedRecords, FramedRecords]:
    """The first `count` frames, and the rest."""
    cut = int(self.ends[count - 1]) if count else 0
    return FramedRecords(self.data[:cut], self.ends[:count]), FramedRecords(self.data[cut:], self.ends[count:] - cut)


Block = tuple[Sequence[object], FramedRecords]
StreamItem = KeySerialized | Block


def _split_block(block: Block, count: int) -> tuple[Block, Block]:
  keys, frames = block
  head_frames, tail_frames = frames.split(count)
  return (keys[:count], head_frames), (keys[count:], tail_frames)


class _BlockPiece:
  """A non-empty block handed to the writer; the writer puts back in `rest` what it did not take."""

  def __init__(self, block: Block):
    self.block = block
    self.rest: Block | None = None


def _pieces(items: Iterable[StreamItem]) -> Iterator[bytes | _BlockPiece]:
  """Each example's bytes, or a block (then what the writer left of it, until nothing is left)."""
  for item in items:
    if not isinstance(item[1], FramedRecords):
      yield item[1]
      continue
    block: Block | None = item
    while block is not None and len(block[1]):
      piece = _BlockPiece(block)
      yield piece
      block = piece.rest


def unblocked(items: Iterable[StreamItem]) -> Iterator[KeySerialized]:
  """The stream with every block replaced by its `(key, serialized)` pairs."""
  for keys, value in items:
    if isinstance(value, FramedRecords):
      yield from zip(keys, value.records())
    else:
      yield keys, value


def head(items: Iterable[StreamItem], count: int) -> Iterator[StreamItem]:
  """The stream's first `count` examples (a block cut where needed)."""
  left = count
  for item in items:
    if left <= 0:
      return
    if isinstance(item[1], FramedRecords):
      if len(item[1]) > left:
        item, _ = _split_block(item, left)
      left -= len(item[1])
    else:
      left -= 1
    yield item


class _ShardFeed:
  """Yields examples for one shard until its byte budget is spent."""

  def __init__(self, first: KeySerialized, rest: Iterator[KeySerialized], budget: int):
    self._first = first
    self._rest = rest
    self._budget = budget
    self.num_examples = 0
    self.exhausted = False

  def __iter__(self) -> Iterator[KeySerialized]:
    item: KeySerialized | None = self._first
    size = 0
    while item is not None:
      yield item
      self.num_examples += 1
      size += len(item[1])
      if size >= self._budget:
        return
      item = next(self._rest, None)
    self.exhausted = True


class SplitWriter:
  """Writes one split of serialized examples without TFDS's shuffle buffer.

  TFDS's `Writer` holds up to 1 GiB of examples in memory to sort them by
  hashed key; our builders keep generation order (`disable_shuffling`), so
  examples go straight to disk and memory stays flat in dataset size. Shards
  are written under temporary names and renamed to TFDS's
  `-NNNNN-of-NNNNN` names once their count is known.
  """

  def __init__(
      self,
      filename_template: naming.ShardedFileTemplate,
      file_format: file_adapters.FileFormat,
      max_shard_bytes: int,
  ):
    self._template = filename_template
    self._file_format = file_format
    self._adapter = file_adapters.ADAPTER_FOR_FORMAT[file_format]
    self._max_shard_bytes = max_shard_bytes

  def write(self, examples: Iterable[StreamItem]) -> tfds.core.SplitInfo:
    """Writes every example and returns the split's info.

    Raises:
      SourceError: if `examples` is empty.
    """
    if self._file_format == file_adapters.FileFormat.TFRECORD:
      temp_paths, shard_lengths = self._write_tfrecord_shards(examples)
    else:
      temp_paths, shard_lengths = self._write_adapter_shards(unblocked(examples))
    if not temp_paths:
      raise errors.SourceError(
          f"Split {self._template.split!r} has no examples. Give it at least "
          "one source record, or leave the split out of the config."
      )
    return _rename_shards(self._template, temp_paths, shard_lengths)

  def _write_tfrecord_shards(
      self, examples: Iterable[StreamItem]
  ) -> tuple[list[epath.Path], list[int]]:
    # One loop writing straight to the shard: the generic adapter path costs
    # a generator hop per example (~20% of a small-record build).
    temp_paths: list[epath.Path] = []
    shard_lengths: list[int] = []
    budget = self._max_shard_bytes
    shard = None
    size = count = 0
    try:
      for piece in _pieces(examples):
        if shard is None:
          temp_paths.append(self._temp_path(len(temp_paths)))
          shard = _TFRecordShard(temp_paths[-1])
          size = count = 0
        if not isinstance(piece, _BlockPiece):
          shard.write(piece)
          size, count = size + len(piece), count + 1
        else:  # a block, cut where it reaches the budget; the rest comes back
          keys, frames = piece.block
          sizes = np.cumsum(frames.record_sizes()) + size
          fits = int(np.searchsorted(sizes, budget)) + 1  # records up to the one reaching the budget
          if fits < len(frames):
            (keys, frames), rest = _split_block((keys, frames), fits)
            piece.rest = rest
          shard.write_block(frames)
          size, count = int(sizes[len(frames) - 1]), count + len(frames)
        if size >= budget:
          shard.close()
          shard = None
          shard_lengths.append(count)
    finally:
      if shard is not None:
        shard.close()
    if shard is not None:
      shard_lengths.append(count)
    return temp_paths, shard_lengths

  def _write_adapter_shards(
      self, examples: Iterable[KeySerialized]
  ) -> tuple[list[epath.Path], list[int]]:
    iterator = iter(examples)
    temp_paths: list[epath.Path] = []
    shard_lengths: list[int] = []
    first = next(iterator, None)
    while first is not None:
      feed = _ShardFeed(first, iterator, self._max_shard_bytes)
      temp_paths.append(self._temp_path(len(temp_paths)))
      self._adapter.write_examples(temp_paths[-1], feed)
      shard_lengths.append(feed.num_examples)
      first = None if feed.exhausted else next(iterator, None)
    return temp_paths, shard_lengths

  def _temp_path(self, index: int) -> epath.Path:
    prefix = self._template.filepath_prefix()
    return epath.Path(f"{prefix}.part{index:05d}.tmp")


class _TFRecordShard:
  """One TFRecord file written record by record (TensorFlow's writer) or block by block."""

  def __init__(self, path: epath.Path):
    self._path = path
    self._writer: tf.io.TFRecordWriter | None = None
    self._raw: BinaryIO | None = None
    self._started = False

  def write(self, serialized: bytes) -> None:
    if self._raw is not None:  # blocks came first: frame this record as they are framed
      from tfds_builders.core import record_blocks  # pylint: disable=g-import-not-at-top  # Numba
      self._raw.write(record_blocks.framed([serialized]).data.tobytes())
      return
    if self._writer is None:
      self._writer = tf.io.TFRecordWriter(str(self._path))
      self._started = True
    self._writer.write(serialized)

  def write_block(self, frames: FramedRecords) -> None:
    if self._raw is None:
      if self._writer is not None:
        self._writer.close()
        self._writer = None
      self._raw = tf.io.gfile.GFile(str(self._path), "ab" if self._started else "wb")
      self._started = True
    self._raw.write(frames.data.tobytes())

  def close(self) -> None:
    for handle in (self._writer, self._raw):
      if handle is not None:
        handle.close()
    self._writer = self._raw = None


class _Counted:
  """Passes examples through, counting them."""

  def __init__(self, examples: Iterable[KeySerialized]):
    self._examples = examples
    self.num_examples = 0

  def __iter__(self) -> Iterator[KeySerialized]:
    for item in self._examples:
      self.num_examples += 1
      yield item


def write_partitions_with_beam(
    pipeline: Any,
    partitions: Sequence[Callable[[], Iterable[StreamItem]]],
    template: naming.ShardedFileTemplate,
    file_format: file_adapters.FileFormat,
) -> Callable[[], tfds.core.SplitInfo]:
  """Adds to `pipeline` one step per partition, each writing one shard.

  Args:
    pipeline: The Beam pipeline the steps are added to.
    partitions: Example generators, in dataset order.
    template: Shard file names of the split.
    file_format: Format of the shards.

  Returns:
    A function to call after the pipeline ran: it drops empty shards,
    renumbers the rest and returns the split's info.
  """
  beam = tfds.core.lazy_imports.apache_beam
  adapter = file_adapters.ADAPTER_FOR_FORMAT[file_format]
  num_parts = len(partitions)
  if not num_parts:
    raise errors.SourceError(f"Split {template.split!r} has no partitions to write.")
  counts_path = epath.Path(f"{template.filepath_prefix()}.partition_counts.json")

  def write_partition(index: int) -> tuple[int, int]:
    examples = _Counted(unblocked(partitions[index]()))
    adapter.write_examples(template.sharded_filepath(shard_index=index, num_shards=num_parts), examples)
    return index, examples.num_examples

  def save_counts(counts: list[tuple[int, int]]) -> None:
    counts_path.write_text(json.dumps(dict(counts)))

  _ = (
      pipeline
      | f"Partitions_{template.split}" >> beam.Create(range(num_parts))
      | f"Spread_{template.split}" >> beam.Reshuffle()
      | f"Write_{template.split}" >> beam.Map(write_partition)
      | f"Collect_{template.split}" >> beam.combiners.ToList()
      | f"SaveCounts_{template.split}" >> beam.Map(save_counts)
  )

  def finalize() -> tfds.core.SplitInfo:
    counts = {int(index): count for index, count in json.loads(counts_path.read_text()).items()}
    counts_path.unlink()
    written = [template.sharded_filepath(shard_index=i, num_shards=num_parts) for i in range(num_parts)]
    for index, path in enumerate(written):
      if not counts[index]:
        path.unlink()
    kept = [(path, counts[index]) for index, path in enumerate(written) if counts[index]]
    if not kept:
      raise errors.SourceError(f"Split {template.split!r} has no examples.")
    return _rename_shards(template, [path for path, _ in kept], [count for _, count in kept])

  return finalize


def _rename_shards(
    template: naming.ShardedFileTemplate,
    paths: list[epath.Path],
    shard_lengths: list[int],
) -> tfds.core.SplitInfo:
  """Gives shards their final `-NNNNN-of-NNNNN` names; returns the split info."""
  num_bytes = 0
  for index, path in enumerate(paths):
    final_path = template.sharded_filepath(shard_index=index, num_shards=len(paths))
    if path != final_path:
      path.rename(final_path)
    num_bytes += final_path.stat().length
  return tfds.core.SplitInfo(
      name=template.split,
      shard_lengths=shard_lengths,
      num_bytes=num_bytes,
      filename_template=template,
  )
