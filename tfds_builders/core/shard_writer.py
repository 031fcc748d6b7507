"""Streams pre-serialized examples into TFDS-sized shards, in stream order, locally or on Beam."""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import tfds_internals
from tfds_builders.core import croissant
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import shard_plan
from tfds_builders.core import tfrecord_io
from tfds_builders.core import wire

KeySerialized = tuple[object, bytes]

# Consecutive examples already framed as TFRecords: their keys, and the records (`fast.record_blocks`).
FramedBlock = tuple[Sequence[object], tfrecord_io.FramedRecords]
StreamItem = KeySerialized | FramedBlock


class LazyKeys(Sequence):
  """A block's example keys, each formatted only when read (most never are: only a shuffle reads them).

  Args:
    items: What each key is made from (a range of numbers, rows...); sliced
      with the keys when the writer cuts a block where a shard ends.
    format_key: Makes one key from one item.
  """

  def __init__(self, items: Sequence[Any], format_key: Callable[[Any], str]):
    self._items = items
    self._format_key = format_key

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return LazyKeys(self._items[index], self._format_key)
    return self._format_key(self._items[index])


def _split_block(block: FramedBlock, count: int) -> tuple[FramedBlock, FramedBlock]:
  keys, frames = block
  head_frames, tail_frames = frames.split(count)
  return (keys[:count], head_frames), (keys[count:], tail_frames)


class _FramedBlockPiece:
  """A non-empty block handed to the writer; the writer puts back in `rest` what it did not take."""

  def __init__(self, block: FramedBlock):
    self.block = block
    self.rest: FramedBlock | None = None


def _pieces(items: Iterable[StreamItem]) -> Iterator[bytes | _FramedBlockPiece]:
  """Each example's bytes, or a block (then what the writer left of it, until nothing is left)."""
  for item in items:
    if not isinstance(item[1], tfrecord_io.FramedRecords):
      yield item[1]
      continue
    block: FramedBlock | None = item
    while block is not None and len(block[1]):
      piece = _FramedBlockPiece(block)
      yield piece
      block = piece.rest


def unblocked(items: Iterable[StreamItem]) -> Iterator[KeySerialized]:
  """The stream with every block replaced by its `(key, serialized)` pairs."""
  for keys, value in items:
    if isinstance(value, tfrecord_io.FramedRecords):
      yield from zip(keys, value.records())
    else:
      yield keys, value


def head(items: Iterable[StreamItem], count: int) -> Iterator[StreamItem]:
  """The stream's first `count` examples (a block cut where needed)."""
  left = count
  for item in items:
    if left <= 0:
      return
    if isinstance(item[1], tfrecord_io.FramedRecords):
      if len(item[1]) > left:
        item, _ = _split_block(item, left)
      left -= len(item[1])
    else:
      left -= 1
    yield item


# A limit that is never reached.
_UNLIMITED = 1 << 62
# Examples sampled at the head of a split to estimate its bytes from its count.
_SAMPLE_EXAMPLES = 1024
_SAMPLE_BYTES = 16 * 1024 * 1024
# Bytes moved per read when shards are assembled from pieces.
_COPY_CHUNK_BYTES = 16 * 1024 * 1024
# Up to this many frames a cut is found by reading headers; beyond, by a compiled walk.
_PYTHON_WALK_FRAMES = 4096
_WALK_WINDOW_BYTES = 16 << 20  # frames walked per mapped window of a piece
# Records given one by one are framed (compiled) and written in batches of this size.
_FRAME_BATCH_BYTES = 4 * 1024 * 1024
_FRAME_BATCH_RECORDS = 65536
# Up to this many frame bytes a batch is framed in Python (a few ms), sparing a small build Numba's import (~0.6 s).
_PYTHON_FRAME_BYTES = 16 * 1024


@dataclasses.dataclass(frozen=True)
class Piece:
  """A temporary TFRecord file holding consecutive examples of a split.

  Attributes:
    path: The file.
    num_examples: Its records.
    num_bytes: Its size, frames included.
  """

  path: epath.Path
  num_examples: int
  num_bytes: int


@dataclasses.dataclass(frozen=True)
class _Segment:
  """Records `[start, stop)` of one piece, a part of a final shard."""

  piece: Piece
  start: int
  stop: int

  @property
  def whole(self) -> bool:
    return self.start == 0 and self.stop == self.piece.num_examples


