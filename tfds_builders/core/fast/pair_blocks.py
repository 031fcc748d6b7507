"""Pairs of records framed as TFRecords in one compiled loop: each left record with a run of right records.

A pair is the byte concatenation of two serialized Examples, which parses as
one Example with the union of their features. Per pair, Python would cost a
concatenation, a key and a write call, about as much as the bytes
themselves; here a whole block of pairs, their keys, TFRecord frames and
sample decisions comes out of one kernel call, and the writer stores it with
one call.
"""

from __future__ import annotations

from collections.abc import Iterator

import numba
import numpy as np

from tfds_builders.core import tfrecord_io
from tfds_builders.core import wire
from tfds_builders.core.fast import crc32c
from tfds_builders.core.fast import permutation
from tfds_builders.core.fast import record_blocks

_put_little_endian = record_blocks._put_little_endian  # pylint: disable=protected-access
# Numba compiles a module's own int globals in as constants (not another module's attributes).
_FRAME_BYTES = wire.FRAME_BYTES
_FRAME_LENGTH_BYTES = wire.FRAME_LENGTH_BYTES
_FRAME_HEADER_BYTES = wire.FRAME_HEADER_BYTES
_FRAME_CRC_BYTES = wire.FRAME_CRC_BYTES
_KEY_LIMIT = 1 << 63
_NO_ROW_BASES = np.zeros(0, np.int64)
_NO_KEYS = np.zeros(permutation.ROUNDS, np.uint64)
_NO_SAMPLE = (0, 1, 2, 2, _NO_KEYS)

# A block holds about this many bytes of frames (more only for one pair larger than it). Measured
# on 186-byte frames: 23 ns a pair at 1 MiB, 29 ns at 4-16 MiB (out of cache), 133 ns at 64 MiB
# (above glibc's mmap threshold every block is mapped and faulted in anew).
BLOCK_BYTES = 1024 * 1024
# ... and at most this many pairs, which bounds its keys and ends.
BLOCK_PAIRS = 65536


