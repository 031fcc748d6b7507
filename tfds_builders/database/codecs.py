"""Result columns -> TFDS features and wire-format encoders, with an explicit NULL policy.

A column's kind (`core.sql.types`), its options and its preprocessing choose
a *storage*, whose tensor codec (`core.tensor_codecs`, policy `LISTS`) gives
the TFDS feature and the wire encoders; ClassLabel and Text wrap the codec's
int64 and string features. NULL is `None` and nothing else: 0, '' and false
are values.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import serialization
from tfds_builders.core import tensor_codecs
from tfds_builders.core.sql import types as sql_types
from tfds_builders.core.sql import values as sql_values

NUMERIC_MODES = ("float64", "string")
TEMPORAL_MODES = ("iso", "epoch")
NULL_POLICIES = ("error", "default", "mask", "skip_row")
MASK_SUFFIX = "_is_null"
# Each storage's tensor dtype: class indices are int64, text and bytes strings.
_STORED_DTYPES = {
    "int64": "int64", "class": "int64", "float32": "float32", "float64": "float64",
    "bool": "bool", "text": tensor_codecs.STRING, "bytes": tensor_codecs.STRING,
}


def unsupported_type(column: str, type_name: str, cast_example: str) -> errors.SchemaError:
  """The error for a column whose type has no feature mapping."""
  return errors.SchemaError(
      errors.with_hint(
          f"Column {column!r} has type {type_name!r}, which the database builder "
          "does not map to a feature",
          f"Cast it in the query, e.g. {cast_example}, or set its type in "
          f"columns={{{column!r}: {{'type': 'text'}}}} if the driver returns text.",
      )
  )


# -------------------------------------------------------------- policies --


@dataclasses.dataclass(frozen=True)
class NullPolicy:
  """What a NULL in one column becomes.

  Attributes:
    action: `error` (the default: fail naming the column and row), `default`
      (store `default`), `mask` (store the storage's zero, or `default` when
      given, and add a boolean `<column>_is_null` feature), `skip_row`
      (leave the row out).
    default: The value for `default` (required) and `mask` (optional), in the
      column's own type: a number, a string (dates as ISO text), a list.
      A masked class column needs one (its zero would be a real class).
  """

  action: str = "error"
  default: Any = None


@dataclasses.dataclass(frozen=True)
class ColumnCodec:
  """How one result column becomes features: picklable, encoders built on demand.

  Attributes:
    name: Column name, which is also the feature name.
    sql_type: The column's (inferred or overridden) type.
    nulls: The NULL policy.
    numeric: `float64` or `string` (exact decimal text) for numeric kinds.
    temporal: `iso` (text) or `epoch` (int64: days for dates, microseconds
      since midnight for times, microseconds since 1970-01-01 UTC for
      timestamps) for date/time kinds.
    class_names: When set, values are class names stored as ClassLabel
      indices (a value matches the name equal to its text).
    unknown_class: Class name for values outside `class_names`; None makes
      such a value an error.
    affine: When set, `(shift, scale)`: numbers are stored as float32
      `(value - shift) / scale` (normalization).
  """

  name: str
  sql_type: sql_types.SqlType
  nulls: NullPolicy = NullPolicy()
  numeric: str = "float64"
  temporal: str = "iso"
  class_names: tuple[str, ...] | None = None
  unknown_class: str | None = None
  affine: tuple[float, float] | None = None

  @property
  def storage(self) -> str:
    """How values are stored: int64, float32, float64, bool, text, bytes or class."""
    kind = self.sql_type.kind
    if self.class_names is not None:
      return "class"
    if self.affine is not None:
      return "float32"
    if kind == "numeric":
      return "float64" if self.numeric == "float64" else "text"
    if kind in sql_values.TEMPORAL_KINDS:
      return "text" if self.temporal == "iso" else "int64"
    if kind in sql_values.TEXT_LIKE_KINDS:
      return "text"
    return {"int": "int64"}.get(kind, kind)

  def tensor_codec(self) -> tensor_codecs.TensorCodec:
    """How values are stored on the wire: the storage's dtype, one value or a `(None,)` array."""
    shape = (None,) if self.sql_type.array else ()
    return tensor_codecs.resolve(_STORED_DTYPES[self.storage], shape, tensor_codecs.LISTS)

  @property
  def mask_name(self) -> str | None:
    return self.name + MASK_SUFFIX if self.nulls.action == "mask" else None

  def features(self) -> dict[str, tfds.features.FeatureConnector]:
    """The feature of this column, and its `_is_null` mask feature if any."""
    doc = f"Column {self.name!r} ({self.sql_type.source or self.sql_type.label()})"
    found = {self.name: _feature(self, doc)}
    if self.mask_name:
      found[self.mask_name] = tfds.features.Scalar(
          np.bool_, doc=f"Whether {self.name!r} is NULL (its value is then a placeholder)"
      )
    return found

  def value_encoder(self) -> Callable[[Any], bytes]:
    """From a non-NULL value to this column's map entries, joined (with `_is_null`)."""
    store = _value_storer(self)
    if self.nulls.action != "mask":
      return store
    not_null = self.mask_entry(False)
    return lambda value: store(value) + not_null

  def encoder(self) -> Callable[[Any], bytes]:
    """From any database value (NULL included) to this column's map entries, joined.

    It raises `ValueProblem` for NULL under the `error` policy, and
    ValueProblem / TypeError / ValueError for values that do not fit the
    column's type.
    """
    present = self.value_encoder()
    action = self.nulls.action
    if action in ("error", "skip_row"):  # skip_row: RowEncoder drops the row first
      name = self.name

      def encode_or_fail(value: Any) -> bytes:
        if value is None:
          raise ValueProblem(name, "is NULL", null=True)
        return present(value)

      return encode_or_fail
    store = _value_storer(self)
    if action == "default":
      default_entries = store(self.nulls.default)
      return lambda value: default_entries if value is None else present(value)
    is_null = self.mask_entry(True) + (
        store(self.nulls.default) if self.nulls.default is not None
        else _storer(self)(_zero(self.storage, self.sql_type.array))
    )
    return lambda value: is_null if value is None else present(value)

  def mask_entry(self, is_null: bool) -> bytes:
    """The map entry of the `_is_null` feature (a bool scalar)."""
    mask = tensor_codecs.resolve("bool", (), tensor_codecs.LISTS)
    return mask.scalar_encoder(self.mask_name)(is_null)


