"""The PostgreSQL binary COPY read: which columns it serves, and its rows framed as Example blocks in compiled code.

`read_path` is resolved once per build (`resolve`): `copy` where every
column's type and storage have a binary decoder here, else the cursor
(`reading.examples`). Both give the same bytes, keys and errors; the
equality tests in tests/database/test_binary_copy.py hold them to it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import itertools
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import shard_writer
from tfds_builders.core import tensor_codecs
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import statements
from tfds_builders.database import codecs as codecs_lib
from tfds_builders.database import read_jobs

READ_PATHS = ("auto", "copy", "cursor")
# PostgreSQL send function -> (the kind the cursor path gives the column, the binary format's name).
_SEND_FORMATS = {
    "int2send": ("int", "int2"), "int4send": ("int", "int4"), "int8send": ("int", "int8"),
    "oidsend": ("int", "oid"), "float4send": ("float32", "float4"), "float8send": ("float64", "float8"),
    "boolsend": ("bool", "bool"), "textsend": ("text", "text"), "varcharsend": ("text", "text"),
    "bpcharsend": ("text", "text"), "namesend": ("text", "text"), "citextsend": ("text", "text"),
    "enum_send": ("enum", "text"), "byteasend": ("bytes", "text"), "json_send": ("json", "text"),
    "jsonb_send": ("json", "jsonb"), "uuid_send": ("uuid", "uuid"), "date_send": ("date", "date"),
    "time_send": ("time", "time"), "timestamp_send": ("timestamp", "timestamp"),
    "timestamptz_send": ("timestamptz", "timestamptz"),
}
# Key columns whose key text the cursor path makes from an int or a UTF-8 text.
_INT_FORMATS = ("int2", "int4", "int8", "oid")
_TEXT_KEY_KINDS = ("text", "enum")
_STORES = {"int64": "STORE_INT64", "bool": "STORE_INT64", "float32": "STORE_FLOAT32",
           "float64": "STORE_FLOAT64", "text": "STORE_BYTES", "bytes": "STORE_BYTES"}


@dataclasses.dataclass(frozen=True)
class ReadPath:
  """How a build reads its rows, resolved once from `read_path` (recorded in provenance).

  Attributes:
    requested: The config's `read_path`.
    used: `copy` or `cursor`.
    formats: With `copy`, each column's binary format (`pg_binary.FORMAT_NAMES`).
    reason: With `auto` and `cursor` used, the column binary COPY cannot serve.
  """

  requested: str
  used: str
  formats: tuple[str, ...] = ()
  reason: str = ""

  def record(self) -> dict[str, str]:
    found = {"requested": self.requested, "used": self.used}
    if self.reason:
      found["cursor_because"] = self.reason
    return found


def resolve(
    read_path: str, session: sessions.ReadSession, statement: statements.Statement,
    codecs: Sequence[codecs_lib.ColumnCodec], key_indexes: Sequence[int], config_name: str,
) -> ReadPath:
  """Chooses the read path: `copy` where every column has a decoder (or was asked for), else the cursor.

  Raises:
    ConfigError: for an unknown `read_path`, or `copy` where a column (named)
      or the driver cannot be read with binary COPY.
  """
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"database config {config_name!r}: {message}")

  errors.check_choice(read_path, READ_PATHS, "read_path", fail)
  if read_path == "cursor":
    return ReadPath(read_path, "cursor")
  if session.driver != "postgresql":
    reason = f"binary COPY is PostgreSQL's; {session.driver} is read through the cursor"
  else:
    functions = session.send_functions(statement)
    reason, formats = "", []
    for index, codec in enumerate(codecs):
      function = functions[index] if index < len(functions) else ""
      reason = _unsupported(codec, function, index in key_indexes)
      if reason:
        break
      formats.append(_SEND_FORMATS[function][1])
    if not reason:
      return ReadPath(read_path, "copy", tuple(formats))
  if read_path == "copy":
    raise fail(errors.with_hint(
        f"read_path='copy' cannot read it: {reason}",
        "Cast the column in the query (e.g. column::text or column::float8), or set "
        "read_path='auto' to read such builds through the cursor."))
  return ReadPath(read_path, "cursor", reason=reason)


def _unsupported(codec: codecs_lib.ColumnCodec, function: str, is_key: bool) -> str:
  """Why the binary decoder cannot store this column as the cursor path does; "" if it can."""
  column = f"column {codec.name!r}"
  sql_type = codec.sql_type
  if sql_type.array:
    return f"{column} is an array ({sql_type.label()})"
  if codec.class_names is not None:
    return f"{column} is categorical (a ClassLabel)"
  if codec.affine is not None:
    return f"{column} is normalized"
  known = _SEND_FORMATS.get(function)
  if known is None or known[0] != sql_type.kind:
    return f"{column} has type {sql_type.source or sql_type.label()}, which binary COPY does not decode"
  if is_key and known[1] not in _INT_FORMATS and sql_type.kind not in _TEXT_KEY_KINDS:
    return f"{column} is an order_by column of type {sql_type.source}; binary COPY keys are ints or text"
  return ""


def examples(job: read_jobs.ReadJob, session: sessions.ReadSession) -> Iterator[shard_writer.FramedBlock]:
  """The job's examples as `(keys, FramedRecords)` blocks, read with binary COPY in the session's snapshot.

  The same records, keys and errors as `reading.examples` on the cursor's rows.
  """
  chunks = session.copy_binary(job.statement, label=job.label)
  try:
    yield from framed_blocks(job, chunks)
  finally:
    chunks.close()  # the rest of the COPY is read and dropped: the session stays usable


def framed_blocks(job: read_jobs.ReadJob, chunks: Iterable[bytes]) -> Iterator[shard_writer.FramedBlock]:
  """A binary COPY stream, given in chunks of any size, as `(keys, FramedRecords)` blocks.

  Raises:
    SchemaError: for two rows with one `order_by` key, and values the codecs
      refuse (naming the column and row).
    SourceError: for a stream that is truncated or malformed (naming the row).
  """
  pg_binary = fast.pg_binary
  columns = [_column(codec, fmt) for codec, fmt in zip(job.codecs, job.copy_formats)]
  decoder = pg_binary.Decoder(columns, job.key_indexes, first_row=job.first_row)
  for chunk in itertools.chain(chunks, [None]):
    for block in decoder.feed(chunk):
      if len(block.records):
        yield shard_writer.LazyKeys(range(len(block.rows)), functools.partial(_row_key, job, block)), block.records
      if block.status not in (pg_binary.MORE, pg_binary.FULL, pg_binary.DONE):
        raise _problem(job, decoder, block)
  if not decoder.done:
    raise _malformed(job, decoder.row, "the stream ends inside this row (it is truncated)")


def _column(codec: codecs_lib.ColumnCodec, format_name: str) -> Any:
  """The decoder's column: framing and NULL entries from the codec's own encoders."""
  pg_binary = fast.pg_binary
  key = serialization.FeatureKey(codec.name)
  storage = codec.storage
  if storage in ("int64", "bool"):
    heads = serialization.int64_scalar_prefixes(key)
  elif storage == "float32":
    heads = [serialization.fixed_entry_head(key, "float_list", 4)]
  elif storage == "float64":
    heads = [serialization.fixed_entry_head(key, "bytes", 8)]
  else:
    heads = [key.key_field]
  action = codec.nulls.action
  null_action = {"error": pg_binary.NULL_ERROR, "skip_row": pg_binary.NULL_SKIP_ROW}.get(
      action, pg_binary.NULL_CONSTANT)
  null_entries = codec.encoder()(None) if null_action == pg_binary.NULL_CONSTANT else b""
  suffix = b""
  if codec.mask_name:
    mask = tensor_codecs.resolve("bool", (), tensor_codecs.LISTS)
    suffix = mask.scalar_encoder(codec.mask_name)(False)
  return pg_binary.Column(
      codec.name, pg_binary.FORMAT_NAMES.index(format_name), getattr(pg_binary, _STORES[storage]),
      heads, null_action, null_entries, suffix)


def _row_key(job: read_jobs.ReadJob, block: Any, position: int) -> str:
  """The example key of a block's row: `split:<row>`, or the `order_by` values joined by `/`."""
  if not job.key_indexes:
    return f"{job.split}:{int(block.rows[position])}"
  data = block.key_data
  values = (
      _key_value(job.copy_formats[column], None if length < 0 else data[start:start + length].tobytes())
      for column, (start, length) in zip(job.key_indexes, block.key_bounds[position].tolist()))
  return "/".join(read_jobs.key_text(value) for value in values)