class PairBlocks:
  """Frames pairs into blocks of bounded size; short runs added one after another still fill whole blocks.

  Each `add` pairs some left rows with a run of right records and yields the
  blocks it fills; `flush` yields the last, partly filled one. A yielded block
  is never written to again.
  """

  def __init__(self, *, num_right: int, diagonal: bool, sample: tuple[int, int, int, int, np.ndarray] | None = None,
               block_bytes: int | None = None, block_pairs: int | None = None):
    """Takes what every run of the stream shares.

    Args:
      num_right: All right rows (not only a block's): the key's stride.
      diagonal: Pair row i only with rows j > i (unordered pairs of one input).
      sample: `(K, size, A, B, keys)` of an exact-size sample (`PairSpace.sample_arguments`):
        a pair whose candidate number p has `permutation.inverse(p) < K` is
        kept, for runs given row bases. None keeps every pair.
      block_bytes: About how many frame bytes a block holds (None: `BLOCK_BYTES`).
      block_pairs: At most how many pairs a block holds (None: `BLOCK_PAIRS`).

    Raises:
      ValueError: if `num_right` is negative or a block size is not positive.
    """
    self._num_right = num_right
    self._diagonal = diagonal
    self._sample = _NO_SAMPLE if sample is None else (
        *(int(number) for number in sample[:4]), np.ascontiguousarray(sample[4], np.uint64))
    self._block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
    self._block_pairs = BLOCK_PAIRS if block_pairs is None else block_pairs
    if num_right < 0 or self._block_bytes < 1 or self._block_pairs < 1:
      raise ValueError("PairBlocks: num_right must not be negative, block sizes must be positive.")
    self._data = self._ends = self._keys = None
    self._count = self._used = 0

  def add(
      self,
      left: record_blocks.ByteColumn,
      left_rows: tuple[int, int],
      right: record_blocks.ByteColumn,
      *,
      left_base: int,
      right_base: int,
      row_bases: np.ndarray | None = None,
  ) -> Iterator[tuple[np.ndarray, tfrecord_io.FramedRecords]]:
    """Adds the pairs `left[r] + right[k]` in (r, k) order; yields each block they fill.

    Global rows are `i = left_base + r` and `j = right_base + k`; a pair's key
    is `i * num_right + j`. Every right item is paired with every left row of
    `left_rows`, except that under `diagonal` only the j > i are.

    Args:
      left: Left records (a chunk of them).
      left_rows: The rows `[start, stop)` of `left` to pair.
      right: Right records (a block of them).
      left_base: Global row of `left`'s first item.
      right_base: Global row of `right`'s first item.
      row_bases: For sampling, per item of `left`, the candidate number of
        its pair with right row 0: pair (i, j) is candidate `row_base + j`,
        kept as the constructor's `sample` says. None keeps all.

    Yields:
      Full blocks: int64 keys and their framed records.

    Raises:
      ValueError: if a column's offsets do not lie within its data in order,
        the rows fall outside `left`, or `row_bases` does not match `left`
        (checked before the kernel, which reads without bounds checks).
    """
    left_smallest, left_largest = _item_sizes(left, "left")
    right_smallest, right_largest = _item_sizes(right, "right")
    row, row_stop = left_rows
    if not 0 <= row <= row_stop <= len(left):
      raise ValueError(f"PairBlocks: left_rows {left_rows} lie outside the {len(left)} left records.")
    if min(left_base, right_base) < 0:
      raise ValueError("PairBlocks: left_base and right_base must not be negative.")
    if right_base + len(right) > self._num_right:  # keys i * num_right + j would repeat
      raise ValueError(f"PairBlocks: right rows up to {right_base + len(right)} exceed num_right {self._num_right}.")
    if (left_base + len(left)) * self._num_right + right_base + len(right) >= _KEY_LIMIT:  # keys are int64
      raise ValueError(f"PairBlocks: keys i * {self._num_right} + j overflow int64 from row {left_base + len(left)}.")
    sampled = row_bases is not None
    bases = _NO_ROW_BASES if row_bases is None else np.ascontiguousarray(row_bases, np.int64)
    if sampled and self._sample is _NO_SAMPLE:
      raise ValueError("PairBlocks: row_bases given, but the constructor got no `sample` to test them against.")
    if sampled and len(bases) != len(left):
      raise ValueError(f"PairBlocks: {len(bases)} row bases for {len(left)} left records.")
    sample_count, sample_size, high_radix, low_radix, sample_keys = self._sample
    largest = _FRAME_BYTES + left_largest + right_largest
    smallest = _FRAME_BYTES + left_smallest + right_smallest
    column = 0
    while row < row_stop:
      if self._data is None or len(self._data) - self._used < largest:
        yield from self.flush()
        self._allocate(largest, smallest)
      self._count, self._used, row, column = _pair_frames(
          self._data, self._ends, self._keys, self._count, self._used,
          left.data, left.offsets, row, row_stop, left_base,
          right.data, right.offsets, column, right_base, self._num_right, self._diagonal,
          bases, sampled, sample_count, sample_size, high_radix, low_radix, sample_keys,
      )
      if row < row_stop:  # the block is full
        yield from self.flush()

  def flush(self) -> Iterator[tuple[np.ndarray, tfrecord_io.FramedRecords]]:
    """Yields the block being filled, if it holds a pair; the next pair starts a new one."""
    if self._count:
      count, used = self._count, self._used
      yield self._keys[:count], tfrecord_io.FramedRecords(self._data[:used], self._ends[:count])
    self._data = self._ends = self._keys = None
    self._count = self._used = 0

  def _allocate(self, largest: int, smallest: int) -> None:
    # Room for the largest pair at least, so that every block takes one pair or more; keys and ends for
    # no more pairs than fit. Arrays this small are reused by malloc, not mapped (and faulted in) anew.
    capacity = max(self._block_bytes, largest)
    pairs = min(self._block_pairs, capacity // smallest + 1)
    self._data = np.empty(capacity, np.uint8)
    self._ends, self._keys = np.empty(pairs, np.int64), np.empty(pairs, np.int64)


def framed_pairs(
    left: record_blocks.ByteColumn,
    left_rows: tuple[int, int],
    right: record_blocks.ByteColumn,
    *,
    left_base: int,
    right_base: int,
    num_right: int,
    diagonal: bool,
    row_bases: np.ndarray | None = None,
    sample: tuple[int, int, int, int, np.ndarray] | None = None,
    block_bytes: int | None = None,
    block_pairs: int | None = None,
) -> Iterator[tuple[np.ndarray, tfrecord_io.FramedRecords]]:
  """Every block of one run (`PairBlocks.add`, then `flush`); see `PairBlocks` for the arguments."""
  blocks = PairBlocks(num_right=num_right, diagonal=diagonal, sample=sample, block_bytes=block_bytes,
                      block_pairs=block_pairs)
  yield from blocks.add(left, left_rows, right, left_base=left_base, right_base=right_base, row_bases=row_bases)
  yield from blocks.flush()


def _item_sizes(column: record_blocks.ByteColumn, side: str) -> tuple[int, int]:
  """The smallest and largest item of a column whose offsets are checked to rise within its data.

  Raises:
    ValueError: naming the side, if they do not (or the arrays are not what the kernel reads).
  """
  data, offsets = column.data, column.offsets
  if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1 and data.flags.c_contiguous):
    raise ValueError(f"PairBlocks: the {side} column's data must be a contiguous 1-D uint8 array.")
  if not (isinstance(offsets, np.ndarray) and offsets.dtype == np.int64 and offsets.ndim == 1 and len(offsets)):
    raise ValueError(f"PairBlocks: the {side} column's offsets must be a non-empty 1-D int64 array.")
  smallest, largest = _offset_sizes(offsets, len(data))
  if smallest < 0:
    raise ValueError(
        f"PairBlocks: the {side} column's offsets must rise from 0 or more to at most its {len(data)} data bytes."
    )
  return smallest, largest