class ValueProblem(Exception):
  """A value that cannot be stored in its column (the caller names the row)."""

  def __init__(self, column: str, problem: str, null: bool = False, hint: str = ""):
    super().__init__(f"column {column!r} {problem}")
    self.column = column
    self.problem = problem
    self.null = null
    self.hint = hint or "Cast the column in the query, or change its `type` in `columns`."


def check_codec(codec: ColumnCodec, check_default: bool = True) -> None:
  """Validates modes and the NULL policy's default value.

  Args:
    codec: The column's codec.
    check_default: Whether to encode the default now; False while a
      categorical column's classes are still to be computed from the data.

  Raises:
    ConfigError: naming the column, if an option is unknown, the default
      value does not fit the column's type, or a masked NULL would be stored
      as a real class.
  """
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"Column {codec.name!r}: {message}")

  if codec.sql_type.kind not in sql_types.KINDS:
    raise fail(f"type {codec.sql_type.kind!r} is unknown; use one of {sql_types.KINDS}.")
  errors.check_choice(codec.numeric, NUMERIC_MODES, "numeric", fail)
  errors.check_choice(codec.temporal, TEMPORAL_MODES, "temporal", fail)
  errors.check_choice(codec.nulls.action, NULL_POLICIES, "nulls", fail)
  if codec.nulls.action == "default" and codec.nulls.default is None:
    raise fail("nulls='default' needs a `default` value (or an `impute` statistic).")
  if codec.nulls.action == "mask" and codec.storage == "class" and codec.nulls.default is None:
    # The zero placeholder would be class 0: a real class, told apart only by the mask.
    raise fail(
        "nulls='mask' on a categorical column would store a NULL as class 0, a real "
        "class. Set `unknown` to a class name that masked NULLs take (e.g. "
        "{'unknown': '<missing>'}), or give a `default` class."
    )
  if codec.nulls.default is None or not check_default:
    return
  if codec.class_names is not None:
    _check_default_class(codec, fail)
  try:
    codec.encoder()(codec.nulls.default)
  except (ValueProblem, *_VALUE_ERRORS) as error:
    raise fail(
        f"default {codec.nulls.default!r} does not fit the column "
        f"({codec.sql_type.label()}, stored as {codec.storage}): {_reason(error)}. "
        "Give a value of the column's type."
    ) from None


