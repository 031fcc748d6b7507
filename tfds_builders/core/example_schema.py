"""Inferring a schema from `tf.train.Example` records, and mapping it to and from TFDS features.

The schema is expressed at the wire level (value kind and list length per
feature), so raw records can be copied into a TFDS dataset without being
decoded and re-encoded: `to_features` chooses the TFDS features whose
serialized form is exactly the raw records' layout.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import message
from google.protobuf import unknown_fields
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2  # the Example message without importing TensorFlow

from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import tensor_codecs
from tfds_builders.core import tfrecord_io

# The dtype whose `LISTS` codec is each list as it is on the wire.
_DTYPES = {"bytes_list": tensor_codecs.STRING, "float_list": "float32", "int64_list": "int64"}
_SPEC_TEXT = re.compile(r"^(bytes_list|float_list|int64_list)\[(\d+|\*)\]$")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One Example feature: its value kind and list length (None: varies)."""

  kind: str
  length: int | None

  def spec_text(self) -> str:
    """The declared-schema form, `int64_list[3]` (`*`: a varying length)."""
    return f"{self.kind}[{'*' if self.length is None else self.length}]"


Schema = Mapping[str, FeatureSpec]


def parse_schema(declared: Mapping[str, str]) -> dict[str, FeatureSpec]:
  """Reads a schema written as `{name: "int64_list[3]"}`, the form of `FeatureSpec.spec_text()`.

  A length of `*` means it varies between records.

  Raises:
    ConfigError: naming the feature whose spec is malformed.
  """
  schema = {}
  for name, text in declared.items():
    match = _SPEC_TEXT.match(str(text).strip())
    if not match:
      raise errors.ConfigError(
          f"Feature {name!r} is declared as {text!r}; write KIND[LENGTH] with "
          f"KIND one of {tensor_codecs.WIRE_KINDS} and LENGTH a number or * (varies), e.g. 'int64_list[3]'."
      )
    kind, length = match.groups()
    schema[name] = FeatureSpec(kind, None if length == "*" else int(length))
  return schema


def parse_example(record: bytes, source: str, index: int) -> tf_example_pb2.Example:
  """Parses one record, naming the file and record index if it is no Example.

  Raises:
    SchemaError: if the record is not a serialized `tf.train.Example`.
  """
  try:
    return tf_example_pb2.Example.FromString(record)
  except message.DecodeError as error:
    raise errors.SchemaError(
        f"{source}: record {index} is not a tf.train.Example ({error}). "
        "Only TFRecord files of tf.train.Example records are supported."
    ) from error


def check_only_example_fields(example: tf_example_pb2.Example, source: str, index: int) -> None:
  """Raises SchemaError naming the file and record if it holds non-Example fields.

  Protobuf parsing is lenient: a `tf.train.SequenceExample` parses as an
  Example (its context becomes the features) and keeps its feature lists as
  unknown fields. Refusing those records avoids silently dropping data.
  """
  if len(unknown_fields.UnknownFieldSet(example)) or len(
      unknown_fields.UnknownFieldSet(example.features)
  ):
    raise errors.SchemaError(
        f"{source}: record {index} is not a tf.train.Example: it holds fields "
        "an Example does not have (a tf.train.SequenceExample?). Only TFRecord "
        "files of tf.train.Example records are supported."
    )


def spec_of(example: tf_example_pb2.Example) -> dict[str, FeatureSpec]:
  """The wire-level schema of one parsed Example."""
  specs = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else ()
    specs[name] = FeatureSpec(kind or "int64_list", len(values))
  return specs


