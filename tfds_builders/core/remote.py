"""One path layer for URLs: epath everywhere, fsspec for the schemes TensorFlow cannot open (s3://)."""

from __future__ import annotations

import functools
import glob as pyglob
import hashlib
import os
import re
from collections.abc import Iterator
from typing import BinaryIO

from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath

from tfds_builders.core import errors

# TensorFlow 2.6+ has no S3 filesystem (it moved to tensorflow-io): fsspec's s3fs opens these.
FSSPEC_SCHEMES = frozenset({"s3"})
CACHE_ENV = "TFDS_BUILDERS_CACHE_DIR"
# What an fsspec file fetches beyond a read: little, as readers here read whole windows themselves
# (s3fs's default read-ahead is 50 MiB, held on top of the caller's window).
_READ_AHEAD_BYTES = 4 * 1024 * 1024
# `scheme://user:password@` or `scheme://user@`; a password may hold `/` (AWS secret keys do).
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/?#@]*(?::[^@]*)?@", re.I)
CREDENTIALS_HINT = "put credentials in the AWS_* environment variables or ~/.aws, not in the URL"


@epath.register_path_cls([f"{scheme}://" for scheme in sorted(FSSPEC_SCHEMES)])
class FsspecPath(gpath.PosixGPath):
  """An `epath.Path` on fsspec whatever TensorFlow supports.

  etils picks TensorFlow's gfile for every URL once TensorFlow is installed,
  and gfile has no `s3` scheme; `epath.Path("s3://...")` is this class in
  any process that imported tfds_builders, TFDS's own epath calls included.
  """

  @property
  def _backend(self) -> epath_backend.Backend:
    refuse_credentials(self)
    _check_installed(self._uri_scheme)
    return epath_backend.fsspec_backend


@functools.cache  # a success is remembered; an ImportError is raised again each time
def _check_installed(path_scheme: str) -> None:
  """Raises a ConfigError saying what to install if fsspec has no backend for `path_scheme`."""
  import fsspec  # pylint: disable=g-import-not-at-top

  try:
    fsspec.get_filesystem_class(path_scheme)
  except ImportError as error:
    raise errors.ConfigError(
        f"{path_scheme}:// paths need fsspec's {path_scheme} backend ({error}); install it: "
        "pip install 'tfds_builders[s3]'") from None


def refuse_credentials(path: epath.PathLike, what: str = "URL") -> None:
  """Raises a ConfigError if `path` is a URL carrying user info (`user:password@`, `user@`).

  The message shows the URL with its user info replaced by `***`: a secret
  in a URL would otherwise reach every error, log line and listing naming it.

  Args:
    path: A local path or URL.
    what: What the URL is, e.g. `Registry root`.
  """
  text = os.fspath(path)
  match = _USERINFO.match(text)
  if match:
    raise errors.ConfigError(
        f"{what} {match.group(1)}***@{text[match.end():]} carries credentials (user info before '@'); "
        f"{CREDENTIALS_HINT}")


def scheme(path: epath.PathLike) -> str:
  """`s3`, `gs`, ... of a URL; `""` for a local path."""
  text = os.fspath(path)
  return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(path: epath.PathLike) -> bool:
  return bool(scheme(path))


def tensorflow_reads(path: epath.PathLike) -> bool:
  """Whether TensorFlow's own readers (tf.data, TFRecordWriter) open `path`: local files, gs://, ..."""
  path_scheme = scheme(path)
  if not path_scheme:
    return True
  if path_scheme in FSSPEC_SCHEMES:
    return False
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return path_scheme in tf.io.gfile.get_registered_schemes()


def require_tensorflow_reads(path: epath.PathLike, what: str, hint: str) -> None:
  """Raises a ConfigError naming `what` if TensorFlow cannot read or write `path` itself.

  Args:
    path: The path TensorFlow would open.
    what: What the path is for, e.g. `--data_dir`.
    hint: What to do instead (e.g. build locally, then publish).
  """
  refuse_credentials(path, what)
  if not tensorflow_reads(path):
    raise errors.ConfigError(errors.with_hint(
        f"{what} {os.fspath(path)}: TensorFlow {_tf_version()} has no {scheme(path)}:// filesystem "
        "(tf.data and TFRecordWriter cannot open it; tfds_builders reaches it through fsspec only)", hint))


def _tf_version() -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.__version__


def glob(pattern: str) -> list[str]:
  """The paths matching a glob, as URLs when `pattern` is one."""
  if scheme(pattern) in FSSPEC_SCHEMES:
    prefix = f"{scheme(pattern)}://"
    return sorted(prefix + match for match in _filesystem(pattern).glob(pattern))
  if not scheme(pattern):  # local: as tf.io.gfile matches (dot files too), without importing TensorFlow
    matches = pyglob.glob(pattern, include_hidden=True)
    if not os.path.isabs(pattern) and any(char in pattern.split("/", 1)[0] for char in "*?["):
      matches = [f"./{match}" for match in matches]  # gfile names them from the folder `.`
    return matches
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.io.gfile.glob(pattern)


