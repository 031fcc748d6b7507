"""Streams of result rows -> `(key, serialized Example)`: the split's read, or one Beam partition."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from tfds_builders.core import shard_writer
from tfds_builders.core import streaming_builder
from tfds_builders.core.sql import sessions
from tfds_builders.database import codecs as codecs_lib
from tfds_builders.database import column_blocks
from tfds_builders.database import read_jobs
from tfds_builders.database import session as session_lib

if TYPE_CHECKING:  # the plan imports this module's neighbours, not this module
  from tfds_builders.database import plan as plan_lib


@dataclasses.dataclass(frozen=True)
class BuildReading:
  """A build's context: its read-only session, whether Beam workers read, what was prepared in it."""

  session: sessions.ReadSession
  on_beam: bool
  prepared: plan_lib.Prepared


def split_examples(jobs: Sequence[read_jobs.ReadJob], context: BuildReading):
  """A split's examples: read in the build's session, or one partition per Beam worker."""
  if context.on_beam:
    return streaming_builder.Partitions([functools.partial(read_partition, job) for job in jobs])
  (job,) = jobs
  return read_in_session(job, context.session)


def read_in_session(job: read_jobs.ReadJob, session: sessions.ReadSession) -> Iterator[shard_writer.StreamItem]:
  """The job's examples, read in an open session (the serial build's snapshot)."""
  if job.copy_formats is not None:
    from tfds_builders.database import copy_reading  # pylint: disable=g-import-not-at-top  # Numba only when used
    return copy_reading.examples(job, session)
  return examples(job, session.rows(job.statement, fetch_size=job.fetch_size, label=job.label))


def read_partition(job: read_jobs.ReadJob) -> Iterator[shard_writer.StreamItem]:
  """A Beam worker's partition: its own connection, in the coordinator's snapshot."""
  with session_lib.open_session(job.spec, snapshot=job.snapshot) as session:
    yield from read_in_session(job, session)


# Rows per block at least (whatever the fetch size); a shorter read, or its
# last few rows, is encoded row by row: a small read never loads the compiled
# kernels, whose start-up (~0.4 s) pays off from a few thousand rows.
MIN_BLOCK_ROWS = 1024


def examples(job: read_jobs.ReadJob, rows: Iterable[tuple]) -> Iterator[shard_writer.StreamItem]:
  """Encodes rows to `(keys, FramedRecords)` blocks and `(key, serialized Example)` pairs.

  Rows are encoded in blocks of `fetch_size` (at least `MIN_BLOCK_ROWS`):
  column by column (`column_blocks`); a shorter last block, or one with a
  value that does not fit, row by row (`codecs.RowEncoder`, which names the
  row). Both give the same records, keys and errors.

  Keys are the `order_by` values joined by `/`, else `split:row number`.

  Raises:
    SchemaError: for two rows with the same `order_by` key, and for values
      the codecs refuse (naming the column and the row).
  """
  row_encoder = codecs_lib.RowEncoder(job.codecs)
  block_encoder = None  # made at the first large block: it loads the compiled kernels
  rows = iter(rows)
  first, previous = job.first_row, None
  while block := list(itertools.islice(rows, max(job.fetch_size, MIN_BLOCK_ROWS))):
    items = None
    if len(block) >= MIN_BLOCK_ROWS and job.codecs:
      block_encoder = block_encoder or column_blocks.BlockEncoder(job.codecs)
      items = _encoded_block(job, block_encoder, block, first, previous)
    if items is None:
      items = _encoded_rows(job, row_encoder, block, first, previous)
    yield from items
    first += len(block)
    if job.key_indexes:
      previous = tuple(block[-1][index] for index in job.key_indexes)


def _encoded_block(
    job: read_jobs.ReadJob, encoder: column_blocks.BlockEncoder, block: list[tuple], first: int, previous: tuple | None,
) -> list[shard_writer.FramedBlock] | None:
  """The block as one framed block (none if every row is skipped); None if a row needs RowEncoder's error."""
  # Not zip(*block): its iterator per row lives through collections and fills the oldest GC generation.
  columns = [list(map(operator.itemgetter(index), block)) for index in range(len(job.codecs))]
  key_rows = None
  if job.key_indexes:
    key_rows = list(zip(*(columns[index] for index in job.key_indexes)))
    if key_rows[0] == previous or any(map(operator.eq, key_rows, key_rows[1:])):
      return None  # row by row, the repeated key raises where it is read
  encoded = encoder.encode(columns)
  if encoded is None:
    return None
  if encoded.frames is None:
    return []
  kept = encoded.kept
  if key_rows is not None:
    kept_rows = key_rows if kept is None else [key_rows[index] for index in kept.tolist()]
    keys = shard_writer.LazyKeys(kept_rows, read_jobs.joined_key)
  else:
    numbers = range(first, first + len(block)) if kept is None else kept + first
    keys = shard_writer.LazyKeys(numbers, functools.partial(read_jobs.numbered_key, job.split))
  return [(keys, encoded.frames)]


def _encoded_rows(
    job: read_jobs.ReadJob, encoder: codecs_lib.RowEncoder, block: list[tuple], first: int, previous: tuple | None,
) -> Iterator[tuple[str, bytes]]:
  """The block's `(key, serialized Example)` pairs, one row at a time."""
  key_indexes = job.key_indexes
  for number, row in enumerate(block, first):
    if key_indexes:
      key_values = tuple(row[index] for index in key_indexes)
      if key_values == previous:
        raise read_jobs.duplicate_key(job, key_values)
      previous = key_values
      key = read_jobs.joined_key(key_values)
      describe = lambda: read_jobs.describe_key(job, key_values)  # pylint: disable=cell-var-from-loop
    else:
      key = read_jobs.numbered_key(job.split, number)
      describe = lambda: f"row {number} of {job.label} (0-based, as read)"  # pylint: disable=cell-var-from-loop
    serialized = encoder.encode(row, describe)
    if serialized is not None:
      yield key, serialized
