"""Where each record of a TFRecord file lies, one feature's value and the Example's layout, read without touching the rest.

A TFRecord frame is `length (8) | masked CRC32C of length (4) | data | masked
CRC32C of data (4)`. Walking the frames needs only the headers, so the pages
of large records (images, audio) are never read; reading a key or checking
an Example's layout (`ExampleLayout`) reads only its tags and lengths, while
they are in cache. Compiled with Numba: a Python loop costs ~1 µs a record,
which is more than reading a 10 KB record.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import mmap
import zlib
from collections.abc import Iterator, Mapping
from typing import BinaryIO

import numba
import numpy as np

from tfds_builders.core import crc32c
from tfds_builders.core import errors
from tfds_builders.core import tfrecord_io

_HEADER_BYTES = tfrecord_io.FRAME_HEADER_BYTES
_FRAME_BYTES = tfrecord_io.FRAME_BYTES
_WINDOW_BYTES = 16 * 1024 * 1024  # mapped (or decompressed) at a time: RSS stays flat
_BLOCK_RECORDS = 65536
# _walk_frames statuses.
_FULL, _INCOMPLETE, _BAD_HEADER, _BAD_DATA = 0, 1, 2, 3
# What a frame whose length is absurd needs: more than any file holds, and no overflow when added to.
_MAX_NEEDED = 1 << 62
# A GZIP stream is first checked to be this much longer than what is held before more of it is held.
_PROBE_BYTES = 64 * 1024 * 1024
# tf.train.Feature's fields holding the values of each kind.
KIND_FIELDS = {"bytes_list": 1, "float_list": 2, "int64_list": 3}
MALFORMED = -1  # a key count: the record is no valid tf.train.Example
# The wire tag of each kind's field in a Feature (length-delimited).
_TAG_OF_KIND = {kind: field << 3 | 2 for kind, field in KIND_FIELDS.items()}
_BYTES_TAG, _FLOAT_TAG = _TAG_OF_KIND["bytes_list"], _TAG_OF_KIND["float_list"]


@numba.njit(cache=True, nogil=True)
def _little_endian(buf: np.ndarray, start: int, count: int) -> int:
  value = 0
  for i in range(count):
    value |= np.int64(buf[start + i]) << (8 * i)
  return value


@numba.njit(cache=True, nogil=True)
def _walk_frames(buf, offsets, lengths, crcs, name, kind_field, keys, layout, key_number, conforms, value_counts,
                 check_data):
  """Frames records from buf[0] until the buffer or the output arrays end.

  While each record's bytes are in cache, with a `name` also reads its
  values of that feature into `keys` (count, last int, last bytes start,
  end; see `_key_values`), and with a `layout` (names, name offsets, kind
  tags; see `ExampleLayout`) checks it into `conforms` and `value_counts`.
  The key is then read by the same parse (`key_number`: its feature in the
  layout) unless the record does not conform. With `check_data`, each
  record's data is checked against its stored CRC (`_BAD_DATA` if not).

  Returns:
    (records framed, where it stopped, status, bytes the next frame needs).
  """
  size = buf.shape[0]
  pos = 0
  count = 0
  while count < offsets.shape[0]:
    if size - pos < _HEADER_BYTES:
      return count, pos, _INCOMPLETE, _HEADER_BYTES
    length = _little_endian(buf, pos, 8)  # lengths of 2**63 and more read as negative
    if crc32c.masked_crc32c(buf, pos, 8) != _little_endian(buf, pos + 8, 4):
      return count, pos, _BAD_HEADER, 0
    # Compared with the bytes left, never added to a position first: a crafted length must not wrap around.
    if length < 0 or length > size - pos - _FRAME_BYTES:
      return count, pos, _INCOMPLETE, _FRAME_BYTES + length if 0 <= length < _MAX_NEEDED else _MAX_NEEDED
    start = pos + _HEADER_BYTES
    stored_crc = _little_endian(buf, start + length, 4)
    if check_data and crc32c.masked_crc32c(buf, start, length) != stored_crc:
      return count, pos, _BAD_DATA, 0
    offsets[count] = pos
    lengths[count] = length
    crcs[count] = stored_crc
    keyed = False
    if layout[1].shape[0] > 1:
      conforms[count] = _conforms(buf, start, start + length, layout, value_counts[count], key_number, keys[count])
      keyed = conforms[count] and key_number >= 0
    if name.shape[0] and not keyed:
      _key_values(buf, start, start + length, name, kind_field, keys[count])
    count += 1
    pos += _FRAME_BYTES + length  # within the buffer: checked above
  return count, pos, _FULL, 0


@numba.njit(cache=True, nogil=True)
def _varint(buf, pos, end):
  """(value, position after it); position -1 if the varint is malformed."""
  value = 0
  shift = 0
  while pos < end and shift < 64:
    byte = buf[pos]
    pos += 1
    value |= np.int64(byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7
  return 0, -1


@numba.njit(cache=True, nogil=True)
def _field(buf, pos, end):
  """The protobuf field at pos: (tag, first, last, position after it); that position is -1 if malformed.

  For a length-delimited field buf[first:last] is its payload; for a varint
  `first` is its value; otherwise both are -1.
  """
  tag, pos = _varint(buf, pos, end)
  if pos < 0:
    return 0, -1, -1, -1
  wire_type = tag & 7
  if wire_type == 2:
    length, pos = _varint(buf, pos, end)
    if pos < 0 or length < 0 or length > end - pos:  # never pos + length: a crafted varint must not wrap
      return tag, -1, -1, -1
    return tag, pos, pos + length, pos + length
  if wire_type == 0:
    value, pos = _varint(buf, pos, end)
    return tag, value, -1, pos
  size = 8 if wire_type == 1 else 4 if wire_type == 5 else -1
  if size < 0 or size > end - pos:
    return tag, -1, -1, -1
  return tag, -1, -1, pos + size


@numba.njit(cache=True, nogil=True)
def _feature_span(buf, start, end, name):
  """(start, end) of the tf.train.Feature named `name` in an Example; (-1, -1) absent, (-2, -2) malformed.

  Protobuf's rules: repeated `features` fields merge, and a later map entry
  with the same key replaces an earlier one.
  """
  found_start, found_end = -1, -1
  pos = start
  while pos < end:
    tag, features_start, features_end, pos = _field(buf, pos, end)
    if pos < 0:
      return -2, -2
    entry_pos = features_start if tag == 0x0A else features_end  # Example.features, else skipped
    while entry_pos < features_end:
      tag, entry_start, entry_end, entry_pos = _field(buf, entry_pos, features_end)
      if entry_pos < 0:
        return -2, -2
      if tag != 0x0A:  # not a map entry
        continue
      key_start, key_end, value_start, value_end = -1, -1, entry_end, entry_end
      inner = entry_start
      while inner < entry_end:
        tag, first, last, inner = _field(buf, inner, entry_end)
        if inner < 0:
          return -2, -2
        if tag == 0x0A:
          key_start, key_end = first, last
        elif tag == 0x12:
          value_start, value_end = first, last
      if key_end - key_start == name.shape[0] and _equal(buf, key_start, name):
        found_start, found_end = value_start, value_end
  return found_start, found_end


@numba.njit(cache=True, nogil=True)
def _equal(buf, start, name) -> bool:
  # A while loop: Numba compiles a `for` loop with an early return ~7x slower here.
  i = 0
  while i < name.shape[0] and buf[start + i] == name[i]:
    i += 1
  return i == name.shape[0]


@numba.njit(cache=True, nogil=True)
def _clear(state) -> None:
  for i in range(state.shape[0]):
    state[i] = 0


@numba.njit(cache=True, nogil=True)
def _list_values(buf, start, end, kind_field, state):
  """Adds one `*List` message's values to state = [count, last int, last bytes start, end]."""
  pos = start
  while pos < end:
    tag, first, last, pos = _field(buf, pos, end)
    if pos < 0:
      return False
    if kind_field == 3 and tag == 0x08:  # one unpacked int64
      state[0] += 1
      state[1] = first
    elif kind_field == 3 and tag == 0x0A:  # packed int64s
      packed = first
      while packed < last:
        value, packed = _varint(buf, packed, last)
        if packed < 0:
          return False
        state[0] += 1
        state[1] = value
    elif kind_field == 1 and tag == 0x0A:  # one bytes value
      state[0] += 1
      state[2], state[3] = first, last
  return True


