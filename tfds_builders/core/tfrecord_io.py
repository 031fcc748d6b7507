"""Reading TFRecord files and globs (GZIP too), naming the file and record on corruption."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence

from etils import epath
import tensorflow as tf

from tfds_builders.core import errors
from tfds_builders.core import paths

COMPRESSIONS = ("auto", "none", "gzip")
_GZIP_MAGIC = b"\x1f\x8b"


def is_tfrecord_name(name: str) -> bool:
  """Whether a file found in a directory listing looks like a TFRecord file."""
  return ".tfrecord" in name or name.endswith((".tfrecords", ".tfr", ".gz"))


@dataclasses.dataclass(frozen=True)
class RecordFile:
  """One TFRecord file and how it is compressed (`""` or `"GZIP"`)."""

  path: epath.Path
  compression: str

  @property
  def name(self) -> str:
    return str(self.path)


def expand(
    patterns: Sequence[str] | str,
    *,
    compression: str = "auto",
    root: str | None = None,
) -> list[RecordFile]:
  """Resolves TFRecord files, directories and globs, detecting GZIP.

  Args:
    patterns: Files, directories or glob patterns.
    compression: `auto` (GZIP detected from the file's first bytes), `none`
      or `gzip`.
    root: Directory that relative patterns are taken from.

  Raises:
    ConfigError: for an unknown compression.
    SourceError: if a pattern matches nothing.
  """
  if compression.lower() not in COMPRESSIONS:
    raise errors.ConfigError(
        f"compression={compression!r}; use one of {COMPRESSIONS}."
    )
  files = paths.expand(patterns, kind="TFRecord", keep=is_tfrecord_name, root=root)
  return [RecordFile(path, _compression_of(path, compression.lower())) for path in files]


def _compression_of(path: epath.Path, configured: str) -> str:
  if configured != "auto":
    return "GZIP" if configured == "gzip" else ""
  with path.open("rb") as file:
    return "GZIP" if file.read(2) == _GZIP_MAGIC else ""


def read_records(source: RecordFile) -> Iterator[bytes]:
  """Yields the raw records of one file, in order.

  Uses TF's C++ record iterator, about 200x faster per record than iterating
  an eager `tf.data.TFRecordDataset`, and able to say which record failed.

  Raises:
    SourceError: naming the file and record index of a corrupt or truncated
      record.
  """
  options = tf.io.TFRecordOptions(compression_type=source.compression)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    iterator = tf.compat.v1.io.tf_record_iterator(source.name, options=options)
  index = 0
  while True:
    try:
      record = next(iterator)
    except StopIteration:
      return
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as error:
      raise corrupt_record(source.name, index, error) from error
    yield record
    index += 1


def corrupt_record(name: str, index: int, error: Exception) -> errors.SourceError:
  """The error for a record that cannot be read or parsed."""
  reason = " ".join(str(error).split())[:200]
  return errors.SourceError(
      errors.with_hint(
          f"{name}: record {index} is corrupt or truncated ({reason})",
          "Regenerate or re-download the file; records before it are intact.",
      )
  )


def count_records(source: RecordFile) -> int:
  """The number of records in a file (a full read, no parsing)."""
  return sum(1 for _ in read_records(source))
