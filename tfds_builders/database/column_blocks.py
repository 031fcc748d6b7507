"""Blocks of result rows -> framed TFRecords, encoded column by column: the cursor path's fast encoder.

`codecs.RowEncoder` makes one Python call per value and per example. Here a
block of rows is encoded a column at a time: ints, floats, text, bytes,
booleans, classes and normalized numbers by vectorized and compiled helpers
(`fast.record_blocks`), any other column with its own per-value encoder, and
the block's Examples are framed in one compiled pass. The bytes are
RowEncoder's. A block with a value that does not fit (a NULL under `error`,
a wrong type) is not encoded here: RowEncoder encodes it and names the row.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import tfrecord_io
from tfds_builders.core.sql import values as sql_values
from tfds_builders.database import codecs as codecs_lib

# A column block's entries, or None when its values need the per-value encoder.
TypedEncoder = Callable[[Sequence[Any]], Any]


@dataclasses.dataclass(frozen=True)
class EncodedBlock:
  """A block's records.

  Attributes:
    kept: The rows (indexes into the block) that have a record; None when
      every row has one (no `skip_row` NULL).
    frames: Their framed Examples; None when every row was skipped.
  """

  kept: np.ndarray | None
  frames: tfrecord_io.FramedRecords | None


class BlockEncoder:
  """Encodes blocks of rows, given as columns, into framed Examples (RowEncoder's bytes)."""

  def __init__(self, codecs: Sequence[codecs_lib.ColumnCodec]):
    self._columns = [_ColumnEncoder(codec) for codec in codecs]
    self._skip_if_null = [
        index for index, codec in enumerate(codecs) if codec.nulls.action == "skip_row"
    ]

  def encode(self, columns: Sequence[Sequence[Any]]) -> EncodedBlock | None:
    """The records of the rows whose column values are `columns[c][row]`.

    Returns:
      The block's records; None when a value does not fit its column (a NULL
      under `error`, a wrong type): RowEncoder then encodes the block row by
      row and raises for that row.
    """
    count = len(columns[0])
    kept = None
    keep = self._rows_kept(columns, count)
    if keep is not None:
      kept = np.flatnonzero(keep)
      if not len(kept):
        return EncodedBlock(kept, None)
      columns = [list(itertools.compress(values, keep)) for values in columns]
    entries = []
    for encoder, values in zip(self._columns, columns):
      column = encoder.entries(values)
      if column is None:
        return None
      entries.append(column)
    return EncodedBlock(kept, fast.record_blocks.framed_rows(entries))

  def _rows_kept(self, columns: Sequence[Sequence[Any]], count: int) -> np.ndarray | None:
    """Which rows no `skip_row` column drops (as RowEncoder drops them first); None: all."""
    keep = None
    for index in self._skip_if_null:
      values = columns[index]
      if None in values:
        present = _present(values, count)
        keep = present if keep is None else keep & present
    return keep


class _ColumnEncoder:
  """One column's map entries for a block of its values: typed where it can, else per value."""

  def __init__(self, codec: codecs_lib.ColumnCodec):
    self._encode = codec.encoder()
    self._typed = _typed_encoder(codec)
    action = codec.nulls.action
    # NULLs under `default` and `mask` take one constant entry; under `error` they go to RowEncoder.
    self._missing = self._encode(None) if action in ("default", "mask") else None
    self._suffix = codec.mask_entry(False) if action == "mask" else b""

  def entries(self, values: Sequence[Any]) -> Any:
    """A `ByteColumn` of one item per value (RowEncoder's entries of this column); None if one does not fit."""
    blocks = fast.record_blocks
    if self._typed is not None:
      column = _attempt(self._typed, values)
      if column is not None:
        if not self._suffix:
          return column
        return blocks.scattered_entries(column, np.ones(len(values), np.bool_), self._suffix, b"")
      if self._missing is not None and None in values:
        present = _present(values, len(values))
        column = _attempt(self._typed, list(itertools.compress(values, present)))
        if column is not None:
          return blocks.scattered_entries(column, present, self._suffix, self._missing)
    try:
      return blocks.ByteColumn.from_items(list(map(self._encode, values)))
    except Exception:  # pylint: disable=broad-except  # RowEncoder re-encodes the block and names the row
      return None


def _present(values: Sequence[Any], count: int) -> np.ndarray:
  return np.fromiter(map(operator.is_not, values, itertools.repeat(None)), np.bool_, count)


def _attempt(typed: TypedEncoder, values: Sequence[Any]) -> Any:
  """`typed(values)`, None for values it does not take (the per-value encoder decides then)."""
  if not values:
    return fast.record_blocks.ByteColumn(np.zeros(0, np.uint8), np.zeros(1, np.int64))
  try:
    return typed(values)
  except Exception:  # pylint: disable=broad-except  # a type it does not take: the per-value encoder decides
    return None


def _typed_encoder(codec: codecs_lib.ColumnCodec) -> TypedEncoder | None:
  """The block encoder of a column's non-NULL values, for the storages that have one."""
  if codec.sql_type.array:
    return None
  key = serialization.FeatureKey(codec.name)
  kind, storage = codec.sql_type.kind, codec.storage
  if storage == "class":
    return functools.partial(_class_entries, key, codecs_lib.class_indexes(codec))
  if codec.affine is not None:
    shift, scale = codec.affine
    return functools.partial(_normalized_entries, key, shift, scale) if scale else None
  if storage == "int64" and kind == "int":
    return functools.partial(_int_entries, key)
  if storage == "bool" and kind == "bool":
    return functools.partial(_bool_entries, key)
  if storage in ("float32", "float64") and kind in ("float32", "float64"):
    return functools.partial(_float_entries, key, storage)
  if storage == "float64" and kind == "numeric":
    return functools.partial(_number_entries, key)
  if storage == "text" and kind in sql_values.TEXT_LIKE_KINDS:
    return functools.partial(_text_entries, key)
  if storage == "bytes" and kind == "bytes":
    return functools.partial(_bytes_entries, key)
  return None


# Each takes a block's non-NULL values and returns their entries, or None (or
# raises TypeError/ValueError/OverflowError) for values it does not take.


def _class_entries(key: serialization.FeatureKey, index_of: dict[Any, int], values: Sequence[Any]) -> Any:
  indexes = list(map(index_of.get, values))  # a value that is a class name as is; others take the lookup's slow path
  if None in indexes:
    return None
  return fast.record_blocks.int64_entries(key, np.array(indexes, np.int64))


def _int_entries(key: serialization.FeatureKey, values: Sequence[Any]) -> Any:
  numbers = np.array(values)  # int64 only when every value is an int (or a bool, stored as 0/1 too)
  if numbers.dtype.kind not in "ib":
    return None
  return fast.record_blocks.int64_entries(key, numbers.astype(np.int64))


def _bool_entries(key: serialization.FeatureKey, values: Sequence[Any]) -> Any:
  flags = np.array(values)
  if flags.dtype.kind not in "ib" or (flags.dtype.kind == "i" and not ((flags == 0) | (flags == 1)).all()):
    return None
  return fast.record_blocks.int64_entries(key, flags.astype(np.int64))


def _float_entries(key: serialization.FeatureKey, storage: str, values: Sequence[Any]) -> Any:
  numbers = np.array(values)  # floats, ints and bools: struct.pack takes them all
  if numbers.dtype.kind not in "fib":
    return None
  return _stored_floats(key, storage, numbers.astype(np.float64))


def _number_entries(key: serialization.FeatureKey, values: Sequence[Any]) -> Any:
  if not set(map(type, values)) <= {float, int}:  # sql_values.to_float refuses bools, parses text
    return None
  return _stored_floats(key, "float64", np.array(values, np.float64))


def _normalized_entries(key: serialization.FeatureKey, shift: float, scale: float, values: Sequence[Any]) -> Any:
  if not set(map(type, values)) <= {float, int}:
    return None
  return _stored_floats(key, "float32", (np.array(values, np.float64) - shift) / scale)


def _stored_floats(key: serialization.FeatureKey, storage: str, numbers: np.ndarray) -> Any:
  """float64 as 8 raw bytes, float32 in a float_list, as the scalar encoders pack them."""
  if storage == "float64":
    return fast.record_blocks.fixed_entries(key, numbers.astype("<f8"), "bytes")
  with np.errstate(over="ignore"):
    narrowed = numbers.astype("<f4")
  if (np.isinf(narrowed) & np.isfinite(numbers)).any():
    return None  # struct.pack refuses a finite float past float32's range
  return fast.record_blocks.fixed_entries(key, narrowed, "float_list")


def _text_entries(key: serialization.FeatureKey, values: Sequence[Any]) -> Any:
  if type(values[0]) is str:  # pylint: disable=unidiomatic-typecheck
    joined = "".join(values)  # TypeError for a value that is not text
    data = joined.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    if len(data) != len(joined):  # not all ASCII: the values' byte lengths differ from their lengths
      return _byte_entries(key, [value.encode("utf-8") for value in values])
    return _byte_entries(key, values, data)
  if set(map(type, values)) != {bytes}:  # sql_values.to_text refuses bytearray and memoryview
    return None
  return _byte_entries(key, values)


def _bytes_entries(key: serialization.FeatureKey, values: Sequence[Any]) -> Any:
  if type(values[0]) is str:  # pylint: disable=unidiomatic-typecheck
    return None
  return _byte_entries(key, values)  # bytes, bytearray, memoryview: stored as their bytes


def _byte_entries(key: serialization.FeatureKey, items: Sequence[Any], data: bytes | None = None) -> Any:
  """One bytes_list entry per item; `data` is the items joined, when already made."""
  data = b"".join(items) if data is None else data  # TypeError for an item that is not bytes-like
  offsets = np.zeros(len(items) + 1, np.int64)
  np.cumsum(np.fromiter(map(len, items), np.int64, len(items)), out=offsets[1:])
  if offsets[-1] != len(data):
    return None  # a memoryview whose len() is not its size in bytes
  blocks = fast.record_blocks
  return blocks.bytes_entries(key, blocks.ByteColumn(np.frombuffer(data, np.uint8), offsets))
