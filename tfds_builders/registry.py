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
# Written by publish next to an overlay: where its base (and parent overlay) are published, and their digests.
OVERLAY_FILENAME = "registry_overlay.json"
OVERLAY_RECORD_FORMAT = 1
# Files publish writes or rewrites (croissant.json gains datePublished): not part of a version's digest,
# so that a built directory and its published copy have the same one.
_NOT_DIGESTED = frozenset({CHECKSUMS_FILENAME, OVERLAY_FILENAME, croissant.FILENAME})
_MAX_CHAIN = 64  # links followed from an overlay down to its base: a cycle stops here at the latest
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


def publish(
    dataset_dir: epath.PathLike,
    registry: epath.PathLike,
    overwrite: bool = False,
    *,
    base_registry: str | None = None,
) -> epath.Path:
  """Copies a prepared dataset version into the registry, atomically.

  The files are copied and checksummed under a hidden `.incoming-*` name next
  to the target and renamed into place only when complete, so readers never
  see a half-published version, and a killed publish leaves the previous state.
  The dataset name, config and version are validated before they are joined to
  the registry root; symlinks and special files are refused, never followed.

  An overlay (built by the augmented builder with mode="overlay") is
  published only over a published base: `registry_overlay.json` records where
  its base (and the overlay it sits on, for a chain) is published and the
  digest of its files (`version_digest`), checked to equal the local copy's.

  Args:
    dataset_dir: A prepared version directory (holding dataset_info.json).
    registry: The registry root (it may itself be a symlink; no folder below
      it on the way to the version may be).
    overwrite: Replace an already published version of the same dataset
      (refused otherwise, and never replaces a folder that is not one).
    base_registry: For an overlay: a namespace or registry root where its base
      and parent are looked for first (then in `registry`).

  Returns:
    The published version directory.

  Raises:
    SourceError: if `dataset_dir` is not a prepared dataset, holds a symlink
      or special file, names an invalid dataset, config or version; or if the
      registry path holds a symlink or a foreign folder at the target.
    FileExistsError: if the version is published and `overwrite` is False.
    ConfigError: if `base_registry` is given for a dataset that is no overlay.
  """
  remote.refuse_credentials(registry, _ROOT)
  source = epath.Path(dataset_dir)
  dataset, config, version = _identity(source)
  files = [
      path for path in safe_paths.regular_files(source, _REAL_FILES_ONLY)
      if path.name not in (CHECKSUMS_FILENAME, OVERLAY_FILENAME)  # publish writes them anew
  ]
  root = epath.Path(registry)
  parts = (dataset, config, version)
  _check_target(root, parts, overwrite)
  overlay_record = _overlay_record(source, root, base_registry, f"{dataset}/{config}:{version}")
  config_dir = root / dataset / config
  target = config_dir / version
  config_dir.mkdir(parents=True, exist_ok=True)
  incoming = config_dir / f"{_INCOMING}{version}-{uuid.uuid4().hex[:8]}"
  try:
    incoming.mkdir()
    checksums = {path.name: _copy_file(path, incoming / path.name) for path in files}
    if overlay_record is not None:
      (incoming / OVERLAY_FILENAME).write_text(json.dumps(overlay_record, indent=2, sort_keys=True))
      checksums[OVERLAY_FILENAME] = _sha256(incoming / OVERLAY_FILENAME)
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
    _NAMESPACES[name] = _Source(f"namespace {name!r} ({namespace_root})", namespace_root,
                                epath.Path(load_root), before_load)
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


# -- overlays ---------------------------------------------------------------
# An overlay holds new fields only; its base (and, for a chain, the overlay it
# sits on) is another published version. publish records where each link is
# published and the digest of its files; a namespace load finds them again and
# refuses one whose files changed since.


@dataclasses.dataclass(frozen=True)
class _Source:
  """A registry as a load reads it: its local (or mirrored) root and the check run before a version is read."""

  label: str
  root: str
  load_root: epath.Path
  before_load: tfds_internals.BeforeLoad | None


