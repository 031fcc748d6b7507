"""PostgreSQL binary COPY -> TFRecord frames of Examples, decoded and framed in one compiled loop per chunk.

`COPY (query) TO STDOUT (FORMAT binary)` sends a header, then per row an
int16 field count and per field an int32 length (-1: NULL) and its bytes,
then an int16 -1 trailer. `Decoder.feed` takes the stream in chunks of any
size (a row may straddle two: the tail is kept) and returns blocks of framed
records whose map entries are byte for byte what the database builder's row
encoder writes (`database.codecs`): the per-column framing and the NULL
policies' constant entries are encoded in Python once, by those encoders,
and the kernel only copies them and converts values. Every length read from
the stream is checked against the bytes present before it is used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numba
import numpy as np

from tfds_builders.core import tfrecord_io
from tfds_builders.core import wire
from tfds_builders.core.fast import crc32c
from tfds_builders.core.fast import record_blocks

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
# Formats of a field's bytes (PostgreSQL's send functions).
INT2, INT4, INT8, OID, FLOAT4, FLOAT8, BOOL, TEXT, JSONB, UUID, DATE, TIME, TIMESTAMP, TIMESTAMPTZ = range(14)
FORMAT_NAMES = ("int2", "int4", "int8", "oid", "float4", "float8", "bool", "text", "jsonb", "uuid",
                "date", "time", "timestamp", "timestamptz")
# How a value is stored: an int64_list (ints, bools, epoch dates and times), a float_list
# (float4), 8 raw bytes (float8), or one bytes value (text, uuid text, ISO dates and times).
STORE_INT64, STORE_FLOAT32, STORE_FLOAT64, STORE_BYTES = range(4)
# NULL policies, as `database.codecs.NULL_POLICIES` names them.
NULL_ERROR, NULL_CONSTANT, NULL_SKIP_ROW = range(3)
_FIXED_WIDTHS = {INT2: 2, INT4: 4, INT8: 8, OID: 4, FLOAT4: 4, FLOAT8: 8, BOOL: 1, UUID: 16,
                 DATE: 4, TIME: 8, TIMESTAMP: 8, TIMESTAMPTZ: 8}
_WIDTHS = np.array([_FIXED_WIDTHS.get(f, -1) for f in range(len(FORMAT_NAMES))], np.int64)

# What the kernel stopped at (`Block.status`).
MORE = 0  # the buffer ends inside a row (or the header): feed more
FULL = 1  # the output has no room for the next row
DONE = 2  # the trailer was read
ROW_PROBLEM = 3  # row `row` cannot be encoded (a NULL under `error`, an infinity under `epoch`, a year outside 1-9999)
DUPLICATE_KEY = 4  # row `row` has the previous row's key
_ROW = 5  # (internal) a complete row was read
BAD_SIGNATURE, BAD_FLAGS, BAD_EXTENSION, BAD_FIELD_COUNT, BAD_LENGTH, BAD_WIDTH, BAD_JSONB, TRAILING = range(-1, -9, -1)
PROBLEMS = {
    BAD_SIGNATURE: "the stream does not start with the PGCOPY signature",
    BAD_FLAGS: "the header sets flags this reader does not know (OIDs or a newer format)",
    BAD_EXTENSION: "the header's extension length is negative",
    BAD_FIELD_COUNT: "a row has {found} fields, not the {expected} columns of the query",
    BAD_LENGTH: "a field of column {column!r} has the length {found}",
    BAD_WIDTH: "a field of column {column!r} is {found} bytes long, but a {format} value is {expected}",
    BAD_JSONB: "a jsonb field of column {column!r} has version {found}, not 1",
    TRAILING: "bytes follow the stream's trailer",
}

_EPOCH_2000_DAYS = 10957  # PostgreSQL counts from 2000-01-01; Python's toordinal and Unix from 1970
_EPOCH_2000_US = _EPOCH_2000_DAYS * 86_400_000_000
_US_PER_DAY = 86_400_000_000
_MIN_DAYS, _MAX_DAYS = -719162, 2932896  # 0001-01-01 and 9999-12-31, from 1970-01-01
_INT32_MAX, _INT32_MIN = 2**31 - 1, -(2**31)
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_MAX_ISO_TEXT = 36  # the longest text a value becomes: a uuid (ISO timestamps: 32)
_MAX_ENTRY_FRAMING = 4 * 11  # four tags and their varints around one bytes value


@dataclasses.dataclass(frozen=True)
class Column:
  """How one result column's fields become map entries.

  Attributes:
    name: For messages.
    format: One of `INT2` ... `TIMESTAMPTZ`.
    store: One of `STORE_*`.
    heads: For `STORE_INT64` the entry up to the varint, by varint length (index
      1 to 10, `serialization.int64_scalar_prefixes`); for `STORE_FLOAT*` the
      entry up to the value (index 0); for `STORE_BYTES` the map key field
      (index 0).
    null_action: `NULL_ERROR`, `NULL_CONSTANT` (`null_entries`) or `NULL_SKIP_ROW`.
    null_entries: The entries a NULL becomes under `NULL_CONSTANT`.
    suffix: Entries after every non-NULL value (a `mask` column's `_is_null` false).
    epoch: For date and time formats: stored as int64 (`STORE_INT64`) rather than ISO text.
  """

  name: str
  format: int
  store: int
  heads: Sequence[bytes]
  null_action: int
  null_entries: bytes = b""
  suffix: bytes = b""


@dataclasses.dataclass(frozen=True)
class Block:
  """What one kernel run produced and where it stopped.

  Attributes:
    records: The framed Examples (possibly none).
    rows: Per record, its row number (0-based, as read, skipped rows counted, from `first_row`).
    key_data: The key columns' raw field bytes of each record, end to end.
    key_bounds: Per record and key column, (start in `key_data`, length; -1: NULL).
    status: `MORE`, `FULL`, `DONE`, `ROW_PROBLEM`, `DUPLICATE_KEY` or a problem (< 0).
    row: The row the kernel stopped at (its number).
    detail: The column (ROW_PROBLEM, BAD_LENGTH, BAD_WIDTH, BAD_JSONB) or field count.
    found: The offending number of a problem.
  """

  records: tfrecord_io.FramedRecords
  rows: np.ndarray
  key_data: np.ndarray
  key_bounds: np.ndarray
  status: int
  row: int
  detail: int
  found: int


class Decoder:
  """Decodes one binary COPY stream, fed in chunks; keeps the tail of a straddling row.

  The caller names rows and columns in its errors: a block with a status
  below zero, `ROW_PROBLEM` or `DUPLICATE_KEY` ends the stream, and
  `problem_row()` gives that row's fields for the caller to re-encode.
  """

  def __init__(self, columns: Sequence[Column], key_columns: Sequence[int], block_bytes: int = 4 << 20,
               first_row: int = 0):
    self.columns = list(columns)
    self._formats = np.array([c.format for c in columns], np.int64)
    self._stores = np.array([c.store for c in columns], np.int64)
    self._nulls = np.array([c.null_action for c in columns], np.int64)
    self._heads = record_blocks.ByteColumn.from_items([
        head for c in columns for head in (list(c.heads) + [b""] * 11)[:11]])
    self._null_entries = record_blocks.ByteColumn.from_items([c.null_entries for c in columns])
    self._suffixes = record_blocks.ByteColumn.from_items([c.suffix for c in columns])
    # An upper bound of the bytes a row adds beyond its fields' own bytes.
    self._overheads = np.array([
        max(len(c.null_entries), max(map(len, c.heads or [b""])) + _MAX_ISO_TEXT + _MAX_ENTRY_FRAMING)
        + len(c.suffix) for c in columns], np.int64)
    self._keys = np.array(key_columns, np.int64)
    self._block_bytes = block_bytes
    self._storage = np.zeros(0, np.uint8)
    self._buffer = self._storage
    self._pos = 0  # the next row (or the header) in `_buffer`
    self._previous = -1  # the previous row's start in `_buffer`, for the key check; -1: none
    self._row = first_row
    self._started = False
    self._done = False
    self._problem_at = -1

  @property
  def done(self) -> bool:
    return self._done

  @property
  def row(self) -> int:
    """The number of the next row (0-based, as read)."""
    return self._row

  def feed(self, chunk: bytes | bytearray | memoryview | None) -> list[Block]:
    """Blocks of the rows that `chunk` completes; None: the stream ended (then `done` is False if it was truncated)."""
    if self._done:
      trailing = chunk is not None and len(chunk) > 0
      return [_empty_block(TRAILING, self._row, len(self._keys))] if trailing else []
    if chunk is not None:
      keep = self._previous if self._previous >= 0 else self._pos
      incoming = np.frombuffer(chunk, np.uint8)
      tail = len(self._buffer) - keep
      size = tail + len(incoming)
      # One writable buffer, reused: the kernels see one array type, and no chunk pays fresh pages.
      if len(self._storage) < size:
        storage = np.empty(max(size, 2 * len(self._storage)), np.uint8)
        storage[:tail] = self._buffer[keep:]
        self._storage = storage
      else:
        self._storage[:tail] = self._buffer[keep:]  # NumPy copies overlapping ranges correctly
      self._storage[tail:size] = incoming
      self._buffer = self._storage[:size]
      self._pos -= keep
      if self._previous >= 0:
        self._previous -= keep
    blocks = []
    capacity = self._block_bytes
    while True:
      block, consumed = self._run(capacity)
      if block.status == FULL and not len(block.records):
        capacity = max(capacity * 2, consumed)  # one row larger than a block: `consumed` is its bound
        continue
      capacity = self._block_bytes
      if len(block.records) or block.status not in (MORE, FULL):
        blocks.append(block)
      if block.status != FULL:
        return blocks

  def _run(self, capacity: int) -> tuple[Block, int]:
    buffer = self._buffer
    if not self._started:
      status, position = _header(buffer, self._pos)
      if status != DONE:
        return _empty_block(status, self._row, len(self._keys)), 0
      self._started, self._pos = True, position
    max_rows = capacity // wire.FRAME_BYTES + 1  # a record takes at least its frame
    out = np.empty(capacity, np.uint8)
    ends = np.empty(max_rows, np.int64)
    rows = np.empty(max_rows, np.int64)
    key_bounds = np.empty((max_rows, len(self._keys), 2), np.int64)
    key_data = np.empty(len(buffer) - self._pos if len(self._keys) else 0, np.uint8)
    (status, position, previous, row, count, detail, found) = _decode(
        buffer, self._pos, self._previous, self._row, self._formats, self._stores, self._nulls,
        self._heads.data, self._heads.offsets, self._null_entries.data, self._null_entries.offsets,
        self._suffixes.data, self._suffixes.offsets, self._overheads, _WIDTHS, self._keys,
        out, ends, rows, key_data, key_bounds)
    if status == ROW_PROBLEM or status == DUPLICATE_KEY:
      self._problem_at = position
    self._pos, self._previous, self._row = position, previous, row
    if status == DONE:
      self._done = True
      if position != len(buffer):
        status = TRAILING
    used = int(ends[count - 1]) if count else 0
    block = Block(tfrecord_io.FramedRecords(out[:used], ends[:count]), rows[:count], key_data,
                  key_bounds[:count], status, row, detail, found)
    return block, found if status == FULL else 0

  def problem_row(self) -> list[bytes | None]:
    """The fields of the row a `ROW_PROBLEM` or `DUPLICATE_KEY` stopped at (None: NULL)."""
    return self.row_fields(self._problem_at)

  def previous_row(self) -> list[bytes | None]:
    """The fields of the row before the one the kernel stopped at."""
    return self.row_fields(self._previous)

  def row_fields(self, start: int) -> list[bytes | None]:
    data = self._buffer.tobytes()
    position, fields = start + 2, []
    for _ in self.columns:
      length = int.from_bytes(data[position:position + 4], "big", signed=True)
      position += 4
      fields.append(None if length < 0 else data[position:position + length])
      position += max(length, 0)
    return fields


def fixed_width(format_name: str) -> int | None:
  """The bytes of every value of a format (`FORMAT_NAMES`); None for variable-length formats."""
  return _FIXED_WIDTHS.get(FORMAT_NAMES.index(format_name))


def _empty_block(status: int, row: int, key_count: int) -> Block:
  return Block(tfrecord_io.FramedRecords(np.zeros(0, np.uint8), np.zeros(0, np.int64)), np.zeros(0, np.int64),
               np.zeros(0, np.uint8), np.zeros((0, key_count, 2), np.int64), status, row, -1, 0)


def _header(buffer: np.ndarray, position: int) -> tuple[int, int]:
  """(DONE, where rows start), (MORE, position) while incomplete, or (a problem, position)."""
  fixed = len(SIGNATURE) + 8
  have = buffer[position:position + fixed].tobytes()
  if not SIGNATURE.startswith(have[:len(SIGNATURE)]):
    return BAD_SIGNATURE, position
  if len(have) < fixed:
    return MORE, position
  flags = int.from_bytes(have[len(SIGNATURE):len(SIGNATURE) + 4], "big")
  extension = int.from_bytes(have[len(SIGNATURE) + 4:], "big", signed=True)
  if flags & 0xFFFF0000:  # bit 16: OIDs included; the other high bits: a format this reader does not know
    return BAD_FLAGS, position
  if extension < 0:
    return BAD_EXTENSION, position
  if extension > len(buffer) - position - fixed:
    return MORE, position
  return DONE, position + fixed + extension


# ---------------------------------------------------------------- kernels --


@numba.njit(cache=True, nogil=True, inline="always")
def _int_be(buf, pos, width):
  value = np.int64(0)
  for i in range(width):
    value = (value << 8) | np.int64(buf[pos + i])
  if width < 8 and value >= (np.int64(1) << (8 * width - 1)):
    value -= np.int64(1) << (8 * width)
  return value


@numba.njit(cache=True, nogil=True, inline="always")
def _put_digits(out, pos, value, width):
  for i in range(width - 1, -1, -1):
    out[pos + i] = 48 + value % 10
    value //= 10
  return pos + width


@numba.njit(cache=True, nogil=True, inline="always")
def _put_date(out, pos, days):
  """ISO `YYYY-MM-DD` of days since 1970-01-01 (proleptic Gregorian; Hinnant's civil_from_days)."""
  z = days + 719468
  era = z // 146097
  doe = z - era * 146097
  yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  mp = (5 * doy + 2) // 153
  day = doy - (153 * mp + 2) // 5 + 1
  month = mp + 3 if mp < 10 else mp - 9
  year = yoe + era * 400 + (1 if month <= 2 else 0)
  pos = _put_digits(out, pos, year, 4)
  out[pos] = 45  # -
  pos = _put_digits(out, pos + 1, month, 2)
  out[pos] = 45
  return _put_digits(out, pos + 1, day, 2)


@numba.njit(cache=True, nogil=True, inline="always")
def _put_time(out, pos, micros):
  """ISO `HH:MM:SS`, then `.ffffff` when the microseconds are not zero (Python's isoformat)."""
  seconds = micros // 1_000_000
  pos = _put_digits(out, pos, seconds // 3600, 2)
  out[pos] = 58  # :
  pos = _put_digits(out, pos + 1, seconds // 60 % 60, 2)
  out[pos] = 58
  pos = _put_digits(out, pos + 1, seconds % 60, 2)
  if micros % 1_000_000:
    out[pos] = 46  # .
    pos = _put_digits(out, pos + 1, micros % 1_000_000, 6)
  return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _put_infinity(out, pos, negative):
  if negative:
    out[pos] = 45
    pos += 1
  for char in (105, 110, 102, 105, 110, 105, 116, 121):  # infinity
    out[pos] = char
    pos += 1
  return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _put_text_value(out, pos, buf, start, length, fmt):
  """The text a field becomes (ISO dates and times, uuid text, raw text); returns its end or -1 (no stored value)."""
  if fmt == TEXT:
    return _copy(out, pos, buf, start, length)
  if fmt == JSONB:
    return _copy(out, pos, buf, start + 1, length - 1)
  if fmt == UUID:
    for i in range(16):
      if i == 4 or i == 6 or i == 8 or i == 10:
        out[pos] = 45
        pos += 1
      byte = np.int64(buf[start + i])
      for nibble in (byte >> 4, byte & 15):
        out[pos] = 48 + nibble if nibble < 10 else 87 + nibble  # lowercase hex, as uuid text is
        pos += 1
    return pos
  if fmt == DATE:
    days = _int_be(buf, start, 4)
    if days == _INT32_MAX or days == _INT32_MIN:
      return _put_infinity(out, pos, days == _INT32_MIN)
    days += _EPOCH_2000_DAYS
    if days < _MIN_DAYS or days > _MAX_DAYS:
      return -1
    return _put_date(out, pos, days)
  if fmt == TIME:
    micros = _int_be(buf, start, 8)
    if micros < 0 or micros > _US_PER_DAY:
      return -1
    return _put_time(out, pos, micros % _US_PER_DAY)  # 24:00:00 is read as 00:00:00
  stamp = _int_be(buf, start, 8)  # TIMESTAMP, TIMESTAMPTZ
  if stamp == _INT64_MAX or stamp == _INT64_MIN:
    return _put_infinity(out, pos, stamp == _INT64_MIN)
  days = stamp // _US_PER_DAY + _EPOCH_2000_DAYS
  if days < _MIN_DAYS or days > _MAX_DAYS:
    return -1
  pos = _put_date(out, pos, days)
  out[pos] = 84  # T
  pos = _put_time(out, pos + 1, stamp % _US_PER_DAY)
  if fmt == TIMESTAMPTZ:
    for char in (43, 48, 48, 58, 48, 48):  # +00:00
      out[pos] = char
      pos += 1
  return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _epoch_value(buf, start, fmt):
  """(ok, int64) of a date (days), time (microseconds since midnight) or timestamp (microseconds), from 1970."""
  if fmt == DATE:
    days = _int_be(buf, start, 4)
    if days == _INT32_MAX or days == _INT32_MIN:
      return False, np.int64(0)
    days += _EPOCH_2000_DAYS
    return _MIN_DAYS <= days <= _MAX_DAYS, days
  value = _int_be(buf, start, 8)
  if fmt == TIME:
    return 0 <= value <= _US_PER_DAY, value % _US_PER_DAY
  if value == _INT64_MAX or value == _INT64_MIN:
    return False, np.int64(0)
  days = value // _US_PER_DAY + _EPOCH_2000_DAYS
  return _MIN_DAYS <= days <= _MAX_DAYS, value + _EPOCH_2000_US


@numba.njit(cache=True, nogil=True, inline="always")
def _fields(buf, pos, end, count, starts, lengths):
  """Reads a row's field lengths: (status, end of row).

  The status is _ROW, MORE, DONE (the trailer), BAD_FIELD_COUNT or BAD_LENGTH.
  """
  if end - pos < 2:
    return MORE, pos
  fields = _int_be(buf, pos, 2)
  if fields == -1:
    return DONE, pos + 2
  if fields != count:
    return BAD_FIELD_COUNT, fields
  cursor = pos + 2
  for column in range(count):
    if end - cursor < 4:
      return MORE, pos
    length = _int_be(buf, cursor, 4)
    cursor += 4
    if length < -1:
      starts[column] = length
      return BAD_LENGTH, column
    if length > end - cursor:  # compared without adding: no overflow
      return MORE, pos
    starts[column] = cursor
    lengths[column] = length
    if length > 0:
      cursor += length
  return _ROW, cursor


@numba.njit(cache=True, nogil=True, inline="always")
def _same_keys(buf, keys, starts, lengths, previous_starts, previous_lengths):
  for column in keys:
    if lengths[column] != previous_lengths[column]:
      return False
    for i in range(max(lengths[column], 0)):
      if buf[starts[column] + i] != buf[previous_starts[column] + i]:
        return False
  return True


@numba.njit(cache=True, nogil=True, inline="always")
def _copy(out, pos, data, start, size):
  # A plain loop: Numba's slice assignment costs more than the few bytes a map entry's head has.
  for i in range(size):
    out[pos + i] = data[start + i]
  return pos + size


@numba.njit(cache=True, nogil=True, inline="always")
def _put_constant(out, pos, data, offsets, index):
  return _copy(out, pos, data, offsets[index], offsets[index + 1] - offsets[index])


@numba.njit(cache=True, nogil=True, inline="always")
def _put_entry(out, pos, buf, start, length, fmt, store, column, heads_data, heads_offsets):
  """The map entry of one non-NULL field; returns its end, or -1 when the value has no stored form."""
  if store == STORE_INT64:
    if fmt == BOOL:
      value = np.int64(buf[start] != 0)
    elif fmt == OID:
      value = _int_be(buf, start, 4) & 0xFFFFFFFF
    elif fmt == INT2 or fmt == INT4 or fmt == INT8:
      value = _int_be(buf, start, length)
    else:
      ok, value = _epoch_value(buf, start, fmt)
      if not ok:
        return -1
    size = record_blocks._varint_size(value)  # pylint: disable=protected-access
    pos = _put_constant(out, pos, heads_data, heads_offsets, column * 11 + size)
    return record_blocks._put_varint(out, pos, value)  # pylint: disable=protected-access
  if store == STORE_FLOAT32 or store == STORE_FLOAT64:
    pos = _put_constant(out, pos, heads_data, heads_offsets, column * 11)
    bits = _int_be(buf, start, length)
    if length == 8:
      nan = (bits >> 52) & 0x7FF == 0x7FF and bits & 0xFFFFFFFFFFFFF != 0
    else:
      nan = bits & 0x7F800000 == 0x7F800000 and bits & 0x7FFFFF != 0
    # Any NaN is stored as the one NaN a Python float packs to (the cursor reads NaN as text).
    if nan:
      for i in range(length):
        out[pos + i] = 0
      out[pos + length - 1] = 0x7F
      out[pos + length - 2] = 0xF8 if length == 8 else 0xC0
    else:
      for i in range(length):
        out[pos + i] = buf[start + length - 1 - i]
    return pos + length
  # STORE_BYTES: the value's text is written after the longest framing it can take, then the framing before it.
  key_size = heads_offsets[column * 11 + 1] - heads_offsets[column * 11]
  text = pos + 1 + 10 + key_size + 1 + 10 + 1 + 10 + 1 + 10
  text_end = _put_text_value(out, text, buf, start, length, fmt)
  if text_end < 0:
    return -1
  size = text_end - text
  list_size, feature_size, entry_size = record_blocks._bytes_entry_sizes(key_size, size)  # pylint: disable=protected-access
  out[pos] = wire.FEATURES_ENTRY
  pos = record_blocks._put_varint(out, pos + 1, entry_size)  # pylint: disable=protected-access
  pos = _put_constant(out, pos, heads_data, heads_offsets, column * 11)
  out[pos] = wire.MAP_VALUE
  pos = record_blocks._put_varint(out, pos + 1, feature_size)  # pylint: disable=protected-access
  out[pos] = wire.FEATURE_BYTES_LIST
  pos = record_blocks._put_varint(out, pos + 1, list_size)  # pylint: disable=protected-access
  out[pos] = wire.LIST_VALUE
  pos = record_blocks._put_varint(out, pos + 1, size)  # pylint: disable=protected-access
  for i in range(size):  # forward: the text lies at or after `pos`
    out[pos + i] = out[text + i]
  return pos + size


@numba.njit(cache=True, nogil=True)
def _put_crcs(out, ends, count):
  """Writes the CRCs of `count` frames whose lengths and records are written.

  A pass of its own, after the records: a CRC read right after the bytes
  were stored one by one waits for those stores (several times its own cost).
  """
  start = 0
  for i in range(count):
    length = ends[i] - start - wire.FRAME_BYTES
    record_blocks._put_little_endian(  # pylint: disable=protected-access
        out, start + wire.FRAME_LENGTH_BYTES, crc32c.masked_crc32c(out, start, wire.FRAME_LENGTH_BYTES),
        wire.FRAME_CRC_BYTES)
    record = start + wire.FRAME_HEADER_BYTES
    record_blocks._put_little_endian(  # pylint: disable=protected-access
        out, record + length, crc32c.masked_crc32c(out, record, length), wire.FRAME_CRC_BYTES)
    start = ends[i]


@numba.njit(cache=True, nogil=True)
def _decode(buf, pos, previous, row, formats, stores, nulls, heads_data, heads_offsets, null_data, null_offsets,
            suffix_data, suffix_offsets, overheads, widths, keys, out, ends, rows, key_data, key_bounds):
  """Frames the complete rows of buf[pos:]; returns (status, pos, previous, row, records, detail, found)."""
  result = _decode_rows(buf, pos, previous, row, formats, stores, nulls, heads_data, heads_offsets, null_data,
                        null_offsets, suffix_data, suffix_offsets, overheads, widths, keys, out, ends, rows, key_data,
                        key_bounds)
  _put_crcs(out, ends, result[4])  # in the same call: one release of the GIL per block
  return result


@numba.njit(cache=True, nogil=True)
def _decode_rows(buf, pos, previous, row, formats, stores, nulls, heads_data, heads_offsets, null_data, null_offsets,
                 suffix_data, suffix_offsets, overheads, widths, keys, out, ends, rows, key_data, key_bounds):
  """The rows of `_decode`, framed without their CRCs."""
  count = formats.shape[0]
  end = buf.shape[0]
  starts = np.zeros(count, np.int64)
  lengths = np.zeros(count, np.int64)
  previous_starts = np.zeros(count, np.int64)
  previous_lengths = np.zeros(count, np.int64)
  if previous >= 0 and keys.shape[0]:
    _fields(buf, previous, end, count, previous_starts, previous_lengths)
  records = 0
  out_pos = 0
  key_pos = 0
  head_guess = 1
  while True:
    status, row_end = _fields(buf, pos, end, count, starts, lengths)
    if status == MORE:
      return MORE, pos, previous, row, records, -1, 0
    if status == DONE:
      return DONE, row_end, previous, row, records, -1, 0
    if status == BAD_FIELD_COUNT:
      return BAD_FIELD_COUNT, pos, previous, row, records, count, row_end
    if status == BAD_LENGTH:
      return BAD_LENGTH, pos, previous, row, records, row_end, starts[row_end]
    # Checked before anything is written: every fixed-width field has its width.
    bound = wire.FRAME_BYTES + 11
    skip = False
    for column in range(count):
      length = lengths[column]
      if length < 0:
        if nulls[column] == NULL_SKIP_ROW:
          skip = True
        bound += overheads[column]
        continue
      fmt = formats[column]
      if widths[fmt] >= 0 and length != widths[fmt]:
        return BAD_WIDTH, pos, previous, row, records, column, length
      if fmt == JSONB and (length < 1 or buf[starts[column]] != 1):
        return BAD_JSONB, pos, previous, row, records, column, buf[starts[column]] if length else -1
      bound += length + overheads[column]
    if records == rows.shape[0] or bound > out.shape[0] - out_pos:
      return FULL, pos, previous, row, records, -1, bound
    if keys.shape[0] and previous >= 0 and _same_keys(buf, keys, starts, lengths, previous_starts, previous_lengths):
      return DUPLICATE_KEY, pos, previous, row, records, -1, 0
    if not skip:
      record = out_pos + wire.FRAME_HEADER_BYTES
      body = record + 1 + head_guess  # entries after the size's varint, guessed as long as the last one
      cursor = body
      for column in range(count):
        if lengths[column] < 0:
          if nulls[column] == NULL_ERROR:
            return ROW_PROBLEM, pos, previous, row, records, column, 0
          cursor = _put_constant(out, cursor, null_data, null_offsets, column)
          continue
        cursor = _put_entry(out, cursor, buf, starts[column], lengths[column], formats[column], stores[column],
                            column, heads_data, heads_offsets)
        if cursor < 0:
          return ROW_PROBLEM, pos, previous, row, records, column, 0
        cursor = _put_constant(out, cursor, suffix_data, suffix_offsets, column)
      size = cursor - body
      length = 1 + record_blocks._varint_size(size) + size  # pylint: disable=protected-access
      record_blocks._put_little_endian(out, out_pos, length, wire.FRAME_LENGTH_BYTES)  # pylint: disable=protected-access
      shift = record_blocks._varint_size(size) - head_guess  # pylint: disable=protected-access
      if shift > 0:
        for i in range(size - 1, -1, -1):  # backward: the entries move on
          out[body + shift + i] = out[body + i]
      elif shift < 0:
        for i in range(size):  # forward: the entries move back
          out[body + shift + i] = out[body + i]
      head_guess += shift
      out[record] = wire.EXAMPLE_FEATURES
      head_end = record_blocks._put_varint(out, record + 1, size)  # pylint: disable=protected-access
      out_pos = head_end + size + wire.FRAME_CRC_BYTES  # the CRCs come in `_put_crcs`
      ends[records] = out_pos
      rows[records] = row
      for k in range(keys.shape[0]):
        column = keys[k]
        key_bounds[records, k, 0] = key_pos
        key_bounds[records, k, 1] = lengths[column]
        if lengths[column] > 0:
          key_pos = _copy(key_data, key_pos, buf, starts[column], lengths[column])
      records += 1
    for column in range(count):
      previous_starts[column] = starts[column]
      previous_lengths[column] = lengths[column]
    previous = pos
    pos = row_end
    row += 1