def merge(schema: Schema, record_spec: Schema, source: str, index: int,
          first_seen: str | None = None) -> dict[str, FeatureSpec]:
  """Widens `schema` by one record's spec: lengths that differ become None.

  Args:
    schema: The schema of the records so far.
    record_spec: The record's spec.
    source: The record's file, for the message.
    index: The record's index in its file.
    first_seen: The record that set the schema (`file: record N`), named
      in the message too: it may be the odd one (an empty Example first).

  Raises:
    SchemaError: naming the file, record, and feature, if a feature is missing,
      extra, or of another value kind.
  """
  problems = diff(schema, record_spec)
  if problems:
    raise _mismatch(schema, record_spec, f"{source}: record {index}", problems, first_seen)
  return {
      name: spec if spec.length == record_spec[name].length else FeatureSpec(spec.kind, None)
      for name, spec in schema.items()
  }


def _mismatch(schema: Schema, record_spec: Schema, record: str, problems: Sequence[str],
              first_seen: str | None) -> errors.SchemaError:
  same = "Every record needs the same features with the same value kinds"
  featureless = "has no features (a 0-byte record or an empty tf.train.Example)"
  if not schema or not record_spec:  # say which side is empty: "extra feature" would blame the other
    if not schema:
      message = f"{first_seen or 'a record before it'} {featureless}, while {record} has features {sorted(record_spec)}"
    else:
      others = f"{first_seen} has" if first_seen else "the records before it have"
      message = f"{record} {featureless}, while {others} features {sorted(schema)}"
    return errors.SchemaError(errors.with_hint(message, f"{same}: remove the records without features, or regenerate them"))
  set_by = f" (set by {first_seen})" if first_seen else ""
  return errors.SchemaError(
      f"{record} does not match the schema of the records before it{set_by}: {'; '.join(problems)}. {same}."
  )


def diff(expected: Schema, actual: Schema, lengths: bool = False) -> list[str]:
  """Human-readable differences: missing, extra and mismatched features.

  Args:
    expected: The reference schema.
    actual: The schema compared with it.
    lengths: Also report a fixed length that differs from, or is not covered
      by, the expected one.
  """
  problems = [f"missing feature {name!r} ({spec.spec_text()})" for name, spec in expected.items() if name not in actual]
  problems += [f"extra feature {name!r} ({spec.spec_text()})" for name, spec in actual.items() if name not in expected]
  for name in expected.keys() & actual.keys():
    want, got = expected[name], actual[name]
    if want.kind != got.kind:
      problems.append(f"feature {name!r} is {got.spec_text()}, expected {want.spec_text()}")
    elif lengths and want.length is not None and want.length != got.length:
      problems.append(f"feature {name!r} has {got.length} values, expected {want.length}")
  return sorted(problems)


def infer(records: Iterable[tuple[str, int, bytes]]) -> dict[str, FeatureSpec]:
  """The schema covering every `(source name, index, record)` given.

  Raises:
    SourceError: if there are no records.
    SchemaError: if records disagree (see `merge`) or are not Examples.
  """
  schema: dict[str, FeatureSpec] | None = None
  first_seen = None
  for source, index, record in records:
    record_spec = spec_of(parse_example(record, source, index))
    if schema is None:
      schema, first_seen = record_spec, f"{source}: record {index}"
    else:
      schema = merge(schema, record_spec, source, index, first_seen)
  if schema is None:
    raise errors.SourceError("No records to infer a schema from: the input is empty.")
  return schema


def check(schema: Schema, record: bytes, source: str, index: int) -> None:
  """Raises SchemaError naming the file and record if it breaks `schema`."""
  problems = diff(schema, spec_of(parse_example(record, source, index)), lengths=True)
  if problems:
    raise errors.SchemaError(
        f"{source}: record {index} does not match the schema: {'; '.join(problems)}."
    )


def to_feature(spec: FeatureSpec) -> tfds.features.Tensor:
  """The TFDS feature that decodes exactly this raw Example feature.

  One value becomes a scalar, a fixed length L a vector of L, a varying length
  a `(None,)` vector: TFDS's serialized form of each is the raw layout.
  """
  shape = () if spec.length == 1 else (spec.length,)
  return tensor_codecs.resolve(_DTYPES[spec.kind], shape, tensor_codecs.LISTS).feature()


