"""Inferring a schema from `tf.train.Example` records, and mapping it to and from TFDS features.

The schema is expressed at the wire level (value kind and list length per
feature), so raw records can be copied into a TFDS dataset without being
decoded and re-encoded: `to_features` chooses the TFDS features whose
serialized form is exactly the raw records' layout.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from google.protobuf import message
from google.protobuf import unknown_fields
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import tfrecord_io

KINDS = ("bytes_list", "float_list", "int64_list")
_DTYPES = {"bytes_list": np.object_, "float_list": np.float32, "int64_list": np.int64}
_SPEC_TEXT = re.compile(r"^(bytes_list|float_list|int64_list)\[(\d+|\*)\]$")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One Example feature: its value kind and list length (None: varies)."""

  kind: str
  length: int | None

  def describe(self) -> str:
    return f"{self.kind}[{'*' if self.length is None else self.length}]"


Schema = Mapping[str, FeatureSpec]


def parse_schema(declared: Mapping[str, str]) -> dict[str, FeatureSpec]:
  """Reads a schema written as `{name: "int64_list[3]"}`, the form of `describe()`.

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
          f"KIND one of {KINDS} and LENGTH a number or * (varies), e.g. 'int64_list[3]'."
      )
    kind, length = match.groups()
    schema[name] = FeatureSpec(kind, None if length == "*" else int(length))
  return schema


def parse_example(record: bytes, source: str, index: int) -> tf.train.Example:
  """Parses one record, naming the file and record index if it is no Example.

  Raises:
    SchemaError: if the record is not a serialized `tf.train.Example`.
  """
  try:
    return tf.train.Example.FromString(record)
  except message.DecodeError as error:
    raise errors.SchemaError(
        f"{source}: record {index} is not a tf.train.Example ({error}). "
        "Only TFRecord files of tf.train.Example records are supported."
    ) from error


def check_only_example_fields(example: tf.train.Example, source: str, index: int) -> None:
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


def spec_of(example: tf.train.Example) -> dict[str, FeatureSpec]:
  """The wire-level schema of one parsed Example."""
  specs = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else ()
    specs[name] = FeatureSpec(kind or "int64_list", len(values))
  return specs


def merge(schema: Schema, record_spec: Schema, source: str, index: int) -> dict[str, FeatureSpec]:
  """Widens `schema` by one record's spec: lengths that differ become None.

  Raises:
    SchemaError: naming the file, record, and feature, if a feature is missing,
      extra, or of another value kind.
  """
  problems = diff(schema, record_spec)
  if problems:
    raise errors.SchemaError(
        f"{source}: record {index} does not match the schema of the records "
        f"before it: {'; '.join(problems)}. Every record needs the same "
        "features with the same value kinds."
    )
  return {
      name: spec if spec.length == record_spec[name].length else FeatureSpec(spec.kind, None)
      for name, spec in schema.items()
  }


def diff(expected: Schema, actual: Schema, lengths: bool = False) -> list[str]:
  """Human-readable differences: missing, extra and mismatched features.

  Args:
    expected: The reference schema.
    actual: The schema compared with it.
    lengths: Also report a fixed length that differs from, or is not covered
      by, the expected one.
  """
  problems = [f"missing feature {name!r} ({spec.describe()})" for name, spec in expected.items() if name not in actual]
  problems += [f"extra feature {name!r} ({spec.describe()})" for name, spec in actual.items() if name not in expected]
  for name in expected.keys() & actual.keys():
    want, got = expected[name], actual[name]
    if want.kind != got.kind:
      problems.append(f"feature {name!r} is {got.describe()}, expected {want.describe()}")
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
  for source, index, record in records:
    record_spec = spec_of(parse_example(record, source, index))
    schema = record_spec if schema is None else merge(schema, record_spec, source, index)
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
  dtype = tf.string if spec.kind == "bytes_list" else _DTYPES[spec.kind]
  return tfds.features.Tensor(shape=shape, dtype=dtype)


def to_features(schema: Schema) -> tfds.features.FeaturesDict:
  """A FeaturesDict that decodes records of `schema` as they are on disk."""
  return tfds.features.FeaturesDict({name: to_feature(spec) for name, spec in sorted(schema.items())})


def from_features(features: tfds.features.FeatureConnector) -> dict[str, FeatureSpec]:
  """The wire-level schema TFDS writes for `features` (flattened names)."""
  infos = tfds.core.utils.flatten_nest_dict(features.get_serialized_info())
  return {name: _spec_of_info(info) for name, info in infos.items()}


def _spec_of_info(info: tfds.features.TensorInfo) -> FeatureSpec:
  dtype = np.dtype(info.np_dtype) if info.np_dtype is not None else np.dtype(object)
  if dtype.kind in "OSU":
    kind = "bytes_list"
  elif dtype.kind == "f":
    kind = "float_list"
  else:
    kind = "int64_list"
  shape = tuple(info.shape)
  length = None if any(dim is None for dim in shape) else int(np.prod(shape, dtype=np.int64))
  return FeatureSpec(kind, length)


# ------------------------------------------------- whole files, in batches --

# Wire tags of the Feature oneof (field << 3 | length-delimited).
_KIND_OF_TAG = {0x0A: "bytes_list", 0x12: "float_list", 0x1A: "int64_list"}
_TAG_OF_KIND = {kind: tag for tag, kind in _KIND_OF_TAG.items()}
_BATCH_BYTES = 16 << 20
# Values of a bytes_list walked record-parallel; longer lists go the exact way.
_MAX_BYTES_VALUES = 64
_GATHER_BYTES = 1 << 20


def infer_files(files: Sequence[tfrecord_io.RecordFile]) -> tuple[dict[str, FeatureSpec] | None, list[int]]:
  """The schema covering every record of the files, and each file's record count.

  The schema and errors of `infer` over every `(file.name, index, record)`,
  with `check_only_example_fields` on each record, about 6x faster than
  parsing each record: records are checked in batches with NumPy against the
  schema of the records before them (keys, value kinds and list lengths read
  from the wire format), and only a record that is not in protobuf's
  canonical encoding, or does not match, goes through `parse_example` and
  `merge`, which name the file, record and feature exactly as `infer` does.

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
  inference = _Inference()
  return inference.schema_after(files)


