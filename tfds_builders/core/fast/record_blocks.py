"""Many small records at once: protobuf map entries, Examples and TFRecord frames built in compiled loops.

Per record, Python costs about a microsecond a step (a join, a varint, a
write call), which is the whole cost of a build whose records are small,
such as an overlay's new fields. Here a column of values becomes a column of
map entries, and a block of entries becomes framed TFRecord bytes, each in
one Numba loop; the writer then stores a block with one call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numba
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
import numpy as np

from tfds_builders.core import serialization
from tfds_builders.core import tfrecord_io
from tfds_builders.core import wire
from tfds_builders.core.fast import crc32c


@dataclasses.dataclass(frozen=True)
class ByteColumn:
  """A sequence of byte strings stored end to end: item i is `data[offsets[i]:offsets[i + 1]]`."""

  data: np.ndarray  # uint8
  offsets: np.ndarray  # int64, one more than the items

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def item(self, index: int) -> bytes:
    return self.data[self.offsets[index]:self.offsets[index + 1]].tobytes()

  def items(self) -> list[bytes]:
    blob = self.data.tobytes()
    bounds = self.offsets.tolist()
    return [blob[start:end] for start, end in zip(bounds, bounds[1:])]

  @classmethod
  def from_items(cls, items: Sequence[bytes]) -> ByteColumn:
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(item) for item in items], out=offsets[1:])
    return cls(np.frombuffer(b"".join(items), np.uint8), offsets)

  @classmethod
  def fixed_width(cls, rows: np.ndarray) -> ByteColumn:
    """The rows of a 2-D uint8 array, one item each."""
    count, width = rows.shape
    return cls(np.ascontiguousarray(rows).reshape(-1), np.arange(count + 1, dtype=np.int64) * width)


def joined_rows(columns: Sequence[ByteColumn]) -> ByteColumn:
  """Item i is the concatenation of every column's item i."""
  if len({len(column) for column in columns}) != 1:  # the kernel indexes every column by the first's rows
    raise ValueError(f"joined_rows takes columns of one length, not {[len(column) for column in columns]}.")
  joined = columns[0]
  for column in columns[1:]:
    data, offsets = _join_rows(joined.data, joined.offsets, column.data, column.offsets)
    joined = ByteColumn(data, offsets)
  return joined


def int64_entries(key: serialization.FeatureKey, values: np.ndarray) -> ByteColumn:
  """One map entry per value: a one-value int64_list, as `serialization.int64_feature` writes it."""
  prefixes = ByteColumn.from_items(serialization.int64_scalar_prefixes(key))
  data, offsets = _int64_entries(np.ascontiguousarray(values, np.int64), prefixes.data, prefixes.offsets)
  return ByteColumn(data, offsets)


def fixed_entries(key: serialization.FeatureKey, values: np.ndarray, head_of: str) -> ByteColumn:
  """One map entry per value of a fixed byte width (float32, or 8 raw float64 bytes).

  Args:
    key: The feature.
    values: One little-endian value per row, e.g. `values.astype("<f4")`.
    head_of: `float_list` or `bytes`: how each value is stored.
  """
  width = values.dtype.itemsize
  head = serialization.fixed_entry_head(key, head_of, width)
  rows = np.empty((len(values), len(head) + width), np.uint8)
  rows[:, :len(head)] = np.frombuffer(head, np.uint8)
  rows[:, len(head):] = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), width)
  return ByteColumn.fixed_width(rows)


def bytes_entries(key: serialization.FeatureKey, values: ByteColumn) -> ByteColumn:
  """One map entry per item: a one-value bytes_list, as `serialization.bytes_feature` writes it."""
  key_field = np.frombuffer(key.key_field, np.uint8)
  data, offsets = _bytes_entries(key_field, values.data, values.offsets)
  return ByteColumn(data, offsets)


