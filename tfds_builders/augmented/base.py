"""The base being augmented: a prepared TFDS dataset or raw TFRecord files, and its identity."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from etils import epath
from google.protobuf import message
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2  # the Example message without importing TensorFlow

from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tfds_builders.core import example_schema
from tfds_builders.core import fast
from tfds_builders.core import tfrecord_io

PREPARED = "prepared"
RECORDS = "records"
# How a base's files are stored: TFRecord frames (raw records, and TFDS's default) or
# ArrayRecord (`tfds build --file_format array_record`), read by index.
TFRECORD = "tfrecord"
ARRAY_RECORD = "array_record"
_READABLE_FORMATS = (TFRECORD, ARRAY_RECORD)
# ArrayRecord records read at a time by a build's walk of a file.
_ARRAY_RECORD_BATCH = 1024
# The config field that sets a raw base's compression, named in mismatch messages.
COMPRESSION_FIELD = "base_compression"
_SHARD_LENGTHS = "its dataset_info.json (shard_lengths)"
# What rebuilds a base's FeaturesDict in any process: its JSON, and the
# directory holding its feature metadata (ClassLabel names...), if any.
FeaturesSource = tuple[str, str | None]


@dataclasses.dataclass(frozen=True)
class BaseFile:
  """One record file of a base split."""

  path: str
  compression: str  # "" or "GZIP"
  num_records: int | None  # None: not counted yet (a base being walked, see RecordsSurvey)
  num_bytes: int
  # Where num_records comes from, for the message when the file holds another number.
  count_source: str = dataclasses.field(default="the count taken when the base was opened", compare=False)
  file_format: str = TFRECORD

  @property
  def name(self) -> str:
    return epath.Path(self.path).name

  def record_file(self) -> tfrecord_io.RecordFile:
    """The file as TFRecord frames (an ArrayRecord file has none: `scan` and `iter_records` read it)."""
    if self.file_format != TFRECORD:
      raise ValueError(f"{self.path} is an ArrayRecord file, not TFRecord frames.")
    return tfrecord_io.RecordFile(epath.Path(self.path), self.compression, COMPRESSION_FIELD)

  def identity(self) -> overlay_format.FileIdentity:
    return overlay_format.FileIdentity(self.name, self.compression, self.num_records, self.num_bytes)


@dataclasses.dataclass(frozen=True)
class BaseSplit:
  """The files of one base split, in example order."""

  name: str
  files: tuple[BaseFile, ...]

  @property
  def num_examples(self) -> int:
    return sum(file.num_records for file in self.files)

  @property
  def offsets(self) -> list[int]:
    """The split index of each file's first record."""
    starts, total = [], 0
    for file in self.files:
      starts.append(total)
      total += file.num_records
    return starts


@dataclasses.dataclass(frozen=True)
class _SplitLengths:
  """What `ReadInstruction.to_absolute` needs of a split."""

  num_examples: int
  shard_lengths: list[int]


