"""Driver values -> the values a column of each kind stores: numbers, text, ISO or epoch dates and times.

The database builder and augmented's SQL side tables convert a column's
values through these functions, so a PostgreSQL `numeric` or `date` column
is stored the same by both.
"""

from __future__ import annotations

import datetime
import decimal
import operator
import re
from collections.abc import Callable
from typing import Any

TEMPORAL_KINDS = ("date", "time", "timestamp", "timestamptz")
TEXT_LIKE_KINDS = ("text", "json", "enum", "uuid")
_INFINITY = ("infinity", "-infinity")
_EPOCH_DATE_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=datetime.timezone.utc)
_MICROSECOND = datetime.timedelta(microseconds=1)


def converter(kind: str, numeric: str = "float64", temporal: str = "iso") -> Callable[[Any], Any]:
  """From a driver value of `kind` to its stored value (raising TypeError/ValueError if it does not fit).

  Args:
    kind: One of `types.KINDS`.
    numeric: `float64`, or `string` (exact decimal text), for `numeric`.
    temporal: `iso` (text), or `epoch` (int64: days for dates, microseconds
      since midnight for times, microseconds since 1970-01-01 UTC for
      timestamps), for date and time kinds.
  """
  if kind == "int":
    return operator.index
  if kind in ("float32", "float64"):
    return to_float
  if kind == "numeric":
    return to_float if numeric == "float64" else _numeric_text
  if kind == "bool":
    return _to_bool
  if kind in TEXT_LIKE_KINDS:
    return to_text
  if kind == "bytes":
    return to_bytes
  epoch = temporal == "epoch"
  return {
      "date": _date_epoch if epoch else _date_iso,
      "time": _time_epoch if epoch else _time_iso,
      "timestamp": _timestamp_epoch if epoch else _timestamp_iso,
      "timestamptz": _timestamptz_epoch if epoch else _timestamptz_iso,
  }[kind]


def to_float(value: Any) -> float:
  if type(value) is float:  # pylint: disable=unidiomatic-typecheck  # the hot path
    return value
  if isinstance(value, (bytes, bytearray, memoryview, bool)):
    raise TypeError(f"{type(value).__name__} is not a number")
  if isinstance(value, str) and not _NUMBER_TEXT.match(value):
    raise ValueError(f"{value!r} is not a number")
  return float(value)  # int, Decimal, or numeric text from PostgreSQL


_NUMBER_TEXT = re.compile(r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|NaN|-?Infinity)\s*$")


def _numeric_text(value: Any) -> bytes:
  if isinstance(value, str):
    if not _NUMBER_TEXT.match(value):
      raise ValueError(f"{value!r} is not a number")
    return value.encode("ascii")
  if isinstance(value, decimal.Decimal):
    return format(value, "f").encode("ascii")
  if isinstance(value, float):
    return repr(value).encode("ascii")
  return str(operator.index(value)).encode("ascii")


def _to_bool(value: Any) -> bool:
  if value is True or value is False:
    return value
  if type(value) is int and value in (0, 1):  # pylint: disable=unidiomatic-typecheck
    return bool(value)  # SQLite stores booleans as 0 / 1
  raise TypeError(f"{value!r} is not a boolean (true/false or 0/1)")


def to_text(value: Any) -> bytes:
  if type(value) is bytes:  # pylint: disable=unidiomatic-typecheck  # the hot path
    return value
  if isinstance(value, str):
    return value.encode("utf-8")
  raise TypeError(f"{type(value).__name__} is not text")


def to_bytes(value: Any) -> bytes | memoryview:
  if isinstance(value, (bytes, memoryview)):
    return value
  if isinstance(value, bytearray):
    return bytes(value)
  if isinstance(value, str):
    return value.encode("utf-8")
  raise TypeError(f"{type(value).__name__} is not binary data")


def _from_iso(value: Any, temporal_type: type, what: str) -> Any:
  """`value` if it already is a `temporal_type`, else parsed from ISO text; TypeError naming `what` otherwise."""
  if isinstance(value, temporal_type):
    return value
  if isinstance(value, str):
    return temporal_type.fromisoformat(value)
  raise TypeError(f"{type(value).__name__} is not {what}")


def _as_date(value: Any) -> datetime.date:
  if isinstance(value, datetime.datetime):  # a date subclass: never truncated silently
    raise TypeError("a timestamp is not a date")
  return _from_iso(value, datetime.date, "a date (ISO text)")


def _as_time(value: Any) -> datetime.time:
  return _from_iso(value, datetime.time, "a time of day")


def _as_timestamp(value: Any) -> datetime.datetime:
  """A datetime from a driver value: aware ones in UTC, naive ones kept."""
  if type(value) is int:  # pylint: disable=unidiomatic-typecheck
    # SQLite's 'unixepoch' convention: whole seconds since 1970-01-01 UTC.
    parsed = _EPOCH_UTC + datetime.timedelta(seconds=value)
  else:
    parsed = _from_iso(value, datetime.datetime, "a timestamp (ISO text)")
  return parsed if parsed.tzinfo is None else parsed.astimezone(datetime.timezone.utc)


def _infinite(value: Any) -> bool:
  return isinstance(value, str) and value in _INFINITY


def _date_iso(value: Any) -> bytes:
  if _infinite(value):
    return value.encode("ascii")
  return _as_date(value).isoformat().encode("ascii")


def _date_epoch(value: Any) -> int:
  _refuse_infinity(value)
  return _as_date(value).toordinal() - _EPOCH_DATE_ORDINAL


def _time_iso(value: Any) -> bytes:
  return _as_time(value).isoformat().encode("ascii")


def _time_epoch(value: Any) -> int:
  time = _as_time(value)
  return ((time.hour * 60 + time.minute) * 60 + time.second) * 1_000_000 + time.microsecond


def _timestamp_iso(value: Any) -> bytes:
  if _infinite(value):
    return value.encode("ascii")
  return _as_timestamp(value).replace(tzinfo=None).isoformat().encode("ascii")


def _timestamp_epoch(value: Any) -> int:
  _refuse_infinity(value)
  stamp = _as_timestamp(value).replace(tzinfo=None)
  return (stamp - _EPOCH) // _MICROSECOND


def _timestamptz_iso(value: Any) -> bytes:
  if _infinite(value):
    return value.encode("ascii")
  stamp = _as_timestamp(value)
  if stamp.tzinfo is None:
    stamp = stamp.replace(tzinfo=datetime.timezone.utc)
  return stamp.isoformat().encode("ascii")


def _timestamptz_epoch(value: Any) -> int:
  _refuse_infinity(value)
  stamp = _as_timestamp(value)
  if stamp.tzinfo is None:
    stamp = stamp.replace(tzinfo=datetime.timezone.utc)
  return (stamp - _EPOCH_UTC) // _MICROSECOND


def _refuse_infinity(value: Any) -> None:
  if _infinite(value):
    raise ValueError(
        f"{value!r} has no epoch value; filter it out, or use temporal='iso' "
        "(stored as the text 'infinity')"
    )