def framed_examples(
    entries: ByteColumn, index: np.ndarray, fixed: np.ndarray, fallback: bytes = b""
) -> tfrecord_io.FramedRecords:
  """TFRecord frames of Examples whose map entries are `entries.item(index[i])` then `fixed[i]`.

  Args:
    entries: Map entries shared between records (e.g. side-table rows).
    index: Per record, its item of `entries`; -1 for `fallback`.
    fixed: Per record, more map entries of one width (a 2-D uint8 array).
    fallback: The entries of records whose index is -1.
  """
  index = np.ascontiguousarray(index, np.int64)
  fixed = np.ascontiguousarray(fixed, np.uint8)
  # The kernel reads entries and rows without bounds checks: an index outside them must never reach it.
  if fixed.ndim != 2 or len(fixed) != len(index) or (len(index) and not -1 <= index.min() <= index.max() < len(entries)):
    raise ValueError(f"framed_examples takes an index in [-1, {len(entries)}) and one row of fixed per record.")
  data, ends = _framed_examples(entries.data, entries.offsets, index, fixed, np.frombuffer(fallback, np.uint8))
  return tfrecord_io.FramedRecords(data, ends)


def framed(records: Sequence[bytes]) -> tfrecord_io.FramedRecords:
  """TFRecord frames of records given one by one."""
  column = ByteColumn.from_items(records)
  data, ends = _framed_examples(column.data, column.offsets, np.arange(len(records), dtype=np.int64),
                                np.zeros((len(records), 0), np.uint8), np.zeros(0, np.uint8), with_head=False)
  return tfrecord_io.FramedRecords(data, ends)


def framed_rows(columns: Sequence[ByteColumn]) -> tfrecord_io.FramedRecords:
  """TFRecord frames of Examples whose map entries are every column's item i, in column order.

  A block of table rows becomes its records in one pass: each row's entries
  are copied once, behind the Example head, with no join per column.
  """
  if not columns:
    raise ValueError("framed_rows takes at least one column.")
  count = len(columns[0])
  for column in columns:  # the kernel trusts offsets: every one must lie inside its column's data
    _check_column(column, count, "framed_rows")
  data = np.concatenate([column.data for column in columns])
  bases = np.cumsum([0] + [len(column.data) for column in columns[:-1]])
  starts = np.stack([column.offsets + base for column, base in zip(columns, bases)])
  frames, ends = _framed_rows(data, starts)
  return tfrecord_io.FramedRecords(frames, ends)


def scattered_entries(values: ByteColumn, present: np.ndarray, suffix: bytes, missing: bytes) -> ByteColumn:
  """One item per row of `present`: the next item of `values` then `suffix` where True, `missing` where False.

  A column with NULLs: its values' entries are made for the present rows
  only, and each NULL row takes the NULL policy's constant entry.

  Args:
    values: As many items as `present` has True rows.
    present: One bool per row.
    suffix: Appended to every present row's item (e.g. a mask entry).
    missing: The item of every absent row.
  """
  present = np.ascontiguousarray(present, np.bool_)
  if present.ndim != 1:
    raise ValueError("scattered_entries takes one bool per row.")
  _check_column(values, int(np.count_nonzero(present)), "scattered_entries")
  data, offsets = _scattered_entries(values.data, values.offsets, present, np.frombuffer(suffix, np.uint8),
                                     np.frombuffer(missing, np.uint8))
  return ByteColumn(data, offsets)


def _check_column(column: ByteColumn, count: int, caller: str) -> None:
  """Refuses a column that is not `count` items lying in order inside its data."""
  offsets = column.offsets
  if (column.data.dtype != np.uint8 or column.data.ndim != 1 or offsets.dtype != np.int64 or offsets.ndim != 1
      or len(offsets) != count + 1 or offsets[0] < 0 or offsets[-1] > len(column.data)
      or (count and bool((offsets[1:] < offsets[:-1]).any()))):
    raise ValueError(f"{caller} takes {count} items per column, with offsets in order inside the column's data.")


# ---------------------------------------------------------------- kernels --


@intrinsic
def copy_bytes(typingctx, out, out_start, source, start, count):  # pylint: disable=unused-argument
  """out[out_start:out_start + count] = source[start:start + count] as one memcpy (the caller checks both ranges).

  Numba compiles a slice assignment or a byte loop to about 1 ns a byte
  (wrap-around and overlap checks); memcpy is several times faster on the
  100-byte-to-MiB copies of records and blocks.
  """
  def codegen(context, builder, signature, args):
    out_data = context.make_array(signature.args[0])(context, builder, args[0]).data
    source_data = context.make_array(signature.args[2])(context, builder, args[2]).data
    cgutils.raw_memcpy(builder, builder.gep(out_data, [args[1]]), builder.gep(source_data, [args[3]]), args[4], 1)
    return context.get_dummy_value()
  return types.void(out, types.int64, source, types.int64, types.int64), codegen