@dataclasses.dataclass(frozen=True)
class Base:
  """A read-only base: where it is, its features, its splits as record files.

  Attributes:
    kind: `prepared` (a TFDS dataset) or `records` (raw TFRecord files).
    name: The dataset's name (`name[/config]`), or `tfrecords`.
    version: The prepared dataset's version; None for raw records.
    location: The dataset directory, or the raw records' root directory.
    features_json: The base FeaturesDict as JSON (inferred for raw records).
    splits: Split name -> files.
    file_format: `tfrecord`, or `array_record` for a prepared base built
      with `--file_format array_record`.
  """

  kind: str
  name: str
  version: str | None
  location: str
  features_json: str
  splits: Mapping[str, BaseSplit]
  file_format: str = TFRECORD

  @property
  def features_source(self) -> FeaturesSource:
    return (self.features_json, self.location if self.kind == PREPARED else None)

  @property
  def features(self) -> tfds.features.FeaturesDict:
    return features_from_json(*self.features_source)

  @property
  def wire_schema(self) -> dict[str, example_schema.FeatureSpec]:
    """Serialized feature name -> value kind and length, as stored on disk."""
    return example_schema.from_features(self.features)

  def title(self) -> str:
    """The base as messages name it: `name version at dir`, or `TFRecord files in dir`."""
    if self.kind == PREPARED:
      stored_as = " (ArrayRecord)" if self.file_format == ARRAY_RECORD else ""
      return f"{self.name} {self.version} at {self.location}{stored_as}"
    return f"TFRecord files in {self.location}"

  def identity(self) -> dict[str, Any]:
    """What an overlay must match: name, version, features, every file's counts (and a format other than TFRecord)."""
    identity = {
        "kind": self.kind,
        "name": self.name,
        "version": self.version,
        "features": json.loads(self.features_json),
        "splits": {
            name: [list(file.identity()) for file in split.files]  # as metadata.json stores them
            for name, split in sorted(self.splits.items())
        },
    }
    # Only when not TFRecord: the digests recorded by every overlay of a TFRecord base stay valid.
    if self.file_format != TFRECORD:
      identity["file_format"] = self.file_format
    return identity

  def digest(self) -> str:
    """SHA-256 of `identity()`, as hex."""
    return overlay_format.identity_digest(self.identity())

  def ranges(self, split: str) -> list[tuple[str, int, int]]:
    """`(split, start, stop)` of each part of a TFDS split spec (`"train[10:20]+test"`), in example indices.

    Raises:
      ConfigError: for a spec that is no str or does not apply to the splits.
    """
    if not isinstance(split, str):
      raise errors.ConfigError(f"split={split!r}: give one split spec (a str).")
    lengths = {name: _SplitLengths(part.num_examples, [file.num_records for file in part.files])
               for name, part in self.splits.items()}
    try:
      instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(lengths)
    except (ValueError, AssertionError) as error:
      raise errors.ConfigError(
          f"split={split!r} does not apply to the overlay's splits {sorted(lengths)}: {error}") from error
    return [(one.splitname, one.from_ or 0, lengths[one.splitname].num_examples if one.to is None else one.to)
            for one in instructions]

  def provenance(self) -> dict[str, Any]:
    provenance = {
        "kind": self.kind,
        "name": self.name,
        "version": self.version,
        "path": self.location,
        "digest": self.digest(),
        "splits": {name: split.num_examples for name, split in self.splits.items()},
    }
    if self.file_format != TFRECORD:  # as in `identity`: a TFRecord base's provenance as before
      provenance["file_format"] = self.file_format
    return provenance


@functools.lru_cache(maxsize=16)
def features_from_json(features_json: str, metadata_dir: str | None = None) -> tfds.features.FeaturesDict:
  """A FeaturesDict from its JSON, built once per process.

  Args:
    features_json: The features' JSON (`FeatureConnector.to_json()`).
    metadata_dir: A prepared dataset's directory, whose feature metadata
      (ClassLabel names, ...) is loaded: the JSON does not hold it.
  """
  features = tfds.features.FeatureConnector.from_json(json.loads(features_json))
  if metadata_dir:
    features.load_metadata(metadata_dir)
  if not isinstance(features, tfds.features.FeaturesDict):
    raise errors.SchemaError(
        f"The base's top-level feature is a {type(features).__name__}; only "
        "datasets whose examples are dicts of features can be augmented."
    )
  return features


def version_of(location: str, data_dir: str | None) -> str:
  """The version of a prepared base, reading only its dataset_info.json."""
  return str(tfrecord_io.prepared_builder(location, data_dir).version)


def open_prepared(location: str, data_dir: str | None, splits: Sequence[str] = ()) -> Base:
  """A prepared TFDS dataset, by directory or `name[/config][:version]`, stored as TFRecord or ArrayRecord.

  Raises:
    SourceError: if it does not exist, lacks a split, or is stored in another format.
  """
  builder = tfrecord_io.prepared_builder(location, data_dir)
  file_format = _file_format_of(builder)
  split_names = list(splits) or list(builder.info.splits)
  base_splits = {}
  for split in split_names:
    paths = _shard_paths(builder, split, file_format)
    lengths = builder.info.splits[split].shard_lengths
    if len(lengths) != len(paths):
      raise errors.SourceError(
          errors.with_hint(
              f"{builder.info.full_name} at {builder.data_path}: split {split!r} has {len(paths)} shard "
              f"files but {len(lengths)} shard_lengths in its dataset_info.json",
              "Its metadata does not describe its files: rebuild the base dataset, or re-fetch it",
          )
      )
    base_splits[split] = BaseSplit(split, tuple(
        BaseFile(str(path), "", count, file_size(path), count_source=_SHARD_LENGTHS, file_format=file_format)
        for path, count in zip(paths, lengths)
    ))
  return Base(
      kind=PREPARED,
      name=builder.info.full_name.rsplit("/", 1)[0],  # without the version
      version=str(builder.version),
      location=str(builder.data_path),
      features_json=json.dumps(builder.info.features.to_json(), sort_keys=True),
      splits=base_splits,
      file_format=file_format,
  )