@numba.njit(cache=True, nogil=True)
def _key_values(buf, start, end, name, kind_field, state):
  """state = [count, last int, last bytes start, end] of feature `name`'s values of kind `kind_field`.

  The count is MALFORMED if the record is no valid Example.
  """
  _clear(state)
  feature_start, feature_end = _feature_span(buf, start, end, name)
  ok = feature_start != -2
  pos = feature_start
  while ok and pos >= 0 and pos < feature_end:
    tag, first, last, pos = _field(buf, pos, feature_end)
    ok = pos >= 0
    if ok and (tag & 7) == 2 and 1 <= (tag >> 3) <= 3:  # a oneof member: a different one clears ours
      if (tag >> 3) == kind_field:
        ok = _list_values(buf, first, last, kind_field, state)
      else:
        _clear(state)
  if not ok:
    state[0] = MALFORMED


@numba.njit(cache=True, nogil=True)
def _length_field(buf, pos, end, tag):
  """(start, end) of the length-delimited field with `tag` at pos, filling at most up to `end`; (-1, -1) if not."""
  if pos < 0 or pos >= end or buf[pos] != tag:
    return -1, -1
  length, start = _varint(buf, pos + 1, end)
  if start < 0 or length < 0 or length > end - start:
    return -1, -1
  return start, start + length