def _check_default_class(codec: ColumnCodec, fail: Callable[[str], Exception]) -> None:
  default = class_name(codec.nulls.default)
  if default in codec.class_names:
    return
  shown = list(codec.class_names[:10]) + (["..."] if len(codec.class_names) > 10 else [])
  raise fail(
      f"default {codec.nulls.default!r} is not one of its {len(codec.class_names)} classes "
      f"{shown}. Give one of them, or set `unknown` to {default!r} to add it as a class."
  )


class RowEncoder:
  """Encodes result rows (sequences in column order) into serialized Examples."""

  def __init__(self, codecs: Sequence[ColumnCodec]):
    self.codecs = list(codecs)
    self._encoders = [codec.encoder() for codec in self.codecs]
    # Rows without NULL (the common case) skip the per-column NULL checks.
    self._value_encoders = [codec.value_encoder() for codec in self.codecs]
    self._skip_if_null = [
        index for index, codec in enumerate(self.codecs) if codec.nulls.action == "skip_row"
    ]

  def encode(self, row: Sequence[Any], row_label: Callable[[], str]) -> bytes | None:
    """The serialized Example of `row`; None when a `skip_row` column is NULL.

    Raises:
      SchemaError: naming the column and `row_label()`, for a NULL under the
        `error` policy or a value that does not fit its column.
    """
    encoders = self._value_encoders
    if None in row:
      for index in self._skip_if_null:
        if row[index] is None:
          return None
      encoders = self._encoders
    try:
      return serialization.example_from_entries(
          [encode(value) for encode, value in zip(encoders, row)]
      )
    except Exception:  # pylint: disable=broad-except  # re-raised, located
      raise self._locate_problem(row, row_label) from None

  def _locate_problem(self, row: Sequence[Any], row_label: Callable[[], str]) -> Exception:
    for codec, encode, value in zip(self.codecs, self._encoders, row):
      try:
        encode(value)
      except ValueProblem as problem:
        return _row_error(codec, problem, row_label())
      except _VALUE_ERRORS as error:
        problem = ValueProblem(codec.name, f"holds {value!r}: {_reason(error)}")
        return _row_error(codec, problem, row_label())
    return errors.SchemaError(f"{row_label()}: the row could not be encoded.")


# What converters and storers raise for a value of the wrong type.
_VALUE_ERRORS = (TypeError, ValueError, OverflowError, AttributeError, KeyError, struct.error)


def _reason(error: Exception) -> str:
  if isinstance(error, (KeyError, struct.error)):
    return "not a value of the column's type"
  return str(error)


def _row_error(codec: ColumnCodec, problem: ValueProblem, row: str) -> errors.SchemaError:
  column = codec.name
  if problem.null:
    return errors.SchemaError(
        errors.with_hint(
            f"Column {column!r} is NULL in {row}, and its NULL policy is 'error'",
            f"Set a policy, e.g. columns={{{column!r}: {{'nulls': 'mask'}}}} (or "
            "'default' with a `default`, or 'skip_row'), or filter/COALESCE in the query.",
        )
    )
  return errors.SchemaError(
      errors.with_hint(
          f"{row}: {problem} (the column is {codec.sql_type.label()}, "
          f"stored as {codec.storage})",
          problem.hint,
      )
  )


# --------------------------------------------------------------- features --


def _feature(codec: ColumnCodec, doc: str) -> tfds.features.FeatureConnector:
  if codec.storage == "class":
    if not codec.class_names:  # computed in SQL at build time, set then
      return tfds.features.ClassLabel(doc=doc)
    return tfds.features.ClassLabel(names=list(codec.class_names), doc=doc)
  if codec.storage == "text" and not codec.sql_type.array:
    return tfds.features.Text(doc=doc)
  return codec.tensor_codec().feature(doc=doc)


# --------------------------------------------------------------- encoding --


def _zero(storage: str, array: bool) -> Any:
  """The placeholder of a masked NULL, already in storage form."""
  if array:
    return []
  return {"int64": 0, "class": 0, "float32": 0.0, "float64": 0.0, "bool": False,
          "text": b"", "bytes": b""}[storage]


