"""Where a SQL read connects: the connection spec, its timeouts, and password redaction."""

from __future__ import annotations

import dataclasses
import os
import re

from tfds_builders.core import errors
from tfds_builders.core import provenance

DRIVERS = ("postgresql", "sqlite")
DEFAULT_APPLICATION_NAME = "tfds_builders"

_TIMEOUT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")
_TIMEOUT_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}


@dataclasses.dataclass(frozen=True)
class ConnectionSpec:
  """Where to read from. Picklable; `where()` is safe to log.

  Attributes:
    driver: `postgresql` or `sqlite`.
    dsn: A libpq DSN (`host=... dbname=...`) or URI (`postgresql://...`).
      Empty: libpq's environment variables (PGHOST, PGUSER, PGPASSWORD,
      PGDATABASE, ...) and `~/.pgpass` decide.
    dsn_env: Name of an environment variable holding the DSN, read where the
      connection is opened (so the DSN stays out of configs and pickles).
    sqlite_path: The SQLite database file, opened read-only.
    application_name: PostgreSQL `application_name` unless the DSN sets one.
    connect_timeout: Seconds to wait for PostgreSQL, unless the DSN says.
    statement_timeout: Longest run of one statement: milliseconds (int) or
      a duration ("500ms", "30s", "5min", "1h"); empty: the server's
      setting (a DSN may also say `options='-c statement_timeout=30s'`).
      SQLite interrupts a statement that runs longer.
    lock_timeout: Longest wait for a lock, same units. SQLite: the busy
      timeout (default 5 s).
  """

  driver: str
  dsn: str = dataclasses.field(default="", repr=False)
  dsn_env: str = ""
  sqlite_path: str = ""
  application_name: str = DEFAULT_APPLICATION_NAME
  connect_timeout: int = 10
  statement_timeout: int | str = ""
  lock_timeout: int | str = ""

  def __post_init__(self):
    for setting in ("statement_timeout", "lock_timeout"):
      timeout_ms(getattr(self, setting), setting)  # refuse a bad value at config time

  def resolved_dsn(self) -> str:
    """The DSN to connect with (from `dsn_env` when set).

    Raises:
      ConfigError: if `dsn_env` names an unset variable.
    """
    if not self.dsn_env:
      return self.dsn
    value = os.environ.get(self.dsn_env)
    if value is None:
      raise errors.ConfigError(
          f"dsn_env={self.dsn_env!r} names an environment variable that is not "
          "set. Export it (export NAME='host=... dbname=...'), or give `dsn`."
      )
    return value

  def where(self) -> str:
    """What this connects to, with any password redacted."""
    if self.driver == "sqlite":
      return f"SQLite {self.sqlite_path}"
    if self.dsn_env:
      return f"PostgreSQL DSN from ${self.dsn_env}"
    if not self.dsn:
      return "PostgreSQL via libpq environment variables"
    return f"PostgreSQL DSN {redact(self.dsn, self.dsn)}"


def timeout_ms(value: int | str, setting: str) -> int | None:
  """A timeout setting in milliseconds (None: not set).

  Raises:
    ConfigError: naming `setting`, for anything but a count of milliseconds
      or a number with a unit (ms, s, min, h).
  """
  if value in ("", None):
    return None
  if isinstance(value, bool):
    match = None
  elif isinstance(value, (int, float)):
    match = _TIMEOUT.match(f"{value}ms") if value >= 0 else None
  else:
    match = _TIMEOUT.match(str(value))
  if not match:
    raise errors.ConfigError(
        f"{setting}={value!r} is not a duration. Give milliseconds (30000) or a "
        "number with a unit: '500ms', '30s', '5min', '1h'."
    )
  return round(float(match.group(1)) * _TIMEOUT_UNITS_MS[match.group(2) or "ms"])


def redact(text: str, dsn: str = "") -> str:
  """`text` with DSN/URI passwords and the literal password of `dsn` or PGPASSWORD removed."""
  text = provenance.redact(text)
  for secret in (_dsn_password(dsn), os.environ.get("PGPASSWORD", "")):
    if secret:
      text = text.replace(secret, provenance.REDACTED)
  return text


def _dsn_password(dsn: str) -> str:
  if not dsn:
    return ""
  try:
    from psycopg2.extensions import parse_dsn  # pylint: disable=g-import-not-at-top
    return parse_dsn(dsn).get("password", "")
  except Exception:  # pylint: disable=broad-except  # unparsable: nothing to find
    return ""