class SplitWriter:
  """Writes one split of serialized examples into TFDS-sized shards, in stream order.

  Examples go straight to temporary TFRecord pieces, without TFDS's shuffle
  buffer, so memory stays flat in dataset size. The shards follow TFDS's rule
  (`shard_plan.ShardSizing`) for the split's final count and bytes. When the
  count is known up front, the pieces are cut where the shards will end and
  are renamed; otherwise pieces of `ShardSizing.piece_bytes()` are re-cut at
  the end, by byte ranges at frame boundaries (one sequential copy, as TFDS's
  own two-pass writer costs). Other formats (array_record, parquet) are
  written from the pieces record by record.
  """

  def __init__(
      self,
      filename_template: tfds.core.ShardedFileTemplate,
      file_format: tfds.core.FileFormat,
      sizing: shard_plan.ShardSizing | None = None,
      *,
      max_shard_bytes: int | None = None,
  ):
    self._template = filename_template
    self._file_format = file_format
    sizing = sizing or shard_plan.ShardSizing()
    if max_shard_bytes is not None:
      sizing = dataclasses.replace(
          sizing,
          min_shard_bytes=min(sizing.min_shard_bytes, max_shard_bytes),
          max_shard_bytes=min(sizing.max_shard_bytes, max_shard_bytes),
      )
    self._sizing = sizing

  def write(self, examples: Iterable[StreamItem], expected_examples: int | None = None) -> tfds.core.SplitInfo:
    """Writes every example and returns the split's info.

    Args:
      examples: The split's stream.
      expected_examples: Its example count, when known before writing: the
        shards are then planned up front (bytes estimated from its head).

    Raises:
      SourceError: if `examples` is empty.
      ConfigError: if `--num_shards` exceeds the split's examples.
    """
    split = self._template.split
    target = self._sizing.piece_bytes()
    planned: list[int] = []
    if expected_examples:
      sample, examples = _sampled(examples)
      if sample.num_examples:
        estimate = round(sample.serialized_bytes / sample.num_examples * expected_examples)
        planned = self._sizing.shard_lengths(estimate, expected_examples, split)

    def limits(index: int) -> tuple[int, int]:
      return (planned[index], _UNLIMITED) if index < len(planned) else (_UNLIMITED, target)

    # Planned pieces are the shards: hashing them now overlaps the rest of the write.
    pieces = _write_pieces(examples, self._temp_path, limits, croissant.hash_soon if planned else None)
    try:
      if not any(piece.num_examples for piece in pieces):
        raise errors.SourceError(
            f"Split {split!r} has no examples. Give it at least "
            "one source record, or leave the split out of the config."
        )
      lengths = _exact_lengths(self._sizing, pieces, split)
      if [p.num_examples for p in pieces] != lengths and self._file_format == tfds.core.FileFormat.TFRECORD:
        logging.info("Split %s: re-cutting %d pieces into %d shards of TFDS's sizes.", split, len(pieces), len(lengths))
      return assemble(pieces, lengths, self._template, self._file_format)
    finally:
      for piece in pieces:
        piece.path.unlink(missing_ok=True)

  def _temp_path(self, index: int) -> epath.Path:
    return piece_path(self._template, index)


def piece_path(template: tfds.core.ShardedFileTemplate, index: int) -> epath.Path:
  """The temporary file of a split's `index`-th piece, next to its shards."""
  return epath.Path(f"{template.filepath_prefix()}.part{index:05d}.tmp")


@dataclasses.dataclass
class _Sample:
  num_examples: int = 0
  serialized_bytes: int = 0


def _sampled(examples: Iterable[StreamItem]) -> tuple[_Sample, Iterator[StreamItem]]:
  """The head of the stream's count and bytes, and the whole stream again."""
  iterator = iter(examples)
  sample = _Sample()
  head_items: list[StreamItem] = []
  for item in iterator:
    head_items.append(item)
    if isinstance(item[1], tfrecord_io.FramedRecords):
      sample.num_examples += len(item[1])
      sample.serialized_bytes += int(item[1].record_sizes().sum())
    else:
      sample.num_examples += 1
      sample.serialized_bytes += len(item[1])
    if sample.num_examples >= _SAMPLE_EXAMPLES or sample.serialized_bytes >= _SAMPLE_BYTES:
      break
  return sample, itertools.chain(head_items, iterator)