@numba.njit(cache=True, nogil=True)
def _name_number(buf, start, size, names, name_offsets, hint):
  """The number of the layout name equal to buf[start:start + size] (`hint` tried first); -1 if none."""
  count = name_offsets.shape[0] - 1
  for step in range(count + 1):
    number = hint if step == 0 else step - 1
    if number >= count or (step and number == hint):
      continue
    first = name_offsets[number]
    if name_offsets[number + 1] - first == size:
      i = 0  # a while loop, as in _equal
      while i < size and buf[start + i] == names[first + i]:
        i += 1
      if i == size:
        return number
  return -1


@numba.njit(cache=True, nogil=True)
def _value_count(buf, start, end, kind_tag):
  """How many values a canonical `*List` message buf[start:end] of that kind holds; -1 if not canonical.

  Bytes values are each a field 1; numbers are one packed field 1 (floats a
  multiple of 4 bytes, int64 varints of at most 10 bytes) or nothing.
  """
  count = 0
  if kind_tag == _BYTES_TAG:
    pos = start
    while pos < end:
      _, pos = _length_field(buf, pos, end, 0x0A)
      if pos < 0:
        return -1
      count += 1
    return count
  if start == end:
    return 0
  packed_start, packed_end = _length_field(buf, start, end, 0x0A)
  if packed_end != end:
    return -1
  if kind_tag == _FLOAT_TAG:
    return -1 if (end - packed_start) % 4 else (end - packed_start) // 4
  run = 0  # continuation bytes in a row
  for pos in range(packed_start, end):
    if buf[pos] >= 0x80:
      run += 1
      if run == 10:  # an 11-byte varint, which protobuf refuses
        return -1
    else:
      run = 0
      count += 1
  return -1 if run else count