# Namespaces registered in this process (`register`), for resolving overlays.
_NAMESPACES: dict[str, _Source] = {}
_NAMESPACED = re.compile(r"^(?P<namespace>[\w-]+):(?P<name>[^:/]+)(?:/(?P<config>[^:/]+))?:(?P<version>[^:/]+)$")
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class ResolvedOverlay:
  """An overlay published in a registry, and where its base and parent overlays are on this machine.

  Attributes:
    name: `namespace:dataset/config:version`, as given.
    version_dir: The overlay's version directory (a local mirror's, for s3://).
    locations: Each location the chain's metadata records (the base's and
      every parent's `location`) -> the published version directory holding
      it now, each checked against the digest recorded at publish time.
  """

  name: str
  version_dir: epath.Path
  locations: dict[str, str]


def files_digest(checksums: dict[str, str]) -> str:
  """The digest of a version's files: SHA-256 of `<sha256>  <name>` lines sorted by name (`sha256sum`'s format).

  Files publish writes or rewrites (`registry_checksums.json`,
  `registry_overlay.json`, `croissant.json`) are left out, so a built version
  and its published copy have the same digest.
  """
  lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(checksums.items()) if name not in _NOT_DIGESTED)
  return hashlib.sha256(lines.encode()).hexdigest()


def version_digest(version_dir: epath.PathLike) -> str:
  """`files_digest` of a version directory, hashing its files (symlinks and special files are refused)."""
  files = safe_paths.regular_files(epath.Path(version_dir), _REAL_FILES_ONLY)
  return files_digest({path.name: _verified_sha256(path, True) for path in files if path.name not in _NOT_DIGESTED})


def published_digest(version_dir: epath.PathLike) -> str:
  """`files_digest` of a published version, from its `registry_checksums.json` (its files are not re-read).

  Raises:
    SourceError: if it has no readable checksums (not published with `publish`).
  """
  checksums_path = epath.Path(version_dir) / CHECKSUMS_FILENAME
  hint = "Publish it with tfds-builders publish (--overwrite), which records the checksums"
  if not checksums_path.exists():
    raise errors.SourceError(errors.with_hint(f"{version_dir} has no {CHECKSUMS_FILENAME}", hint))
  with safe_paths.open_regular(checksums_path, _REAL_FILES_ONLY) as file:
    try:
      checksums = json.loads(file.read())["sha256"]
    except (ValueError, KeyError, TypeError) as error:
      raise errors.SourceError(errors.with_hint(f"{checksums_path} is unreadable ({error})", hint)) from None
  if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
    raise errors.SourceError(errors.with_hint(f"{checksums_path}: 'sha256' is not an object of digests", hint))
  return files_digest(checksums)


def _overlay_metadata(dataset_dir: epath.Path) -> dict[str, Any] | None:
  """The `augmented` metadata entry of an overlay, or None for any other dataset."""
  path = dataset_dir / "metadata.json"
  if not path.exists():
    return None
  with safe_paths.open_regular(path, _REAL_FILES_ONLY) as file:
    try:
      metadata = json.loads(file.read())
    except ValueError:
      return None  # not ours to judge: TFDS reads metadata.json, publish copies it
  entry = metadata.get("augmented") if isinstance(metadata, dict) else None
  if not isinstance(entry, dict) or entry.get("mode") != "overlay":
    return None
  return entry


def _link_parts(link: Any, role: str, where: str) -> tuple[str, str, str]:
  """(dataset, config, version) of an overlay's base or parent as its metadata names it (`name`, `version`)."""
  name = link.get("name") if isinstance(link, dict) else None
  if not isinstance(name, str):
    raise errors.SourceError(f"{where}: {role} 'name' is {safe_paths.shown(name)}, not a name. "
                             "Rebuild the overlay with the augmented builder.")
  version = link.get("version")
  if isinstance(version, str) and name.endswith(f"/{version}"):
    name = name[:-len(version) - 1]  # a TFDS full name (a parent's) holds the version too
  dataset, _, config = name.partition("/")
  return _checked_parts(dataset, config or "default", version, role, where)


def _checked_parts(dataset: Any, config: Any, version: Any, role: str, where: str) -> tuple[str, str, str]:
  """Each checked to be a TFDS name before it is joined to a registry root (no `..`, no `/`)."""
  hint = f"The overlay's {role} must be a published dataset; rebuild the overlay, then publish it again"
  return (
      safe_paths.check_name("dataset name", dataset, f"{where}, {role}", hint),
      safe_paths.check_name("config name", config, f"{where}, {role}", hint),
      safe_paths.check_name("version", version, f"{where}, {role}", hint),
  )


