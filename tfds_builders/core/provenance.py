"""What a dataset was built from, secrets redacted, stored in its metadata."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

from etils import epath

PROVENANCE_KEY = "provenance"
METADATA_FILENAME = "metadata.json"
REDACTED = "***"

# Fields of tfds.core.BuilderConfig itself; TFDS records those on its own.
_TFDS_CONFIG_FIELDS = ("release_notes", "supported_versions", "tags")
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api_?key|credential", re.I)
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_URI_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)", re.I)


def redact(value: Any) -> Any:
  """Returns `value` with passwords and other secrets replaced by `***`.

  Mapping keys that name a secret (password, token, ...) have their values
  replaced; strings have `password=...` DSN fields and `user:pass@` URI
  credentials replaced.
  """
  if isinstance(value, Mapping):
    return {
        key: REDACTED if _SECRET_KEY.search(str(key)) and val else redact(val)
        for key, val in value.items()
    }
  if isinstance(value, (list, tuple)):
    return [redact(item) for item in value]
  if isinstance(value, str):
    value = _DSN_PASSWORD.sub(rf"\g<1>{REDACTED}", value)
    return _URI_PASSWORD.sub(rf"\g<1>{REDACTED}\g<3>", value)
  return value


def config_values(config: Any) -> dict[str, Any]:
  """The user-set fields of a BuilderConfig dataclass, as JSON-ready values."""
  values = {
      field.name: getattr(config, field.name)
      for field in dataclasses.fields(config)
      if field.name not in _TFDS_CONFIG_FIELDS
  }
  values["version"] = str(values.get("version") or "")
  return json.loads(json.dumps(values, default=str))


def build_provenance(
    *, builder_name: str, config: Any, **details: Any
) -> dict[str, Any]:
  """Assembles the provenance record of one build, secrets redacted.

  Args:
    builder_name: The registered TFDS name of the builder.
    config: The BuilderConfig the dataset was built with.
    **details: Builder-specific facts: sources, policies, counts.

  Returns:
    A JSON-serializable dict.
  """
  from tfds_builders import __version__  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  record = {
      "builder": builder_name,
      "config": config_values(config),
      "package_version": __version__,
      "tfds_version": tfds.__version__,
      "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"
      ),
      **details,
  }
  return redact(json.loads(json.dumps(record, default=str)))


def read_provenance(dataset_dir: epath.PathLike) -> dict[str, Any]:
  """Reads the provenance record of a prepared dataset directory.

  Raises:
    FileNotFoundError: if the directory holds no metadata written by us.
  """
  path = epath.Path(dataset_dir) / METADATA_FILENAME
  if not path.exists():
    raise FileNotFoundError(
        f"{path} not found: {dataset_dir} was not built by tfds_builders, or "
        "is not a prepared dataset version directory (it should contain "
        "dataset_info.json)."
    )
  return json.loads(path.read_text()).get(PROVENANCE_KEY, {})
