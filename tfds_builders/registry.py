"""Publish prepared datasets to a registry root and load them by `namespace:name`.

A registry is a root path (local, shared, or any URL TFDS's path layer reads)
laid out as `<root>/<dataset>/<config>/<version>/`, i.e. a TFDS data_dir.
Every published version holds `registry_checksums.json` with the SHA-256 of
each file, written at publish time, and checked again when a namespace load
first reads the version in a process (see `register`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tomllib
import uuid
from typing import Any

from etils import epath

from tfds_builders import tfds_hooks
from tfds_builders.core import errors
from tfds_builders.core import safe_paths

CHECKSUMS_FILENAME = "registry_checksums.json"
CONFIG_ENV = "TFDS_BUILDERS_REGISTRY_CONFIG"
VERIFY_ENV = "TFDS_BUILDERS_REGISTRY_VERIFY"  # 0/false/no/off: namespace loads skip the checksums
_FALSE = ("0", "false", "no", "off")
_TRUE = ("", "1", "true", "yes", "on")
_INCOMING = ".incoming-"
_REPLACED = ".replaced-"
_CHUNK = 8 * 1024 * 1024
_REAL_FILES_ONLY = "A published dataset holds regular files only; replace the link by the file itself, or rebuild"


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
  with safe_paths.open_regular(path, _REAL_FILES_ONLY) as file:
    while chunk := file.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _identity(dataset_dir: epath.Path) -> tuple[str, str, str]:
  """(dataset, config, version) of a prepared version directory, each a valid TFDS name.

  Raises:
    SourceError: naming dataset_info.json and the field, if it is missing,
      unreadable, or names something that is no TFDS name (e.g. `../../x`).
  """
  hint = ("Fix dataset_info.json or rebuild the dataset (publish takes a prepared dataset version "
          "directory, such as DATA_DIR/numpy_arrays/demo/1.0.0)")
  dataset, config, version = safe_paths.dataset_identity(dataset_dir, hint)
  return dataset, config or "default", version


def publish(dataset_dir: epath.PathLike, registry: epath.PathLike, overwrite: bool = False) -> epath.Path:
  """Copies a prepared dataset version into the registry, atomically.

  The files are copied and checksummed under a hidden `.incoming-*` name next
  to the target and renamed into place only when complete, so readers never
  see a half-published version, and a killed publish leaves the previous state.
  The dataset name, config and version are validated before they are joined to
  the registry root; symlinks and special files are refused, never followed.

  Args:
    dataset_dir: A prepared version directory (holding dataset_info.json).
    registry: The registry root (it may itself be a symlink; no folder below
      it on the way to the version may be).
    overwrite: Replace an already published version of the same dataset
      (refused otherwise, and never replaces a folder that is not one).

  Returns:
    The published version directory.

  Raises:
    SourceError: if `dataset_dir` is not a prepared dataset, holds a symlink
      or special file, names an invalid dataset, config or version; or if the
      registry path holds a symlink or a foreign folder at the target.
    FileExistsError: if the version is published and `overwrite` is False.
  """
  source = epath.Path(dataset_dir)
  dataset, config, version = _identity(source)
  files = [
      path for path in safe_paths.regular_files(source, _REAL_FILES_ONLY)
      if path.name != CHECKSUMS_FILENAME
  ]
  root = epath.Path(registry)
  parts = (dataset, config, version)
  _check_target(root, parts, overwrite)
  config_dir = root / dataset / config
  target = config_dir / version
  config_dir.mkdir(parents=True, exist_ok=True)
  incoming = config_dir / f"{_INCOMING}{version}-{uuid.uuid4().hex[:8]}"
  try:
    incoming.mkdir()
    checksums = {path.name: _copy_file(path, incoming / path.name) for path in files}
    (incoming / CHECKSUMS_FILENAME).write_text(json.dumps(
        {"published_at": _now(), "sha256": checksums}, indent=2, sort_keys=True
    ))
    _check_target(root, parts, overwrite)  # again: the registry may have changed meanwhile
    if target.exists():
      replaced = config_dir / f"{_REPLACED}{version}-{uuid.uuid4().hex[:8]}"
      target.rename(replaced)
      incoming.rename(target)
      safe_paths.rmtree(replaced)
    else:
      incoming.rename(target)
  finally:
    if incoming.exists():
      safe_paths.rmtree(incoming)
  return target


def _check_target(root: epath.Path, parts: tuple[str, str, str], overwrite: bool) -> None:
  """Refuses symlinks below the root, and replacing anything but a published version of the same dataset."""
  dataset, config, version = parts
  label = f"{dataset}/{config}:{version}"
  safe_paths.refuse_symlinks(
      root, parts, f"publish of {label} to {root}", "Remove the symlink, or publish to another registry")
  safe_paths.refuse_non_folders(  # the version folder itself: below, as with --overwrite
      root, parts[:-1], f"publish of {label} to {root}", "Move it away, or publish to another registry")
  target = root.joinpath(*parts)
  if not target.exists():
    return
  if not overwrite:
    raise FileExistsError(
        f"{label} is already published at {target}; "
        "versions are immutable. Bump the version, or pass --overwrite."
    )
  hint = f"--overwrite only replaces a published {label}; move {target} away"

  def fail(message: str) -> errors.SourceError:
    return errors.SourceError(f"Cannot overwrite {target}: {message}")

  safe_paths.check_replaceable(target, hint, fail)
  checksums = target / CHECKSUMS_FILENAME
  if checksums.is_file() and not safe_paths.is_symlink(checksums):
    return  # a version this command published, however damaged: re-publishing is its repair
  existing, existing_config, existing_version = safe_paths.dataset_identity(target, hint, fail)
  if (existing, existing_config or "default", existing_version) != parts:
    raise fail(errors.with_hint(
        f"it holds {existing}/{existing_config or 'default'}:{existing_version}, not {label}", hint))


def _copy_file(source: epath.Path, destination: epath.Path) -> str:
  """Copies a regular file (never through a symlink) and returns the SHA-256 of the bytes copied."""
  digest = hashlib.sha256()
  with safe_paths.open_regular(source, _REAL_FILES_ONLY) as reader, \
      safe_paths.create_new(destination) as writer:
    while chunk := reader.read(_CHUNK):
      digest.update(chunk)
      writer.write(chunk)
  return digest.hexdigest()


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version_dirs(path: epath.Path) -> list[epath.Path]:
  """Published version directories at or under `path`, skipping hidden ones; symlinks are not followed."""
  return _walk(path)[0]


def _walk(path: epath.Path) -> tuple[list[epath.Path], list[epath.Path]]:
  """(version directories, symlinks) at or under `path`, in path order; symlinks are never followed.

  `path` itself may be a symlink (a registry root on a larger disk); below
  it, a symlinked dataset, config or version folder is reported, not entered.
  """
  if (path / "dataset_info.json").exists() or safe_paths.is_symlink(path / "dataset_info.json"):
    return [path], []
  versions: list[epath.Path] = []
  symlinks: list[epath.Path] = []
  if not path.is_dir():
    return versions, symlinks
  for child in sorted(path.iterdir()):
    if safe_paths.is_symlink(child):
      symlinks.append(child)
    elif child.is_dir() and not child.name.startswith("."):
      found, linked = _walk(child)
      versions += found
      symlinks += linked
  return versions, symlinks


def _symlink_damage(path: epath.Path, what: str) -> Damage:
  return Damage(str(path), f"a symlink (to {os.readlink(path)!r}), not {what}; a registry holds "
                           "real folders and files only (publish copies them)")


def verify(path: epath.PathLike) -> tuple[int, list[Damage]]:
  """Re-checks the checksums of every version at or under `path`.

  Args:
    path: A registry root, or a dataset, config or version directory in it.

  Returns:
    The number of versions checked, and every damaged, missing, unexpected
    or symlinked file, and every symlinked folder (never followed: a
    namespace load would not find what `publish` wrote there).

  Raises:
    SourceError: if `path` holds no published version and no symlink.
  """
  root = epath.Path(path)
  versions, symlinks = _walk(root)
  if not versions and not symlinks:
    raise errors.SourceError(
        f"No published dataset version at or under {root}. Pass a registry "
        "root or a <dataset>[/<config>[/<version>]] directory in it."
    )
  damages = [_symlink_damage(link, "a dataset, config or version folder") for link in symlinks]
  for version_dir in versions:
    damages += _verify_version(version_dir)
  return len(versions), damages


# (path, size, mtime, ctime, inode) -> SHA-256, of files verified in this
# process: a load re-reads a version many times, hashing it once is enough.
# Process-wide by nature: TFDS builds a new builder for every tfds.load.
_VERIFIED: dict[tuple[Any, ...], str] = {}


def _verified_sha256(path: epath.Path, cached: bool) -> str:
  if not cached:
    return _sha256(path)
  if safe_paths.is_local(path):
    status = os.stat(os.fspath(path), follow_symlinks=False)
    key = (os.fspath(path), status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)
  else:
    status = path.stat()
    key = (os.fspath(path), status.length, status.mtime)
  if key not in _VERIFIED:
    _VERIFIED[key] = _sha256(path)
  return _VERIFIED[key]


def _verify_version(version_dir: epath.Path, cached: bool = False) -> list[Damage]:
  if safe_paths.is_symlink(version_dir):
    return [_symlink_damage(version_dir, "a published version folder")]
  checksums_path = version_dir / CHECKSUMS_FILENAME
  if not checksums_path.exists() and not safe_paths.is_symlink(checksums_path):
    return [Damage(str(checksums_path), "no checksums recorded (not published with tfds-builders publish)")]
  try:
    with safe_paths.open_regular(checksums_path, _REAL_FILES_ONLY) as file:
      expected = json.loads(file.read())["sha256"]
    if not isinstance(expected, dict):
      raise TypeError("'sha256' is not an object")
  except (errors.SourceError, ValueError, KeyError, TypeError) as error:
    return [Damage(str(checksums_path), f"unreadable ({error})")]
  damages = []
  for name, digest in sorted(expected.items()):
    if not _is_file_name(name):  # joined to version_dir: a plain file name, never a path
      damages.append(Damage(str(checksums_path), f"lists {name!r}, which is not a file name"))
      continue
    file_path = version_dir / name
    if safe_paths.is_symlink(file_path):
      damages.append(Damage(str(file_path), f"a symlink (to {os.readlink(file_path)!r}), not the published file"))
    elif not file_path.exists():
      damages.append(Damage(str(file_path), "missing"))
    elif not file_path.is_file():
      damages.append(Damage(str(file_path), "not a regular file"))
    elif _verified_sha256(file_path, cached) != digest:
      damages.append(Damage(str(file_path), "checksum mismatch (damaged or modified)"))
  present = {p.name for p in version_dir.iterdir() if safe_paths.is_symlink(p) or not p.is_dir()}
  for name in sorted(present - set(expected) - {CHECKSUMS_FILENAME}):
    damages.append(Damage(str(version_dir / name), "unexpected file (not published)"))
  for folder in sorted(p for p in version_dir.iterdir() if p.is_dir() and not safe_paths.is_symlink(p)):
    damages.append(Damage(str(folder), "unexpected folder (publish copies files only)"))
  return damages


def _is_file_name(name: str) -> bool:
  try:
    return len(safe_paths.relative_parts(name, "", "")) == 1
  except errors.SourceError:
    return False


def check_before_load(version_dir: epath.PathLike) -> None:
  """Raises unless every file of a published version matches its recorded checksum.

  Called by namespace loads (see `register`) before TFDS reads the version.
  Each file is hashed once per process while its size, mtime, ctime and inode
  stay the same. Skipped when $TFDS_BUILDERS_REGISTRY_VERIFY is 0/false/no/off.

  Raises:
    SourceError: naming the first damaged, missing, unexpected or symlinked
      file (and how many there are), and saying to re-publish or re-fetch.
    ConfigError: if $TFDS_BUILDERS_REGISTRY_VERIFY is not a yes/no value.
  """
  if not _verify_on_load():
    return
  version_dir = epath.Path(version_dir)
  damages = _verify_version(version_dir, cached=True)
  if damages:
    first = damages[0]
    more = f" (and {len(damages) - 1} more problem(s))" if len(damages) > 1 else ""
    raise errors.SourceError(errors.with_hint(
        f"{first.path}: {first.problem}{more}; {version_dir} no longer matches the checksums "
        "recorded when it was published",
        f"Re-publish it (tfds-builders publish --overwrite) or re-fetch it; `tfds-builders verify "
        f"{version_dir}` lists every problem. To load unverified, set {VERIFY_ENV}=0 or "
        "register the namespace with verify=False",
    ))


def _verify_on_load() -> bool:
  value = os.environ.get(VERIFY_ENV, "").strip().lower()
  if value not in _TRUE + _FALSE:
    raise errors.ConfigError(f"{VERIFY_ENV}={value!r}; use 1 (check checksums on load, the default) or 0.")
  return value not in _FALSE


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
    *,
    verify: bool = True,
) -> dict[str, str]:
  """Makes `tfds.load("namespace:dataset/config:version")` read a registry.

  Either one `namespace` with its `root`, or every namespace of a TOML file
  (`config_path`, or the file named by $TFDS_BUILDERS_REGISTRY_CONFIG).

  Args:
    namespace: The namespace name.
    root: Its registry root.
    config_path: A TOML file with a `[namespaces]` table, instead.
    verify: Check each version against its recorded checksums before TFDS
      reads it (`check_before_load`). False loads unverified: an explicit
      opt-out, as is $TFDS_BUILDERS_REGISTRY_VERIFY=0.

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
    tfds_hooks.register_namespace(name, namespace_root, before_load=check_before_load if verify else None)
  return namespaces


def register_from_env() -> dict[str, str]:
  """Registers the namespaces of $TFDS_BUILDERS_REGISTRY_CONFIG, if it is set."""
  return register() if os.environ.get(CONFIG_ENV) else {}
