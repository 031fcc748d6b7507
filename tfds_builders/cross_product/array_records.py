"""ArrayRecord inputs of a cross product: `.array_record` files, or a prepared TFDS dataset built as array_record."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from etils import epath

from tfds_builders.core import errors

# TFDS names its shards `<name>-<split>.array_record-00000-of-00001`; raw files end in `.array_record`.
_MARKER = ".array_record"
_CHUNK_RECORDS = 4096


def is_array_record_name(name: str) -> bool:
  """Whether a file found in a directory listing looks like an ArrayRecord file."""
  return _MARKER in name


@dataclasses.dataclass(frozen=True)
class ArrayRecordFile:
  """One ArrayRecord file of serialized tf.train.Example (read whole, or record by record)."""

  path: epath.Path

  @property
  def name(self) -> str:
    return str(self.path)


def read_records(source: ArrayRecordFile) -> Iterator[bytes]:
  """Every record of the file, in order, read `_CHUNK_RECORDS` at a time (memory bounded by a chunk, not the file).

  Raises:
    SourceError: naming the file, if it cannot be opened or is no valid
      ArrayRecord file (too short, corrupt or truncated).
  """
  # Lazy: the C++ extension is needed only by builds and sources that read ArrayRecord.
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  try:
    reader = array_record_module.ArrayRecordReader(str(source.path))
    try:
      if not reader.ok():
        reader.read_all()  # raises the extension's own reason (too short, not Riegeli, missing)
        raise RuntimeError("the reader does not open it")
      count = reader.num_records()
      for start in range(0, count, _CHUNK_RECORDS):
        yield from reader.read(start, min(start + _CHUNK_RECORDS, count))
    finally:
      reader.close()
  except RuntimeError as error:  # the extension's only error type: open, format and checksum failures
    raise errors.SourceError(
        errors.with_hint(
            f"{source.name}: not a readable ArrayRecord file ({error})",
            "Point the input at .array_record files (or a dataset built with --file_format array_record) "
            "that are complete",
        )
    ) from error


def only_array_records(side: str, files: Sequence[object]) -> None:
  """Refuses an input of a virtual cross product that is not all ArrayRecord files.

  Raises:
    SourceError: naming the side and the first other file.
  """
  others = [source.name for source in files if not isinstance(source, ArrayRecordFile)]
  if others:
    raise errors.SourceError(
        errors.with_hint(
            f"{side} input (`{side}`): {others[0]} is not an ArrayRecord file; the virtual cross product reads "
            "its inputs by index",
            "Convert it (e.g. build the dataset with --file_format array_record), or materialize the pairs "
            "with the cross_product builder, which reads TFRecord too",
        )
    )
