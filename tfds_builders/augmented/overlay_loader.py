"""`load_augmented`: an overlay zipped back onto its unmodified base, every example's alignment checked."""

from __future__ import annotations

import collections
import dataclasses
import functools
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
from tfds_builders.augmented import chain as chain_lib
from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import tfrecord_io

BaseArg = str | Mapping[str, Sequence[str] | str] | None


def load_augmented(
    overlay: str,
    *,
    split: str | Sequence[str],
    base: BaseArg = None,
    data_dir: str | None = None,
    base_data_dir: str | None = None,
    decoders: Mapping[str, Any] | None = None,
    locations: Mapping[str, str] | None = None,
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
    * An overlay on another overlay (a chain) is resolved down to its root
      base: every link's identity (digest) is checked before reading, and
      every link's alignment per example. Fields merge in chain order (root
      features, then each link's; a later link's `overwrite_fields` wins),
      constants are added, and an example any link flags unmatched is left out.

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
    locations: Recorded location -> where it is now, for chain links or a
      base that moved since they were built.

  Returns:
    A `tf.data.Dataset` of feature dicts (base features and new fields).

  Raises:
    SourceError: if the overlay or base is missing, they do not belong
      together, or a base record the split covers is corrupt; for a chain
      with a cycle, a missing link or a link rebuilt since.
    ConfigError: for a chain whose links write one field that the later
      does not list in `overwrite_fields`.
  """
  if not isinstance(split, str) and isinstance(split, Sequence):
    return [
        load_augmented(overlay, split=one, base=base, data_dir=data_dir,
                       base_data_dir=base_data_dir, decoders=decoders, locations=locations)
        for one in split
    ]
  overlay, locations = chain_lib.published(overlay, locations)
  overlay_builder = tfrecord_io.prepared_builder(overlay, data_dir)
  chain = chain_lib.resolve(chain_lib.link_of(overlay_builder), locations)
  chain_lib.check_tfrecord_links(chain, "load_augmented (tf.data)")
  base_dataset = chain_lib.open_root(chain, base, base_data_dir, locations)
  chain_lib.check_root(chain, base_dataset)
  base_lib.check_tf_data_readable(base_dataset, overlay_builder.info.full_name)
  ranges = base_dataset.ranges(split)
  base_files = {name: [(f.path, f.compression, f.num_records) for f in s.files] for name, s in base_dataset.splits.items()}
  _check_base_records(base_files, ranges, overlay_builder.info.full_name)
  join = _Join(
      base_features=base_dataset.features,
      links=tuple(link for link in chain.links if link.stored_names),  # a link of constants only is not read
      decoders=decoders,
  )
  skips = any(link.metadata.get("missing_policy") == "skip" for link in chain.links)
  # One pipeline per run of ranges of one split: a split's constants are tensors of that pipeline.
  datasets = [
      _joined(join, base_files, list(group), chain_lib.constant_values(chain, split_name), skips)
      for split_name, group in itertools.groupby(ranges, key=lambda one: one[0])
  ]
  dataset = functools.reduce(lambda left, right: left.concatenate(right), datasets) if datasets else _joined(
      join, base_files, [], {}, skips)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _joined(join: _Join, base_files: FileList, ranges: list[tuple[str, int, int]],
            constants: Mapping[str, np.ndarray], skips: bool) -> tf.data.Dataset:
  """The checked, decoded examples of ranges of one split.

  Base and link records are zipped and checked a batch at a time; each
  base record and its links' records are then one Example (serialized
  Examples concatenated merge, the later value winning), decoded with one
  parse as TFDS decodes the base alone.
  """
  total = sum(stop - start for _, start, stop in ranges)
  link_raws = tuple(_raw_records(_link_files(link, ranges), ranges) for link in join.links)
  zipped = tf.data.Dataset.zip(
      (_raw_records(base_files, ranges), link_raws, _indices(ranges), _frame_fingerprints(base_files, ranges)))
  # A stream shorter than the others ends the zip: its last batch's checks name the example, and
  # the count, asserted after them, says how many are missing.
  dataset = zipped.batch(_CHECK_BATCH).map(
      tf.autograph.experimental.do_not_convert(join.check), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  ).unbatch().apply(tf.data.experimental.assert_cardinality(total))
  if skips:
    dataset = dataset.filter(lambda merged_record, matched: matched)
  # Made here, eagerly, and captured: a constant made inside the map is folded by the graph, which flushes
  # subnormal floats (5e-324) to zero.
  tensors = {name: tf.constant(value) for name, value in constants.items()}
  return dataset.map(tf.autograph.experimental.do_not_convert(functools.partial(join.decode, constants=tensors)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _link_files(link: chain_lib.Link, ranges: list[tuple[str, int, int]]) -> FileList:
  missing = sorted({split for split, _, _ in ranges} - set(link.files))
  if missing:
    raise errors.SourceError(
        f"Overlay chain link {link.title} has no split {missing[0]!r}; it has {sorted(link.files)}. "
        f"Rebuild {link.name} with that split."
    )
  return {split: [(path, "", count) for path, _, count in files] for split, files in link.files.items()}


FileList = Mapping[str, list[tuple[str, str, int]]]  # split -> (path, compression, records)
# Examples checked together: the alignment of a batch is one parse and one comparison per link.
_CHECK_BATCH = 64
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
  paths, compressions, skips, takes = slices
  whole = {(path, count) for split, _, _ in ranges for path, _, count in files[split]}
  if not any(skips) and all((path, take) in whole for path, take in zip(paths, takes)) and len(set(compressions)) == 1:
    # Whole files (a split read to its end): one reader, no per-file function to trace.
    return tf.data.TFRecordDataset(paths, compression_type=compressions[0])
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
  """The checks of every link, a batch at a time, and the decoding, as tf.data map functions."""

  base_features: tfds.features.FeaturesDict
  links: tuple[chain_lib.Link, ...]  # the links that store fields, root-most first
  decoders: Mapping[str, Any] | None

  @functools.cached_property
  def features(self) -> tfds.features.FeaturesDict:
    """The base features and every link's stored fields (a later link's replacing an earlier one's)."""
    merged = {name: self.base_features[name] for name in self.base_features.keys()}
    for link in self.links:
      merged.update({name: link.features[name] for name in link.stored_names})
    return tfds.features.FeaturesDict(merged)

  def check(self, base_records: tf.Tensor, link_records: tuple[tf.Tensor, ...], indices: tf.Tensor,
            frames: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch's alignment checked; returns each example's records as one and whether every link matched it."""
    lengths = tf.cast(tf.strings.length(base_records), tf.int64)
    changed = tf.not_equal(lengths, tf.bitwise.right_shift(frames, 32))
    # tf.debugging.Assert stops iteration with InvalidArgumentError carrying `data`.
    checks = [tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(changed)),
        ["Base example", _first(indices, changed), f"of overlay {self.links[-1].name if self.links else ''} "
         "changed while it was read (its length differs from its frame's). Load it again."],
    )]
    matched = tf.ones_like(indices, tf.bool)
    if self.links:  # every link's alignment in one parse: the graph's size does not grow with the chain
      count = len(self.links)
      alignment = tf.io.parse_example(tf.reshape(tf.stack(link_records), [-1]), {
          overlay_format.BASE_INDEX: tf.io.FixedLenFeature([], tf.string),
          overlay_format.BASE_FINGERPRINT: tf.io.FixedLenFeature([], tf.string),
          overlay_format.MATCHED: tf.io.FixedLenFeature([], tf.int64, default_value=1),
      })
      # Stored as 8 little-endian bytes each (TFDS Encoding.BYTES); one row per link.
      held = tf.reshape(tf.io.decode_raw(alignment[overlay_format.BASE_INDEX], tf.int64), [count, -1])
      fingerprints = tf.reshape(tf.io.decode_raw(alignment[overlay_format.BASE_FINGERPRINT], tf.int64), [count, -1])
      names = tf.constant([link.name for link in self.links])
      misaligned = tf.not_equal(held, indices[tf.newaxis])
      rewritten = tf.not_equal(fingerprints, frames[tf.newaxis])
      first_misaligned, first_rewritten = _first_flagged(misaligned), _first_flagged(rewritten)
      checks += [
          tf.debugging.Assert(
              tf.logical_not(tf.reduce_any(misaligned)),
              ["Overlay", tf.gather(names, first_misaligned[0]), "is misaligned with its base: the overlay "
               "example read for base example", tf.gather(indices, first_misaligned[1]), "holds base index",
               tf.gather_nd(held, first_misaligned), ". Rebuild the overlay."],
          ),
          tf.debugging.Assert(
              tf.logical_not(tf.reduce_any(rewritten)),
              ["Overlay", tf.gather(names, first_rewritten[0]), "does not match its base at base example",
               tf.gather(indices, first_rewritten[1]), ": the base record's fingerprint differs from the one the "
               "overlay was built from (the base was rewritten since). Rebuild the overlay against this base."],
          ),
      ]
      matched = tf.reduce_all(tf.not_equal(tf.reshape(alignment[overlay_format.MATCHED], [count, -1]), 0), axis=0)
    with tf.control_dependencies(checks):
      # Concatenated Examples parse as one, a later entry replacing an earlier one of the same name.
      return tf.strings.join([base_records, *link_records]), tf.identity(matched)

  def decode(self, merged_record: tf.Tensor, matched: tf.Tensor, constants: Mapping[str, tf.Tensor]):
    del matched
    example = self.features.deserialize_example(merged_record, decoders=self.decoders)
    return {**example, **{name: tf.identity(value) for name, value in constants.items()}}


def _first(values: tf.Tensor, flags: tf.Tensor) -> tf.Tensor:
  """The value at the first flagged position (the first, if none is)."""
  return tf.gather(values, tf.argmax(tf.cast(flags, tf.int32)))


def _first_flagged(flags: tf.Tensor) -> tf.Tensor:
  """`[link, position]` of the first flag of a (links, batch) matrix, by position then link ([0, 0] if none)."""
  found = tf.where(tf.transpose(flags))  # (position, link) pairs in position order
  first = tf.concat([found, tf.zeros([1, 2], tf.int64)], axis=0)[0]
  return tf.stack([first[1], first[0]])
