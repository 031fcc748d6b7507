"""Which (i, j) pairs a build holds, and the pairs of a range of left rows, streamed.

A pair is the byte concatenation of two spilled records: the left record
(features renamed once, plus its `left_index`) and the right one (plus its
`right_index`). Concatenated serialized Examples parse as one Example with the
union of their features, so a pair needs no parsing: whole blocks of pairs
are copied and framed in compiled code (`core.fast.pair_blocks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from tfds_builders.core import fast
from tfds_builders.cross_product import spill

if TYPE_CHECKING:  # the writer imports TensorFlow; pairs are made without it
  from tfds_builders.core import shard_writer

MODES = ("product", "combinations")

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX_1 = 0xBF58476D1CE4E5B9
_MIX_2 = 0x94D049BB133111EB


@dataclasses.dataclass(frozen=True)
class PairSpace:
  """The candidate pairs of a build and the sample kept of them.

  Attributes:
    mode: `product` (every i, j) or `combinations` (i < j of one input).
    num_left: N, the left records.
    num_right: M, the right records (N again under `combinations`).
    sample_rate: Fraction of pairs kept, in (0, 1]; 1 keeps all.
    sample_seed: Seed of the sample; the kept pairs depend only on it, i and j.
  """

  mode: str
  num_left: int
  num_right: int
  sample_rate: float = 1.0
  sample_seed: int = 0

  @property
  def size(self) -> int:
    """Candidate pairs before sampling: N×M, or N(N-1)/2 for combinations."""
    if self.mode == "combinations":
      return self.num_left * (self.num_left - 1) // 2
    return self.num_left * self.num_right

  def first_right(self, i: int) -> int:
    """The first right row paired with left row i."""
    return i + 1 if self.mode == "combinations" else 0

  def pairs_of_row(self, i: int) -> int:
    return self.num_right - self.first_right(i)

  def key(self, i: int, j: int) -> int:
    """The example key of pair (i, j): unique, and ordered like (i, j)."""
    return i * self.num_right + j

  @property
  def threshold(self) -> int:
    """A pair is kept when its hash is below this."""
    return int(_threshold(self.sample_rate))

  def row_keys(self, start: int, count: int) -> np.ndarray | None:
    """Per left row `start` to `start + count - 1`, the key its pairs' hashes start from; None without sampling."""
    if self.sample_rate >= 1.0:
      return None
    rows = np.arange(start, start + count, dtype=np.uint64)
    return fast.pair_blocks.splitmix64(rows + np.uint64(_mix_int(self.sample_seed & _MASK)))

  def kept(self, i: int, start: int, stop: int) -> np.ndarray:
    """The right rows in [start, stop) whose pair with left row i is sampled."""
    rights = np.arange(start, stop, dtype=np.uint64)
    if self.sample_rate >= 1.0:
      return rights.astype(np.int64)
    hashes = _pair_hashes(self.sample_seed, i, rights)
    return rights[hashes < _threshold(self.sample_rate)].astype(np.int64)


def pair_is_sampled(space: PairSpace, i: int, j: int) -> bool:
  """Whether pair (i, j) is in the sample; the same answer on every build."""
  return bool(space.kept(i, j, j + 1).size)


def _mix_int(value: int) -> int:
  """splitmix64 of a Python int (mod 2**64)."""
  value = (value + _GOLDEN) & _MASK
  value = ((value ^ (value >> 30)) * _MIX_1) & _MASK
  value = ((value ^ (value >> 27)) * _MIX_2) & _MASK
  return value ^ (value >> 31)


def _pair_hashes(seed: int, i: int, rights: np.ndarray) -> np.ndarray:
  """splitmix64(splitmix64(splitmix64(seed) + i) + j) for every j, vectorized."""
  row_key = np.uint64(_mix_int((_mix_int(seed & _MASK) + i) & _MASK))
  values = rights + row_key  # uint64 arrays wrap around silently
  values += np.uint64(_GOLDEN)
  values ^= values >> np.uint64(30)
  values *= np.uint64(_MIX_1)
  values ^= values >> np.uint64(27)
  values *= np.uint64(_MIX_2)
  values ^= values >> np.uint64(31)
  return values


def _threshold(rate: float) -> np.uint64:
  return np.uint64(min(int(rate * 2.0**64), _MASK))


def row_ranges(
    space: PairSpace, pair_bytes: float, target_bytes: int, rows: int | None
) -> list[tuple[int, int]]:
  """Left row ranges of about `target_bytes` of pairs each (or `rows` rows each).

  Rows without pairs (the last one under `combinations`) are left out.
  """
  last = space.num_left
  while last and not space.pairs_of_row(last - 1):
    last -= 1
  if rows is None and space.mode == "product":
    row_bytes = space.num_right * pair_bytes * space.sample_rate
    rows = max(1, int(target_bytes // max(row_bytes, 1.0)))
  if rows is not None:
    return [(start, min(start + rows, last)) for start in range(0, last, rows)]
  ranges, start, size = [], 0, 0.0
  for i in range(last):
    size += space.pairs_of_row(i) * pair_bytes * space.sample_rate
    if size >= target_bytes:
      ranges.append((start, i + 1))
      start, size = i + 1, 0.0
  if start < last:
    ranges.append((start, last))
  return ranges


def generate(
    space: PairSpace,
    left: spill.SpillFile,
    right: spill.SpillFile,
    left_start: int,
    left_stop: int,
) -> Iterator[shard_writer.FramedBlock]:
  """Yields blocks `(keys, framed pairs)` for left rows [left_start, left_stop), in (i, j) order.

  The left rows stream chunk by chunk; the right side is held one block at a
  time. When it is a single block it is loaded once and each kernel call
  frames pairs across many left rows; otherwise every left row walks the
  blocks in order, so the output order never depends on the budget. Python
  runs once per output block (and per left row and right block when blocked),
  never per pair; runs too short to fill a block are framed into the same one.
  """
  blocked = len(right.blocks) > 1
  loaded_index, loaded = -1, None
  blocks = fast.pair_blocks.PairBlocks(
      num_right=space.num_right, diagonal=space.mode == "combinations", threshold=space.threshold
  )
  with left.open() as left_reader, right.open() as right_reader:
    for chunk_start, chunk in left_reader.columns(left_start, left_stop):
      for base, rows, row_keys in _left_runs(space, chunk_start, chunk, blocked):
        first = space.first_right(base)
        for block_index, (start, stop) in enumerate(right.blocks):
          if stop <= first:
            continue
          if block_index != loaded_index:
            loaded = None  # drop the old block before reading the next
            loaded, loaded_index = right_reader.load_column(start, stop), block_index
          yield from blocks.add(rows, (0, len(rows)), loaded, left_base=base, right_base=start, row_keys=row_keys)
  yield from blocks.flush()


def _left_runs(
    space: PairSpace, chunk_start: int, chunk: fast.record_blocks.ByteColumn, blocked: bool
) -> Iterator[tuple[int, fast.record_blocks.ByteColumn, np.ndarray | None]]:
  """The left rows paired with the right side in one walk over its blocks: `(first row, rows, their row keys)`.

  The whole chunk when the right side is one block; else each row alone (as
  a one-item view, so that no call re-checks the whole chunk).
  """
  row_keys = space.row_keys(chunk_start, len(chunk))
  if not blocked:
    yield chunk_start, chunk, row_keys
    return
  for row in range(len(chunk)):
    one_row = fast.record_blocks.ByteColumn(chunk.data, chunk.offsets[row:row + 2])
    yield chunk_start + row, one_row, None if row_keys is None else row_keys[row:row + 1]