def _key_value(format_name: str, field: bytes | None) -> Any:
  if field is None:
    return None
  if format_name in _INT_FORMATS:
    return int.from_bytes(field, "big", signed=format_name != "oid")
  return field


# ------------------------------------------------------------------ errors --


def _problem(job: read_jobs.ReadJob, decoder: Any, block: Any) -> errors.TfdsBuildersError:
  pg_binary = fast.pg_binary
  if block.status == pg_binary.DUPLICATE_KEY:
    fields = decoder.problem_row()
    return read_jobs.duplicate_key(  # pylint: disable=protected-access
        job, tuple(_key_value(job.copy_formats[i], fields[i]) for i in job.key_indexes))
  if block.status == pg_binary.ROW_PROBLEM:
    return _row_problem(job, decoder.problem_row(), block.row)
  column = job.codecs[block.detail].name if 0 <= block.detail < len(job.codecs) else ""
  fmt = job.copy_formats[block.detail] if column else ""
  expected = pg_binary.fixed_width(fmt) if fmt else len(job.codecs)
  problem = pg_binary.PROBLEMS[block.status].format(found=block.found, expected=expected, column=column, format=fmt)
  return _malformed(job, block.row, problem)


def _malformed(job: read_jobs.ReadJob, row: int, problem: str) -> errors.SourceError:
  return errors.SourceError(errors.with_hint(
      f"The binary COPY stream of {job.label} is malformed at row {row} (0-based, as read): {problem}",
      "Nothing was written as a dataset. Rerun with read_path='cursor', and report the server "
      "version and the query if it persists."))