def check_tf_data_readable(base: Base, overlay_name: str) -> None:
  """Refuses an ArrayRecord base where it would be read with tf.data (`load_augmented`, compaction).

  Raises:
    SourceError: naming the overlay and base, and the reader that does read it.
  """
  if base.file_format == ARRAY_RECORD:
    raise errors.SourceError(
        errors.with_hint(
            f"Overlay {overlay_name} sits on {base.title()}: load_augmented reads the base with tf.data, "
            "and TFDS has no tf.data reader for ArrayRecord files",
            "Read it by index with tfds_builders.augmented_source(...) (Grain, tfds.data_source-style), "
            "or build the overlay over a TFRecord build of the base",
        )
    )


def _file_format_of(builder: tfds.core.DatasetBuilder) -> str:
  """`tfrecord` or `array_record`: how a prepared base stores its records.

  Raises:
    SourceError: for another format (Parquet, Riegeli), naming the dataset.
  """
  file_format = builder.info.file_format.value if builder.info.file_format else TFRECORD
  if file_format not in _READABLE_FORMATS:
    raise errors.SourceError(
        errors.with_hint(
            f"{builder.info.full_name} at {builder.data_path} is stored as {file_format}; a base is read "
            f"record by record from TFRecord or ArrayRecord files",
            "Rebuild it with --file_format tfrecord (or array_record)",
        )
    )
  return file_format


def _shard_paths(builder: tfds.core.DatasetBuilder, split: str, file_format: str) -> list[epath.Path]:
  """The shard files of a prepared split, each checked to be a real file in the dataset's folder."""
  if file_format == TFRECORD:
    return [file.path for file in tfrecord_io.prepared_split(builder, split).files]
  if split not in builder.info.splits:
    raise errors.SourceError(f"{builder.info.full_name} has no split {split!r}; it has {sorted(builder.info.splits)}.")
  return [tfrecord_io.shard_path(builder.data_path, name, builder.info.full_name)
          for name in builder.info.splits[split].filenames]


def file_size(path: epath.PathLike, what: str = "Base file",
              hint: str = "Re-fetch the base dataset, or rebuild it") -> int:
  """A file's size; SourceError naming it (`what`) and what to do (`hint`) if it is missing."""
  try:
    return epath.Path(path).stat().length
  except OSError as error:
    raise errors.SourceError(
        errors.with_hint(f"{what} {path} cannot be read ({error.strerror or error})", hint)) from error


def is_array_record_shard(path: str) -> bool:
  """Whether a TFDS shard is an ArrayRecord file: TFDS names shards `<name>-<split>.<format>-NNNNN-of-NNNNN`."""
  return ".array_record-" in epath.Path(path).name


def open_records(
    sources: Mapping[str, Sequence[str] | str], compression: str, root: str | None
) -> Base:
  """Raw TFRecord files of `tf.train.Example`s: one pass infers the schema and counts.

  Raises:
    SourceError: for a missing file or a corrupt record (naming file and index).
    SchemaError: for records that are no Examples or disagree on features.
  """
  record_files = _expand_records(sources, compression, root)
  schema, counts = example_schema.infer_files([file for files in record_files.values() for file in files])
  return _records_base(sources, record_files, schema, counts, root)


def _expand_records(
    sources: Mapping[str, Sequence[str] | str], compression: str, root: str | None
) -> dict[str, list[tfrecord_io.RecordFile]]:
  if not sources:
    raise errors.ConfigError("base_records is empty; give {split: [files or globs]}.")
  return {
      split: tfrecord_io.expand(patterns, compression=compression, root=root, compression_field=COMPRESSION_FIELD)
      for split, patterns in sources.items()
  }


