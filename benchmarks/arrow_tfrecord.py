"""The SQL peers' second half: Arrow record batches -> our block encoders -> TFRecord, one write per block.

ADBC and ConnectorX read a query into Arrow; this turns each batch into the
Examples the database builder stores (`core.fast.record_blocks`, column by
column), so a peer does the same work to the same output. Values map as the
builder maps them: ints and bools to int64, float32 to a float_list, float64
to 8 raw bytes, text as it is, dates and timestamps as ISO text; a column in
`masked` gets its `<name>_is_null` entry, a NULL a zero placeholder. With
ADBC's types the file is the builder's, byte for byte (tests/test_benchmarks.py).
"""

from __future__ import annotations

import pathlib
from collections.abc import Collection, Iterable
from typing import Any

import numpy as np

_MASK_SUFFIX = "_is_null"


def _byte_column(array: Any) -> Any:
  """An Arrow string array (no NULLs) as a `record_blocks.ByteColumn`, without copying its bytes."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  from tfds_builders.core.fast import record_blocks  # pylint: disable=g-import-not-at-top

  if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
    offset_type = np.int64
  else:
    array = array.cast(pa.string()) if not pa.types.is_binary(array.type) else array
    offset_type = np.int32
  _, offsets_buffer, data_buffer = array.buffers()
  offsets = np.frombuffer(offsets_buffer, offset_type)[array.offset:array.offset + len(array) + 1]
  data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
  return record_blocks.ByteColumn(data, offsets.astype(np.int64))


def _entries(name: str, array: Any) -> Any:
  """The map entries of one column (NULLs already filled)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  from tfds_builders.core import serialization  # pylint: disable=g-import-not-at-top
  from tfds_builders.core.fast import record_blocks  # pylint: disable=g-import-not-at-top

  key = serialization.FeatureKey(name)
  kind = array.type
  if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
    return record_blocks.int64_entries(key, array.to_numpy(zero_copy_only=False).astype(np.int64))
  if pa.types.is_float32(kind):
    return record_blocks.fixed_entries(key, array.to_numpy(zero_copy_only=False).astype("<f4"), "float_list")
  if pa.types.is_floating(kind):
    return record_blocks.fixed_entries(key, array.to_numpy(zero_copy_only=False).astype("<f8"), "bytes")
  if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
    return record_blocks.bytes_entries(key, _iso_text(array))
  return record_blocks.bytes_entries(key, _byte_column(array))


def _iso_text(array: Any) -> Any:
  """Dates as `YYYY-MM-DD`, timestamps as `YYYY-MM-DDTHH:MM:SS+00:00`, each of one width.

  Whole seconds in UTC: the builder's isoformat() of this table. NumPy's
  datetime64 does it several times faster than pyarrow's strftime.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  from tfds_builders.core.fast import record_blocks  # pylint: disable=g-import-not-at-top

  if pa.types.is_date(array.type):
    days = array.cast(pa.int32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    text = np.datetime_as_string(days, unit="D").astype("S10")
  else:
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[array.type.unit]
    seconds = array.cast(pa.int64()).to_numpy(zero_copy_only=False) // per_second
    text = np.char.add(np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype("S19"), b"+00:00")
  return record_blocks.ByteColumn.fixed_width(text.view(np.uint8).reshape(len(text), -1))


def _filled(array: Any) -> Any:
  """NULLs replaced by the type's zero (the builder's masked placeholder)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  if not array.null_count:
    return array
  kind = array.type
  if pa.types.is_date(kind) or pa.types.is_timestamp(kind):  # the epoch, as the zero of its kind
    return array.cast(pa.int64() if pa.types.is_timestamp(kind) else pa.int32()).fill_null(0).cast(kind)
  if pa.types.is_string(kind) or pa.types.is_large_string(kind):
    return array.fill_null("")
  return array.fill_null(False if pa.types.is_boolean(kind) else 0)


def _masked_entries(name: str, array: Any) -> Any:
  """A masked column as the builder writes it: value then `_is_null` false, or `_is_null` true then a zero."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  from tfds_builders.core import serialization  # pylint: disable=g-import-not-at-top
  from tfds_builders.core.fast import record_blocks  # pylint: disable=g-import-not-at-top

  mask = record_blocks.int64_entries(serialization.FeatureKey(name + _MASK_SUFFIX), np.array([0, 1], np.int64))
  kind = array.type
  if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind):
    zero = pa.array([0], kind) if not pa.types.is_boolean(kind) else pa.array([False])
    placeholder = _entries(name, zero).item(0)
  else:  # text, and dates and timestamps stored as ISO text: the empty string
    placeholder = record_blocks.bytes_entries(
        serialization.FeatureKey(name), record_blocks.ByteColumn.from_items([b""])).item(0)
  present = ~array.is_null().to_numpy(zero_copy_only=False)
  values = _entries(name, array.drop_null())
  return record_blocks.scattered_entries(values, present, mask.item(0), mask.item(1) + placeholder)


def framed_batch(batch: Any, masked: Collection[str] = ()) -> Any:
  """One record batch as framed TFRecord Examples (`tfrecord_io.FramedRecords`), features in column order."""
  from tfds_builders.core import serialization  # pylint: disable=g-import-not-at-top
  from tfds_builders.core.fast import record_blocks  # pylint: disable=g-import-not-at-top

  count = batch.num_rows
  columns = []
  for name, array in zip(batch.schema.names, batch.columns):
    if name in masked and hasattr(record_blocks, "scattered_entries"):
      columns.append(_masked_entries(name, array))
      continue
    columns.append(_entries(name, _filled(array)))
    if name in masked:  # before scattered_entries: the mask as its own column, always after the value
      is_null = array.is_null().to_numpy(zero_copy_only=False).astype(np.int64)
      columns.append(record_blocks.int64_entries(serialization.FeatureKey(name + _MASK_SUFFIX), is_null))
  if hasattr(record_blocks, "framed_rows"):  # one pass over every column: what the builder's COPY path uses
    return record_blocks.framed_rows(columns)
  joined = record_blocks.joined_rows(columns)  # before framed_rows: one join per column
  return record_blocks.framed_examples(joined, np.arange(count, dtype=np.int64), np.zeros((count, 0), np.uint8))


def write_batches(batches: Iterable[Any], out_path: pathlib.Path, masked: Collection[str] = ()) -> int:
  """Writes every batch's Examples to one TFRecord file, one write per batch; returns the records."""
  written = 0
  with open(out_path, "wb") as out:
    for batch in batches:
      if batch.num_rows:
        framed = framed_batch(batch, masked)
        out.write(memoryview(framed.data))
        written += len(framed)
  return written


def warm() -> None:
  """Imports pyarrow and loads (or compiles) the block encoders, so no timed run pays for it."""
  import datetime  # pylint: disable=g-import-not-at-top

  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  batch = pa.record_batch({
      "int": pa.array([1, None], pa.int16()), "float32": pa.array([0.5, None], pa.float32()),
      "float64": [0.25, None], "bool": [True, None], "text": ["a", None],
      "date": pa.array([datetime.date(2013, 1, 1), None]),
      "timestamp": pa.array([datetime.datetime(2013, 1, 1, tzinfo=datetime.timezone.utc), None]),
  })
  framed_batch(batch, masked=batch.schema.names)