def _write_pieces(
    examples: Iterable[StreamItem],
    path_of: Callable[[int], epath.Path],
    limits: Callable[[int], tuple[int, int]],
    on_piece: Callable[[epath.Path], None] | None = None,
) -> list[Piece]:
  """Writes the stream into TFRecord pieces, each cut at `limits(index)` = (examples, bytes).

  `on_piece` gets each piece's path once it is complete (planned shards are
  hashed for croissant.json meanwhile).

  One loop writing straight to the file: the generic adapter path costs a
  generator hop per example (~20% of a small-record build), and a block is
  cut with one search, never record by record.
  """
  pieces: list[Piece] = []
  current = None  # the piece being written
  path = None
  size = count = max_count = max_bytes = 0
  try:
    for item in _pieces(examples):
      if current is None:
        path = path_of(len(pieces))
        current = _TFRecordShard(path)
        size = count = 0
        max_count, max_bytes = limits(len(pieces))
      if not isinstance(item, _FramedBlockPiece):
        current.write(item)
        size, count = size + len(item) + wire.FRAME_BYTES, count + 1
      else:  # a block, cut where a limit is reached; the rest comes back
        keys, frames = item.block
        # `ends` are the frames' cumulative sizes: the first reaching the budget closes the piece.
        fits = min(int(np.searchsorted(frames.ends, max_bytes - size)) + 1, max_count - count)
        if fits < len(frames):
          (keys, frames), item.rest = _split_block((keys, frames), fits)
        current.write_block(frames)
        size, count = size + int(frames.ends[-1]), count + len(frames)
      if size >= max_bytes or count >= max_count:
        current.close()
        current = None
        pieces.append(Piece(path, count, size))
        if on_piece:
          on_piece(path)
  except BaseException:
    if current is not None:
      current.close()
      path.unlink(missing_ok=True)
    for written in pieces:
      written.path.unlink(missing_ok=True)
    raise
  if current is not None:
    current.close()
    pieces.append(Piece(path, count, size))
    if on_piece:
      on_piece(path)
  return pieces


def _serialized_bytes(pieces: Sequence[Piece]) -> int:
  return sum(p.num_bytes - p.num_examples * wire.FRAME_BYTES for p in pieces)


def _exact_lengths(sizing: shard_plan.ShardSizing, pieces: Sequence[Piece], split: str) -> list[int]:
  """TFDS's shard lengths for what was written."""
  num_examples = sum(p.num_examples for p in pieces)
  return sizing.shard_lengths(_serialized_bytes(pieces), num_examples, split)


def _segments(pieces: Sequence[Piece], lengths: Sequence[int]) -> list[list[_Segment]]:
  """For each shard of `lengths`, the piece ranges it is made of, in order."""
  shards: list[list[_Segment]] = []
  index = offset = 0
  for length in lengths:
    segments, needed = [], length
    while needed:
      piece = pieces[index]
      take = min(needed, piece.num_examples - offset)
      if take:
        segments.append(_Segment(piece, offset, offset + take))
      offset, needed = offset + take, needed - take
      if offset == piece.num_examples:
        index, offset = index + 1, 0
    shards.append(segments)
  return shards


def assemble(
    pieces: Sequence[Piece],
    lengths: Sequence[int],
    template: tfds.core.ShardedFileTemplate,
    file_format: tfds.core.FileFormat,
) -> tfds.core.SplitInfo:
  """Makes the final shards of `lengths` examples each from the pieces, in order.

  The pieces are left for the caller to remove (those renamed are gone).
  """
  shard_bytes = [
      write_shard(segments, template.sharded_filepath(shard_index=index, num_shards=len(lengths)), file_format)
      for index, segments in enumerate(_segments(pieces, lengths))
  ]
  return tfds.core.SplitInfo(
      name=template.split,
      shard_lengths=list(lengths),
      num_bytes=sum(shard_bytes),
      filename_template=template,
  )