@dataclasses.dataclass(frozen=True)
class _RecordBatch:
  """Consecutive records of one file as one byte buffer and their bounds in it."""

  buffer: np.ndarray  # uint8
  starts: np.ndarray  # int64 offset of each record
  ends: np.ndarray
  crc_checked: bool

  def record(self, row: int) -> bytes:
    return self.buffer[self.starts[row]:self.ends[row]].tobytes()


class _NotFramed(Exception):
  """The file's framing is not intact: it is read again by the exact path."""


class _Inference:
  """The running schema of `infer_files`."""

  def __init__(self):
    self.schema: dict[str, FeatureSpec] | None = None

  def schema_after(self, files: Sequence[tfrecord_io.RecordFile]) -> tuple[dict[str, FeatureSpec] | None, list[int]]:
    counts = []
    for file in files:
      schema_before = None if self.schema is None else dict(self.schema)  # _widen changes it in place
      try:
        counts.append(self._add_batches(file))
      except _NotFramed:  # truncated or corrupt framing: read_records names the record
        self.schema = schema_before
        counts.append(self._add_exactly(file))
    return self.schema, counts

  def _add_exactly(self, file: tfrecord_io.RecordFile) -> int:
    count = 0
    for index, record in enumerate(tfrecord_io.read_records(file)):
      self._add_record(record, file.name, index)
      count += 1
    return count

  def _add_record(self, record: bytes, source: str, index: int) -> None:
    example = parse_example(record, source, index)
    check_only_example_fields(example, source, index)
    record_spec = spec_of(example)
    self.schema = record_spec if self.schema is None else merge(self.schema, record_spec, source, index)

  def _add_batches(self, file: tfrecord_io.RecordFile) -> int:
    count = 0
    batches = _joined_batches(file) if file.compression else _mapped_batches(file)
    for batch in batches:
      self._add_batch(batch, file, count)
      count += len(batch.starts)
    return count

  def _add_batch(self, batch: _RecordBatch, file: tfrecord_io.RecordFile, first_index: int) -> None:
    size = len(batch.starts)
    row = 0
    while row < size and not self.schema:  # the first record sets the schema
      self._add_row(batch, row, file, first_index)
      row += 1
    if row == size:
      return
    matches, lengths = _scan(batch, row, self.schema)
    begin = 0
    for mismatch in np.flatnonzero(~matches).tolist():
      self._widen(lengths, begin, mismatch)
      self._add_row(batch, row + mismatch, file, first_index)
      begin = mismatch + 1
    self._widen(lengths, begin, len(matches))

  def _add_row(self, batch: _RecordBatch, row: int, file: tfrecord_io.RecordFile, first_index: int) -> None:
    index = first_index + row
    try:
      self._add_record(batch.record(row), file.name, index)
    except errors.SchemaError:
      if not batch.crc_checked:  # a corrupt record is reported as such, as read_records does
        for _ in zip(range(index + 1), tfrecord_io.read_records(file)):
          pass
      raise

  def _widen(self, lengths: Mapping[str, np.ndarray], begin: int, end: int) -> None:
    """Widens the schema by the matching records [begin, end) of a scan."""
    if end <= begin:
      return
    for name, record_lengths in lengths.items():
      spec = self.schema[name]
      if spec.length is not None and (record_lengths[begin:end] != spec.length).any():
        self.schema[name] = FeatureSpec(spec.kind, None)