def _overlay_record(source: epath.Path, root: epath.Path, base_registry: str | None,
                    label: str) -> dict[str, Any] | None:
  """What `registry_overlay.json` records for an overlay being published (None for any other dataset).

  Raises:
    SourceError: if the base is raw TFRecord files, or the base or parent is
      not published where it is looked for, or is published with other files
      than the local copy the overlay was built from.
    ConfigError: if `base_registry` is given for a dataset that is no overlay.
  """
  metadata = _overlay_metadata(source)
  if metadata is None:
    if base_registry:
      raise errors.ConfigError(f"--base_registry {base_registry}: {source} is not an overlay (its metadata.json "
                               "has no augmented entry with mode overlay); publish it without --base_registry.")
    return None
  where = f"Overlay {label} ({source / 'metadata.json'})"
  base = metadata.get("base")
  if isinstance(base, dict) and base.get("kind") != "prepared":
    raise errors.SourceError(errors.with_hint(
        f"{where}: its base is {base.get('kind')!r} (raw TFRecord files), which no registry holds",
        "Build the overlay over a prepared dataset, publish that dataset, then publish the overlay"))
  places = [(root, None)]
  if base_registry:
    places.insert(0, _named_registry(base_registry))
  record = {"format": OVERLAY_RECORD_FORMAT, "base": _publish_link(base, "base", where, places)}
  parent = metadata.get("parent")
  record["parent"] = None if parent is None else _publish_link(parent, "parent", where, places)
  return record


def _named_registry(name: str) -> tuple[epath.Path, dict[str, str]]:
  """A registry named at publish time: a registered namespace, else a root path; and how the record names it."""
  if name in _NAMESPACES:
    return epath.Path(_NAMESPACES[name].root), {"namespace": name}
  remote.refuse_credentials(name, _ROOT)
  root = name if remote.is_remote(name) else os.path.abspath(os.path.expanduser(name))
  return epath.Path(root), {"root": root}


def _publish_link(link: Any, role: str, where: str,
                  places: list[tuple[epath.Path, dict[str, str] | None]]) -> dict[str, Any]:
  """Finds an overlay's base or parent in the registries `places`, checks it against the local copy, records it."""
  parts = _link_parts(link, role, where)
  label = f"{parts[0]}/{parts[1]}:{parts[2]}"
  location = link.get("location")
  if not isinstance(location, str) or not location:
    raise errors.SourceError(f"{where}: {role} 'location' is {safe_paths.shown(location)}, not a path. "
                             "Rebuild the overlay with the augmented builder.")
  looked = []
  for root, named in places:
    _refuse_read_symlinks(root, parts, f"{where}: {role} {label}")
    version_dir = root.joinpath(*parts)
    looked.append(str(version_dir))
    if not (version_dir / "dataset_info.json").exists():
      continue
    digest = published_digest(version_dir)
    local = epath.Path(location)
    if not (local / "dataset_info.json").exists():
      raise errors.SourceError(errors.with_hint(
          f"{where}: its {role} {label} is no longer at {location}, where the overlay was built from; publish "
          f"checks that {version_dir} holds the same files", f"Restore it at {location}, or rebuild the overlay"))
    local_digest = version_digest(local)
    if local_digest != digest:
      raise errors.SourceError(errors.with_hint(
          f"{where}: its {role} {label} published at {version_dir} (digest {digest}) is not the one the "
          f"overlay was built from at {location} (digest {local_digest})",
          f"Publish that {role} there (tfds-builders publish {location} <registry> --overwrite), or rebuild "
          "the overlay over the published one"))
    return {"dataset": parts[0], "config": parts[1], "version": parts[2], "digest": digest,
            "location": location, "registry": named}
  raise errors.SourceError(errors.with_hint(
      f"{where}: its {role} {label} is not published; looked for {' and '.join(looked)}",
      f"Publish the {role} first (tfds-builders publish {location} <registry>), or name the registry it is "
      "published in with --base_registry NAMESPACE_OR_ROOT"))


