"""The deterministic split rule: a key's split from a 32-bit hash of `<seed>:<key>`, computable in SQL too.

The rule, for every builder that splits by key:

1. A key's *bucket* is a 32-bit hash of the text `"<seed>:<key>"`: the
   first 32 bits of its md5 (`split_bucket`). PostgreSQL computes it with
   `md5`, SQLite with the function `tfds_bucket` that the session
   registers (SQLite has no md5), so SQL filters rows by it (`bucket_sql`).
2. Splits take consecutive bucket ranges `[low, high)` in config order,
   sized by their share (`split_percent`, summing to 100): a range ends at
   `round(cumulative percent / 100 * 2**32)`, the last one at `2**32`
   (`bucket_ranges`).

The assignment depends only on the key and the seed: the same on every
build, in Python and in SQL. numpy_arrays' older spelling, `split_fractions`
(summing to 1), is this rule with a CRC-32 bucket (`zlib.crc32`) and ranges
ending at `ceil(cumulative fraction * 2**32)` (`fraction_ranges`): kept,
deprecated, so that its datasets keep their assignments.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import zlib
from collections.abc import Mapping
from typing import Any

BUCKETS = 2**32  # split buckets: the first 32 bits of an md5
SQLITE_BUCKET_FUNCTION = "tfds_bucket"


def split_bucket(seed: str, key: Any) -> int | None:
  """The split bucket of a key: the first 32 bits of md5('<seed>:<key as text>').

  PostgreSQL computes the same number in SQL (see `bucket_sql`), so a key
  lands in the same split on both.
  """
  if key is None:
    return None
  if isinstance(key, (bytes, memoryview)):
    key = bytes(key).decode("utf-8")
  return int(hashlib.md5(f"{seed}:{key}".encode("utf-8")).hexdigest()[:8], 16)


def check_percent(percentages: Mapping[str, float]) -> str | None:
  """What is wrong with a `split_percent` value (None if nothing): positive shares summing to 100."""
  total = sum(percentages.values())
  if any(value <= 0 for value in percentages.values()) or abs(total - 100) > 1e-9:
    return f"split_percent {dict(percentages)} must be positive and sum to 100 (they sum to {total})."
  return None


def bucket_ranges(percentages: Mapping[str, float]) -> dict[str, tuple[int, int]]:
  """Split name -> `[low, high)` buckets, consecutive in config order (percentages sum to 100)."""
  ranges, total, low = {}, 0.0, 0
  names = list(percentages)
  for index, name in enumerate(names):
    total += percentages[name]
    high = BUCKETS if index == len(names) - 1 else round(total / 100 * BUCKETS)
    ranges[name] = (low, high)
    low = high
  return ranges


def crc32_bucket(seed: Any, key: Any) -> int:
  """The bucket of `split_fractions` (deprecated): the CRC-32 of '<seed>:<key>'."""
  return zlib.crc32(f"{seed}:{key}".encode())


def fraction_ranges(fractions: Mapping[str, float]) -> dict[str, tuple[int, int]]:
  """`bucket_ranges` for `split_fractions` (summing to 1), as numpy_arrays always cut them.

  A bucket `b` was in the first split whose cumulative fraction `c` has
  `b / 2**32 < c`, that is `b < ceil(c * 2**32)` (scaling by 2**32 is exact).
  """
  ranges, total, low = {}, 0.0, 0
  names = list(fractions)
  for index, name in enumerate(names):
    total += fractions[name]
    high = BUCKETS if index == len(names) - 1 else min(BUCKETS, max(low, math.ceil(total * BUCKETS)))
    ranges[name] = (low, high)
    low = high
  return ranges


def split_of(ranges: Mapping[str, tuple[int, int]], bucket: int) -> str:
  """The split whose `[low, high)` bucket range holds `bucket`."""
  for name, (low, high) in ranges.items():
    if low <= bucket < high:
      return name
  raise ValueError(f"bucket {bucket} is outside [0, 2**32)")


def bucket_sql(driver: str, key_sql: str, seed_placeholder: str) -> str:
  """SQL computing `split_bucket(seed, key)` on `driver` (`postgresql` or `sqlite`)."""
  if driver == "sqlite":
    return f"{SQLITE_BUCKET_FUNCTION}({seed_placeholder}, {key_sql})"
  return (
      f"('x' || substr(md5({seed_placeholder} || ':' || ({key_sql})::text), 1, 8))"
      "::bit(32)::bigint"
  )


def register_sqlite(connection: sqlite3.Connection) -> None:
  """Lets SQL on `connection` call `tfds_bucket(seed, key)` (SQLite has no md5)."""
  connection.create_function(SQLITE_BUCKET_FUNCTION, 2, split_bucket, deterministic=True)