def walk(top: epath.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
  """(folder, subfolder names, file names) at and below `top`, top-down, folders as URLs when `top` is one."""
  text = os.fspath(top)
  if scheme(text) in FSSPEC_SCHEMES:
    prefix = f"{scheme(text)}://"
    for folder, folders, files in _filesystem(text).walk(text):
      yield prefix + folder, folders, files
    return
  if not scheme(text):  # local: as tf.io.gfile walks (into linked folders), without importing TensorFlow
    yield from os.walk(text, followlinks=True)
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  yield from tf.io.gfile.walk(text)


def _filesystem(url: str):
  """The fsspec filesystem epath itself uses for `url` (one instance, one listing cache)."""
  refuse_credentials(url)
  return epath_backend.fsspec_backend.fs(url)


def invalidate_listings(url: epath.PathLike) -> None:
  """Forgets cached listings of `url`, so that files another process wrote since are seen."""
  if scheme(url) in FSSPEC_SCHEMES:
    _filesystem(os.fspath(url)).invalidate_cache()


def list_files(url: epath.PathLike) -> dict[str, str]:
  """Every file below `url` in one recursive listing: relative path -> ETag (`""` if the store gives none).

  One request per 1000 files, where walking folder by folder costs several per folder.

  Raises:
    SourceError: naming `url`, if it cannot be listed (no such bucket, access
      denied, ...): an object store answers a missing prefix with an empty list.
  """
  text = os.fspath(url).rstrip("/")
  filesystem = _filesystem(text)
  try:
    found = filesystem.find(text, detail=True)
  except Exception as error:  # pylint: disable=broad-except  # s3fs/botocore: OSError, credential errors, ...
    raise errors.SourceError(errors.with_hint(
        f"{text} cannot be listed ({type(error).__name__}: {error})",
        "Check the URL (does the bucket exist?), the network and your credentials "
        "(AWS_* variables or ~/.aws for s3://)")) from error
  base = filesystem._strip_protocol(text).rstrip("/") + "/"  # pylint: disable=protected-access
  return {
      name[len(base):]: str(entry.get("ETag") or entry.get("etag") or "").strip('"')
      for name, entry in found.items()
      if name.startswith(base) and entry.get("type", "file") == "file"
  }


def download(copies: list[tuple[epath.PathLike, epath.PathLike]]) -> None:
  """Copies files to new local paths; from an object store in one concurrent batch (many small files).

  Raises:
    FileNotFoundError: if a source file is gone.
  """
  batch = [(os.fspath(source), os.fspath(target)) for source, target in copies if scheme(source) in FSSPEC_SCHEMES]
  if batch:
    _filesystem(batch[0][0]).get([source for source, _ in batch], [target for _, target in batch])
  for source, target in copies:
    if scheme(source) not in FSSPEC_SCHEMES:
      epath.Path(source).copy(target)


def cache_dir(url: epath.PathLike) -> epath.Path:
  """A local folder for copies of what lies under `url`: $TFDS_BUILDERS_CACHE_DIR or ~/.cache/tfds_builders.

  Named by a hash of the URL, never by its parts: a URL is not a safe path.
  """
  base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "tfds_builders")
  digest = hashlib.sha256(os.fspath(url).rstrip("/").encode()).hexdigest()[:16]
  return epath.Path(base) / "remote" / f"{scheme(url)}-{digest}"


def move_file(source: epath.PathLike, destination: epath.PathLike) -> None:
  """Moves one file, replacing `destination`: a rename locally, a server-side copy and delete on an object store.

  An object store has no folders to rename (epath's rename checks that the
  destination folder exists, which on S3 means holds a key already).
  """
  if scheme(source) in FSSPEC_SCHEMES:
    _filesystem(os.fspath(source)).mv(os.fspath(source), os.fspath(destination))
  else:
    epath.Path(source).replace(destination)


def move_tree(source: epath.Path, target: epath.Path, commit_file: str) -> None:
  """Moves the files below `source` to the same places below `target`, `commit_file` last; target's others go.

  For object stores, which rename no folder: a reader that takes
  `commit_file` as the sign of a whole folder (dataset_info.json for TFDS,
  registry_checksums.json for a registry) never takes half of one. It is
  removed from `target` first, so a folder being replaced is not whole either.
  """
  (target / commit_file).unlink(missing_ok=True)
  moving = sorted(_relative_files(source))
  stale = sorted(set(_relative_files(target)) - set(moving)) if target.exists() else []
  for name in moving:
    if name != commit_file:
      move_file(source / name, target / name)
  for name in stale:
    (target / name).unlink()
  move_file(source / commit_file, target / commit_file)


def _relative_files(folder: epath.Path) -> Iterator[str]:
  base = os.fspath(folder).rstrip("/")
  for directory, _, names in walk(folder):
    below = os.fspath(directory).rstrip("/")[len(base):].strip("/")
    yield from (f"{below}/{name}" if below else name for name in names)


def open_stream(path: epath.PathLike) -> BinaryIO:
  """Opens a file for reading forward in large reads, its memory bounded by them (plus 4 MiB read-ahead)."""
  if scheme(path) in FSSPEC_SCHEMES:
    return _filesystem(os.fspath(path)).open(
        os.fspath(path), "rb", block_size=_READ_AHEAD_BYTES, cache_type="readahead")
  return epath.Path(path).open("rb")