@numba.njit(cache=True, nogil=True)
def _varint_size(value: int) -> int:
  unsigned = np.uint64(value)
  size = 1
  while unsigned >= 128:
    unsigned >>= np.uint64(7)
    size += 1
  return size


@numba.njit(cache=True, nogil=True)
def _put_varint(out, pos, value) -> int:
  unsigned = np.uint64(value)
  while unsigned >= 128:
    out[pos] = np.uint8((unsigned & np.uint64(0x7F)) | np.uint64(0x80))
    unsigned >>= np.uint64(7)
    pos += 1
  out[pos] = np.uint8(unsigned)
  return pos + 1


@numba.njit(cache=True, nogil=True)
def _put_little_endian(out, pos, value, count) -> None:
  for i in range(count):
    out[pos + i] = (value >> (8 * i)) & 0xFF


@numba.njit(cache=True, nogil=True)
def _join_rows(a_data, a_offsets, b_data, b_offsets):
  count = a_offsets.shape[0] - 1
  offsets = np.empty(count + 1, np.int64)
  offsets[0] = 0
  for i in range(count):
    offsets[i + 1] = offsets[i] + (a_offsets[i + 1] - a_offsets[i]) + (b_offsets[i + 1] - b_offsets[i])
  data = np.empty(offsets[count], np.uint8)
  for i in range(count):
    middle = offsets[i] + a_offsets[i + 1] - a_offsets[i]
    data[offsets[i]:middle] = a_data[a_offsets[i]:a_offsets[i + 1]]
    data[middle:offsets[i + 1]] = b_data[b_offsets[i]:b_offsets[i + 1]]
  return data, offsets


@numba.njit(cache=True, nogil=True)
def _int64_entries(values, prefix_data, prefix_offsets):
  count = values.shape[0]
  offsets = np.empty(count + 1, np.int64)
  offsets[0] = 0
  for i in range(count):
    size = _varint_size(values[i])
    offsets[i + 1] = offsets[i] + prefix_offsets[size + 1] - prefix_offsets[size] + size
  data = np.empty(offsets[count], np.uint8)
  for i in range(count):
    size = _varint_size(values[i])
    pos = offsets[i] + prefix_offsets[size + 1] - prefix_offsets[size]
    data[offsets[i]:pos] = prefix_data[prefix_offsets[size]:prefix_offsets[size + 1]]
    _put_varint(data, pos, values[i])
  return data, offsets


@numba.njit(cache=True, nogil=True)
def _bytes_entry_sizes(key_size, size):
  list_size = 1 + _varint_size(size) + size
  feature_size = 1 + _varint_size(list_size) + list_size
  entry_size = key_size + 1 + _varint_size(feature_size) + feature_size
  return list_size, feature_size, entry_size


@numba.njit(cache=True, nogil=True)
def _bytes_entries(key_field, values_data, values_offsets):
  count = values_offsets.shape[0] - 1
  offsets = np.empty(count + 1, np.int64)
  offsets[0] = 0
  for i in range(count):
    _, _, entry_size = _bytes_entry_sizes(key_field.shape[0], values_offsets[i + 1] - values_offsets[i])
    offsets[i + 1] = offsets[i] + 1 + _varint_size(entry_size) + entry_size
  data = np.empty(offsets[count], np.uint8)
  for i in range(count):
    size = values_offsets[i + 1] - values_offsets[i]
    list_size, feature_size, entry_size = _bytes_entry_sizes(key_field.shape[0], size)
    pos = offsets[i]
    data[pos] = wire.FEATURES_ENTRY
    pos = _put_varint(data, pos + 1, entry_size)
    data[pos:pos + key_field.shape[0]] = key_field
    pos += key_field.shape[0]
    data[pos] = wire.MAP_VALUE
    pos = _put_varint(data, pos + 1, feature_size)
    data[pos] = wire.FEATURE_BYTES_LIST
    pos = _put_varint(data, pos + 1, list_size)
    data[pos] = wire.LIST_VALUE
    pos = _put_varint(data, pos + 1, size)
    data[pos:pos + size] = values_data[values_offsets[i]:values_offsets[i + 1]]
  return data, offsets