def _refuse_read_symlinks(root: epath.Path, parts: tuple[str, ...], where: str) -> None:
  """Refuses a symlinked dataset, config or version folder below a registry root: not what publish wrote."""
  path = root
  for part in parts:
    path = path / part
    if safe_paths.is_symlink(path):
      raise errors.SourceError(errors.with_hint(
          f"{where}: {path} is a symlink (to {os.readlink(path)!r}); a registry holds real folders only",
          "Replace the link by a published version (tfds-builders publish)"))


def is_namespaced(name: str) -> bool:
  """Whether `name` reads `namespace:dataset[/config]:version`, a name `resolve_overlay` takes."""
  return isinstance(name, str) and bool(_NAMESPACED.match(name))


def namespace_overlay(overlay: str) -> ResolvedOverlay | None:
  """`resolve_overlay(overlay)` for a `namespace:dataset/config:version` name; None for a directory or a plain name.

  The overlay loader's hook, so that `load_augmented("team:augmented/cfg:1.0.0")`
  reads the base (and parents) from the registry, wherever they were built:

      resolved = registry.namespace_overlay(overlay)
      if resolved is not None:
        overlay, locations = os.fspath(resolved.version_dir), {**resolved.locations, **(locations or {})}
  """
  return resolve_overlay(overlay) if is_namespaced(overlay) else None


def resolve_overlay(name: str) -> ResolvedOverlay:
  """Finds an overlay published under a namespace, and its base and parent overlays, each checked.

  Each link is looked for where publish found it: the overlay's own registry,
  or the namespace or root `registry_overlay.json` names. Every version is
  checked against its checksums as any namespace load is (and fetched into the
  local mirror, for s3://), and its digest compared with the recorded one.

  Args:
    name: `namespace:dataset/config:version`, the namespace registered with
      `register` (or $TFDS_BUILDERS_REGISTRY_CONFIG).

  Raises:
    ConfigError: if `name` is no such name, or its namespace is not registered.
    SourceError: if the overlay, its base or a parent is not published where
      it is looked for (naming where), its files changed (naming both digests),
      or its chain has a cycle.
  """
  match = _NAMESPACED.match(name) if isinstance(name, str) else None
  if not match:
    raise errors.ConfigError(f"{safe_paths.shown(name)} is no namespace name; write e.g. team:augmented/cfg:1.0.0.")
  hint = "Use the dataset's published name, e.g. team:augmented/cfg:1.0.0"
  parts = (safe_paths.check_name("dataset name", match["name"], name, hint, errors.ConfigError),
           safe_paths.check_name("config name", match["config"], name, hint, errors.ConfigError)
           if match["config"] else "default",
           safe_paths.check_name("version", match["version"], name, hint, errors.ConfigError))
  source = _NAMESPACES.get(match["namespace"])
  if source is None:
    raise errors.ConfigError(
        f"{name}: namespace {match['namespace']!r} is not registered in this process; call "
        f"tfds_builders.registry.register({match['namespace']!r}, ROOT) or set {CONFIG_ENV}.")
  version_dir = _loadable_version(source, parts, f"Overlay {name}")
  locations: dict[str, str] = {}
  _resolve_links(name, version_dir, source, locations, [version_dir], {})
  return ResolvedOverlay(name, version_dir, locations)


def _loadable_version(source: _Source, parts: tuple[str, str, str], what: str) -> epath.Path:
  """A published version of `source`, checked (and fetched, from a mirror) as a namespace load would."""
  _refuse_read_symlinks(source.load_root, parts, what)
  version_dir = source.load_root.joinpath(*parts)
  if not (version_dir / "dataset_info.json").exists():
    raise errors.SourceError(errors.with_hint(
        f"{what}: {parts[0]}/{parts[1]}:{parts[2]} is not published in {source.label}; looked for {version_dir}",
        "Publish it there (tfds-builders publish), or fix the registry config"))
  if source.before_load:
    source.before_load(version_dir)
  return version_dir