def write_shard(segments: Sequence[_Segment], path: epath.Path, file_format: tfds.core.FileFormat) -> int:
  """Writes one final shard from piece ranges; returns its size in bytes.

  Raises:
    SourceError: if the shard's writer stored another count than it was given.
  """
  expected = sum(s.stop - s.start for s in segments)
  if file_format != tfds.core.FileFormat.TFRECORD:
    written = _format_writer(file_format)(path, _records_of(segments))
    if written != expected:
      raise errors.SourceError(
          f"{path.name}: the {file_format.value} writer stored {written} of {expected} examples. "
          "This is a bug of the writer; build with --file_format tfrecord meanwhile."
      )
    return path.stat().length
  local = "://" not in str(path)
  if segments[0].whole and (len(segments) == 1 or local):
    segments[0].piece.path.rename(path)  # a piece that already is the shard's head is not copied
    if len(segments) == 1:
      return path.stat().length
    # Appended to in place; not "ab": copy_file_range refuses O_APPEND files.
    out = open(os.fspath(path), "r+b")  # noqa: PTH123, SIM115  # local only, closed below
    out.seek(0, os.SEEK_END)
    rest = segments[1:]
  else:
    out, rest = path.open("wb"), segments
  with out:
    for segment in rest:
      _copy_range(segment, out)
  return path.stat().length


def _format_writer(file_format: tfds.core.FileFormat) -> Callable[[epath.Path, Iterable[KeySerialized]], int]:
  """`(path, examples) -> count written` for a shard format other than TFRecord."""
  if file_format == tfds.core.FileFormat.PARQUET:
    from tfds_builders.core import parquet_format  # pylint: disable=g-import-not-at-top  # pyarrow

    return parquet_format.write_examples
  write_examples = tfds_internals.example_writer_for(file_format)

  def write(path: epath.Path, examples: Iterable[KeySerialized]) -> int:
    counted = _Counted(examples)
    write_examples(path, counted)
    return counted.num_examples

  return write


def _skip_frames(handle: BinaryIO, count: int) -> int:
  """Moves past `count` frames from the handle's position; returns the bytes skipped."""
  start = handle.tell()
  name = getattr(handle, "name", None)
  if count > _PYTHON_WALK_FRAMES and isinstance(name, str) and os.path.isfile(name):
    # Cuts may fall deep in a piece of small records: walk them compiled, not per frame in
    # Python, one window at a time (a mapped page stays resident: a whole piece would add
    # its size to the build's RSS).
    end, left, size = start, count, os.path.getsize(name)
    while left:
      window = min(_WALK_WINDOW_BYTES, size - end)
      if window < wire.FRAME_LENGTH_BYTES:
        raise errors.SourceError(f"{name}: the piece ended early; it was changed during the build.")
      frames = np.memmap(name, dtype=np.uint8, mode="r", offset=end, shape=(window,))
      walked, position = fast.record_index.frames_walk(frames, 0, left)
      del frames
      if not walked:
        raise errors.SourceError(
            f"{name}: the piece holds a frame this package did not write; it was changed during the build.")
      end, left = end + int(position), left - int(walked)
    handle.seek(end)
    return end - start
  for _ in range(count):
    length = int.from_bytes(handle.read(wire.FRAME_HEADER_BYTES)[:wire.FRAME_LENGTH_BYTES], "little")
    handle.seek(length + wire.FRAME_CRC_BYTES, 1)
  return handle.tell() - start


def _copy_range(segment: _Segment, out: BinaryIO) -> None:
  """Appends the segment's frames to `out`; only frames up to the cut are walked."""
  with segment.piece.path.open("rb") as handle:
    start = _skip_frames(handle, segment.start)
    if segment.stop == segment.piece.num_examples:
      left = segment.piece.num_bytes - start
    else:
      left = _skip_frames(handle, segment.stop - segment.start)
    if _in_kernel(handle, out):  # local files: the kernel copies (or shares) the blocks
      out.flush()
      target = out.tell()
      while left:
        moved = os.copy_file_range(handle.fileno(), out.fileno(), left, start, target)
        if not moved:
          raise _ended_early(segment)
        start, target, left = start + moved, target + moved, left - moved
      out.seek(target)
      return
    handle.seek(start)
    while left:
      chunk = handle.read(min(left, _COPY_CHUNK_BYTES))
      if not chunk:
        raise _ended_early(segment)
      out.write(chunk)
      left -= len(chunk)


def _in_kernel(source: BinaryIO, target: BinaryIO) -> bool:
  """Whether both are local files that `os.copy_file_range` can join."""
  if not hasattr(os, "copy_file_range"):
    return False
  try:
    source.fileno()
    target.fileno()
  except (AttributeError, OSError, io.UnsupportedOperation):
    return False
  return True