@numba.njit(cache=True, nogil=True)
def _framed_examples(entries_data, entries_offsets, index, fixed, fallback, with_head=True):
  """Frames of `[Example head] entries[index[i]] (fallback if -1) fixed[i]`; returns (data, frame ends)."""
  count = index.shape[0]
  width = fixed.shape[1]
  ends = np.empty(count, np.int64)
  total = 0
  for i in range(count):
    row = index[i]
    body = (fallback.shape[0] if row < 0 else entries_offsets[row + 1] - entries_offsets[row]) + width
    length = 1 + _varint_size(body) + body if with_head else body
    total += wire.FRAME_BYTES + length
    ends[i] = total
  data = np.empty(total, np.uint8)
  pos = 0
  for i in range(count):
    row = index[i]
    entry = fallback if row < 0 else entries_data[entries_offsets[row]:entries_offsets[row + 1]]
    body = entry.shape[0] + width
    length = 1 + _varint_size(body) + body if with_head else body
    _put_little_endian(data, pos, length, wire.FRAME_LENGTH_BYTES)
    _put_little_endian(data, pos + wire.FRAME_LENGTH_BYTES, crc32c.masked_crc32c(data, pos, wire.FRAME_LENGTH_BYTES),
                       wire.FRAME_CRC_BYTES)
    record = pos + wire.FRAME_HEADER_BYTES
    pos = record
    if with_head:
      data[pos] = wire.EXAMPLE_FEATURES
      pos = _put_varint(data, pos + 1, body)
    data[pos:pos + entry.shape[0]] = entry
    pos += entry.shape[0]
    data[pos:pos + width] = fixed[i]
    pos += width
    _put_little_endian(data, pos, crc32c.masked_crc32c(data, record, length), wire.FRAME_CRC_BYTES)
    pos += wire.FRAME_CRC_BYTES
  return data, ends


@numba.njit(cache=True, nogil=True)
def _framed_rows(data, starts):
  """Frames of `[Example head] data[starts[0, i]:starts[0, i + 1]] data[starts[1, i]:...] ...`; returns (data, ends)."""
  columns = starts.shape[0]
  count = starts.shape[1] - 1
  ends = np.empty(count, np.int64)
  total = 0
  for i in range(count):
    body = 0
    for column in range(columns):
      body += starts[column, i + 1] - starts[column, i]
    total += wire.FRAME_BYTES + 1 + _varint_size(body) + body
    ends[i] = total
  frames = np.empty(total, np.uint8)
  pos = 0
  for i in range(count):
    body = 0
    for column in range(columns):
      body += starts[column, i + 1] - starts[column, i]
    length = 1 + _varint_size(body) + body
    _put_little_endian(frames, pos, length, wire.FRAME_LENGTH_BYTES)
    _put_little_endian(frames, pos + wire.FRAME_LENGTH_BYTES,
                       crc32c.masked_crc32c(frames, pos, wire.FRAME_LENGTH_BYTES), wire.FRAME_CRC_BYTES)
    record = pos + wire.FRAME_HEADER_BYTES
    frames[record] = wire.EXAMPLE_FEATURES
    pos = _put_varint(frames, record + 1, body)
    for column in range(columns):
      start, end = starts[column, i], starts[column, i + 1]
      frames[pos:pos + end - start] = data[start:end]
      pos += end - start
    _put_little_endian(frames, pos, crc32c.masked_crc32c(frames, record, length), wire.FRAME_CRC_BYTES)
    pos += wire.FRAME_CRC_BYTES
  return frames, ends


@numba.njit(cache=True, nogil=True)
def _scattered_entries(values_data, values_offsets, present, suffix, missing):
  count = present.shape[0]
  offsets = np.empty(count + 1, np.int64)
  offsets[0] = 0
  taken = 0
  for i in range(count):
    if present[i]:
      offsets[i + 1] = offsets[i] + values_offsets[taken + 1] - values_offsets[taken] + suffix.shape[0]
      taken += 1
    else:
      offsets[i + 1] = offsets[i] + missing.shape[0]
  data = np.empty(offsets[count], np.uint8)
  taken = 0
  for i in range(count):
    pos = offsets[i]
    if present[i]:
      start, end = values_offsets[taken], values_offsets[taken + 1]
      data[pos:pos + end - start] = values_data[start:end]
      data[pos + end - start:offsets[i + 1]] = suffix
      taken += 1
    else:
      data[pos:offsets[i + 1]] = missing
  return data, offsets