def _storer(codec: ColumnCodec) -> Callable[[Any], bytes]:
  """From a storage value (int, float, bool, bytes, or a list) to its map entry."""
  tensor_codec = codec.tensor_codec()
  if codec.sql_type.array:
    encode = tensor_codec.encoder(codec.name)
    join = b"".join
    return lambda values: join(encode(values))
  to_bytes = sql_values.to_bytes if codec.sql_type.kind == "bytes" else sql_values.to_text
  return tensor_codec.scalar_encoder(codec.name, to_bytes)


def _value_storer(codec: ColumnCodec) -> Callable[[Any], bytes]:
  """`_storer` after `_converter`, fused where the storer checks types itself."""
  store = _storer(codec)
  plain = codec.class_names is None and codec.affine is None and not codec.sql_type.array
  # int64 and float storers refuse other types (TypeError, struct.error),
  # bool storers anything but True/False/1/0, bytes storers convert non-bytes.
  if plain and codec.sql_type.kind in ("int", "float32", "float64", "bool", "bytes", *sql_values.TEXT_LIKE_KINDS):
    return store
  convert = _converter(codec)
  return lambda value: store(convert(value))


def _converter(codec: ColumnCodec) -> Callable[[Any], Any]:
  """From a driver value to a storage value, elementwise for arrays."""
  convert = sql_values.converter(codec.sql_type.kind, codec.numeric, codec.temporal)
  if codec.class_names is not None:
    convert = _class_lookup(codec, convert)
  elif codec.affine is not None:
    shift, scale = codec.affine
    convert = lambda value: (sql_values.to_float(value) - shift) / scale
  if not codec.sql_type.array:
    return convert

  def convert_array(values: Any) -> list:
    if not isinstance(values, (list, tuple)):
      raise ValueProblem(codec.name, f"holds {values!r}, not an array")
    if any(isinstance(value, (list, tuple)) for value in values):
      raise ValueProblem(
          codec.name, "holds a multi-dimensional array; only one-dimensional "
          "arrays are stored (unnest it, or select one dimension)")
    if any(value is None for value in values):
      raise ValueProblem(
          codec.name, "holds an array with NULL elements; remove them in the query "
          "(array_remove(column, NULL)) or replace them (COALESCE per element)")
    return [convert(value) for value in values]

  return convert_array


def class_indexes(codec: ColumnCodec) -> dict[Any, int]:
  """The class index of each value that is a class name as is: its text, UTF-8 bytes, or int."""
  index_of: dict[Any, int] = {}
  for index, name in enumerate(codec.class_names):
    index_of.setdefault(name, index)
    index_of.setdefault(name.encode("utf-8"), index)
    if re.fullmatch(r"-?[1-9][0-9]*|0", name):
      index_of.setdefault(int(name), index)  # integer columns hit without str()
  return index_of


def _class_lookup(codec: ColumnCodec, convert: Callable[[Any], Any]) -> Callable[[Any], int]:
  index_of = class_indexes(codec)
  unknown = None
  if codec.unknown_class is not None:
    unknown = index_of[codec.unknown_class]

  def lookup(value: Any) -> int:
    index = index_of.get(value)
    if index is None:
      index = index_of.get(class_name(convert(value)), unknown)
      if index is None:
        raise ValueProblem(
            codec.name, f"holds {class_name(value)!r}, which is not one of its "
            f"{len(codec.class_names)} classes",
            hint="Add it to the `vocabulary`, or set `unknown` to a class name "
            "that takes every unseen value.")
    return index

  return lookup


def class_name(value: Any) -> str:
  """The ClassLabel name of a categorical value: its text."""
  if isinstance(value, (bytes, bytearray, memoryview)):
    return bytes(value).decode("utf-8")
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def is_numeric_kind(kind: str) -> bool:
  """Kinds that normalization and mean imputation accept."""
  return kind in ("int", "float32", "float64", "numeric")


def finite_or_fail(column: str, name: str, value: float) -> float:
  """`value` as float, refusing NaN/inf statistics."""
  number = float(value)
  if not math.isfinite(number):
    raise errors.SchemaError(
        f"Column {column!r}: the {name} is {number}; filter NaN/infinite values "
        "out of the training split first."
    )
  return number