def _records_base(
    sources: Mapping[str, Sequence[str] | str],
    record_files: Mapping[str, Sequence[tfrecord_io.RecordFile]],
    schema: example_schema.Schema | None,
    counts: Sequence[int | None],
    root: str | None,
) -> Base:
  """The Base of raw files given their schema and record counts (None: not known yet)."""
  counts_left = iter(counts)
  base_splits = {
      split: BaseSplit(split, tuple(
          BaseFile(file.name, file.compression, next(counts_left), file.path.stat().length) for file in files
      ))
      for split, files in record_files.items()
  }
  if schema is None:
    raise _no_records(sources)
  empty = [
      split for split, base_split in base_splits.items()
      if all(file.num_records == 0 or not file.num_bytes for file in base_split.files)
  ]
  if empty:
    raise errors.SourceError(
        f"Base split(s) {empty} hold no records; give each split at least one "
        "tf.train.Example, or leave the split out of base_records."
    )
  features = example_schema.to_features(schema)
  return Base(
      kind=RECORDS,
      name="tfrecords",
      version=None,
      location=str(epath.Path(root).expanduser()) if root else _common_dir(record_files),
      features_json=json.dumps(features.to_json(), sort_keys=True),
      splits=base_splits,
  )


def _no_records(sources: Mapping[str, Sequence[str] | str]) -> errors.SourceError:
  return errors.SourceError(
      f"The base_records {dict(sources)} hold no records. Give files with at least one tf.train.Example."
  )


@dataclasses.dataclass(frozen=True)
class RecordsSurvey:
  """Raw TFRecord files to be read once, by the build's own walk, rather than first by `open_records`.

  `open_records` reads every record for the schema and counts before a
  build starts. A build that walks every record anyway (an overlay reading
  frames and join keys with `core.record_index.scan`) learns the same on its
  way, in the `RecordsWalk` it `start`s. Before that, `provisional()` has the
  features and kinds of the first record, and no counts.
  """

  sources: Mapping[str, Sequence[str] | str]
  record_files: Mapping[str, Sequence[tfrecord_io.RecordFile]]
  root: str | None
  first: tuple[tfrecord_io.RecordFile, bytes]

  @classmethod
  def of(cls, sources: Mapping[str, Sequence[str] | str], compression: str, root: str | None) -> RecordsSurvey | None:
    """The files and their first record; None if one is compressed (then use `open_records`)."""
    record_files = _expand_records(sources, compression, root)
    if any(file.compression for files in record_files.values() for file in files):
      return None
    for files in record_files.values():
      for file in files:
        for block in fast.record_index.scan(file, block_records=1, with_window=True):  # mapped: no reader to start
          return cls(sources, record_files, root, (file, block.record(0)))
    raise _no_records(sources)

  def provisional(self) -> Base:
    """The base with the first record's features and no record counts."""
    files = [file for files in self.record_files.values() for file in files]
    return _records_base(self.sources, self.record_files, self.start().schema, [None] * len(files), self.root)

  def start(self) -> RecordsWalk:
    """A walk that has read only the first record."""
    return RecordsWalk(self)


class RecordsWalk:
  """What one build's walk of a `RecordsSurvey` learned: the schema and each file's count.

  The build scans with `scan_options`, `add`s each block, and reports each
  file's count. `base()` is then the Base `open_records` gives, reached
  through the same checks and errors (which surface as the walk reaches the
  record).
  """

  def __init__(self, survey: RecordsSurvey):
    self._survey = survey
    self._inference = example_schema.SchemaInference()
    file, record = survey.first
    self._inference.add_file_record(record, file, 0, crc_checked=False)
    self._counts: dict[tuple[str, int], int] = {}

  @property
  def schema(self) -> example_schema.Schema | None:
    return self._inference.schema

  @property
  def scan_options(self) -> dict[str, Any]:
    """What `core.record_index.scan` needs to give the blocks `add` takes."""
    return {"layout": self._inference.layout, "with_window": True}

  def add(self, file: tfrecord_io.RecordFile, block: Any) -> None:
    """Adds a block of a file, scanned with `scan_options`, to the schema.

    Raises:
      SchemaError, SourceError: as `open_records`, naming the file and record.
    """
    self._inference.add_checked(block.conforms, block.value_counts, block.record, file, block.first, crc_checked=False)

  def counted(self, split: str, index: int, count: int) -> None:
    """Records that file `index` of `split` was walked to its end and holds `count` records."""
    self._counts[(split, index)] = count

  def base(self) -> Base:
    """The Base `open_records` gives: learned from the walk if it read every file, else read again."""
    survey = self._survey
    keys = [(split, index) for split, files in survey.record_files.items() for index in range(len(files))]
    if all(key in self._counts for key in keys):
      counts = [self._counts[key] for key in keys]
      return _records_base(survey.sources, survey.record_files, self._inference.schema, counts, survey.root)
    return open_records(survey.sources, "none", survey.root)