def _ended_early(segment: _Segment) -> errors.SourceError:
  return errors.SourceError(f"{segment.piece.path}: the piece ended early; it was changed during the build.")


def _records_of(segments: Sequence[_Segment]) -> Iterator[KeySerialized]:
  """The segments' records, numbered in shard order (the number is the key)."""
  number = 0
  for segment in segments:
    with segment.piece.path.open("rb") as handle:
      _skip_frames(handle, segment.start)
      for _ in range(segment.stop - segment.start):
        length = int.from_bytes(handle.read(wire.FRAME_HEADER_BYTES)[:wire.FRAME_LENGTH_BYTES], "little")
        yield number, handle.read(length)
        handle.seek(wire.FRAME_CRC_BYTES, 1)
        number += 1


class _TFRecordShard:
  """One TFRecord file: records given one by one are framed in batches, blocks are written as they come.

  Framing here instead of with TensorFlow's writer keeps TensorFlow out of a
  build (~4 s and ~570 MB to import, in every Beam worker too); the bytes are
  the same TFRecord frames.
  """

  def __init__(self, path: epath.Path):
    self._path = path
    self._handle: BinaryIO | None = None
    self._records: list[bytes] = []
    self._buffered = 0

  def write(self, serialized: bytes) -> None:
    self._records.append(serialized)
    self._buffered += len(serialized)
    if self._buffered >= _FRAME_BATCH_BYTES or len(self._records) >= _FRAME_BATCH_RECORDS:
      self._flush()

  def write_block(self, frames: tfrecord_io.FramedRecords) -> None:
    self._flush()  # records given before the block come before it
    self._out().write(frames.data.tobytes())

  def close(self) -> None:
    try:
      self._flush()
    finally:
      if self._handle is not None:
        self._handle.close()
      self._handle = None

  def _out(self) -> BinaryIO:
    if self._handle is None:
      self._handle = self._path.open("wb")
    return self._handle

  def _flush(self) -> None:
    if not self._records:
      return
    if self._buffered + len(self._records) * wire.FRAME_BYTES <= _PYTHON_FRAME_BYTES:
      framed = python_framed(self._records)  # a small build never imports Numba
    else:
      framed = fast.record_blocks.framed(self._records).data.tobytes()
    self._out().write(framed)
    self._records, self._buffered = [], 0