@numba.njit(cache=True, nogil=True)
def _conforms(buf, start, end, layout, value_counts, key_number, key_state) -> bool:
  """Whether buf[start:end] is an Example in protobuf's canonical encoding with exactly the layout's features.

  Canonical: one `features` field filling the record, map entries of key
  then value, each value one non-empty Feature of the layout's kind (see
  `_value_count`). Each feature's number of values goes to `value_counts`,
  and feature `key_number`'s values (if it is >= 0) to `key_state`, as
  `_key_values` reads them.
  """
  names, name_offsets, kind_tags = layout
  features = name_offsets.shape[0] - 1
  for number in range(features):
    value_counts[number] = -1
  features_start, features_end = _length_field(buf, start, end, 0x0A)
  if features_end != end:
    return False
  found = 0
  pos = features_start
  while pos < end:
    entry_start, entry_end = _length_field(buf, pos, end, 0x0A)
    key_start, key_end = _length_field(buf, entry_start, entry_end, 0x0A)
    if key_end < 0:
      return False
    number = _name_number(buf, key_start, key_end - key_start, names, name_offsets, found)
    if number < 0 or value_counts[number] >= 0:  # another feature, or a key given twice
      return False
    feature_start, feature_end = _length_field(buf, key_end, entry_end, 0x12)
    if feature_end != entry_end or feature_start == feature_end or buf[feature_start] != kind_tags[number]:
      return False
    list_start, list_end = _length_field(buf, feature_start, entry_end, kind_tags[number])
    if list_end != entry_end:
      return False
    value_counts[number] = _value_count(buf, list_start, list_end, kind_tags[number])
    if value_counts[number] < 0:
      return False
    if number == key_number:
      _clear(key_state)
      _list_values(buf, list_start, list_end, kind_tags[number] >> 3, key_state)
    found += 1
    pos = entry_end
  return found == features


@numba.njit(cache=True, nogil=True)
def _check_layouts(buf, starts, ends, layout, conforms, value_counts):
  no_key = np.zeros(4, np.int64)
  for row in range(starts.shape[0]):
    conforms[row] = _conforms(buf, starts[row], ends[row], layout, value_counts[row], -1, no_key)