# ---------------------------------------------------------------- kernels --


@numba.njit(cache=True, nogil=True)
def _offset_sizes(offsets, data_size):
  """(smallest, largest) of the sizes between offsets; (-1, -1) unless they rise from 0 or more to `data_size` at most."""
  count = offsets.shape[0] - 1
  if offsets[0] < 0 or offsets[count] > data_size:
    return -1, -1
  smallest, largest = (0, 0) if count == 0 else (offsets[1] - offsets[0], 0)
  for index in range(count):
    size = offsets[index + 1] - offsets[index]
    if size < 0:
      return -1, -1
    smallest, largest = min(smallest, size), max(largest, size)
  return smallest, largest


@numba.njit(cache=True, nogil=True)
def _pair_frames(data, ends, keys, count, used, left_data, left_offsets, row, row_stop, left_base,
                 right_data, right_offsets, column, right_base, num_right, diagonal,
                 row_bases, sampled, sample_count, sample_size, high_radix, low_radix, sample_keys):
  """Frames pairs from (row, column) on into the block after its first `count` pairs, until it is full.

  Returns (count, used bytes, next row, next column); `row == row_stop` when the run is done.
  """
  capacity = data.shape[0]
  max_pairs = ends.shape[0]
  num_columns = right_offsets.shape[0] - 1
  header_length, header_crc = -1, 0
  while row < row_stop:
    i = left_base + row
    if diagonal and column < i + 1 - right_base:
      column = i + 1 - right_base
    left_start = left_offsets[row]
    left_size = left_offsets[row + 1] - left_start
    # The record CRC runs over the left bytes once per row, then over each right record from there.
    left_register = crc32c.extend(crc32c.INITIAL, left_data, left_start, left_start + left_size)
    while column < num_columns:
      j = right_base + column
      if sampled and permutation.inverse(
          row_bases[row] + j, sample_size, high_radix, low_radix, sample_keys) >= sample_count:
        column += 1
        continue
      right_start = right_offsets[column]
      right_size = right_offsets[column + 1] - right_start
      length = left_size + right_size
      frame = _FRAME_BYTES + length
      if count == max_pairs or frame > capacity - used:
        return count, used, row, column
      _put_little_endian(data, used, length, _FRAME_LENGTH_BYTES)
      if length != header_length:  # pairs of a row mostly share a length, and so the header's CRC
        header_length, header_crc = length, crc32c.masked_crc32c(data, used, _FRAME_LENGTH_BYTES)
      _put_little_endian(data, used + _FRAME_LENGTH_BYTES, header_crc, _FRAME_CRC_BYTES)
      record = used + _FRAME_HEADER_BYTES
      record_blocks.copy_bytes(data, record, left_data, left_start, left_size)
      record_blocks.copy_bytes(data, record + left_size, right_data, right_start, right_size)
      register = crc32c.extend(left_register, right_data, right_start, right_start + right_size)
      _put_little_endian(data, record + length, crc32c.masked(register), _FRAME_CRC_BYTES)
      used += frame
      ends[count] = used
      keys[count] = i * num_right + j
      count += 1
      column += 1
    row += 1
    column = 0
  return count, used, row, column
