"""What a dataset was built from, secrets redacted, stored in its metadata."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from etils import epath

from tfds_builders.version import __version__

PROVENANCE_KEY = "provenance"
METADATA_FILENAME = "metadata.json"
REDACTED = "***"

# Fields of tfds.core.BuilderConfig itself; TFDS records those on its own.
_TFDS_CONFIG_FIELDS = ("release_notes", "supported_versions", "tags")
# Credential names, matched whole (`db_password` too): never `tokens`, `passages`, `password_hash`.
_SECRET_NAMES = ("password", "sslpassword", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_key",
                 "secret_key", "secret_access_key", "access_token", "session_token", "refresh_token",
                 "auth_token", "private_key", "client_secret", "credential", "credentials")
_SECRET_KEY = re.compile(rf"(?:^|.*[_-])(?:{'|'.join(_SECRET_NAMES)})", re.I)
# A map is a credential map if it says where to connect, or is held under a key that says so.
_CONNECTION_KEYS = frozenset({"driver", "dsn", "host", "url", "uri", "connection", "user", "username",
                              "endpoint", "endpoint_url"})
_CREDENTIAL_HOLDER = re.compile(r"(?:^|.*[_-])(?:connection|credentials?|auth|storage_options|client_kwargs)", re.I)
# Keys whose strings are SQL: the user's text, kept; only connection strings in its literals are redacted.
_SQL_KEYS = frozenset({"sql", "query", "queries", "split_queries", "side_table_sql", "prov:value"})
_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'")
# libpq's `password=...`/`sslpassword=...` (quoted or up to a space), and a URI's `?password=...&`.
_DSN_PASSWORD = re.compile(r"((?<![\w?&-])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)([^&#\s]*)", re.I)
_URI_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]*)(@)", re.I)


def redact(value: Any, *, credentials: bool = False, sql: bool = False) -> Any:
  """Returns `value` with passwords and other secrets replaced by `***`.

  Strings have `password=...` DSN fields and `user:pass@` URI credentials
  replaced. In a credential map (one holding `driver`, `dsn`, `host`, ...,
  or held under `*_connection`, `credentials`, ...) the values of keys
  naming a secret (`password`, `db_password`, `token`, ...) are replaced.
  Keys elsewhere are the user's data (split, feature and column names) and
  are never taken for secrets; SQL text (under `sql`, `query`, ...) is kept,
  save connection strings in its string literals.

  Args:
    value: Any JSON-like value.
    credentials: Whether `value` is held under a key naming credentials.
    sql: Whether strings in `value` are SQL text.
  """
  if isinstance(value, Mapping):
    is_credentials = credentials or any(str(key).lower() in _CONNECTION_KEYS for key in value)
    return {
        key: REDACTED if is_credentials and val and _SECRET_KEY.fullmatch(str(key))
        else redact(val, credentials=bool(_CREDENTIAL_HOLDER.fullmatch(str(key))),
                    sql=sql or str(key).lower() in _SQL_KEYS)
        for key, val in value.items()
    }
  if isinstance(value, (list, tuple)):
    return [redact(item, credentials=credentials, sql=sql) for item in value]
  if isinstance(value, str):
    if sql:
      return _SQL_LITERAL.sub(lambda literal: f"'{redact(literal.group()[1:-1])}'", value)
    value = _DSN_PASSWORD.sub(rf"\g<1>{REDACTED}", value)
    value = _QUERY_PASSWORD.sub(rf"\g<1>{REDACTED}", value)
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


@dataclasses.dataclass(frozen=True)
class SourceRead:
  """One source a build read, as TFDS's `DataSourceAccess` and Croissant name it.

  Attributes:
    kind: `file` (a path, or a glob when `is_pattern`), `tfds` (a prepared
      TFDS dataset) or `sql` (a query).
    location: The file path; the TFDS data_dir; the SQL connection, redacted.
    is_pattern: Whether `location` is a glob to expand.
    name: The TFDS dataset name.
    config: The TFDS config name ('' if none).
    version: The TFDS version.
    query: The SQL text as run.
  """

  kind: str
  location: str
  is_pattern: bool = False
  name: str = ""
  config: str = ""
  version: str = ""
  query: str = ""


# An `.npz` member, as numpy_arrays names its sources: `a.npz[image.npy]`.
_NPZ_MEMBER = re.compile(r"(?<=\.npz)\[[^\[\]]*\]$", re.I)


def sources_read(record: Mapping[str, Any]) -> list[SourceRead]:
  """What a build read (files, TFDS datasets, SQL), from its provenance record.

  Each builder records its sources in its own shape; this reads all five.
  Records of unknown builders give no sources.
  """
  reader = _SOURCE_READERS.get(record.get("builder", ""))
  found = reader(record, (record.get("config") or {}).get("data_root")) if reader else []
  return list(dict.fromkeys(found))  # repeats (a file in two splits) once, in order


def _file(path: str, root: str | None) -> SourceRead:
  """A file source; a relative path is taken from `root`, then from the working dir."""
  if "://" in path:
    return SourceRead("file", path)
  if root and not os.path.isabs(path):
    path = os.path.join(root, path)
  # A relative data_root is the build's working dir's: right while building.
  return SourceRead("file", os.path.abspath(os.path.expanduser(path)))


def _tfds(full_name: str, version: str, *, data_dir: str | None = None,
          version_dir: str | None = None) -> SourceRead:
  """A TFDS source from `name[/config][/version]` and its data_dir or version dir."""
  parts = full_name.split("/")
  if len(parts) > 1 and parts[-1] == version:
    parts = parts[:-1]
  name, config = parts[0], "/".join(parts[1:])
  if not data_dir and version_dir:
    # `<data_dir>/<name>/<config>/<version>`: the data_dir is above name (and config).
    data_dir = version_dir.rstrip("/").rsplit("/", 3 if config else 2)[0]
  return SourceRead("tfds", data_dir or "", name=name, config=config, version=version)


def _listed_names(by_split: Any) -> list[str]:
  """The names in a `{split: [name, ...]}` record; anything but a list of strings is no source."""
  if not isinstance(by_split, Mapping):
    return []
  return [name for names in by_split.values() if isinstance(names, list)
          for name in names if isinstance(name, str)]


def _numpy_arrays_sources(record: Mapping[str, Any], root: str | None) -> list[SourceRead]:
  del root  # numpy_arrays' source names already include it
  return [_file(_NPZ_MEMBER.sub("", name), None) for name in _listed_names(record.get("sources"))]


def _concatenated_sources(record: Mapping[str, Any], root: str | None) -> list[SourceRead]:
  entries = {entry.get("name"): entry for entry in (record.get("config") or {}).get("sources") or []
             if isinstance(entry, Mapping)}
  found = []
  for source in record.get("sources") or []:
    if not isinstance(source, Mapping):
      continue
    if source.get("kind") != "tfds":
      found.extend(_file(name, root) for name in _listed_names(source.get("files")))
      continue
    entry = entries.get(source.get("name"), {})
    data_dir = _file(str(entry["data_dir"]), root).location if entry.get("data_dir") else None
    version_dir = _file(str(entry["dataset_dir"]), root).location if entry.get("dataset_dir") else None
    found.append(_tfds(str(source.get("dataset") or ""), str(source.get("version") or ""),
                       data_dir=data_dir, version_dir=version_dir))
  return found


def _cross_product_sources(record: Mapping[str, Any], root: str | None) -> list[SourceRead]:
  return [_file(name, root) for name in _listed_names(record.get("sources"))]


def _database_sources(record: Mapping[str, Any], root: str | None) -> list[SourceRead]:
  del root  # the session reports absolute locations
  connection = connection_uri(record.get("source") or {})
  return [
      SourceRead("sql", connection, query=str(query.get("sql", "")))
      for query in (record.get("queries") or {}).values() if isinstance(query, Mapping)
  ]


def _augmented_sources(record: Mapping[str, Any], root: str | None) -> list[SourceRead]:
  config = record.get("config") or {}
  base = record.get("base") or {}
  found = []
  if base.get("kind") == "prepared":
    found.append(_tfds(str(base.get("name") or ""), str(base.get("version") or ""),
                       version_dir=str(base.get("path") or "")))
  else:
    for patterns in (config.get("base_records") or {}).values():
      for pattern in [patterns] if isinstance(patterns, str) else patterns:
        source = _file(pattern, root)
        found.append(dataclasses.replace(source, is_pattern=bool(re.search(r"[*?\[]", pattern))))
  side = record.get("side_table") or {}
  if config.get("side_table_sql"):
    connection = str(side.get("source") or "").removeprefix("SQL query on ")
    found.append(SourceRead("sql", redact(connection), query=str(config["side_table_sql"])))
  elif side.get("source"):
    found.append(_file(str(side["source"]), root))
  return found


def connection_uri(facts: Mapping[str, Any]) -> str:
  """Where a SQL source lives, as a URI without any password.

  Args:
    facts: A session's `facts()`, as the database builder records them.
  """
  if facts.get("driver") == "sqlite" and facts.get("path"):
    return f"sqlite://{facts['path']}" if str(facts["path"]).startswith("/") else f"sqlite:{facts['path']}"
  if facts.get("driver") == "postgresql" and facts.get("host"):
    user = f"{facts['user']}@" if facts.get("user") else ""
    port = f":{facts['port']}" if facts.get("port") else ""
    return f"postgresql://{user}{facts['host']}{port}/{facts.get('dbname') or ''}"
  return redact(str(facts.get("connection") or facts.get("driver") or "unknown connection"))


_SOURCE_READERS = {
    "numpy_arrays": _numpy_arrays_sources,
    "concatenated": _concatenated_sources,
    "cross_product": _cross_product_sources,
    "database": _database_sources,
    "augmented": _augmented_sources,
}