def _common_dir(record_files: Mapping[str, Sequence[tfrecord_io.RecordFile]]) -> str:
  parents = {str(source.path.parent) for files in record_files.values() for source in files}
  return parents.pop() if len(parents) == 1 else ", ".join(sorted(parents))


def records_from_identity(
    identity: Mapping[str, Any], sources: Mapping[str, Sequence[str] | str], compression: str,
    root: str | None,
) -> Base:
  """Raw TFRecord files described by an overlay's recorded identity, without a full read.

  Files are matched to the identity by order, name and size; record counts
  are taken from the identity (the loader's per-example fingerprints and
  cardinality checks catch any difference in content).

  Raises:
    SourceError: if files are missing, or differ in number, name or size.
  """
  base_splits = {}
  for split, patterns in sources.items():
    files = tfrecord_io.expand(patterns, compression=compression, root=root, compression_field=COMPRESSION_FIELD)
    recorded = identity["splits"].get(split)
    if recorded is None:
      raise errors.SourceError(
          f"The overlay's base has no split {split!r}; it has {sorted(identity['splits'])}."
      )
    found = [overlay_format.FileIdentity(f.path.name, f.compression, None, f.path.stat().length) for f in files]
    mismatch = overlay_format.first_file_mismatch(recorded, found)
    if mismatch:
      raise errors.SourceError(
          errors.with_hint(
              f"The base files of split {split!r} are not those the overlay was built from: {mismatch}",
              "Pass the base the overlay was built from, or rebuild the overlay against this base",
          )
      )
    base_splits[split] = BaseSplit(split, tuple(
        BaseFile(f.name, f.compression, want.num_records, want.num_bytes, count_source="the overlay's record of its base")
        for f, want in zip(files, map(overlay_format.FileIdentity._make, recorded))
    ))
  return Base(
      kind=RECORDS, name=identity["name"], version=None, location=root or _common_dir(
          {s: [f.record_file() for f in b.files] for s, b in base_splits.items()}),
      features_json=json.dumps(identity["features"], sort_keys=True), splits=base_splits,
  )


def iter_records(file: BaseFile) -> Iterator[bytes]:
  """The raw records of one base file, checked against their CRCs and (once read to the end) their count.

  Raises:
    SourceError: naming the file and record of a corrupt or truncated record, or the
      file and both counts if it holds another number of records than the base says.
  """
  if file.file_format == ARRAY_RECORD:
    return (record for batch in _array_record_batches(file) for record in batch[1])
  records = fast.record_index.read_records(file.record_file())
  if file.num_records is None:  # a walked base: the walk counts it
    return records
  return tfrecord_io.counted(records, file.num_records, file.path, file.count_source)


def scan(file: BaseFile, *, key: str | None = None, key_kind: str = "int64_list", **scan_options: Any) -> Iterator[Any]:
  """`core.record_index.scan` of a base file: its records' fingerprints (and one feature's values), block by block.

  A TFRecord file's frames are walked (compiled, reading only headers and
  keys). An ArrayRecord file has no frames: its records are read with
  ArrayRecordReader (which checks its chunks' hashes), and each block holds
  the fingerprint a TFRecord frame would store for the same bytes, and the
  key parsed with protobuf; `scan_options` (windows, layouts, data checks)
  apply to TFRecord frames only.
  """
  if file.file_format != ARRAY_RECORD:
    return fast.record_index.scan(file.record_file(), key=key, key_kind=key_kind, **scan_options)
  return (_array_record_block(first, records, key, key_kind) for first, records in _array_record_batches(file))


def file_fingerprints(file: BaseFile) -> np.ndarray:
  """Every record's fingerprint of a base file, TFRecord (frames walked) or ArrayRecord (records read)."""
  if file.file_format != ARRAY_RECORD:
    return fast.record_index.fingerprints(file.record_file())
  return np.concatenate([block.fingerprints() for block in scan(file)] or [np.zeros(0, np.int64)])


