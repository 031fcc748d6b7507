"""Which (i, j) pairs a build holds, and the pairs of a range of left rows, streamed.

A pair is the byte concatenation of two spilled records: the left record
(features renamed once, plus its `left_index`) and the right one (plus its
`right_index`). Concatenated serialized Examples parse as one Example with the
union of their features, so a pair needs no parsing: whole blocks of pairs
are copied and framed in compiled code (`core.fast.pair_blocks`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.cross_product import spill

if TYPE_CHECKING:  # the writer imports TensorFlow; pairs are made without it
  from tfds_builders.core import shard_writer

MODES = ("product", "combinations")
# Up to this many rows, `pairs_of` computes combinations in int64 (m(m+1) < 2**63).
_VECTOR_ROWS = 3_000_000_000


@dataclasses.dataclass(frozen=True)
class PairSpace:
  """The candidate pairs of a build and the sample kept of them.

  The candidates are numbered in (i, j) order: p = i*M + j under `product`,
  and the position of (i, j), i < j, among them under `combinations`. The
  sample is exact-size: K = round(sample_rate × size) candidates, those p
  with perm^-1(p) < K for a seeded bijection perm of [0, size)
  (`core.fast.permutation`); the t-th sampled pair is perm(t).

  Attributes:
    mode: `product` (every i, j) or `combinations` (i < j of one input).
    num_left: N, the left records.
    num_right: M, the right records (N again under `combinations`).
    sample_rate: Fraction of pairs kept, in (0, 1]; 1 keeps all.
    sample_seed: Seed of the sample; the kept pairs depend only on it, N and M.
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

  @property
  def sampled(self) -> bool:
    return self.sample_rate < 1.0

  @property
  def sample_count(self) -> int:
    """K, the pairs kept: every pair unsampled, else sample_rate × size rounded half up."""
    if not self.sampled:
      return self.size
    return min(self.size, math.floor(self.sample_rate * self.size + 0.5))

  @functools.cached_property
  def permutation(self) -> fast.permutation.Permutation:
    """The sample's bijection of [0, size)."""
    return fast.permutation.Permutation(max(self.size, 1), self.sample_seed)

  def first_right(self, i: int) -> int:
    """The first right row paired with left row i."""
    return i + 1 if self.mode == "combinations" else 0

  def pairs_of_row(self, i: int) -> int:
    return self.num_right - self.first_right(i)

  def key(self, i: int, j: int) -> int:
    """The example key of pair (i, j): unique, and ordered like (i, j)."""
    return i * self.num_right + j

  def row_base(self, i: int) -> int:
    """The candidate number of pair (i, 0): pair (i, j) is `row_base(i) + j` (-1 for i = 0 under combinations)."""
    if self.mode == "combinations":
      return i * (2 * self.num_left - i - 1) // 2 - i - 1
    return i * self.num_right

  def index(self, i: int, j: int) -> int:
    """The candidate number p of pair (i, j), in (i, j) order."""
    return self.row_base(i) + j

  def pair(self, p: int) -> tuple[int, int]:
    """The pair (i, j) of candidate number p, in O(1) (an integer square root under combinations)."""
    if self.mode != "combinations":
      return divmod(p, self.num_right)
    # Counted from the last pair, the rows from i on hold m(m+1)/2 pairs for m = N-1-i.
    back = self.size - 1 - p
    m = (math.isqrt(8 * back + 1) + 1) // 2
    i = self.num_left - 1 - m
    return i, self.num_left - 1 - (back - m * (m - 1) // 2)

  def pairs_of(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pair` of every candidate number (int64 arrays i and j), vectorized."""
    numbers = np.asarray(numbers, np.int64)
    if self.mode != "combinations":
      return np.divmod(numbers, self.num_right)
    if self.num_left > _VECTOR_ROWS:  # m(m+1) below would overflow int64: exact integers, one at a time
      found = [self.pair(int(number)) for number in numbers.reshape(-1)]
      rows = np.array([pair[0] for pair in found], np.int64).reshape(numbers.shape)
      return rows, np.array([pair[1] for pair in found], np.int64).reshape(numbers.shape)
    back = self.size - 1 - numbers
    # m = floor(sqrt(2 back + 1/4) + 1/2) in floats, then corrected to the exact m(m-1)/2 <= back < m(m+1)/2.
    m = np.floor(np.sqrt(2.0 * back + 0.25) + 0.5).astype(np.int64)
    m -= m * (m - 1) // 2 > back
    m += (m + 1) * m // 2 <= back
    i = self.num_left - 1 - m
    return i, self.num_left - 1 - (back - m * (m - 1) // 2)

  def sample_arguments(self) -> tuple[int, int, int, int, np.ndarray] | None:
    """`(K, size, A, B, keys)` of the sample for the compiled kernels; None when every pair is kept."""
    if not self.sampled or self.sample_count == self.size:
      return None
    perm = self.permutation
    return (self.sample_count, perm.size, *perm.radices, perm.keys)

  def row_bases(self, start: int, count: int) -> np.ndarray | None:
    """`row_base` of left rows `start` to `start + count - 1` (int64); None when every pair is kept."""
    if self.sample_arguments() is None:
      return None
    rows = np.arange(start, start + count, dtype=np.int64)
    if self.mode == "combinations":
      return rows * (2 * self.num_left - rows - 1) // 2 - rows - 1
    return rows * self.num_right

  def kept(self, i: int, start: int, stop: int) -> np.ndarray:
    """The right rows in [start, stop) whose pair with left row i is sampled."""
    rights = np.arange(max(start, self.first_right(i)), stop, dtype=np.int64)
    if self.sample_arguments() is None:
      return rights
    return rights[self.permutation.inverse(self.row_base(i) + rights) < self.sample_count]


def pair_is_sampled(space: PairSpace, i: int, j: int) -> bool:
  """Whether pair (i, j) is in the sample; the same answer on every build."""
  if not (0 <= i < space.num_left and space.first_right(i) <= j < space.num_right):
    raise errors.ConfigError(
        f"pair_is_sampled: ({i}, {j}) is no pair of {space.mode} over {space.num_left} x {space.num_right} "
        "records; "
        f"use 0 <= i < {space.num_left} and {'i < j' if space.mode == 'combinations' else '0 <= j'} < {space.num_right}."
    )
  return bool(space.kept(i, j, j + 1).size)


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
      num_right=space.num_right, diagonal=space.mode == "combinations", sample=space.sample_arguments()
  )
  with left.open() as left_reader, right.open() as right_reader:
    for chunk_start, chunk in left_reader.columns(left_start, left_stop):
      for base, rows, row_bases in _left_runs(space, chunk_start, chunk, blocked):
        first = space.first_right(base)
        for block_index, (start, stop) in enumerate(right.blocks):
          if stop <= first:
            continue
          if block_index != loaded_index:
            loaded = None  # drop the old block before reading the next
            loaded, loaded_index = right_reader.load_column(start, stop), block_index
          yield from blocks.add(rows, (0, len(rows)), loaded, left_base=base, right_base=start, row_bases=row_bases)
  yield from blocks.flush()


def _left_runs(
    space: PairSpace, chunk_start: int, chunk: fast.record_blocks.ByteColumn, blocked: bool
) -> Iterator[tuple[int, fast.record_blocks.ByteColumn, np.ndarray | None]]:
  """The left rows paired with the right side in one walk over its blocks: `(first row, rows, their row bases)`.

  The whole chunk when the right side is one block; else each row alone (as
  a one-item view, so that no call re-checks the whole chunk).
  """
  row_bases = space.row_bases(chunk_start, len(chunk))
  if not blocked:
    yield chunk_start, chunk, row_bases
    return
  for row in range(len(chunk)):
    one_row = fast.record_blocks.ByteColumn(chunk.data, chunk.offsets[row:row + 2])
    yield chunk_start + row, one_row, None if row_bases is None else row_bases[row:row + 1]