def to_features(schema: Schema) -> tfds.features.FeaturesDict:
  """A FeaturesDict that decodes records of `schema` as they are on disk."""
  return tfds.features.FeaturesDict({name: to_feature(spec) for name, spec in sorted(schema.items())})


def from_features(features: tfds.features.FeatureConnector) -> dict[str, FeatureSpec]:
  """The wire-level schema TFDS writes for `features` (flattened names)."""
  infos = tfds_internals.flatten_nest_dict(features.get_serialized_info())
  return {name: _spec_of_info(info) for name, info in infos.items()}


def _spec_of_info(info: tfds.features.TensorInfo) -> FeatureSpec:
  kind = tensor_codecs.wire_kind(info.np_dtype)
  shape = tuple(info.shape)
  length = None if any(dim is None for dim in shape) else int(np.prod(shape, dtype=np.int64))
  return FeatureSpec(kind, length)


# ------------------------------------------------- whole files, in batches --

_BATCH_BYTES = 16 << 20  # of a compressed file's records, checked at a time


def infer_files(files: Sequence[tfrecord_io.RecordFile]) -> tuple[dict[str, FeatureSpec] | None, list[int]]:
  """The schema covering every record of the files, and each file's record count.

  The schema and errors of `infer` over every `(file.name, index, record)`,
  with `check_only_example_fields` on each record, many times faster than
  parsing each record: see `SchemaInference`.

  Uncompressed files are framed here without checking record CRCs (every
  reader after this pass checks them); a record that fails the schema check
  is first CRC-checked, so that corruption is reported as corruption.

  Returns:
    The schema (None if the files hold no record) and the number of records
    of each file.

  Raises:
    SourceError: naming the file and record index of a corrupt record.
    SchemaError: as `parse_example`, `check_only_example_fields` and `merge`.
  """
  inference = SchemaInference()
  counts = [inference.add_file(file) for file in files]
  return inference.schema, counts


