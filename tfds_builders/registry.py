"""Publish prepared datasets to a registry root and load them by `namespace:name`.

A registry is a root path (local, shared, or any URL TFDS's path layer reads)
laid out as `<root>/<dataset>/<config>/<version>/`, i.e. a TFDS data_dir.
Every published version holds `registry_checksums.json` with the SHA-256 of
each file, written at publish time.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tomllib
import uuid
from collections.abc import Iterator
from typing import Any

from etils import epath

from tfds_builders import tfds_hooks
from tfds_builders.core import errors

CHECKSUMS_FILENAME = "registry_checksums.json"
CONFIG_ENV = "TFDS_BUILDERS_REGISTRY_CONFIG"
_INCOMING = ".incoming-"
_REPLACED = ".replaced-"
_CHUNK = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class VersionEntry:
  """One published dataset version, as `list_versions` reports it."""

  dataset: str
  config: str
  version: str
  path: str
  num_bytes: int
  num_examples: dict[str, int]
  built_at: str
  provenance_summary: str


@dataclasses.dataclass(frozen=True)
class Damage:
  """A file of a published version that no longer matches its checksum."""

  path: str
  problem: str


def _sha256(path: epath.Path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as file:
    while chunk := file.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _identity(dataset_dir: epath.Path) -> tuple[str, str, str]:
  """(dataset, config, version) of a prepared version directory."""
  info_path = dataset_dir / "dataset_info.json"
  if not info_path.exists():
    raise errors.SourceError(
        f"{info_path} not found: publish takes a prepared dataset version "
        "directory, such as DATA_DIR/numpy_arrays/demo/1.0.0."
    )
  info = json.loads(info_path.read_text())
  return info["name"], info.get("configName") or "default", info["version"]


def publish(dataset_dir: epath.PathLike, registry: epath.PathLike, overwrite: bool = False) -> epath.Path:
  """Copies a prepared dataset version into the registry, atomically.

  The files are copied and checksummed under a hidden `.incoming-*` name next
  to the target and renamed into place only when complete, so readers never
  see a half-published version, and a killed publish leaves the previous state.

  Args:
    dataset_dir: A prepared version directory (holding dataset_info.json).
    registry: The registry root.
    overwrite: Replace an already published version (refused otherwise).

  Returns:
    The published version directory.

  Raises:
    SourceError: if `dataset_dir` is not a prepared dataset.
    FileExistsError: if the version is published and `overwrite` is False.
  """
  source = epath.Path(dataset_dir)
  dataset, config, version = _identity(source)
  config_dir = epath.Path(registry) / dataset / config
  target = config_dir / version
  if target.exists() and not overwrite:
    raise FileExistsError(
        f"{dataset}/{config}:{version} is already published at {target}; "
        "versions are immutable. Bump the version, or pass --overwrite."
    )
  config_dir.mkdir(parents=True, exist_ok=True)
  incoming = config_dir / f"{_INCOMING}{version}-{uuid.uuid4().hex[:8]}"
  incoming.mkdir()
  checksums = {}
  for path in sorted(source.iterdir()):
    if path.is_dir() or path.name == CHECKSUMS_FILENAME:
      continue
    path.copy(incoming / path.name)
    checksums[path.name] = _sha256(incoming / path.name)
  (incoming / CHECKSUMS_FILENAME).write_text(json.dumps(
      {"published_at": _now(), "sha256": checksums}, indent=2, sort_keys=True
  ))
  if target.exists():
    replaced = config_dir / f"{_REPLACED}{version}-{uuid.uuid4().hex[:8]}"
    target.rename(replaced)
    incoming.rename(target)
    replaced.rmtree()
  else:
    incoming.rename(target)
  return target


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version_dirs(path: epath.Path) -> Iterator[epath.Path]:
  """Published version directories at or under `path`, skipping hidden ones."""
  if (path / "dataset_info.json").exists():
    yield path
    return
  if not path.is_dir():
    return
  for child in sorted(path.iterdir()):
    if child.is_dir() and not child.name.startswith("."):
      yield from _version_dirs(child)


def verify(path: epath.PathLike) -> tuple[int, list[Damage]]:
  """Re-checks the checksums of every version at or under `path`.

  Args:
    path: A registry root, or a dataset, config or version directory in it.

  Returns:
    The number of versions checked, and every damaged or missing file.

  Raises:
    SourceError: if `path` holds no published version.
  """
  root = epath.Path(path)
  damages: list[Damage] = []
  versions = list(_version_dirs(root))
  if not versions:
    raise errors.SourceError(
        f"No published dataset version at or under {root}. Pass a registry "
        "root or a <dataset>[/<config>[/<version>]] directory in it."
    )
  for version_dir in versions:
    damages += _verify_version(version_dir)
  return len(versions), damages


def _verify_version(version_dir: epath.Path) -> list[Damage]:
  checksums_path = version_dir / CHECKSUMS_FILENAME
  if not checksums_path.exists():
    return [Damage(str(checksums_path), "no checksums recorded (not published with tfds-builders publish)")]
  expected = json.loads(checksums_path.read_text())["sha256"]
  damages = []
  for name, digest in sorted(expected.items()):
    file_path = version_dir / name
    if not file_path.exists():
      damages.append(Damage(str(file_path), "missing"))
    elif _sha256(file_path) != digest:
      damages.append(Damage(str(file_path), "checksum mismatch (damaged or modified)"))
  present = {p.name for p in version_dir.iterdir() if not p.is_dir()}
  for name in sorted(present - set(expected) - {CHECKSUMS_FILENAME}):
    damages.append(Damage(str(version_dir / name), "unexpected file (not published)"))
  return damages


def list_versions(registry: epath.PathLike) -> list[VersionEntry]:
  """Every published version under a registry root, with sizes and counts."""
  root = epath.Path(registry)
  if not root.is_dir():
    raise errors.SourceError(f"Registry root {root} does not exist or is not a directory.")
  return [_entry(version_dir) for version_dir in _version_dirs(root)]


def _entry(version_dir: epath.Path) -> VersionEntry:
  dataset, config, version = _identity(version_dir)
  info = json.loads((version_dir / "dataset_info.json").read_text())
  metadata_path = version_dir / "metadata.json"
  provenance = json.loads(metadata_path.read_text()).get("provenance", {}) if metadata_path.exists() else {}
  return VersionEntry(
      dataset=dataset,
      config=config,
      version=version,
      path=str(version_dir),
      num_bytes=sum(p.stat().length for p in version_dir.iterdir() if not p.is_dir()),
      num_examples={
          split["name"]: sum(int(n) for n in split.get("shardLengths", []))
          for split in info.get("splits", [])
      },
      built_at=provenance.get("built_at", ""),
      provenance_summary=_summary(provenance),
  )


def _summary(provenance: dict[str, Any]) -> str:
  if not provenance:
    return "no provenance recorded"
  sources = provenance.get("sources")
  count = sum(len(v) for v in sources.values()) if isinstance(sources, dict) else len(sources or [])
  return f"built by {provenance.get('builder')} {provenance.get('package_version')} from {count} source(s)"


# -- namespaces -------------------------------------------------------------


def read_namespaces(config_path: epath.PathLike) -> dict[str, str]:
  """Reads `[namespaces] name = "root"` from a TOML file.

  Raises:
    ConfigError: if the file is missing, is not TOML, or has no namespaces.
  """
  path = epath.Path(config_path)
  try:
    parsed = tomllib.loads(path.read_text())
  except FileNotFoundError as error:
    raise errors.ConfigError(f"Registry config {path} not found (from {CONFIG_ENV} or the argument).") from error
  except tomllib.TOMLDecodeError as error:
    raise errors.ConfigError(f"Registry config {path} is not valid TOML: {error}.") from error
  namespaces = parsed.get("namespaces")
  if not isinstance(namespaces, dict) or not namespaces:
    raise errors.ConfigError(
        f'Registry config {path} has no [namespaces] table; write e.g.\n'
        '[namespaces]\nteam = "/shared/tfds_registry"'
    )
  return {str(name): str(root) for name, root in namespaces.items()}


def register(
    namespace: str | None = None,
    root: epath.PathLike | None = None,
    config_path: epath.PathLike | None = None,
) -> dict[str, str]:
  """Makes `tfds.load("namespace:dataset/config:version")` read a registry.

  Either one `namespace` with its `root`, or every namespace of a TOML file
  (`config_path`, or the file named by $TFDS_BUILDERS_REGISTRY_CONFIG).

  Returns:
    The namespaces registered, with their roots.
  """
  if namespace is not None:
    if root is None:
      raise errors.ConfigError("register(namespace=...) needs root=... too.")
    namespaces = {namespace: str(root)}
  else:
    config_path = config_path or os.environ.get(CONFIG_ENV)
    if not config_path:
      raise errors.ConfigError(f"Give a namespace and root, a config_path, or set {CONFIG_ENV}.")
    namespaces = read_namespaces(config_path)
  for name, namespace_root in namespaces.items():
    tfds_hooks.register_namespace(name, namespace_root)
  return namespaces


def register_from_env() -> dict[str, str]:
  """Registers the namespaces of $TFDS_BUILDERS_REGISTRY_CONFIG, if it is set."""
  return register() if os.environ.get(CONFIG_ENV) else {}
