"""Copying source records into the output: provenance tags, optional zlib re-encoding."""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2

from tfds_builders.concatenated import mixing
from tfds_builders.concatenated import sources
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import tfrecord_io

KeySerialized = tuple[str, bytes]


@dataclasses.dataclass(frozen=True)
class ZlibEncoder:
  """Re-encodes chosen numeric features as TFDS `Tensor(encoding="zlib")` does.

  Attributes:
    features: (name, output dtype) of each feature to compress.
  """

  features: tuple[tuple[str, str], ...]

  def __call__(self, record: bytes) -> bytes:
    example = tf_example_pb2.Example.FromString(record)
    feature_map = example.features.feature
    for name, dtype in self.features:
      feature = feature_map[name]
      kind = feature.WhichOneof("kind")
      wire_dtype = np.int64 if kind == "int64_list" else np.float32
      values = np.asarray(getattr(feature, kind).value, dtype=wire_dtype)
      feature.Clear()
      # TFDS's own encoder: the values' bytes in the feature dtype, zlib level 6.
      feature.bytes_list.value.append(zlib.compress(values.astype(dtype).tobytes()))
    return example.SerializeToString(deterministic=True)


@dataclasses.dataclass(frozen=True)
class CopyTask:
  """One record file of one source split, copied as one partition.

  Attributes:
    source: Source name.
    source_id: Index of the source in the `source` ClassLabel.
    split: The source's split.
    part: The record file and its place in the split.
    typed: Prepared TFDS source (keys as split slices) or raw (file:record).
    provenance_feature: Name of the provenance features, or None for none.
    zlib: Re-encoder of compressed features, or None.
  """

  source: str
  source_id: int
  split: str
  part: sources.RecordPart
  typed: bool
  provenance_feature: str | None
  zlib: ZlibEncoder | None


def copy_records(task: CopyTask, key_suffix: str = "") -> Iterator[KeySerialized]:
  """Yields `(key, record)` for every record of the task's file, tagged.

  The record bytes are the source's own; the provenance features are a
  second serialized Example appended to them, which parsers merge into one.

  Raises:
    SourceError: naming the source, file and record index of a corrupt
      record, or the file and both counts if it holds another number of
      records than the source said.
  """
  part = task.part
  provenance_head = _Provenance(task.provenance_feature, task.source_id).head if task.provenance_feature else None
  zlib_encoder, typed = task.zlib, task.typed
  key_prefix = f"{task.source}:{task.split}:"
  split_index = part.first_index
  # Where in the source, as the provenance key says: a TFDS split slice or file:record.
  where_prefix = f"{task.split}[" if typed else f"{part.file_name}:"
  try:
    for index, record in enumerate(_checked_records(part, typed)):
      if zlib_encoder:
        record = zlib_encoder(record)
      if provenance_head is not None:
        where = (f"{where_prefix}{split_index}:{split_index + 1}]" if typed else f"{where_prefix}{index}").encode()
        record = b"".join((record, provenance_head(len(where)), where))
      yield f"{key_prefix}{split_index}{key_suffix}", record
      split_index += 1
  except errors.SourceError as error:  # read_records names the file and record
    raise errors.SourceError(f"source {task.source!r}: {error}") from error


def _checked_records(part: sources.RecordPart, typed: bool) -> Iterator[bytes]:
  """The records of one file, which must be exactly as many as the source said.

  A prepared source's count is its dataset_info.json shard length, a raw
  one's what the schema pass counted: a file holding fewer or more records
  would otherwise change the dataset silently. Each record is given once the
  next one is read, so the count is checked before the last expected record
  leaves, also where the reader stops there (an interleaved stream's end).

  Raises:
    SourceError: naming the file and both counts, if they differ.
  """
  source_of_count = (
      "its dataset's dataset_info.json (shard_lengths)" if typed
      else "the count taken when its schema was inferred, earlier in this build"
  )
  records = tfrecord_io.counted(
      fast.record_index.read_records(part.file), part.num_records, part.file.name, source_of_count)
  pending = next(records, _END)
  while pending is not _END:
    following = next(records, _END)
    yield pending
    pending = following


_END = object()


class _Provenance:
  """The provenance Example appended to a record, encoded but for its key's text.

  Byte for byte `serialization.example([source entry, key entry])`: the
  source id is the same for every record of a task and the key's text
  changes only in length, so each length's head is built once.
  """

  def __init__(self, feature: str, source_id: int):
    self._source_entry = b"".join(
        serialization.int64_feature(serialization.FeatureKey(feature), [source_id]))
    self._key_field = serialization.FeatureKey(f"{feature}_key")
    self._heads: dict[int, bytes] = {}

  def head(self, key_size: int) -> bytes:
    """Everything before a key text of `key_size` bytes."""
    head = self._heads.get(key_size)
    if head is None:
      key_head = serialization.fixed_entry_head(self._key_field, "bytes", key_size)
      size = len(self._source_entry) + len(key_head) + key_size
      head = b"".join([serialization.example_head(size), self._source_entry, key_head])
      self._heads[key_size] = head
    return head


def copy_all(tasks: Sequence[CopyTask], key_suffix: str = "") -> Iterator[KeySerialized]:
  """The records of several tasks, one after another."""
  for task in tasks:
    yield from copy_records(task, key_suffix)


def interleave(
    streams: Sequence[Sequence[CopyTask]],
    lengths: Sequence[int],
    weights: Sequence[float] | None,
    seed: int,
    stopping_strategy: str,
) -> Iterator[KeySerialized]:
  """Mixes streams (one per source) in `mixing.schedule` order.

  One reader is open per stream at a time; a stream that starts over under
  `all_exhausted` is read again from its first file, and its repeated
  examples get keys ending in `#pass<N>`.
  """
  readers = [_passes(tasks) for tasks in streams]
  for stream in mixing.schedule(lengths, weights, seed, stopping_strategy):
    yield next(readers[stream])


def _passes(tasks: Sequence[CopyTask]) -> Iterator[KeySerialized]:
  for number in itertools.count():
    yield from copy_all(tasks, f"#pass{number}" if number else "")