class SchemaInference:
  """The schema of the records added so far, and the errors, of `infer`, a batch of records at a time.

  The first record is parsed and sets the features and their value kinds.
  Later records are checked in compiled loops against that layout
  (`core.record_index.ExampleLayout`): one in protobuf's canonical encoding
  with exactly those features only widens the lengths. Any other record (a
  mismatch, or a valid but unusual encoding) is parsed and merged, so that
  errors name the file, record and feature exactly as `infer` does.
  """

  def __init__(self):
    self.schema: dict[str, FeatureSpec] | None = None
    self.first_seen: str | None = None  # the record that set the schema, as `file: record N`
    self.layout: Any = None  # fast.record_index.ExampleLayout of the schema, once there is one

  def add_file(self, file: tfrecord_io.RecordFile) -> int:
    """Adds every record of a file; returns their number.

    A file whose framing is corrupt or truncated fails here with the walk's
    SourceError (file, record, byte offset), after the records before it are
    checked: it is never handed to another reader.
    """
    return self._add_batches(file)

  def add_record(self, record: bytes, source: str, index: int) -> None:
    """Parses one record and merges its spec (SchemaError names it if it does not fit)."""
    example = parse_example(record, source, index)
    check_only_example_fields(example, source, index)
    record_spec = spec_of(example)
    if self.schema is None:
      self.schema, self.first_seen = record_spec, f"{source}: record {index}"
      self.layout = fast.record_index.ExampleLayout.of({name: spec.kind for name, spec in record_spec.items()})
    else:
      self.schema = merge(self.schema, record_spec, source, index, self.first_seen)

  def add_checked(self, conforms: np.ndarray, value_counts: np.ndarray, record_at: Callable[[int], bytes],
                  file: tfrecord_io.RecordFile, first_index: int, crc_checked: bool) -> None:
    """Adds consecutive records of a file already checked against `layout`.

    Args:
      conforms: Per record, whether it conforms to `layout`.
      value_counts: Per conforming record, each feature's number of values.
      record_at: The bytes of the i-th record, for those that do not conform.
      file: Their file, named in errors.
      first_index: The index of the first record in the file.
      crc_checked: Whether the records' CRCs were checked; if not, a record
        that fails the schema is CRC-checked first.
    """
    begin = 0
    for mismatch in np.flatnonzero(~conforms).tolist():
      self._widen(value_counts, begin, mismatch)
      self.add_file_record(record_at(mismatch), file, first_index + mismatch, crc_checked)
      begin = mismatch + 1
    self._widen(value_counts, begin, len(conforms))

  def add_file_record(self, record: bytes, file: tfrecord_io.RecordFile, index: int, crc_checked: bool) -> None:
    """`add_record` of record `index` of a file; one that fails is first CRC-checked unless it was."""
    try:
      self.add_record(record, file.name, index)
    except errors.SchemaError:
      if not crc_checked:  # a corrupt record is reported as such, as read_records does
        for _ in zip(range(index + 1), fast.record_index.read_records(file)):
          pass
      raise

  def _widen(self, value_counts: np.ndarray, begin: int, end: int) -> None:
    """Widens the schema by the conforming records [begin, end): lengths that differ become None."""
    if end <= begin:
      return
    for number, (name, spec) in enumerate(self.schema.items()):
      if spec.length is not None and (value_counts[begin:end, number] != spec.length).any():
        self.schema[name] = FeatureSpec(spec.kind, None)

  def _add_batches(self, file: tfrecord_io.RecordFile) -> int:
    count = 0
    batches = _joined_batches(file) if file.compression else _mapped_batches(file)
    for batch in batches:
      row = 0
      while row < len(batch.starts) and self.schema is None:  # the first record sets the schema
        self.add_file_record(batch.record(row), file, count + row, batch.crc_checked)
        row += 1
      if row < len(batch.starts):
        conforms, value_counts = self.layout.check(batch.buffer, batch.starts[row:], batch.ends[row:])
        self.add_checked(conforms, value_counts, lambda i, skip=row, batch=batch: batch.record(skip + i),
                         file, count + row, batch.crc_checked)
      count += len(batch.starts)
    return count


@dataclasses.dataclass(frozen=True)
class _RecordBatch:
  """Consecutive records of one file as one byte buffer and their bounds in it."""

  buffer: np.ndarray  # uint8
  starts: np.ndarray  # int64 offset of each record
  ends: np.ndarray
  crc_checked: bool

  def record(self, row: int) -> bytes:
    return self.buffer[self.starts[row]:self.ends[row]].tobytes()


def _mapped_batches(file: tfrecord_io.RecordFile) -> Iterator[_RecordBatch]:
  """Batches of an uncompressed file, framed by `core.record_index` in mapped windows.

  Nothing is copied: the layout check reads only tags, lengths and keys, so
  the pages of large values (images, audio) are never read.

  Raises:
    SourceError: naming the file, record and byte offset of a record whose
      header is corrupt or that runs past the end of the file.
  """

  for block in fast.record_index.scan(file, with_window=True, as_reader=True):  # this pass reads records
    starts, ends = block.record_bounds()
    yield _RecordBatch(block.window, starts, ends, crc_checked=False)


def _joined_batches(file: tfrecord_io.RecordFile) -> Iterator[_RecordBatch]:
  """Batches of a compressed file, read (and CRC-checked) by `read_records`."""
  records: list[bytes] = []
  size = 0
  for record in fast.record_index.read_records(file):
    records.append(record)
    size += len(record)
    if size >= _BATCH_BYTES:
      yield _joined(records)
      records, size = [], 0
  if records:
    yield _joined(records)


def _joined(records: Sequence[bytes]) -> _RecordBatch:
  ends = np.cumsum([len(record) for record in records], dtype=np.int64)
  starts = np.concatenate([np.zeros(1, np.int64), ends[:-1]])
  return _RecordBatch(np.frombuffer(b"".join(records), np.uint8), starts, ends, crc_checked=True)