def _resolve_links(label: str, version_dir: epath.Path, source: _Source, locations: dict[str, str],
                   chain: list[epath.Path], roots: dict[str, _Source]) -> None:
  """Adds the base and parent of one published overlay to `locations`, then those of its parent."""
  record_path = version_dir / OVERLAY_FILENAME
  where = f"Overlay {label} ({record_path})"
  if not record_path.exists():
    raise errors.SourceError(errors.with_hint(
        f"{where}: not found; {version_dir} was not published as an overlay (or by an older tfds_builders)",
        "Publish it again with tfds-builders publish --overwrite, after its base"))
  with safe_paths.open_regular(record_path, _REAL_FILES_ONLY) as file:
    try:
      record = json.loads(file.read())
    except ValueError as error:
      raise errors.SourceError(f"{where}: not JSON ({error}). Publish the overlay again.") from None
  if not isinstance(record, dict) or record.get("format") != OVERLAY_RECORD_FORMAT:
    raise errors.SourceError(f"{where}: not a registry_overlay.json of format {OVERLAY_RECORD_FORMAT}. "
                             "Publish the overlay again with this version of tfds_builders.")
  for role in ("parent", "base"):
    link = record.get(role)
    if link is None and role == "parent":
      continue
    link_source = _link_source(link, role, source, roots, where)
    parts = _checked_parts(link.get("dataset"), link.get("config"), link.get("version"), role, where)
    link_label = f"{parts[0]}/{parts[1]}:{parts[2]}"
    link_dir = _loadable_version(link_source, parts, f"{where}: its {role}")
    recorded, found = link.get("digest"), published_digest(link_dir)
    if found != recorded:
      raise errors.SourceError(errors.with_hint(
          f"{where}: its {role} {link_label} in {link_source.label} ({link_dir}) has digest {found}, but the "
          f"overlay was published over digest {recorded}: the {role} was re-published or changed since",
          f"Re-publish the {role} the overlay was built from, or rebuild the overlay over this {role} and "
          "publish it again (--overwrite)"))
    if role == "parent" and (link_dir in chain or len(chain) >= _MAX_CHAIN):
      raise errors.SourceError(
          f"{where}: its chain of parents {' -> '.join(map(str, chain + [link_dir]))} "
          f"{'has a cycle' if link_dir in chain else f'is over {_MAX_CHAIN} links'}. Rebuild the chain's overlays.")
    location = link.get("location")
    if not isinstance(location, str) or locations.get(location, os.fspath(link_dir)) != os.fspath(link_dir):
      raise errors.SourceError(f"{where}: {role} location {safe_paths.shown(location)} is recorded for two "
                               "different published versions of the chain. Rebuild the chain's overlays.")
    locations[location] = os.fspath(link_dir)
    if role == "parent":
      _resolve_links(link_label, link_dir, link_source, locations, chain + [link_dir], roots)


def _link_source(link: Any, role: str, source: _Source, roots: dict[str, _Source], where: str) -> _Source:
  """Where a link is published: the overlay's own registry, a registered namespace, or a root."""
  if not isinstance(link, dict) or not (isinstance(link.get("digest"), str) and _DIGEST.fullmatch(link["digest"])):
    raise errors.SourceError(f"{where}: {role} is not a link with a digest. Publish the overlay again.")
  named = link.get("registry")
  if named is None:
    return source
  if isinstance(named, dict) and isinstance(named.get("namespace"), str):
    if named["namespace"] not in _NAMESPACES:
      raise errors.SourceError(errors.with_hint(
          f"{where}: its {role} is published in namespace {named['namespace']!r}, which is not registered here",
          f"Register it (registry.register({named['namespace']!r}, ROOT) or {CONFIG_ENV})"))
    return _NAMESPACES[named["namespace"]]
  if isinstance(named, dict) and isinstance(named.get("root"), str) and named["root"]:
    root = named["root"]
    remote.refuse_credentials(root, f"{where}: {role} registry")
    if root not in roots:
      load_root, before_load = _load_root(root, verify=True)
      roots[root] = _Source(f"registry {root}", root, epath.Path(load_root), before_load)
    return roots[root]
  raise errors.SourceError(f"{where}: {role} 'registry' is {safe_paths.shown(named)}; expected null, "
                           "{\"namespace\": ...} or {\"root\": ...}. Publish the overlay again.")
