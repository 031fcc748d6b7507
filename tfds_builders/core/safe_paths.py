"""Names and relative paths read from files (manifests, dataset_info.json) checked before they are joined."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from etils import epath

from tfds_builders.core import errors

# TFDS derives dataset names with naming.camelcase_to_snakecase: snake_case.
DATASET_NAME = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
# TFDS's own config class in naming._NAME_REG (`[\w+\-.]+`), ASCII, and not
# starting with a dot: `.`, `..` and hidden folders are never configs.
CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+.\-]*", re.ASCII)
# TFDS's utils.version._VERSION_RESOLVED_REG: no wildcards, no leading zeros.
VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", re.ASCII)
# A config named like a version makes `<name>/1.0.0/1.0.0` (config 1.0.0) a folder
# inside `<name>/1.0.0` (no config): TFDS could not tell them apart.
_VERSION_LIKE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+", re.ASCII)
# A feature name that is also a safe file name (`<split>/<feature>.npy` in an
# export): no `/`, no leading dot (so no `..`), no spaces or control characters.
FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*", re.ASCII)
# One path component of a member: portable characters, no `:` (drive letters, NTFS streams).
_COMPONENT = re.compile(r"[A-Za-z0-9_+.\-@=,%~ ]+", re.ASCII)
_MAX_COMPONENT = 255  # bytes, the usual file name limit (NAME_MAX)
MAX_PATH_BYTES = 4095  # PATH_MAX is 4096 bytes with the final NUL

_RULES = {
    "dataset name": (DATASET_NAME, "snake_case, e.g. my_dataset"),
    "config name": (CONFIG_NAME, "letters, digits and _+-., not starting with a dot"),
    "version": (VERSION, "MAJOR.MINOR.PATCH, e.g. 1.0.0"),
    "feature name": (FEATURE_NAME, "letters, digits and _.-, starting with a letter or _"),
}

Fail = Callable[[str], Exception]


def check_name(kind: str, value: object, where: str, hint: str, fail: Fail = errors.SourceError) -> str:
  """Returns `value` if it is a valid `kind` (dataset name, config name, version, feature name).

  Args:
    kind: One of `dataset name`, `config name`, `version`, `feature name`.
    value: The value read from a file.
    where: The file (and field) it was read from, for the message.
    hint: What to do about an invalid value.
    fail: Builds the exception from the message.

  Raises:
    The `fail` exception (SourceError by default) naming `where` and the rule.
  """
  pattern, rule = _RULES[kind]
  if not isinstance(value, str) or len(value) > _MAX_COMPONENT or not pattern.fullmatch(value):
    raise fail(errors.with_hint(f"{where}: {kind} {value!r} is not a valid TFDS {kind} ({rule})", hint))
  if kind == "config name" and _VERSION_LIKE.fullmatch(value):
    raise fail(errors.with_hint(
        f"{where}: config name {value!r} looks like a version: its folder <name>/{value}/<version> "
        f"would sit inside the folder of version {value} of the dataset without config", hint))
  return value


def relative_parts(path: object, where: str, hint: str, fail: Fail = errors.SourceError) -> tuple[str, ...]:
  """Splits a relative `a/b/c` path read from a file, refusing anything that could leave its root.

  Refused: absolute paths, `.` and `..` components, empty components (`a//b`,
  a trailing `/`), backslashes, drive letters and any `:`, control characters,
  components over 255 bytes and paths over `MAX_PATH_BYTES`.

  Returns:
    The path's components, each safe to join to a root.
  """
  def refuse(problem: str) -> Exception:
    return fail(errors.with_hint(f"{where}: path {shown(path)} {problem}", hint))

  if not isinstance(path, str) or not path:
    raise refuse("is not a non-empty string")
  if path.startswith("/"):
    raise refuse("is absolute")
  if "\\" in path:
    raise refuse("holds a backslash")
  if len(path.encode()) > MAX_PATH_BYTES:
    raise refuse(f"is {len(path.encode())} bytes long, over the {MAX_PATH_BYTES} a path may have")
  parts = tuple(path.split("/"))
  for part in parts:
    if part in ("", ".", ".."):
      raise refuse(f"has a {part!r} component" if part else "has an empty component")
    if not _COMPONENT.fullmatch(part) or len(part.encode()) > _MAX_COMPONENT:
      raise refuse(f"has the component {part!r}, with characters outside [A-Za-z0-9_+.-@=,%~ ] or too long")
  return parts


def shown(value: object, limit: int = 120) -> str:
  """`repr(value)`, cut to `limit` characters: a hostile name may be kilobytes long."""
  text = repr(value)
  return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def is_local(path: epath.PathLike) -> bool:
  """Whether `path` is on the local filesystem (the only place symlinks exist)."""
  return "://" not in os.fspath(path)


def is_symlink(path: epath.PathLike) -> bool:
  return is_local(path) and os.path.islink(os.fspath(path))


def refuse_symlinks(
    root: epath.Path, parts: Sequence[str], where: str, hint: str, fail: Fail = errors.SourceError,
) -> None:
  """Raises if `root/parts[0]`, `root/parts[0]/parts[1]`, ... is a symlink.

  `root` itself is the user's choice (a data_dir or registry root may well be
  a symlink to a larger disk); only the folders a file names below it are checked.
  """
  path = epath.Path(root)
  for part in parts:
    path = path / part
    if is_symlink(path):
      raise fail(errors.with_hint(
          f"{where}: {path} is a symlink (to {os.readlink(path)!r}); refusing to write through it", hint))


def refuse_non_folders(
    root: epath.Path, parts: Sequence[str], where: str, hint: str, fail: Fail = errors.SourceError,
) -> None:
  """Raises if `root/parts[0]`, `root/parts[0]/parts[1]`, ... exists and is not a folder.

  A file (or FIFO, ...) where a folder must go would otherwise surface as a
  bare `[Errno 20] Not a directory` from the first mkdir or open below it.
  """
  path = epath.Path(root)
  for part in parts:
    path = path / part
    if not is_local(path):
      return
    try:
      mode = os.lstat(os.fspath(path)).st_mode
    except FileNotFoundError:
      return  # nothing further down exists either
    if not stat.S_ISDIR(mode) and not stat.S_ISLNK(mode):  # symlinks: refuse_symlinks' message
      raise fail(errors.with_hint(f"{where}: {path} is a {file_kind(mode)} where a folder must go", hint))


def nested_datasets(folder: epath.Path) -> list[epath.Path]:
  """Every `dataset_info.json` strictly below `folder` (its own aside); symlinks are not followed.

  A folder that holds another prepared dataset (`<name>/1.0.0/1.0.0`, config
  `1.0.0`, sits inside `<name>/1.0.0`) must never be replaced or removed whole.
  """
  found = []
  for child in sorted(epath.Path(folder).iterdir()):
    if child.is_dir() and not is_symlink(child):
      if (child / "dataset_info.json").exists() or is_symlink(child / "dataset_info.json"):
        found.append(child / "dataset_info.json")
      found += nested_datasets(child)
  return found


def check_replaceable(target: epath.Path, hint: str, fail: Fail) -> None:
  """Refuses replacing `target` whole unless it is a folder holding no other prepared dataset.

  Raises:
    The `fail` exception, with `hint`, if `target` is no folder or holds another dataset.
  """
  if not target.is_dir():
    raise fail(errors.with_hint("it is not a folder", hint))
  nested = nested_datasets(target)
  if nested:  # replacing the folder would delete them too
    raise fail(errors.with_hint(f"it holds another prepared dataset, {nested[0].parent}", hint))


def open_regular(path: epath.Path, hint: str, fail: Fail = errors.SourceError) -> BinaryIO:
  """Opens a regular file for reading, never through a symlink, never blocking on a FIFO or device.

  Raises:
    The `fail` exception naming `path` if it is a symlink or not a regular file.
  """
  if not is_local(path):
    return epath.Path(path).open("rb")
  mode = os.lstat(os.fspath(path)).st_mode
  if not stat.S_ISREG(mode):  # refused unopened: opening a device can have effects
    raise _not_regular(path, mode, hint, fail)
  # O_NOFOLLOW and fstat: the path may have been swapped for a link or a FIFO since lstat.
  descriptor = os.open(os.fspath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
  mode = os.fstat(descriptor).st_mode
  if not stat.S_ISREG(mode):
    os.close(descriptor)
    raise _not_regular(path, mode, hint, fail)
  os.set_blocking(descriptor, True)
  return os.fdopen(descriptor, "rb")


def _not_regular(path: epath.Path, mode: int, hint: str, fail: Fail) -> Exception:
  target = f" (to {os.readlink(path)!r})" if stat.S_ISLNK(mode) else ""
  return fail(errors.with_hint(f"{path} is a {file_kind(mode)}{target}, not a regular file", hint))


def create_new(path: epath.Path) -> BinaryIO:
  """Opens a file that must not exist yet for writing, never through a symlink."""
  if not is_local(path):
    return epath.Path(path).open("wb")
  return os.fdopen(os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "wb")


@contextlib.contextmanager
def staged_replacement(target: epath.Path, staging: epath.Path) -> Iterator[epath.Path]:
  """Creates the folder `staging`; if the block succeeds it replaces the folder `target`, else it is removed.

  So a failed export or import leaves neither a partial `target` nor the staging folder.
  """
  staging.mkdir(parents=True)
  try:
    yield staging
    if target.exists():
      rmtree(target)
    staging.rename(target)
  finally:
    if staging.exists():
      rmtree(staging)


def rmtree(path: epath.Path) -> None:
  """Removes a folder; symlinks inside are removed, never what they point to."""
  if is_local(path):
    shutil.rmtree(os.fspath(path))
  else:
    epath.Path(path).rmtree()


def file_kind(mode: int) -> str:
  """`directory`, `symlink`, `FIFO`, ... for an st_mode (or a zip member's Unix mode)."""
  kinds = {
      stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket",
      stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFREG: "regular file",
  }
  return kinds.get(stat.S_IFMT(mode), f"special file (mode {mode:o})")


def regular_files(directory: epath.Path, hint: str, fail: Fail = errors.SourceError) -> list[epath.Path]:
  """The regular files directly in `directory`, sorted; real subfolders are skipped.

  Raises:
    The `fail` exception naming the first symlink (to a file or a folder) or
    special file (FIFO, socket, device) found: its content is not the dataset's.
  """
  found = []
  for path in sorted(epath.Path(directory).iterdir()):
    if not is_local(path):
      if not path.is_dir():
        found.append(path)
      continue
    mode = os.lstat(os.fspath(path)).st_mode
    if stat.S_ISDIR(mode):
      continue
    if not stat.S_ISREG(mode):
      raise _not_regular(path, mode, hint, fail)
    found.append(path)
  return found


def dataset_identity(dataset_dir: epath.Path, hint: str, fail: Fail = errors.SourceError) -> tuple[str, str, str]:
  """(name, config or "", version) that `dataset_dir/dataset_info.json` claims, each validated.

  Raises:
    The `fail` exception if the file is missing, a symlink, not a JSON object,
    or holds a name, config name or version that is not a valid TFDS one.
  """
  info_path = epath.Path(dataset_dir) / "dataset_info.json"
  if not info_path.exists() and not is_symlink(info_path):
    raise fail(errors.with_hint(f"{info_path} not found", hint))
  with open_regular(info_path, hint, fail) as file:
    text = file.read()
  try:
    info = json.loads(text)
  except ValueError as error:
    raise fail(errors.with_hint(f"{info_path} is not valid JSON ({error})", hint)) from None
  if not isinstance(info, dict):
    raise fail(errors.with_hint(f"{info_path} is not a JSON object", hint))
  return (
      check_name("dataset name", info.get("name"), f"{info_path} field 'name'", hint, fail),
      check_name("config name", info["configName"], f"{info_path} field 'configName'", hint, fail)
      if info.get("configName") else "",
      check_name("version", info.get("version"), f"{info_path} field 'version'", hint, fail),
  )
