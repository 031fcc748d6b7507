"""Renamed records of one side on disk, written once and read back in bounded blocks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from etils import epath
import numpy as np

from tfds_builders.core import errors
from tfds_builders.core import fast

# What one record held in a Python list costs beyond its bytes: the bytes
# object header (33) and the list's pointer (8). Counted in memory budgets.
RECORD_OVERHEAD_BYTES = 41
# Records are read back in chunks of at most this many payload bytes, so
# streaming a side never holds more than one chunk of it.
READ_CHUNK_BYTES = 8 * 1024 * 1024
_OFFSETS_PER_READ = 65536
_OFFSET_DTYPE = np.dtype("<i8")


@dataclasses.dataclass(frozen=True)
class SpillFile:
  """Records stored back to back, with their end offsets in a second file.

  Attributes:
    path: Prefix of the two files (`.records` and `.offsets`).
    num_records: How many records it holds.
    num_bytes: Their total size.
    blocks: `(start, stop)` record ranges, in order, each holding at most the
      memory budget it was written with (one record at least).
  """

  path: str
  num_records: int
  num_bytes: int
  blocks: tuple[tuple[int, int], ...]

  def open(self) -> SpillReader:
    return SpillReader(self)


def write(path: epath.Path, records: Iterable[bytes], block_budget_bytes: int) -> SpillFile:
  """Writes records in order and cuts them into blocks of a bounded memory size.

  Args:
    path: Prefix of the files to write; its directory must exist.
    records: The records, streamed.
    block_budget_bytes: Memory one block may take once loaded, counting
      `RECORD_OVERHEAD_BYTES` per record.
  """
  ends: list[int] = []
  blocks: list[tuple[int, int]] = []
  block_start, block_bytes, position, count = 0, 0, 0, 0
  with epath.Path(f"{path}.records").open("wb") as payload_file, epath.Path(
      f"{path}.offsets"
  ).open("wb") as offsets_file:
    offsets_file.write(np.zeros(1, _OFFSET_DTYPE).tobytes())
    for record in records:
      cost = len(record) + RECORD_OVERHEAD_BYTES
      if block_bytes and block_bytes + cost > block_budget_bytes:
        blocks.append((block_start, count))
        block_start, block_bytes = count, 0
      block_bytes += cost
      payload_file.write(record)
      position += len(record)
      count += 1
      ends.append(position)
      if len(ends) == _OFFSETS_PER_READ:
        offsets_file.write(np.asarray(ends, _OFFSET_DTYPE).tobytes())
        ends.clear()
    offsets_file.write(np.asarray(ends, _OFFSET_DTYPE).tobytes())
  if count:
    blocks.append((block_start, count))
  return SpillFile(str(path), count, position, tuple(blocks))


class SpillReader:
  """Reads ranges of a SpillFile; keep one open for many reads."""

  def __init__(self, spill: SpillFile):
    self._path = spill.path
    self._payload = epath.Path(f"{spill.path}.records").open("rb")
    self._offsets = epath.Path(f"{spill.path}.offsets").open("rb")

  def __enter__(self) -> SpillReader:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self._payload.close()
    self._offsets.close()

  def chunks(self, start: int, stop: int) -> Iterator[list[bytes]]:
    """Records `start` to `stop - 1` as consecutive lists of at most `READ_CHUNK_BYTES`."""
    for _, column in self.columns(start, stop):
      yield column.items()

  def columns(self, start: int, stop: int) -> Iterator[tuple[int, fast.record_blocks.ByteColumn]]:
    """Records `start` to `stop - 1` as consecutive columns of at most `READ_CHUNK_BYTES`, each with its first row."""
    row = start
    while row < stop:
      ends = self._ends(row, min(stop, row + _OFFSETS_PER_READ))
      # Records of this offsets window fitting in one chunk (one at least).
      count = max(1, int(np.searchsorted(ends, ends[0] + READ_CHUNK_BYTES, side="right")) - 1)
      yield row, self._column(ends[: count + 1])
      row += count

  def load(self, start: int, stop: int) -> list[bytes]:
    """Records `start` to `stop - 1` as one list (a block, sized by its budget)."""
    return self.load_column(start, stop).items()

  def load_column(self, start: int, stop: int) -> fast.record_blocks.ByteColumn:
    """Records `start` to `stop - 1` as one column (a block, sized by its budget), read with one call."""
    return self._column(self._ends(start, stop))

  def _column(self, ends: np.ndarray) -> fast.record_blocks.ByteColumn:
    """The records between consecutive `ends` (file offsets), read into one array."""
    offsets = ends - ends[0]
    self._payload.seek(int(ends[0]))
    data = self._payload.read(int(offsets[-1]))
    if len(data) != offsets[-1]:
      raise errors.SourceError(f"{self._path}.records: the spill file ended early; it was changed during the build.")
    return fast.record_blocks.ByteColumn(np.frombuffer(data, np.uint8), offsets)

  def _ends(self, start: int, stop: int) -> np.ndarray:
    """Offsets of the start of record `start` through the end of `stop - 1`."""
    self._offsets.seek(start * _OFFSET_DTYPE.itemsize)
    raw = self._offsets.read((stop - start + 1) * _OFFSET_DTYPE.itemsize)
    return np.frombuffer(raw, _OFFSET_DTYPE)