@functools.cache
def _crc32c_table() -> tuple[int, ...]:
  """Byte-wise table of CRC32C (Castagnoli, reflected)."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


def _masked_crc32c(data: bytes) -> int:
  table, crc = _crc32c_table(), 0xFFFFFFFF
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + wire.MASKED_CRC_DELTA) & 0xFFFFFFFF


def python_framed(records: Sequence[bytes]) -> bytes:
  """TFRecord frames of `records`, in plain Python: for a few KiB, cheaper than importing the compiled path."""
  out = bytearray()
  for record in records:
    length = len(record).to_bytes(wire.FRAME_LENGTH_BYTES, "little")
    out += length
    out += _masked_crc32c(length).to_bytes(wire.FRAME_CRC_BYTES, "little")
    out += record
    out += _masked_crc32c(record).to_bytes(wire.FRAME_CRC_BYTES, "little")
  return bytes(out)


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
    template: tfds.core.ShardedFileTemplate,
    file_format: tfds.core.FileFormat,
    sizing: shard_plan.ShardSizing | None = None,
    max_examples: int | None = None,
    counter: Callable[[int, int], None] | None = None,
) -> Callable[[], tfds.core.SplitInfo]:
  """Adds to `pipeline` the steps writing a split's partitions into TFDS-sized shards.

  Each partition is written by a worker into one temporary piece. A planning
  step then takes the first `max_examples` examples in partition order and
  applies TFDS's rule (`sizing`) to their total, exactly as a local build
  with a known count does; the final shards are assembled from the pieces in
  parallel, tiny consecutive pieces joined and large ones cut.

  Args:
    pipeline: The Beam pipeline the steps are added to.
    partitions: Example generators, in dataset order.
    template: Shard file names of the split.
    file_format: Format of the shards.
    sizing: The build's shard flags.
    max_examples: Keep only the split's first examples (`--max_examples_per_split`).
    counter: Called `(examples, bytes)` by each partition's worker (Beam counters).

  Returns:
    A function to call after the pipeline ran: it removes the pieces and
    returns the split's info.
  """
  beam = tfds_internals.apache_beam()
  sizing = sizing or shard_plan.ShardSizing()
  num_parts = len(partitions)
  split = template.split
  if not num_parts:
    raise errors.SourceError(f"Split {split!r} has no partitions to write.")
  plan_path = epath.Path(f"{template.filepath_prefix()}.shard_plan.json")

  def write_partition(index: int) -> tuple[int, Piece]:
    examples: Iterable[StreamItem] = partitions[index]()
    if max_examples is not None:
      examples = head(examples, max_examples)  # later partitions' examples may all be dropped
    written = _write_pieces(examples, lambda _: piece_path(template, index), lambda _: (_UNLIMITED, _UNLIMITED))
    piece = written[0] if written else Piece(piece_path(template, index), 0, 0)
    if counter is not None:
      counter(piece.num_examples, piece.num_bytes - piece.num_examples * wire.FRAME_BYTES)
    return index, piece

  def plan(written: list[tuple[int, Piece]]) -> list[tuple[int, int, list[_Segment]]]:
    pieces = _first_examples([piece for _, piece in sorted(written, key=lambda item: item[0])], max_examples)
    if not any(counted.num_examples for counted, _ in pieces):
      plan_path.write_text(json.dumps({"lengths": []}))  # finalize raises, as a documented type
      return []
    try:
      lengths = _exact_lengths(sizing, [counted for counted, _ in pieces], split)
    except errors.ConfigError as error:
      plan_path.write_text(json.dumps({"config_error": str(error)}))
      return []
    # Planned on the cut counts; a segment refers to the file's own count (is it whole?).
    files = dict(pieces)
    shards = [
        [_Segment(files[s.piece], s.start, s.stop) for s in segments]
        for segments in _segments([counted for counted, _ in pieces], lengths)
    ]
    plan_path.write_text(json.dumps({"lengths": lengths}))
    return [(index, len(lengths), segments) for index, segments in enumerate(shards)]

  def write_final(task: tuple[int, int, list[_Segment]]) -> int:
    index, num_shards, segments = task
    return write_shard(segments, template.sharded_filepath(shard_index=index, num_shards=num_shards), file_format)

  shard_bytes_path = epath.Path(f"{template.filepath_prefix()}.shard_bytes.json")
  _ = (
      pipeline
      | f"Partitions_{split}" >> beam.Create(range(num_parts))
      | f"Spread_{split}" >> beam.Reshuffle()
      | f"Write_{split}" >> beam.Map(write_partition)
      | f"Collect_{split}" >> beam.combiners.ToList()
      | f"Plan_{split}" >> beam.FlatMap(plan)
      | f"SpreadShards_{split}" >> beam.Reshuffle()
      | f"Assemble_{split}" >> beam.Map(write_final)
      | f"Sum_{split}" >> beam.CombineGlobally(sum)
      | f"SaveBytes_{split}" >> beam.Map(lambda total: shard_bytes_path.write_text(json.dumps(total)))
  )

  def finalize() -> tfds.core.SplitInfo:
    for index in range(num_parts):
      piece_path(template, index).unlink(missing_ok=True)
    planned = json.loads(plan_path.read_text())
    num_bytes = json.loads(shard_bytes_path.read_text())
    plan_path.unlink()
    shard_bytes_path.unlink()
    if "config_error" in planned:
      raise errors.ConfigError(planned["config_error"])
    lengths = planned["lengths"]
    if not lengths:
      raise errors.SourceError(
          f"Split {split!r} has no examples. Give it at least one source record, "
          "or leave the split out of the config."
      )
    return tfds.core.SplitInfo(
        name=split, shard_lengths=lengths, num_bytes=num_bytes, filename_template=template,
    )

  return finalize


def _first_examples(pieces: Sequence[Piece], max_examples: int | None) -> list[tuple[Piece, Piece]]:
  """Each piece as the plan counts it (cut after the split's first `max_examples`), and itself."""
  kept, left = [], _UNLIMITED if max_examples is None else max_examples
  for piece in pieces:
    count = min(piece.num_examples, left)
    left -= count
    counted = piece
    if count < piece.num_examples:
      with piece.path.open("rb") as handle:  # only the piece where the cut falls is walked
        counted = Piece(piece.path, count, _skip_frames(handle, count))
    kept.append((counted, piece))
  return kept
