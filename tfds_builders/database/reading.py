"""Streams of result rows -> `(key, serialized Example)`: the split's read, or one Beam partition."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from tfds_builders.core import errors
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import statements
from tfds_builders.database import codecs as codecs_lib
from tfds_builders.database import session as session_lib


@dataclasses.dataclass(frozen=True)
class ReadJob:
  """One stream of rows: a split, or one key range of it on Beam. Picklable.

  Attributes:
    spec: Where to connect (a Beam worker opens its own connection).
    snapshot: The exported snapshot a worker joins (PostgreSQL), or None.
    statement: The statement (with the user's query, for error messages).
    codecs: How each result column becomes features.
    key_names: The `order_by` columns (empty: no order).
    key_indexes: Their positions in a row.
    split: Split name.
    label: Names the stream in messages ("split 'train', partition 2/4").
    fetch_size: Rows per round trip.
  """

  spec: connection.ConnectionSpec
  snapshot: str | None
  statement: statements.Statement
  codecs: tuple[codecs_lib.ColumnCodec, ...]
  key_names: tuple[str, ...]
  key_indexes: tuple[int, ...]
  split: str
  label: str
  fetch_size: int


def read_in_session(job: ReadJob, session: sessions.ReadSession) -> Iterator[tuple[str, bytes]]:
  """The job's examples, read in an open session (the serial build's snapshot)."""
  return examples(job, session.rows(job.statement, fetch_size=job.fetch_size, label=job.label))


def read_partition(job: ReadJob) -> Iterator[tuple[str, bytes]]:
  """A Beam worker's partition: its own connection, in the coordinator's snapshot."""
  with session_lib.open_session(job.spec, snapshot=job.snapshot) as session:
    yield from read_in_session(job, session)


def examples(job: ReadJob, rows: Iterable[tuple]) -> Iterator[tuple[str, bytes]]:
  """Encodes rows to `(key, serialized Example)`.

  Keys are the `order_by` values joined by `/`, else `split:row number`.

  Raises:
    SchemaError: for two rows with the same `order_by` key, and for values
      the codecs refuse (naming the column and the row).
  """
  encoder = codecs_lib.RowEncoder(job.codecs)
  key_indexes = job.key_indexes
  previous = None
  for number, row in enumerate(rows):
    if key_indexes:
      key_values = tuple(row[index] for index in key_indexes)
      if key_values == previous:
        raise _duplicate_key(job, key_values)
      previous = key_values
      key = "/".join(_key_text(value) for value in key_values)
      describe = lambda: _describe_key(job, key_values)  # pylint: disable=cell-var-from-loop
    else:
      key = f"{job.split}:{number}"
      describe = lambda: f"row {number} of {job.label} (0-based, as read)"  # pylint: disable=cell-var-from-loop
    serialized = encoder.encode(row, describe)
    if serialized is not None:
      yield key, serialized


def _key_text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="backslashreplace")  # text as the server sent it
  if isinstance(value, memoryview):
    return bytes(value).hex()  # bytea
  return str(value)


def _describe_key(job: ReadJob, values: tuple) -> str:
  pairs = ", ".join(f"{name}={_key_text(value)!r}" for name, value in zip(job.key_names, values))
  return f"the row with {pairs} ({job.label})"


def _duplicate_key(job: ReadJob, values: tuple) -> errors.SchemaError:
  pairs = ", ".join(f"{name}={_key_text(value)!r}" for name, value in zip(job.key_names, values))
  return errors.SchemaError(
      errors.with_hint(
          f"order_by {list(job.key_names)} is not unique: two rows of {job.label} have "
          f"{pairs}, so their order is not reproducible",
          "Add columns to order_by until it identifies a row (e.g. the primary key).",
      )
  )
