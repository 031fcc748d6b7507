"""Reading TFRecord files and globs (GZIP too), naming the file and record on corruption."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import remote
from tfds_builders.core import safe_paths
from tfds_builders.core import wire

COMPRESSIONS = ("auto", "none", "gzip")
GZIP_MAGIC = b"\x1f\x8b"
# A ZLIB stream's first byte (CMF): DEFLATE with a 32 KiB window, which every zlib writer uses.
_ZLIB_CMF = 0x78
_Item = TypeVar("_Item")


def starts_zlib(head: bytes) -> bool:
  """Whether two bytes open a ZLIB stream (RFC 1950: CMF 78, no preset dictionary, CMF*256+FLG a multiple of 31).

  TensorFlow writes such files with `options="ZLIB"`; only GZIP is read here.
  """
  return len(head) >= 2 and head[0] == _ZLIB_CMF and not head[1] & 0x20 and (head[0] << 8 | head[1]) % 31 == 0


def is_tfrecord_name(name: str) -> bool:
  """Whether a file found in a directory listing looks like a TFRecord file."""
  return ".tfrecord" in name or name.endswith((".tfrecords", ".tfr", ".gz"))


@dataclasses.dataclass(frozen=True)
class FramedRecords:
  """Consecutive records already framed as TFRecords, end to end (framed by `core.fast.record_blocks`).

  A generator may yield `(keys, FramedRecords)` between `(key, serialized)`
  pairs: a TFRecord shard stores the block with one write, other formats get
  its records one by one.

  Attributes:
    data: The frames' bytes (uint8).
    ends: Where each frame ends in `data`.
  """

  data: np.ndarray
  ends: np.ndarray

  def __len__(self) -> int:
    return len(self.ends)

  def records(self) -> list[bytes]:
    """The records without their frames."""
    blob = self.data.tobytes()
    starts = [0, *self.ends[:-1].tolist()]
    return [blob[start + wire.FRAME_HEADER_BYTES:end - wire.FRAME_CRC_BYTES]
            for start, end in zip(starts, self.ends.tolist())]

  def record_sizes(self) -> np.ndarray:
    return np.diff(self.ends, prepend=0) - wire.FRAME_BYTES

  def split(self, count: int) -> tuple[FramedRecords, FramedRecords]:
    """The first `count` frames, and the rest."""
    cut = int(self.ends[count - 1]) if count else 0
    return FramedRecords(self.data[:cut], self.ends[:count]), FramedRecords(self.data[cut:], self.ends[count:] - cut)


@dataclasses.dataclass(frozen=True)
class RecordFile:
  """One TFRecord file and how it is compressed (`""` or `"GZIP"`).

  `compression_field` is the config field that set the compression, which a
  message about a compression mismatch tells the user to check.
  """

  path: epath.Path
  compression: str
  compression_field: str = dataclasses.field(default="compression", compare=False)

  @property
  def name(self) -> str:
    return str(self.path)


def expand(
    patterns: Sequence[str] | str,
    *,
    compression: str = "auto",
    root: str | None = None,
    compression_field: str = "compression",
) -> list[RecordFile]:
  """Resolves TFRecord files, directories and globs, detecting GZIP.

  Args:
    patterns: Files, directories or glob patterns.
    compression: `auto` (GZIP detected from the file's first bytes), `none`
      or `gzip`.
    root: Directory that relative patterns are taken from.
    compression_field: The config field `compression` comes from, named in
      messages about a compression mismatch.

  Raises:
    ConfigError: for an unknown compression, or one file reached twice (two
      spellings, a symlink and its target, a glob and an explicit name):
      refused rather than deduplicated, so that what a build reads is what
      its config lists.
    SourceError: if a pattern matches nothing.
  """
  if compression.lower() == "zlib":
    raise errors.ConfigError(
        errors.with_hint(
            f"{compression_field}={compression!r}: ZLIB-compressed TFRecord files are not supported",
            f"Recompress them as GZIP (then set {compression_field} to 'gzip', or 'auto' to detect it) or "
            "decompress them",
        )
    )
  if compression.lower() not in COMPRESSIONS:
    raise errors.ConfigError(
        f"{compression_field}={compression!r}; use one of {COMPRESSIONS}."
    )
  files: list[epath.Path] = []
  seen: dict[object, tuple[str, epath.Path]] = {}
  for pattern in [patterns] if isinstance(patterns, str) else patterns:
    for path in paths.expand(pattern, kind="TFRecord", keep=is_tfrecord_name, root=root):
      identity = file_identity(path)
      if identity in seen:
        raise _same_file(seen[identity], (pattern, path))
      seen[identity] = (pattern, path)
      files.append(path)
  return [RecordFile(path, _compression_of(path, compression.lower()), compression_field) for path in files]


def file_identity(path: epath.Path | str) -> object:
  """What is equal for every spelling of one file: device and inode locally, the normalized URL remotely."""
  text = os.fspath(path)
  if "://" in text:
    scheme, rest = text.split("://", 1)
    return scheme.lower(), posixpath.normpath(rest)
  try:
    status = os.stat(text)
  except OSError:  # a dangling link: its reader reports it
    return os.path.realpath(text)
  return status.st_dev, status.st_ino


def _same_file(first: tuple[str, epath.Path], second: tuple[str, epath.Path]) -> errors.ConfigError:
  """The error for one file reached twice, naming both spellings and the patterns that gave them."""
  (first_pattern, first_path), (second_pattern, second_path) = first, second
  by = f"by {first_pattern!r}" if first_pattern == second_pattern else f"by {first_pattern!r} and {second_pattern!r}"
  if first_path == second_path:
    found = f"{first_path} is matched twice, {by}"
  else:
    found = f"{first_path} and {second_path} are the same file, matched {by}"
  return errors.ConfigError(
      errors.with_hint(
          f"{found}: its records would be read twice",
          "List each file once (check for overlapping globs, '..' in paths and symlinks)",
      )
  )


def _compression_of(path: epath.Path, configured: str) -> str:
  if configured != "auto":
    return "GZIP" if configured == "gzip" else ""
  with remote.open_stream(path) as file:  # not epath's open: s3fs would fetch 50 MiB ahead for 2 bytes
    return "GZIP" if file.read(2) == GZIP_MAGIC else ""


def counted(records: Iterable[_Item], expected: int, name: str, source_of_count: str) -> Iterator[_Item]:
  """Yields the records of one file, then raises if there were not `expected` of them.

  Counting costs nothing while the records are read anyway; a shard that
  lost or gained records would otherwise be built silently.

  Args:
    records: The file's records (or anything yielded once per record).
    expected: How many it should hold.
    name: The file, for the message.
    source_of_count: Where `expected` comes from, e.g. "its dataset_info.json (shard_lengths)".

  Raises:
    SourceError: naming the file and both counts, once the records run out
      (or one too many is read: the rest are then counted without being yielded).
  """
  found = 0
  iterator = iter(records)
  for record in iterator:
    found += 1
    if found > expected:
      raise count_mismatch(name, expected, found + sum(1 for _ in iterator), source_of_count)
    yield record
  if found != expected:
    raise count_mismatch(name, expected, found, source_of_count)


def count_mismatch(name: str, expected: int, found: int, source_of_count: str) -> errors.SourceError:
  """The error for a file holding another number of records than recorded for it."""
  return errors.SourceError(
      errors.with_hint(
          f"{name} holds {found} records, but {source_of_count} says {expected}",
          "The file was cut short, replaced or appended to since it was recorded: rebuild the dataset, "
          "or re-fetch its files",
      )
  )


def corrupt_record(name: str, index: int, error: Exception) -> errors.SourceError:
  """The error for a record that cannot be read or parsed."""
  reason = " ".join(str(error).split())[:200]
  return errors.SourceError(
      errors.with_hint(
          f"{name}: record {index} is corrupt or truncated ({reason})",
          "Regenerate or re-download the file; records before it are intact.",
      )
  )


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
  """One split of a prepared TFDS dataset, as raw record files."""

  dataset: str  # name/config:version, for messages and provenance
  split: str
  files: list[RecordFile]
  features: tfds.features.FeatureConnector
  num_examples: int
  data_path: str


def prepared_builder(location: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Opens a prepared dataset by directory or by `name[/config][:version]`.

  Raises:
    SourceError: if no prepared dataset is found there.
  """
  not_found = errors.SourceError(
      errors.with_hint(
          f"No prepared TFDS dataset at {location!r}" + (f" in data_dir {data_dir}" if data_dir else ""),
          "Pass a version directory holding dataset_info.json, or a "
          "name/config:version prepared under data_dir",
      )
  )
  # TFDS takes `~` literally; users type it as their shell would expand it.
  directory = os.path.expanduser(location) if location.startswith("~") else location
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
  try:
    if (epath.Path(directory) / "dataset_info.json").exists():
      return tfds.builder_from_directory(directory)
    builder = tfds.builder(location, data_dir=data_dir, try_gcs=False)
  except Exception as error:  # TFDS raises several types for "not found"
    raise not_found from error
  if not builder.is_prepared():  # TFDS gives an unprepared builder, with no splits, rather than failing
    raise not_found
  return builder


def prepared_split(builder: tfds.core.DatasetBuilder, split: str) -> PreparedSplit:
  """The record files of one split of a prepared dataset.

  Raises:
    SourceError: if the split does not exist or is not stored as TFRecord,
      or a shard is a symlink or special file (see `shard_path`).
  """
  info = builder.info
  dataset = f"{info.full_name}"
  if split not in info.splits:
    raise errors.SourceError(
        f"{dataset} has no split {split!r}; it has {sorted(info.splits)}."
    )
  if info.file_format != tfds.core.FileFormat.TFRECORD:
    raise errors.SourceError(
        f"{dataset} is stored as {info.file_format.value}; only TFRecord "
        "datasets can be read record by record here. Rebuild it with "
        "--file_format=tfrecord."
    )
  split_info = info.splits[split]
  files = [RecordFile(shard_path(builder.data_path, name, dataset), "") for name in split_info.filenames]
  return PreparedSplit(dataset, split, files, info.features, split_info.num_examples, str(builder.data_path))


def shard_path(data_path: epath.PathLike, name: str, dataset: str) -> epath.Path:
  """`data_path/name` for a shard that a dataset's dataset_info.json names, refused unless a real file.

  The name comes from a file, so it is checked before it is joined, and the
  shard is never followed through a symlink (nor opened if it is a FIFO or
  device): a prepared dataset's shards are its own files, as in a registry.
  A missing shard is left to the caller, which names what is missing.

  Raises:
    SourceError: naming the shard if its name could leave `data_path`, or it
      (or a folder between it and `data_path`) is a symlink or special file.
  """
  hint = "Copy the real file in its place, or rebuild the dataset"
  where = f"{dataset} at {data_path}: shard"
  parts = safe_paths.relative_parts(
      name, f"{dataset} at {data_path}: a shard its dataset_info.json names",
      "Its dataset_info.json is damaged or was crafted: rebuild the dataset, or fetch it again")
  path = epath.Path(data_path)
  for part in parts:
    path = path / part
    if not safe_paths.is_local(path):
      continue
    try:
      mode = os.lstat(os.fspath(path)).st_mode
    except FileNotFoundError:
      break
    if stat.S_ISLNK(mode):
      raise errors.SourceError(
          errors.with_hint(
              f"{where} {path} is a symlink (to {os.readlink(path)!r}); a prepared dataset's shards are read "
              "only as the real files in its folder",
              hint,
          )
      )
    if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
      raise errors.SourceError(
          errors.with_hint(f"{where} {path} is a {safe_paths.file_kind(mode)}, not a regular file", hint))
  return path