def fingerprints(records: Sequence[bytes]) -> np.ndarray:
  """`length << 32 | masked CRC32C` of each record, as int64: what its TFRecord frame stores (`Block.fingerprints`)."""
  masked_crc32c = fast.crc32c.masked_crc32c
  out = np.empty(len(records), np.int64)
  for row, record in enumerate(records):
    out[row] = len(record) << 32 | masked_crc32c(np.frombuffer(record, np.uint8), 0, len(record))
  return out


def open_array_record(path: str | epath.Path) -> Any:
  """An ArrayRecordReader of one file, read by index (no read-ahead).

  Raises:
    SourceError: naming the file if it is missing or no ArrayRecord file.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top  # only ArrayRecord bases need it

  try:
    # As TFDS's data sources open it: random reads need no read-ahead.
    return array_record_module.ArrayRecordReader(os.fspath(path), "readahead_buffer_size:0")
  except (RuntimeError, ValueError, OSError) as error:
    raise errors.SourceError(
        errors.with_hint(f"{path} cannot be opened as an ArrayRecord file ({' '.join(str(error).split())[:200]})",
                         "Re-fetch the dataset, or rebuild it with --file_format array_record")
    ) from error


def count_array_records(path: str | epath.Path) -> int:
  """How many records an ArrayRecord file holds, read from its index; SourceError naming the file if damaged."""
  reader = open_array_record(path)
  try:
    count = reader.num_records()
    reader.close()  # reports a damaged index (footer) it has read
  except (RuntimeError, ValueError, OSError) as error:
    raise _damaged(path, "its index", error) from error
  return count


def read_array_records(reader: Any, path: str, positions: Sequence[int]) -> list[bytes]:
  """Records of an open ArrayRecord file by position; SourceError naming the file and records if unreadable."""
  try:
    return reader.read(list(positions))
  except (RuntimeError, ValueError, OSError) as error:
    shown = ", ".join(map(str, positions[:4])) + (", ..." if len(positions) > 4 else "")
    raise _damaged(path, f"record(s) {shown}", error) from error


def _damaged(path: str | epath.Path, what: str, error: Exception) -> errors.SourceError:
  reason = " ".join(str(error).split())[:200]
  return errors.SourceError(
      errors.with_hint(f"{path}: {what} cannot be read ({reason})",
                       "The file is damaged: re-fetch the dataset, or rebuild it"))


def _array_record_batches(file: BaseFile) -> Iterator[tuple[int, list[bytes]]]:
  """`(first index, records)` of an ArrayRecord file, in order, its record count checked first."""
  count = count_array_records(file.path)
  if file.num_records is not None and count != file.num_records:
    raise tfrecord_io.count_mismatch(file.path, file.num_records, count, file.count_source)
  reader = open_array_record(file.path)
  for first in range(0, count, _ARRAY_RECORD_BATCH):
    yield first, read_array_records(reader, file.path, range(first, min(count, first + _ARRAY_RECORD_BATCH)))
  reader.close()


def _array_record_block(first: int, records: Sequence[bytes], key: str | None, key_kind: str) -> Any:
  """A `core.record_index.Block` of ArrayRecord records: fingerprints computed, join keys parsed."""
  count = len(records)
  crcs = fingerprints(records) & 0xFFFFFFFF
  key_counts, keys = None, None
  if key is not None:
    key_counts = np.zeros(count, np.int64)
    values_of = []
    for row, record in enumerate(records):
      try:
        feature = tf_example_pb2.Example.FromString(record).features.feature
      except message.DecodeError:
        key_counts[row] = fast.record_index.MALFORMED
        values_of.append(None)
        continue
      values = getattr(feature[key], key_kind).value if key in feature else ()
      key_counts[row] = len(values)
      values_of.append(values[-1] if len(values) else None)  # as `scan`: the last value
    if key_kind == "int64_list":
      keys = np.array([0 if value is None else value for value in values_of], np.int64)
    else:
      keys = [b"" if value is None else bytes(value) for value in values_of]
  return fast.record_index.Block(
      first=first,
      offsets=np.full(count, -1, np.int64),  # ArrayRecord records have no byte offset of their own
      lengths=np.array([len(record) for record in records], np.int64),
      crcs=crcs.astype(np.uint32),
      key_counts=key_counts,
      keys=keys,
  )

