"""A read job (one stream of rows, picklable for Beam) and how its example keys are spelled."""

from __future__ import annotations

import dataclasses
from typing import Any

from tfds_builders.core import errors
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import statements
from tfds_builders.database import codecs as codecs_lib


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
    copy_formats: Per column, its binary COPY format (`copy_reading`); None:
      read through the cursor.
    first_row: Row number of the stream's first row in its split (a ctid
      partition after others): keys without `order_by` count from it.
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
  copy_formats: tuple[str, ...] | None = None
  first_row: int = 0


def numbered_key(split: str, number: int) -> str:
  return f"{split}:{number}"


def joined_key(values: tuple) -> str:
  return "/".join(key_text(value) for value in values)


def key_text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="backslashreplace")  # text as the server sent it
  if isinstance(value, memoryview):
    return bytes(value).hex()  # bytea
  return str(value)


def describe_key(job: ReadJob, values: tuple) -> str:
  pairs = ", ".join(f"{name}={key_text(value)!r}" for name, value in zip(job.key_names, values))
  return f"the row with {pairs} ({job.label})"


def duplicate_key(job: ReadJob, values: tuple) -> errors.SchemaError:
  pairs = ", ".join(f"{name}={key_text(value)!r}" for name, value in zip(job.key_names, values))
  return errors.SchemaError(
      errors.with_hint(
          f"order_by {list(job.key_names)} is not unique: two rows of {job.label} have "
          f"{pairs}, so their order is not reproducible",
          "Add columns to order_by until it identifies a row (e.g. the primary key).",
      )
  )
