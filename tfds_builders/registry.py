"""Publish prepared datasets to a registry root and load them by `namespace:name`.

A registry is a root path (local, shared, or a URL of the path layer,
`core.remote`) laid out as `<root>/<dataset>/<config>/<version>/`, i.e. a TFDS
data_dir; one TensorFlow cannot read (s3://) is loaded from a local mirror.
Every published version holds `registry_checksums.json` with the SHA-256 of
each file, written at publish time, and checked again when a namespace load
first reads the version in a process (see `register`).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import re
import tomllib
import uuid
from typing import Any

from etils import epath

from tfds_builders import tfds_internals
from tfds_builders.core import croissant
from tfds_builders.core import errors
from tfds_builders.core import remote
from tfds_builders.core import safe_paths

CHECKSUMS_FILENAME = "registry_checksums.json"
CONFIG_ENV = "TFDS_BUILDERS_REGISTRY_CONFIG"
VERIFY_ENV = "TFDS_BUILDERS_REGISTRY_VERIFY"  # 0/false/no/off: namespace loads skip the checksums
_FALSE = ("0", "false", "no", "off")
_TRUE = ("", "1", "true", "yes", "on")
_INCOMING = ".incoming-"
_REPLACED = ".replaced-"
_CHUNK = 8 * 1024 * 1024
_ROOT = "Registry root"
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
  remote.refuse_credentials(registry, _ROOT)
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
    published_at = _now()
    # The published copy's Croissant says when it was published; its shard checksums stand.
    checksums[croissant.FILENAME] = croissant.stamp_published(incoming, published_at)
    (incoming / CHECKSUMS_FILENAME).write_text(json.dumps(
        {"published_at": published_at, "sha256": checksums}, indent=2, sort_keys=True
    ))
    _check_target(root, parts, overwrite)  # again: the registry may have changed meanwhile
    if remote.is_remote(target):
      remote.move_tree(incoming, target, CHECKSUMS_FILENAME)  # an object store renames no folder
    elif target.exists():
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
  # On an object store a version without checksums is a publish killed before its last file: completed now.
  interrupted = remote.is_remote(target) and not (target / CHECKSUMS_FILENAME).exists()
  if not overwrite and not interrupted:
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
  remote.refuse_credentials(path, _ROOT)
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
  remote.refuse_credentials(registry, _ROOT)
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
  """Reads the namespaces of a TOML file, in our layout or TFDS's.

  Ours: `[namespaces]` then `team = "/shared/registry"`, one line per
  namespace. TFDS's (its `community-datasets.toml`): one table per namespace,
  `[team]` then `paths = ["/shared/registry"]` (or a string) and an optional
  `info`. Both may be mixed in one file.

  A relative root is resolved against the TOML file's folder, as the
  paths of any config file are, never against the current directory.

  Raises:
    ConfigError: naming the file, if it is missing, unreadable, not TOML,
      holds no namespace; naming the key, if a namespace is no TFDS namespace
      name, is defined twice, or has no single root (or one with credentials).
  """
  path = epath.Path(config_path)
  fix = f"Fix the file, or point {CONFIG_ENV} elsewhere"
  try:
    parsed = tomllib.loads(path.read_text())
  except FileNotFoundError as error:
    raise errors.ConfigError(errors.with_hint(
        f"Registry config {path} not found (from {CONFIG_ENV} or the argument)", f"Create it, or unset {CONFIG_ENV}",
    )) from error
  except (OSError, UnicodeDecodeError) as error:
    raise errors.ConfigError(errors.with_hint(f"Registry config {path} cannot be read: {error}", fix)) from error
  except tomllib.TOMLDecodeError as error:
    raise errors.ConfigError(errors.with_hint(f"Registry config {path} is not valid TOML: {error}", fix)) from error
  entries = []  # (namespace, TOML key, root), in file order
  for name, table in parsed.items():
    if name == "namespaces" and isinstance(table, dict) and "paths" not in table:
      entries += [(key, f"namespaces.{key}", root) for key, root in table.items()]
    elif isinstance(table, dict) and "paths" in table:  # TFDS's layout
      entries.append((name, f"{name}.paths", table["paths"]))
  namespaces: dict[str, tuple[str, Any]] = {}
  for name, key, root in entries:
    if not tfds_internals.namespace_pattern().fullmatch(name):
      raise errors.ConfigError(
          f"Registry config {path}: {key}: {name!r} is no namespace name tfds.load can parse; "
          "use letters, digits, '_' and '-' only (e.g. team or my-team)")
    if name in namespaces:
      raise errors.ConfigError(
          f"Registry config {path}: namespace {name!r} is defined twice ({namespaces[name][0]} and {key}); "
          "keep one of them")
    namespaces[name] = (key, root)
  if not namespaces:
    raise errors.ConfigError(
        f'Registry config {path} has no [namespaces] table (nor TFDS-style [<namespace>] tables with paths); '
        'write e.g. `[namespaces]` and `team = "/shared/tfds_registry"` on two lines'
    )
  return {name: _one_root(path, key, root) for name, (key, root) in namespaces.items()}


def _one_root(path: epath.Path, key: str, root: Any) -> str:
  """A namespace's root: a string, or TFDS's one-path list; a relative local one is made absolute."""
  if isinstance(root, list) and len(root) == 1:
    root = root[0]
  if isinstance(root, str) and root:
    remote.refuse_credentials(root, f"Registry config {path}: {key} =")
    if remote.is_remote(root):
      return root
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(path))), os.path.expanduser(root))
  raise errors.ConfigError(
      f"Registry config {path}: {key} = {root!r}; give one registry root (a non-empty string). "
      "For several roots, give each its own namespace"
  )


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
    if not tfds_internals.namespace_pattern().fullmatch(namespace):
      raise errors.ConfigError(f"Namespace {namespace!r} is no name tfds.load can parse; "
                               "use letters, digits, '_' and '-' only (e.g. team or my-team)")
    remote.refuse_credentials(root, _ROOT)
    namespaces = {namespace: os.fspath(root)}
  else:
    config_path = config_path or os.environ.get(CONFIG_ENV)
    if not config_path:
      raise errors.ConfigError(f"Give a namespace and root, a config_path, or set {CONFIG_ENV}.")
    namespaces = read_namespaces(config_path)
  for name, namespace_root in namespaces.items():
    load_root, before_load = _load_root(namespace_root, verify)
    tfds_internals.register_namespace(name, load_root, before_load=before_load)
  return namespaces


def _load_root(root: str, verify: bool) -> tuple[epath.PathLike, tfds_internals.BeforeLoad | None]:
  """Where TFDS loads a namespace from, and what runs before it reads a version.

  TensorFlow's readers cannot open every URL (s3:// has no TF filesystem), so
  such a registry is loaded from a local mirror: its versions' metadata are
  copied now, each version's shards when a load first reads it.
  """
  if remote.tensorflow_reads(root):
    return root, check_before_load if verify else None
  source, mirror = epath.Path(root), remote.cache_dir(root)
  try:
    _mirror_metadata(source, mirror)
  except errors.TfdsBuildersError:
    raise
  except Exception as error:  # pylint: disable=broad-except  # s3fs/botocore: OSError, credential errors, ...
    raise errors.SourceError(_redact(errors.with_hint(
        f"Registry {root} cannot be read into its local mirror {mirror} ({type(error).__name__}: {error})",
        "Check the URL, the network and your credentials (AWS_* variables or ~/.aws for s3://)"))) from error

  def fetch_then_check(version_dir: epath.Path) -> None:
    _fetch_version(source, mirror, version_dir)
    if verify:
      check_before_load(version_dir)

  return mirror, fetch_then_check


_SHARD = re.compile(r"-\d{5}-of-\d{5}$")  # TFDS shard names: copied when a load reads the version


def _mirror_metadata(source: epath.Path, mirror: epath.Path) -> None:
  """Copies every published version's small files (all but its shards) below `mirror`.

  The registry is listed once (`remote.list_files`) and the files of every
  version to (re)copy are fetched in one concurrent batch. A version is
  (re)copied when its recorded checksums differ from the mirror's (compared by
  ETag first, which S3 sets to the MD5 of a file put in one part); one without
  checksums (a publish under way) is skipped, and so is one whose folder
  names cannot be mirrored, with a warning naming it: the others still load.

  Raises:
    SourceError: if the registry root cannot be listed.
  """
  remote.invalidate_listings(source)
  files = remote.list_files(source)
  by_folder: dict[str, list[str]] = {}
  for name in files:
    folder, _, file_name = name.rpartition("/")
    by_folder.setdefault(folder, []).append(file_name)
  stale = []
  for relative, etag in _published_versions(files).items():
    try:
      parts = _mirror_parts(source, relative)
    except errors.SourceError as error:
      _warn_once(f"Registry {source}: version {relative} skipped (tfds.load cannot read it): {error}")
      continue
    if not _mirrored(source.joinpath(*parts), mirror.joinpath(*parts), etag):
      stale.append((parts, by_folder[relative]))
  stagings: dict[epath.Path, epath.Path] = {}  # mirrored version -> its staging folder
  try:
    copies = []
    for parts, names in stale:
      local = mirror.joinpath(*parts)
      staging = stagings[local] = local.parent / f"{_INCOMING}{local.name}-{uuid.uuid4().hex[:8]}"
      staging.mkdir(parents=True)
      copies += [(source.joinpath(*parts, name), staging / name)
                 for name in sorted(names) if _is_file_name(name) and not _SHARD.search(name)]
    remote.download(copies)
    for local, staging in stagings.items():
      if local.exists():
        safe_paths.rmtree(local)
      staging.rename(local)
  finally:
    for staging in stagings.values():
      if staging.exists():
        safe_paths.rmtree(staging)


def _published_versions(files: dict[str, str]) -> dict[str, str]:
  """The version folders of a registry listing (path -> its checksums' ETag), outermost only, hidden skipped."""
  versions = {}
  for name in sorted(files):
    folder, _, file_name = name.rpartition("/")
    if (file_name != CHECKSUMS_FILENAME or f"{folder}/dataset_info.json" not in files
        or any(part.startswith(".") for part in folder.split("/"))):
      continue
    if not any(folder.startswith(f"{outer}/") for outer in versions):  # as _walk: never below a version
      versions[folder] = files[name]
  return versions


def _mirrored(version_dir: epath.Path, local: epath.Path, etag: str) -> bool:
  """Whether `local` holds the checksums `version_dir` records now (the ETag spares reading them)."""
  local_checksums = local / CHECKSUMS_FILENAME
  if not local_checksums.exists():
    return False
  mirrored = local_checksums.read_bytes()
  return hashlib.md5(mirrored).hexdigest() == etag or mirrored == (version_dir / CHECKSUMS_FILENAME).read_bytes()


def _mirror_parts(source: epath.Path, relative: str) -> tuple[str, ...]:
  """A version's folders below `source`, each checked to be a plain name before it is joined to the mirror."""
  return safe_paths.relative_parts(
      relative, f"registry {source}", "Rename the folder in the registry, or re-publish the dataset")


def _fetch_version(source: epath.Path, mirror: epath.Path, version_dir: epath.Path) -> None:
  """Copies the files a mirrored version's checksums list and the mirror lacks, each under a temporary name first."""
  version_dir = epath.Path(version_dir)
  try:
    parts = version_dir.relative_to(mirror).parts
  except ValueError:
    return  # not a mirrored version
  checksums = version_dir / CHECKSUMS_FILENAME
  if not checksums.exists():
    return
  names = json.loads(checksums.read_text()).get("sha256", {})
  remote_dir = source.joinpath(*parts)
  for name in sorted(names) if isinstance(names, dict) else []:
    if not _is_file_name(name) or (version_dir / name).exists():
      continue  # a name that is no file name: check_before_load reports it
    partial = version_dir / f".{name}.{uuid.uuid4().hex[:8]}.partial"
    try:
      _copy_file(remote_dir / name, partial)
      partial.rename(version_dir / name)
    except FileNotFoundError:
      pass  # gone from the registry: check_before_load names it missing
    finally:
      partial.unlink(missing_ok=True)


def register_from_env() -> dict[str, str]:
  """Registers the namespaces of $TFDS_BUILDERS_REGISTRY_CONFIG, if it is set; never raises.

  `import tfds_builders` calls this, and no import may fail because of the
  registry config: a problem is logged as one line naming the file, and what
  it concerns is not registered. `register()` raises it (a ConfigError).

  Returns:
    The namespaces registered, with their roots.
  """
  config_path = os.environ.get(CONFIG_ENV)
  if not config_path:
    return {}
  try:
    namespaces = read_namespaces(config_path)
  except errors.ConfigError as error:
    _warn_once(f"{CONFIG_ENV} ignored: {error}")
    return {}
  registered = {}
  for name, root in namespaces.items():
    try:
      registered.update(register(name, root))
    except Exception as error:  # pylint: disable=broad-except  # reported here; register() raises it
      _warn_once(f"{CONFIG_ENV}={config_path}: namespace {name!r} not registered: {error}")
  return registered


def _redact(message: str) -> str:
  from tfds_builders.core import provenance  # pylint: disable=g-import-not-at-top  # `provenance` names a dict above

  return provenance.redact(message)


@functools.cache
def _warn_once(message: str) -> None:
  logging.getLogger(__name__).warning(" ".join(_redact(message).split()))
