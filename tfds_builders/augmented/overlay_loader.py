"""`load_augmented`: an overlay zipped back onto its unmodified base, every example's alignment checked."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath
from etils import epy
import numpy as np
import tensorflow_datasets as tfds

with epy.lazy_imports():  # tf.data reads the overlay: imported when a loader runs, not with the builder
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import tfrecord_io

BaseArg = str | Mapping[str, Sequence[str] | str] | None


@dataclasses.dataclass(frozen=True)
class _SplitLengths:
  """What `ReadInstruction.to_absolute` needs of a split."""

  num_examples: int
  shard_lengths: list[int]


def load_augmented(
    overlay: str,
    *,
    split: str | Sequence[str],
    base: BaseArg = None,
    data_dir: str | None = None,
    base_data_dir: str | None = None,
    decoders: Mapping[str, Any] | None = None,
) -> tf.data.Dataset | list[tf.data.Dataset]:
  """The base's examples with the overlay's new fields, as one feature dict.

  Both are read in stored order, with the same slice of the split applied
  to both (`split="train[10:20]"`, `"train[:10%]+test"`; `shard` slices count
  the base's files). Shuffle the result with `ds.shuffle(...)`, not by files.

  Guarantees:
    * An overlay built from another base, another version of it, or a base
      whose files changed in number, name, size or record count, is rejected
      before reading (SourceError saying what differs).
    * The base records the split covers are read once per file and process
      before the dataset is returned: a record whose bytes no longer match
      their CRC32C (or a corrupt frame) is a SourceError naming the base
      file, the record and the base example, never a record dropped.
    * Every example is checked: the overlay stores its base example's index
      and its record's frame fingerprint (length and stored CRC32C). As each
      base file is opened, its frames are read again and compared, and
      TensorFlow checks every record it reads against its CRC. A mismatch
      (the base was rewritten in place) stops iteration with
      `tf.errors.InvalidArgumentError` naming the example; a file corrupted
      after this call stops it with TensorFlow's `tf.errors.DataLossError`.
      A wrong join is never returned.
    * Examples the side table had no row for (missing_policy="skip") are
      left out.

  Args:
    overlay: The overlay: its version directory, or `augmented/<config>[:version]`
      under `data_dir`.
    split: A TFDS split spec, or a list of them (returns a list of datasets).
    base: The base, when it is not where the overlay was built from: a
      prepared dataset's directory or name (under `base_data_dir`), or
      `{split: files or globs}` for a raw TFRecord base.
    data_dir: Where an overlay given by name is.
    base_data_dir: Where a base given by name is.
    decoders: TFDS decoders for base features (e.g. `tfds.decode.SkipDecoding()`).

  Returns:
    A `tf.data.Dataset` of feature dicts (base features and new fields).

  Raises:
    SourceError: if the overlay or base is missing, they do not belong
      together, or a base record the split covers is corrupt.
  """
  if not isinstance(split, str) and isinstance(split, Sequence):
    return [
        load_augmented(overlay, split=one, base=base, data_dir=data_dir,
                       base_data_dir=base_data_dir, decoders=decoders)
        for one in split
    ]
  overlay_builder = tfrecord_io.prepared_builder(overlay, data_dir)
  metadata = overlay_format.read_metadata(overlay_builder)
  recorded = metadata["base"]
  base_dataset = _open_base(recorded, base, base_data_dir)
  if base_dataset.digest() != recorded["digest"]:
    raise errors.SourceError(
        errors.with_hint(
            f"Overlay {overlay_builder.info.full_name} was built from another base than "
            f"{base_dataset.title()}: {overlay_format.identity_difference(recorded, base_dataset.identity())}",
            f"Pass the base it was built from ({recorded['name']}"
            f"{' ' + recorded['version'] if recorded.get('version') else ''} at {recorded['location']}), "
            "or rebuild the overlay against this base",
        )
    )
  lengths = {
      name: _SplitLengths(base_split.num_examples, [file.num_records for file in base_split.files])
      for name, base_split in base_dataset.splits.items()
  }
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(lengths)
  except (ValueError, AssertionError) as error:
    raise errors.ConfigError(f"split={split!r} does not apply to the overlay's splits {sorted(lengths)}: {error}") from error
  ranges = [
      (instruction.splitname, instruction.from_ or 0,
       lengths[instruction.splitname].num_examples if instruction.to is None else instruction.to)
      for instruction in instructions
  ]
  total = sum(stop - start for _, start, stop in ranges)
  base_files = {name: [(f.path, f.compression, f.num_records) for f in s.files] for name, s in base_dataset.splits.items()}
  _check_base_records(base_files, ranges, overlay_builder.info.full_name)
  overlay_files = {
      name: [(str(path), "", count) for path, count in zip(info.filepaths, info.shard_lengths)]
      for name, info in overlay_builder.info.splits.items()
  }
  base_raw = _raw_records(base_files, ranges).apply(tf.data.experimental.assert_cardinality(total))
  overlay_raw = _raw_records(overlay_files, ranges).apply(tf.data.experimental.assert_cardinality(total))
  frames = _frame_fingerprints(base_files, ranges).apply(tf.data.experimental.assert_cardinality(total))
  indices = _indices(ranges)
  name = overlay_builder.info.full_name
  join = _Join(
      name=name,
      base_features=base_dataset.features,
      overlay_features=overlay_builder.info.features,
      new_names=list(metadata["new_fields"]),
      decoders=decoders,
  )
  dataset = tf.data.Dataset.zip((base_raw, overlay_raw, indices, frames)).map(
      join.check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  if metadata.get("missing_policy") == "skip":
    dataset = dataset.filter(lambda base_record, new_fields, matched: matched)
  dataset = dataset.map(join.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _open_base(recorded: Mapping[str, Any], base: BaseArg, base_data_dir: str | None) -> base_lib.Base:
  splits = list(recorded["splits"])
  if isinstance(base, Mapping):
    if recorded["kind"] != base_lib.RECORDS:
      raise errors.ConfigError(
          f"base={dict(base)!r} names raw TFRecord files, but the overlay was built from the "
          f"prepared dataset {recorded['name']}; pass its directory or name."
      )
    return base_lib.records_from_identity(recorded, base, "auto", None)
  if recorded["kind"] == base_lib.RECORDS:
    if base is not None:
      raise errors.ConfigError(
          f"base={base!r}: the overlay was built from raw TFRecord files; pass them as "
          "base={split: files or globs}, or leave base out to use the recorded paths."
      )
    return base_lib.records_from_identity(recorded, recorded["paths"], "auto", None)
  location = base if base is not None else recorded["location"]
  return base_lib.open_prepared(location, base_data_dir, splits)


FileList = Mapping[str, list[tuple[str, str, int]]]  # split -> (path, compression, records)
# (path, size, mtime) -> how many leading records this process read intact,
# for the files of the latest loads only: the least recently checked are forgotten.
_INTACT_RECORDS: collections.OrderedDict[tuple[str, int, int], int] = collections.OrderedDict()
_INTACT_RECORDS_KEPT = 4096


def _check_base_records(files: FileList, ranges: list[tuple[str, int, int]], overlay_name: str) -> None:
  """Reads the base records the ranges cover, once per file and process, so a corrupt one is named.

  TensorFlow's reader would stop the iteration midway with a DataLossError
  naming neither file nor record. A file that holds fewer records than
  recorded is left to the dataset's own checks (fingerprints, cardinality).

  Raises:
    SourceError: naming the base file, the record in it and the base example.
  """
  for split, start, stop in ranges:
    first = 0
    for path, compression, count in files[split]:
      end = min(stop, first + count)
      if max(start, first) < end:  # the range reaches into this file
        file = tfrecord_io.RecordFile(epath.Path(path), compression)
        _check_leading_records(file, end - first, overlay_name, split, first)
      first += count


def _check_leading_records(file: tfrecord_io.RecordFile, needed: int, overlay_name: str, split: str,
                           first: int) -> None:
  """Reads the first `needed` records of a file (split examples from `first` on), unless this process did since it changed."""
  key = (file.name, *_size_and_mtime(file.path))
  if _INTACT_RECORDS.get(key, 0) >= needed:
    _INTACT_RECORDS.move_to_end(key)
    return
  intact = 0
  try:
    for _ in itertools.islice(fast.record_index.read_records(file), needed):
      intact += 1
  except errors.SourceError as error:  # read_records names the file, record and remedy
    raise errors.SourceError(
        errors.with_hint(
            f"The base of overlay {overlay_name} cannot be read from base example {split}[{first + intact}] on: {error}",
            "The overlay need not be rebuilt once the base file is restored",
        )
    ) from error
  _INTACT_RECORDS[key] = intact
  _INTACT_RECORDS.move_to_end(key)
  while len(_INTACT_RECORDS) > _INTACT_RECORDS_KEPT:
    _INTACT_RECORDS.popitem(last=False)


def _size_and_mtime(path: epath.Path) -> tuple[int, int]:
  try:
    local = os.stat(path)
    return local.st_size, local.st_mtime_ns
  except (OSError, ValueError):  # a remote path: its stat has whole seconds
    stat = path.stat()
    return stat.length, stat.mtime


def _file_slices(files: FileList, ranges: list[tuple[str, int, int]]) -> list[list[Any]]:
  """`[paths, compressions, skips, takes]`: the file slices covering index ranges of splits, in order."""
  slices = []
  for split, start, stop in ranges:
    first = 0
    for path, compression, count in files[split]:
      skip, end = max(start, first) - first, min(stop, first + count) - first
      if end > skip:
        slices.append((path, compression, skip, end - skip))
      first += count
  return [list(column) for column in zip(*slices)]


def _raw_records(files: FileList, ranges: list[tuple[str, int, int]]) -> tf.data.Dataset:
  """The raw records of index ranges of splits, in order, read file slice by file slice."""
  slices = _file_slices(files, ranges)
  if not slices:
    return tf.data.Dataset.from_tensor_slices(tf.constant([], dtype=tf.string))
  return tf.data.Dataset.from_tensor_slices(tuple(slices)).flat_map(
      lambda path, compression, skip, take: tf.data.TFRecordDataset(
          path, compression_type=compression).skip(tf.cast(skip, tf.int64)).take(tf.cast(take, tf.int64))
  )


def _frame_fingerprints(files: FileList, ranges: list[tuple[str, int, int]]) -> tf.data.Dataset:
  """Each record's frame fingerprint, read from a file's headers when the file is reached."""
  slices = _file_slices(files, ranges)
  if not slices:
    return tf.data.Dataset.from_tensor_slices(tf.constant([], dtype=tf.int64))

  def read(path: tf.Tensor, compression: tf.Tensor, skip: tf.Tensor, take: tf.Tensor) -> np.ndarray:
    record_file = tfrecord_io.RecordFile(epath.Path(path.numpy().decode()), compression.numpy().decode())
    return fast.record_index.fingerprints(record_file, int(skip), int(take))

  def file_fingerprints(path, compression, skip, take) -> tf.data.Dataset:
    found = tf.py_function(read, [path, compression, skip, take], tf.int64)
    return tf.data.Dataset.from_tensor_slices(tf.reshape(found, [-1]))

  return tf.data.Dataset.from_tensor_slices(tuple(slices)).flat_map(file_fingerprints)


def _indices(ranges: list[tuple[str, int, int]]) -> tf.data.Dataset:
  datasets = [tf.data.Dataset.range(start, stop) for _, start, stop in ranges]
  dataset = datasets[0] if datasets else tf.data.Dataset.range(0)
  for more in datasets[1:]:
    dataset = dataset.concatenate(more)
  return dataset


@dataclasses.dataclass(frozen=True)
class _Join:
  """The per-example check and decoding, as tf.data map functions."""

  name: str
  base_features: tfds.features.FeaturesDict
  overlay_features: tfds.features.FeaturesDict
  new_names: list[str]
  decoders: Mapping[str, Any] | None

  def check(self, base_record: tf.Tensor, overlay_record: tf.Tensor, index: tf.Tensor, frame: tf.Tensor):
    overlay = self.overlay_features.deserialize_example(overlay_record)
    frame_length = tf.bitwise.right_shift(frame, 32)
    # tf.debugging.Assert stops iteration with InvalidArgumentError carrying `data`.
    checks = [
        tf.debugging.Assert(
            tf.equal(overlay[overlay_format.BASE_INDEX], index),
            [f"Overlay {self.name} is misaligned with its base: the overlay example read "
             "for base example", index, "holds base index", overlay[overlay_format.BASE_INDEX],
             ". Rebuild the overlay."],
        ),
        tf.debugging.Assert(
            tf.equal(overlay[overlay_format.BASE_FINGERPRINT], frame),
            [f"Overlay {self.name} does not match its base at base example", index,
             ": the base record's fingerprint differs from the one the overlay was built "
             "from (the base was rewritten since). Rebuild the overlay against this base."],
        ),
        tf.debugging.Assert(
            tf.equal(tf.cast(tf.strings.length(base_record), tf.int64), frame_length),
            ["Base example", index, f"of overlay {self.name} changed while it was read "
             "(its length differs from its frame's). Load it again."],
        ),
    ]
    matched = overlay.get(overlay_format.MATCHED, tf.constant(True))
    with tf.control_dependencies(checks):
      new_fields = {name: tf.identity(overlay[name]) for name in self.new_names}
      return tf.identity(base_record), new_fields, tf.identity(matched)

  def decode(self, base_record: tf.Tensor, new_fields: dict[str, tf.Tensor], matched: tf.Tensor):
    del matched
    example = self.base_features.deserialize_example(base_record, decoders=self.decoders)
    return {**example, **new_fields}