def _mapped_batches(file: tfrecord_io.RecordFile) -> Iterator[_RecordBatch]:
  """Batches of an uncompressed file, framed by `core.record_index` in mapped windows.

  Nothing is copied: `_scan` reads only tags, lengths and keys, so the pages
  of large values (images, audio) are never read.

  Raises:
    _NotFramed: if a record's header is corrupt or runs past the end of the file.
  """
  from tfds_builders.core import record_index  # pylint: disable=g-import-not-at-top  # Numba

  try:
    for block in record_index.scan(file, with_window=True):
      starts, ends = block.record_bounds()
      yield _RecordBatch(block.window, starts, ends, crc_checked=False)
  except errors.SourceError as error:
    raise _NotFramed(file.name) from error


def _joined_batches(file: tfrecord_io.RecordFile) -> Iterator[_RecordBatch]:
  """Batches of a compressed file, read (and CRC-checked) by `read_records`."""
  records: list[bytes] = []
  size = 0
  for record in tfrecord_io.read_records(file):
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


def _scan(batch: _RecordBatch, first_row: int, schema: Schema) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Which records from `first_row` on match `schema`, read record-parallel from the wire.

  A record matches if it is in protobuf's canonical encoding (one `features`
  field, map entries of key then value, one kind per feature, numeric lists
  packed) and has exactly the schema's features with its value kinds. Any
  other record (a mismatch, or a valid but unusual encoding) is left to the
  exact path, so a match is never wrong, only a non-match may be fine.

  Returns:
    Per record, whether it matches; per feature of fixed length in `schema`,
    each record's number of values.
  """
  wire = _Wire(batch.buffer)
  starts, ends = batch.starts[first_row:], batch.ends[first_row:]
  size = len(starts)
  if not len(batch.buffer) or not schema:
    return np.zeros(size, bool), {}
  names = list(schema)
  key_ids = {name.encode("utf-8"): number for number, name in enumerate(names)}
  key_arrays = [np.frombuffer(name.encode("utf-8"), np.uint8) for name in names]
  matches = (ends > starts) & wire.tag_is(starts, 0x0A)
  features_size, position = wire.lengths(starts + 1, matches)
  matches &= position + features_size == ends
  kinds = np.zeros((len(names), size), np.uint8)
  seen = np.zeros((len(names), size), np.int8)
  list_starts = np.zeros((len(names), size), np.int64)
  list_ends = np.zeros((len(names), size), np.int64)
  rows = np.arange(size)
  for _ in names:  # one map entry per feature
    matches &= wire.tag_is(position, 0x0A)
    entry_size, position = wire.lengths(position + 1, matches)
    entry_end = position + entry_size
    matches &= wire.tag_is(position, 0x0A)
    key_size, position = wire.lengths(position + 1, matches)
    key_id = wire.key_ids(position, key_size, matches, key_ids, key_arrays)
    matches &= key_id >= 0
    position = position + key_size
    matches &= wire.tag_is(position, 0x12)
    feature_size, position = wire.lengths(position + 1, matches)
    matches &= (position + feature_size == entry_end) & (feature_size > 0)
    kind_tag = wire.byte(position)
    list_size, position = wire.lengths(position + 1, matches)
    matches &= position + list_size == entry_end
    first_id = int(key_id[0])
    if first_id >= 0 and matches.all() and (key_id == first_id).all():  # the usual case: one key order
      kinds[first_id] = kind_tag
      seen[first_id] += 1
      list_starts[first_id] = position
      list_ends[first_id] = entry_end
    else:
      found = rows[matches]
      found_ids = key_id[found]
      kinds[found_ids, found] = kind_tag[found]
      seen[found_ids, found] += 1
      list_starts[found_ids, found] = position[found]
      list_ends[found_ids, found] = entry_end[found]
    position = entry_end
  matches &= (position == ends) & (seen == 1).all(axis=0)
  lengths = {}
  for number, name in enumerate(names):
    spec = schema[name]
    matches &= kinds[number] == _TAG_OF_KIND[spec.kind]
    values_ok, counts = wire.list_lengths(spec.kind, list_starts[number], list_ends[number], matches)
    matches &= values_ok
    if spec.length is not None:
      lengths[name] = counts
  return matches, lengths


class _Wire:
  """Record-parallel reads of protobuf wire format in one byte buffer.

  Every read takes positions (one per record) and the records still
  matching; positions of other records may be anywhere and are clamped.
  """

  def __init__(self, buffer: np.ndarray):
    self.buffer = buffer

  def byte(self, positions: np.ndarray) -> np.ndarray:
    return np.take(self.buffer, positions, mode="clip")

  def tag_is(self, positions: np.ndarray, tag: int) -> np.ndarray:
    return self.byte(positions) == tag

  def lengths(self, positions: np.ndarray, matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint lengths (at most 5 bytes) at `positions`, and the positions after them.

    Clears `matches` where a varint is longer.
    """
    byte = self.byte(positions)
    value = (byte & 0x7F).astype(np.int64)
    after = positions + 1
    more = byte >= 0x80
    shift = 7
    while more.any():
      if shift > 28:
        matches &= ~more
        break
      rows = np.flatnonzero(more)
      byte = self.byte(after[rows])
      value[rows] |= (byte & 0x7F).astype(np.int64) << shift
      after[rows] += 1
      more[rows] = byte >= 0x80
      shift += 7
    return value, after

  def key_ids(self, positions: np.ndarray, key_sizes: np.ndarray, matches: np.ndarray,
              key_ids: Mapping[bytes, int], key_arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The schema feature number of each map key (-1: not in the schema)."""
    ids = np.full(len(positions), -1, np.int64)
    pending = np.flatnonzero(matches)
    if not len(pending):
      return ids
    # Records mostly list their features in one order: the first record's key
    # is compared with every record's at once, the rest one by one.
    first = int(pending[0])
    start = int(positions[first])
    guess = key_ids.get(self.buffer[start:start + int(key_sizes[first])].tobytes(), -1)
    if guess >= 0:
      key = key_arrays[guess]
      candidates = pending[key_sizes[pending] == len(key)]
      if len(key):
        window = positions[candidates, None] + np.arange(len(key))
        candidates = candidates[(np.take(self.buffer, window, mode="clip") == key).all(axis=1)]
      ids[candidates] = guess
      pending = pending[ids[pending] < 0]
    for row in pending.tolist():
      start = int(positions[row])
      ids[row] = key_ids.get(self.buffer[start:start + int(key_sizes[row])].tobytes(), -1)
    return ids

  def list_lengths(self, kind: str, starts: np.ndarray, ends: np.ndarray,
                   matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record: whether the list's values are canonical, and how many there are."""
    valid = matches.copy()
    counts = np.zeros(len(starts), np.int64)
    rows = np.flatnonzero(valid & (ends > starts))
    if not len(rows):
      return valid, counts
    if kind == "bytes_list":
      self._bytes_values(starts, ends, rows, valid, counts)
      return valid, counts
    # Numeric lists: one packed field (tag 1, length-delimited) filling the list.
    list_valid = self.tag_is(starts[rows], 0x0A)
    packed_size, packed_start = self.lengths(starts[rows] + 1, list_valid)
    list_valid &= packed_start + packed_size == ends[rows]
    if kind == "float_list":
      list_valid &= packed_size % 4 == 0
      counts[rows] = packed_size // 4
    else:
      list_valid &= self._varints_complete(packed_start, ends[rows])
      counts[rows] = self._varint_counts(packed_start, ends[rows], list_valid)
    valid[rows] &= list_valid
    return valid, counts

  def _bytes_values(self, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray,
                    valid: np.ndarray, counts: np.ndarray) -> None:
    position = starts[rows].copy()
    row_valid = np.ones(len(rows), bool)
    row_ends = ends[rows]
    for _ in range(_MAX_BYTES_VALUES):
      active = np.flatnonzero(row_valid & (position < row_ends))
      if not len(active):
        break
      step_valid = self.tag_is(position[active], 0x0A)
      value_size, after = self.lengths(position[active] + 1, step_valid)
      position[active] = after + value_size
      step_valid &= position[active] <= row_ends[active]
      row_valid[active] &= step_valid
      counts[rows[active]] += 1
    row_valid &= position == row_ends  # also false for lists longer than scanned
    valid[rows] &= row_valid

  def _varints_complete(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whether each packed payload ends a varint on its last byte (non-empty)."""
    nonempty = ends > starts
    return ~nonempty | (self.byte(ends - 1) < 0x80)

  def _varint_counts(self, starts: np.ndarray, ends: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The number of varints in each packed payload; clears `valid` for one over 10 bytes."""
    sizes = np.where(valid, ends - starts, 0)
    counts = np.zeros(len(starts), np.int64)
    # Payloads are gathered about 1 MB at a time: the gather's index array is 8x their bytes.
    cumulative = np.cumsum(sizes)
    first = 0
    while first < len(sizes):
      done = int(cumulative[first - 1]) if first else 0
      last = max(first + 1, int(np.searchsorted(cumulative, done + _GATHER_BYTES, side="right")))
      rows = slice(first, last)  # views: `valid` is cleared in place
      counts[rows] = self._group_varint_counts(starts[rows], sizes[rows], valid[rows])
      first = last
    return counts

  def _group_varint_counts(self, starts: np.ndarray, sizes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    total = int(sizes.sum())
    if not total:
      return np.zeros(len(starts), np.int64)
    offsets = np.cumsum(sizes) - sizes
    payload = self.buffer[np.repeat(starts - offsets, sizes) + np.arange(total)]
    continued = payload >= 0x80
    running = np.concatenate([np.zeros(1, np.int64), np.cumsum(continued)])
    counts = sizes - (running[offsets + sizes] - running[offsets])
    if total >= 10:  # a varint of 11+ bytes: protobuf refuses it, so must the exact path
      too_long = np.flatnonzero(running[10:] - running[:-10] == 10)
      if len(too_long):
        valid[np.searchsorted(offsets, too_long, side="right") - 1] = False
    return counts