@dataclasses.dataclass(frozen=True)
class ExampleLayout:
  """Features by name and value kind, in the form the compiled checks take.

  A record conforms if it is an Example in protobuf's canonical encoding
  with exactly these features, of these kinds. A record that does not may
  still be a valid Example in an unusual encoding: only a parser can tell.
  """

  names: np.ndarray  # uint8, the UTF-8 names end to end
  name_offsets: np.ndarray  # int64, one more than the names
  kind_tags: np.ndarray  # uint8, the wire tag of each feature's list

  def __post_init__(self):
    # The compiled checks index names by name_offsets without bounds checks.
    offsets = self.name_offsets
    if (len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(self.names) or (np.diff(offsets) < 0).any()
        or len(self.kind_tags) != len(offsets) - 1):
      raise ValueError("An ExampleLayout's name_offsets must rise from 0 to len(names), one more than kind_tags.")

  @classmethod
  def of(cls, kinds: Mapping[str, str]) -> ExampleLayout:
    """The layout of `{name: kind}`, kinds as in `KIND_FIELDS`."""
    encoded = [name.encode("utf-8") for name in kinds]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(name) for name in encoded], out=offsets[1:])
    tags = np.array([_TAG_OF_KIND[kind] for kind in kinds.values()], np.uint8)
    return cls(np.frombuffer(b"".join(encoded), np.uint8), offsets, tags)

  @classmethod
  def none(cls) -> ExampleLayout:
    return cls(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, np.uint8))

  def __len__(self) -> int:
    return len(self.name_offsets) - 1

  def number(self, name: str, kind: str) -> int:
    """The feature's number in the layout if it has that kind; else -1."""
    encoded = name.encode("utf-8")
    for number in range(len(self)):
      if self.names[self.name_offsets[number]:self.name_offsets[number + 1]].tobytes() == encoded:
        return number if self.kind_tags[number] == _TAG_OF_KIND[kind] else -1
    return -1

  def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return self.names, self.name_offsets, self.kind_tags

  def check(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each record buf[starts[i]:ends[i]] conforms, and its features' value counts (rows, features)."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    # The compiled check reads without bounds checks: bounds outside buf must never reach it.
    if buf.dtype != np.uint8 or buf.ndim != 1 or starts.shape != ends.shape or starts.ndim != 1:
      raise ValueError("check takes a 1-D uint8 buffer and 1-D starts and ends of one length.")
    if ((starts < 0) | (starts > ends) | (ends > len(buf))).any():
      raise ValueError(f"Record bounds outside the buffer of {len(buf)} bytes: each needs 0 <= start <= end <= size.")
    conforms = np.zeros(len(starts), np.bool_)
    value_counts = np.zeros((len(starts), max(len(self), 1)), np.int64)
    if len(self):
      _check_layouts(buf, starts, ends, self.as_tuple(), conforms, value_counts)
    return conforms, value_counts[:, :len(self)]


@dataclasses.dataclass(frozen=True)
class Block:
  """Consecutive records of one file, as found by `scan`.

  Attributes:
    first: The index of the block's first record in its file.
    offsets: Each record's byte offset in the (uncompressed) file.
    lengths: Each record's length in bytes.
    crcs: Each record's masked CRC32C, as stored after it.
    key_counts: With `key`: how many values of the key each record has
      (`MALFORMED` for a record that is no Example).
    keys: With `key`: each record's last key value (an int64 array, or a
      list of bytes).
    conforms: With `layout`: whether each record conforms to it.
    value_counts: With `layout`: each conforming record's number of values
      of each feature, a (records, features) array.
    window: With `with_window`: the mapped (or decompressed) file bytes from
      `window_start` on that hold the block's records; reading a record's
      data there touches only the pages it reads.
  """

  first: int
  offsets: np.ndarray
  lengths: np.ndarray
  crcs: np.ndarray
  key_counts: np.ndarray | None = None
  keys: np.ndarray | list[bytes] | None = None
  conforms: np.ndarray | None = None
  value_counts: np.ndarray | None = None
  window: np.ndarray | None = None
  window_start: int = 0

  def record(self, row: int) -> bytes:
    """The data of the block's record `row` (needs `window`)."""
    start = int(self.offsets[row]) - self.window_start + _HEADER_BYTES
    return self.window[start:start + int(self.lengths[row])].tobytes()

  def record_bounds(self) -> tuple[np.ndarray, np.ndarray]:
    """Where each record's data starts and ends in `window`."""
    starts = self.offsets - self.window_start + _HEADER_BYTES
    return starts, starts + self.lengths

  def __len__(self) -> int:
    return len(self.offsets)

  def fingerprints(self) -> np.ndarray:
    """`length << 32 | stored CRC` per record, as int64: identifies its bytes without reading them."""
    return (self.lengths.astype(np.int64) << 32) | self.crcs.astype(np.int64)


class _Windows:
  """Consecutive windows of a file's (uncompressed) bytes.

  A local uncompressed file is mapped, so that the pages a walk skips are
  never read; a GZIP or remote file is read as a stream, a window's worth at
  a time. A GZIP stream that ends without its end marker sets `truncated`
  and ends; any other GZIP or read error is a SourceError naming the file.
  """

  def __init__(self, file: tfrecord_io.RecordFile):
    self._file = file
    try:
      self._handle: BinaryIO = file.path.open("rb")
    except OSError as error:
      raise _read_error(file, error, at_start=True) from error
    self._gzip = gzip.GzipFile(fileobj=self._handle) if file.compression == "GZIP" else None
    self._fileno = None if self._gzip else _fileno(self._handle)
    self.size = None if self._gzip else file.path.stat().length  # uncompressed bytes, once known
    self.truncated = False
    self._streamed_any = False
    self._pending = b""  # streamed bytes from self._pending_start on
    self._pending_start = 0

  def close(self) -> None:
    if self._gzip:
      self._gzip.close()
    self._handle.close()

  def window(self, start: int, min_bytes: int) -> tuple[memoryview | bytes, bool]:
    """Bytes from `start` (at least min_bytes unless the file ends), and whether they reach its end."""
    want = max(_WINDOW_BYTES, min_bytes)
    if self._fileno is None:
      return self._streamed(start, want)
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    length = min(self.size - aligned, want + start - aligned)
    if length <= 0:
      return b"", True
    mapped = mmap.mmap(self._fileno, length, offset=aligned, access=mmap.ACCESS_READ)
    return memoryview(mapped)[start - aligned:], aligned + length == self.size

  def _streamed(self, start: int, want: int) -> tuple[bytes, bool]:
    kept = self._pending[start - self._pending_start:]
    if self.size is not None:
      want = min(want, self.size - start)
    elif want - len(kept) > _PROBE_BYTES and not self._holds(start + want):
      return kept, True  # shorter than a frame claims: its bytes are never held
    parts, held, ended = [kept], len(kept), False
    while held < want and not ended:
      part = self._read(min(want - held, _WINDOW_BYTES))
      parts.append(part)
      held += len(part)
      ended = not part
    self._pending, self._pending_start = b"".join(parts), start
    if ended:
      self.size = start + held
    return self._pending, self.size is not None and start + held >= self.size

  def _read(self, count: int) -> bytes:
    try:
      part = self._gzip.read1(count) if self._gzip else self._handle.read(count)
      self._streamed_any = self._streamed_any or bool(part)
      return part
    except EOFError:  # GZIP's end marker is missing: what was read is kept, the walk reports the rest
      self.truncated = True
      return b""
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
      raise _read_error(self._file, error, at_start=not self._streamed_any) from error

  def _holds(self, end: int) -> bool:
    """Whether the GZIP stream has `end` bytes, decompressed and dropped (its size is kept if not)."""
    with self._file.path.open("rb") as handle, gzip.GzipFile(fileobj=handle) as probe:
      try:
        probe.seek(end - 1)
        if probe.read(1):
          return True
        self.size = probe.tell()
      except EOFError:  # cut short before `end`: reported as a truncated stream
        self.truncated = True
        self.size = probe.tell()
      except (OSError, zlib.error):
        return True  # corrupt: the stream's own read reaches the same bytes and names it
      return False


def _fileno(handle: BinaryIO) -> int | None:
  """The handle's file descriptor, or None if it has none to map (a remote file)."""
  try:
    return handle.fileno()
  except (AttributeError, OSError, io.UnsupportedOperation):
    return None


def scan(
    file: tfrecord_io.RecordFile,
    *,
    key: str | None = None,
    key_kind: str = "int64_list",
    block_records: int = _BLOCK_RECORDS,
    with_window: bool = False,
    layout: ExampleLayout | None = None,
    check_data: bool = False,
    as_reader: bool = False,
) -> Iterator[Block]:
  """The record frames of one file (and one feature's values), block by block.

  Reads only the headers (and, with `key` or `layout`, the bytes leading to
  the key and the features' tags and lengths), unless `check_data`. Every
  length read is checked against the bytes left before it is used, so a
  crafted length is reported, never followed. A GZIP file is decompressed
  as it is walked.

  Args:
    file: The TFRecord file.
    key: A feature to read from every record.
    key_kind: The key's kind: `int64_list` or `bytes_list`.
    block_records: Records per block.
    with_window: Give each block the bytes holding its records. The window
      stays mapped while a block refers to it: drop blocks once read.
    layout: Check every record against it (`Block.conforms`).
    check_data: Also check every record's data against its stored CRC,
      which reads every page of the file.
    as_reader: Word a bad frame as a record reader does (`record N is
      corrupt or truncated (at byte B: ...)`), for paths that read records;
      else as a walk does (`record N (at byte B) is truncated ...`).

  Raises:
    SourceError: naming the file, record and byte offset of a frame that is
      corrupt or truncated (or, with `check_data`, whose data is corrupt),
      and a GZIP stream that is truncated, corrupt or no GZIP at all.
  """
  windows = _Windows(file)
  name = np.frombuffer(key.encode(), np.uint8) if key is not None else np.zeros(0, np.uint8)
  kind_field = KIND_FIELDS[key_kind]
  offsets, lengths = np.empty(block_records, np.int64), np.empty(block_records, np.int64)
  crcs = np.empty(block_records, np.int64)
  keys = np.zeros((block_records, 4), np.int64)
  layout = layout if layout is not None and len(layout) else None
  layout_arrays = (layout or ExampleLayout.none()).as_tuple()
  key_number = layout.number(key, key_kind) if layout and key is not None else -1
  conforms = np.zeros(block_records if layout else 0, np.bool_)
  value_counts = np.zeros((block_records, len(layout)) if layout else (0, 0), np.int64)
  start, first, needed = 0, 0, 0
  try:
    while True:
      view, reaches_end = windows.window(start, needed)
      buf = np.frombuffer(view, np.uint8)
      pos = 0
      while True:
        count, stop, status, needed = _walk_frames(
            buf[pos:], offsets, lengths, crcs, name, kind_field, keys, layout_arrays, key_number, conforms,
            value_counts, check_data)
        if count:
          block = _block(buf[pos:], start + pos, first, offsets[:count], lengths[:count], crcs[:count],
                         keys[:count] if key is not None else None, key_kind)
          if layout:
            block = dataclasses.replace(block, conforms=conforms[:count].copy(), value_counts=value_counts[:count].copy())
          yield dataclasses.replace(block, window=buf[pos:], window_start=start + pos) if with_window else block
          first += count
        pos += stop
        if status != _FULL:
          break
      remaining = len(buf) - pos
      header = buf[pos:pos + _HEADER_BYTES].tobytes()
      del buf, view  # unmapped once no block refers to it
      if status in (_BAD_HEADER, _BAD_DATA) or (reaches_end and (remaining or windows.truncated)):
        raise _frame_error(file, _Stop(first, start + pos, status, header, windows.size, windows.truncated), as_reader)
      if reaches_end:
        return
      start += pos
  finally:
    windows.close()


def _block(buf, buf_offset, first, offsets, lengths, crcs, keys, key_kind) -> Block:
  """A Block of records framed in buf (which starts at byte buf_offset of the file)."""
  counts, values = None, None
  if keys is not None:
    counts = keys[:, 0].copy()
    if key_kind == "int64_list":
      values = keys[:, 1].copy()
    else:
      values = [buf[s:e].tobytes() for s, e in zip(keys[:, 2].tolist(), keys[:, 3].tolist())]
  return Block(first, offsets + buf_offset, lengths.copy(), crcs.astype(np.uint32), counts, values)


@dataclasses.dataclass(frozen=True)
class _Stop:
  """Where and why a walk stopped short of a file's end."""

  index: int  # of the record it stopped at
  offset: int  # of that record's frame, in the uncompressed file
  status: int
  header: bytes  # the frame's first bytes (at most 12)
  size: int | None  # the (uncompressed) file's size, if known
  truncated_gzip: bool

  def problem(self) -> tuple[str, str]:
    """What is wrong with the frame: in a walk's words after `(at byte N)`, and as a detail."""
    if self.truncated_gzip:
      size = "" if self.size is None else f" after {self.size} uncompressed bytes"
      detail = f"truncated GZIP stream: it ends without its end-of-stream marker{size}"
      return f"and any after it are lost: {detail}", detail
    if self.status == _BAD_HEADER:
      return "has a corrupt header (its length does not match its checksum)", "its length does not match its checksum"
    length = int.from_bytes(self.header[:8], "little")
    if self.status == _BAD_DATA:
      detail = f"its {length} bytes of data do not match their checksum (masked CRC32C)"
      return f"is corrupt: {detail}", detail
    if len(self.header) < _HEADER_BYTES:
      detail = f"the file ends {len(self.header)} bytes into its {_HEADER_BYTES}-byte header"
      return f"is truncated: {detail}", detail
    ends = "before them" if self.size is None else f"{self.size - self.offset - _HEADER_BYTES} bytes after the header"
    detail = (f"its header gives {length} bytes of data, and the file ends {ends} (data and checksum need "
              f"{length + tfrecord_io.FRAME_CRC_BYTES})")
    return f"is truncated or its length is corrupt: {detail}", detail


def _frame_error(file: tfrecord_io.RecordFile, stop: _Stop, as_reader: bool) -> errors.SourceError:
  if stop.index == 0 and not file.compression and _starts_gzip(file):
    return errors.SourceError(
        errors.with_hint(
            f"{file.name} starts with the GZIP magic bytes (1f 8b) but is read as an uncompressed TFRecord "
            f"file: its first record is unreadable ({stop.problem()[1]})",
            f"It is most likely GZIP-compressed: check `{file.compression_field}` (set it to 'gzip', or 'auto' "
            "to detect it)",
        )
    )
  before = stop.index
  intact = f"; the {_records(before)} before it {'is' if before == 1 else 'are'} intact" if before else ""
  hint = f"Regenerate or re-download the file{intact}"
  if stop.truncated_gzip:
    hint = f"The file was cut short (an interrupted copy or download): regenerate or re-download it{intact}"
  walk_words, detail = stop.problem()  # offsets count a GZIP file's uncompressed bytes
  if as_reader or stop.status == _BAD_DATA:  # a data checksum is what a reader checks: said as a reader does
    message = f"{file.name}: record {stop.index} is corrupt or truncated (at byte {stop.offset}: {detail})"
  else:
    message = f"{file.name}: record {stop.index} (at byte {stop.offset}) {walk_words}"
  return errors.SourceError(errors.with_hint(message, hint))


def _records(count: int) -> str:
  return f"{count} record{'' if count == 1 else 's'}"


def _read_error(file: tfrecord_io.RecordFile, error: Exception, at_start: bool) -> errors.SourceError:
  """A file that cannot be read, or a GZIP stream that is corrupt or no GZIP at all."""
  reason = " ".join(str(error).split())[:200]
  if not isinstance(error, (gzip.BadGzipFile, zlib.error)):  # an I/O error, not the stream's bytes
    return errors.SourceError(
        errors.with_hint(f"{file.name} cannot be read ({reason})", "Check that the file exists and is readable")
    )
  if not _starts_gzip(file):
    return errors.SourceError(
        errors.with_hint(
            f"{file.name} is read as GZIP but is not GZIP-compressed: it does not start with the GZIP "
            f"magic bytes (1f 8b) ({reason})",
            f"It is most likely uncompressed: check `{file.compression_field}` (set it to 'none', or 'auto' "
            "to detect GZIP)",
        )
    )
  maybe_plain = (
      f"; if it is an uncompressed TFRecord file whose first bytes happen to be 1f 8b, set "
      f"`{file.compression_field}` to 'none'" if at_start else ""
  )
  return errors.SourceError(
      errors.with_hint(f"{file.name}: corrupt GZIP stream ({reason})", f"Regenerate or re-download the file{maybe_plain}")
  )


def _starts_gzip(file: tfrecord_io.RecordFile) -> bool:
  with file.path.open("rb") as handle:
    return handle.read(2) == tfrecord_io.GZIP_MAGIC


def fingerprints(file: tfrecord_io.RecordFile, skip: int = 0, take: int | None = None) -> np.ndarray:
  """`Block.fingerprints` of records [skip, skip + take) of a file."""
  parts = []
  stop = None if take is None else skip + take
  for block in scan(file):
    end = block.first + len(block)
    if end > skip:
      low, high = max(skip - block.first, 0), len(block) if stop is None else min(stop - block.first, len(block))
      if high > low:
        parts.append(block.fingerprints()[low:high])
    if stop is not None and end >= stop:
      break
  return np.concatenate(parts) if parts else np.zeros(0, np.int64)

