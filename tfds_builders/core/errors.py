"""Exception types whose messages name the file, record or feature and say what to do."""

from __future__ import annotations


class TfdsBuildersError(Exception):
  """Base class of every error this package raises on bad input or config."""


class ConfigError(TfdsBuildersError, ValueError):
  """A builder config value is missing, unknown or inconsistent."""


class SourceError(TfdsBuildersError):
  """A source (file, directory, glob, table) is missing, empty or unreadable."""


class SchemaError(TfdsBuildersError, TypeError):
  """Data cannot be stored under the inferred or declared features."""


def with_hint(message: str, hint: str) -> str:
  """Joins a diagnosis and the action that fixes it into one message."""
  return f"{message.rstrip('.')}. {hint}"
