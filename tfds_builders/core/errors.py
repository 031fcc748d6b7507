"""Exception types whose messages name the file, record or feature and say what to do."""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any


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


def check_choice(
    value: Any,
    choices: Container[Any],
    field: str,
    fail: Callable[[str], Exception] = ConfigError,
) -> None:
  """Raises `fail("field=value; use one of choices.")` unless value is a choice.

  Args:
    value: The configured value.
    choices: The accepted values (shown as given in the message).
    field: The config field's name.
    fail: Builds the exception from the message (e.g. to prefix the config name).
  """
  if value not in choices:
    raise fail(f"{field}={value!r}; use one of {choices}.")
