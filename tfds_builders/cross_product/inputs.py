"""The two inputs of a cross product (TFRecord or ArrayRecord): read once to count and type them, again to spill."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

from etils import epath

from tfds_builders.core import errors
from tfds_builders.core import example_schema
from tfds_builders.core import fast
from tfds_builders.core import paths
from tfds_builders.core import tfrecord_io
from tfds_builders.cross_product import array_records

RecordSource = tfrecord_io.RecordFile | array_records.ArrayRecordFile

# Where a file's expected count comes from when it is read the second time.
_FIRST_COUNT = "the count taken when the schema was inferred, earlier in this build"


@dataclasses.dataclass(frozen=True)
class Side:
  """One input: its files, features and record counts.

  Attributes:
    name: `left` or `right`, as the config field that lists it.
    files: Its TFRecord or ArrayRecord files, in order.
    schema: The features of its records.
    file_counts: The records of each file, as first counted.
  """

  name: str
  files: tuple[RecordSource, ...]
  schema: Mapping[str, example_schema.FeatureSpec]
  file_counts: tuple[int, ...]

  @property
  def num_records(self) -> int:
    return sum(self.file_counts)

  def records(self) -> Iterator[bytes]:
    """Every record again, in order.

    Raises:
      SourceError: naming the side and file, if a file is corrupt or now
        holds another number of records than when it was first counted.
    """
    with _naming(self.name):
      for source, expected in zip(self.files, self.file_counts):
        yield from tfrecord_io.counted(_read_records(source), expected, source.name, _FIRST_COUNT)


def read(
    side: str, patterns: list[str] | str, declared: Mapping[str, str] | None, compression: str,
    data_root: str | None,
) -> Side:
  """Reads one input through: counts it and infers (or checks) its schema.

  Args:
    side: `left` or `right`.
    patterns: Its TFRecord or ArrayRecord files, directories or globs.
    declared: Its declared schema, or None to infer it.
    compression: The config's `compression`.
    data_root: Directory that relative patterns are taken from.

  Raises:
    ConfigError: naming `<side>_schema`, if the declared schema is malformed.
    SourceError: if it is missing, empty, corrupt or truncated, or a shard
      of a prepared dataset holds another count than its dataset_info.json
      says (naming the side, the file and the record).
    SchemaError: naming the side, file and record that is no Example or does
      not match the schema.
  """
  schema = None
  if declared is not None:
    try:
      schema = example_schema.parse_schema(declared)
    except errors.ConfigError as error:
      raise errors.ConfigError(f"`{side}_schema`: {error}") from error
  with _naming(side):
    files = tuple(expand(patterns, compression, data_root))
    if schema is None and not any(isinstance(source, array_records.ArrayRecordFile) for source in files):
      schema, counts = example_schema.infer_files(files)
    elif schema is None:
      schema, counts = _infer_records(files)
    else:
      counts = [_count_checked(source, schema) for source in files]
    _check_prepared_counts(files, counts)
  if not sum(counts):
    raise errors.SourceError(
        errors.with_hint(
            f"The {side} input holds no records ({', '.join(f.name for f in files)})",
            "Point it at TFRecord files of tf.train.Example that are not empty",
        )
    )
  return Side(side, files, schema, tuple(counts))


@contextlib.contextmanager
def _naming(side: str) -> Iterator[None]:
  """Prefixes the side to the SourceError or SchemaError raised while reading it."""
  try:
    yield
  except (errors.SourceError, errors.SchemaError) as error:
    raise type(error)(f"{side} input (`{side}`): {error}") from error


def expand(patterns: list[str] | str, compression: str, data_root: str | None) -> list[RecordSource]:
  """An input's files: TFRecord (as `tfrecord_io.expand`) and ArrayRecord ones, in pattern order.

  Raises:
    ConfigError: for an unknown compression, or one file reached twice.
    SourceError: if a pattern matches nothing.
  """
  try:
    found = paths.expand(patterns, kind="TFRecord or ArrayRecord", keep=_is_record_name, root=data_root)
  except errors.SourceError:  # tfrecord_io.expand names the pattern that matches nothing
    found = []
  if not any(array_records.is_array_record_name(path.name) for path in found):
    return tfrecord_io.expand(patterns, compression=compression, root=data_root)
  files: list[RecordSource] = []
  seen: set[object] = set()
  for path in found:
    identity = tfrecord_io.file_identity(path)
    if identity in seen:  # as tfrecord_io.expand: refused, so that what is read is what the config lists
      raise errors.ConfigError(f"{path} is reached twice by the patterns {patterns}; list each file once.")
    seen.add(identity)
    if array_records.is_array_record_name(path.name):
      files.append(array_records.ArrayRecordFile(path))
    else:
      files.extend(tfrecord_io.expand(str(path), compression=compression))
  return files


def _is_record_name(name: str) -> bool:
  return tfrecord_io.is_tfrecord_name(name) or array_records.is_array_record_name(name)


def _read_records(source: RecordSource) -> Iterator[bytes]:
  if isinstance(source, array_records.ArrayRecordFile):
    return array_records.read_records(source)
  return fast.record_index.read_records(source)


def _infer_records(files: Sequence[RecordSource]) -> tuple[dict[str, example_schema.FeatureSpec] | None, list[int]]:
  """`example_schema.infer_files` for inputs with ArrayRecord files: every record parsed (no framing to walk)."""
  inference = example_schema.SchemaInference()
  counts = []
  for source in files:
    count = 0
    for count, record in enumerate(_read_records(source), start=1):
      inference.add_record(record, source.name, count - 1)
    counts.append(count)
  return inference.schema, counts


def _count_checked(source: RecordSource, schema: Mapping[str, example_schema.FeatureSpec]) -> int:
  """Counts the records of a file, each checked against a declared schema."""
  count = 0
  for index, record in enumerate(_read_records(source)):
    example = example_schema.parse_example(record, source.name, index)
    example_schema.check_only_example_fields(example, source.name, index)
    example_schema.check(schema, record, source.name, index)
    count += 1
  return count


def _check_prepared_counts(files: Sequence[RecordSource], counts: Sequence[int]) -> None:
  """Shards of a prepared TFDS dataset given as input must hold the records its dataset_info.json lists.

  Raises:
    SourceError: naming the shard and both counts.
  """
  expected: dict[tuple[str, str], int] = {}
  for folder in dict.fromkeys(str(source.path.parent) for source in files):
    if (epath.Path(folder) / "dataset_info.json").exists():
      for split_info in tfrecord_io.prepared_builder(folder).info.splits.values():
        expected.update(((folder, name), length) for name, length in zip(
            split_info.filenames, split_info.shard_lengths))
  for source, found in zip(files, counts):
    want = expected.get((str(source.path.parent), source.path.name))
    if want is not None and want != found:
      raise tfrecord_io.count_mismatch(source.name, want, found, "the dataset_info.json beside it (shard_lengths)")