def _row_problem(job: read_jobs.ReadJob, fields: list[bytes | None], number: int) -> errors.TfdsBuildersError:
  """The error the cursor path raises for this row: its values decoded as psycopg2 gives them, then encoded."""
  if job.key_indexes:
    key_values = tuple(_key_value(job.copy_formats[i], fields[i]) for i in job.key_indexes)
    describe = lambda: read_jobs.describe_key(job, key_values)  # pylint: disable=protected-access
  else:
    describe = lambda: f"row {number} of {job.label} (0-based, as read)"
  row = []
  for codec, fmt, field in zip(job.codecs, job.copy_formats, fields):
    try:
      row.append(None if field is None else _driver_value(fmt, field))
    except (ValueError, OverflowError) as error:
      return errors.SchemaError(errors.with_hint(
          f"{describe()}: column {codec.name!r} holds a {fmt} that Python's datetime cannot hold ({error})",
          "Filter such values out in the query, or cast the column (e.g. column::text)."))
  codecs_lib.RowEncoder(job.codecs).encode(row, describe)
  return errors.SchemaError(f"{describe()}: the row could not be encoded.")


_EPOCH_2000 = datetime.datetime(2000, 1, 1)


def _driver_value(format_name: str, field: bytes) -> Any:
  """A field as psycopg2 returns it to the cursor path (infinite dates and timestamps as text)."""
  if format_name in _INT_FORMATS:
    return int.from_bytes(field, "big", signed=format_name != "oid")
  if format_name in ("float4", "float8"):
    return struct.unpack(">f" if format_name == "float4" else ">d", field)[0]
  if format_name == "bool":
    return field != b"\x00"
  if format_name == "jsonb":
    return field[1:]
  if format_name == "uuid":
    return str(uuid.UUID(bytes=field))
  if format_name == "text":
    return field
  if format_name == "date":
    days = int.from_bytes(field, "big", signed=True)
    if days in (2**31 - 1, -2**31):
      return "infinity" if days > 0 else "-infinity"
    return datetime.date(2000, 1, 1) + datetime.timedelta(days=days)
  micros = int.from_bytes(field, "big", signed=True)
  if format_name == "time":
    if not 0 <= micros <= 86_400_000_000:
      raise ValueError(f"{micros} microseconds is not a time of day")
    return (datetime.datetime.min + datetime.timedelta(microseconds=micros % 86_400_000_000)).time()
  if micros in (2**63 - 1, -2**63):
    return "infinity" if micros > 0 else "-infinity"
  stamp = _EPOCH_2000 + datetime.timedelta(microseconds=micros)
  return stamp.replace(tzinfo=datetime.timezone.utc) if format_name == "timestamptz" else stamp
