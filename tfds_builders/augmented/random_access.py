"""`augmented_source`: an overlay over an ArrayRecord base, read by index (`len`, `[i]`), for Grain and data-source code."""

from __future__ import annotations

import bisect
import dataclasses
import operator
import threading
from collections.abc import Mapping, Sequence
from typing import Any, SupportsIndex

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2  # the Example message without importing TensorFlow

from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import chain as chain_lib
from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import tfrecord_io
from tfds_builders.core import wire

_HEADER, _CRC = wire.FRAME_HEADER_BYTES, wire.FRAME_CRC_BYTES


def augmented_source(
    overlay: str,
    split: str,
    *,
    data_dir: str | None = None,
    base: str | None = None,
    base_data_dir: str | None = None,
    decoders: Mapping[str, Any] | None = None,
) -> AugmentedSource:
  """An overlay (or chain of overlays) over an ArrayRecord base, as a random-access data source.

  `source[i]` is the i-th example of the split spec: the base example read
  by index from its ArrayRecord files (nothing is copied) and decoded as
  `tfds.data_source` decodes it, with every new field of the overlay (stored
  and constant). Scalars are NumPy scalars of the feature's dtype, as
  `load_augmented` gives them. Grain takes the source as it is
  (`grain.MapDataset.source`, `grain.DataLoader(data_source=...)`).

  Guarantees, as `load_augmented`'s:
    * The base's identity is checked when the source is made: another
      base, another version, or files that changed in number, name, size
      or record count are refused (SourceError saying what differs).
    * Every read is checked: each overlay record's `_base_index` must be the
      example's index and its `_base_fingerprint` must equal the fingerprint
      of the base record just read (its length and masked CRC32C, the value
      a TFRecord frame of the same bytes stores), else a SourceError naming
      the example: a base rewritten in place is never joined.
    * Examples the side table had no row for (`missing_policy="skip"`) are
      not in the source: its length counts the kept examples only, and the
      overlay's `_matched` flags are read once, when the source is made.

  Args:
    overlay: The overlay: its version directory, or `augmented/<config>[:version]`
      under `data_dir`. It must have been built over a base prepared with
      `--file_format array_record`.
    split: A TFDS split spec: `"train"`, `"train[10:20]"`, `"train[:10%]+test"`.
    data_dir: Where an overlay given by name is.
    base: The base, when it is not where the overlay was built from: a
      prepared dataset's directory, or its name under `base_data_dir`.
    base_data_dir: Where a base given by name is.
    decoders: TFDS decoders for base features (e.g. `tfds.decode.SkipDecoding()`).

  Raises:
    SourceError: if the overlay or base is missing, they do not belong
      together, or the base is stored as TFRecord (read it with
      `load_augmented`, or build the base with `--file_format array_record`).
    ConfigError: for a split spec that does not apply to the base's splits.
  """
  overlay, locations = chain_lib.published(overlay, None)
  top = chain_lib.open_link(overlay, data_dir)
  chain = chain_lib.resolve(top, locations)
  recorded = chain.root
  if recorded.get("kind") != base_lib.PREPARED or recorded.get("file_format") != base_lib.ARRAY_RECORD:
    raise _tfrecord_base(top, recorded)
  base_dataset = chain_lib.open_root(chain, base, base_data_dir, locations)
  if base_dataset.file_format != base_lib.ARRAY_RECORD:
    raise errors.SourceError(
        errors.with_hint(
            f"Overlay {top.name} was built over the ArrayRecord build of {recorded['name']}; "
            f"{base_dataset.title()} is stored as TFRecord",
            f"Pass the ArrayRecord build it was built from ({recorded['location']}), or read this "
            "base with tfds_builders.load_augmented and an overlay built over it",
        )
    )
  chain_lib.check_root(chain, base_dataset)
  ranges = base_dataset.ranges(split)
  for link in chain.links:
    missing = sorted({name for name, _, _ in ranges} - set(link.files)) if link.stored_names else []
    if missing:
      raise errors.SourceError(
          f"{link.title} has no split {missing[0]!r}; it has {sorted(link.files)}. Rebuild {link.name} with that split.")
  splits = {name for name, _, _ in ranges}
  _check_counts(base_dataset, splits)
  links = tuple(_LinkRecords.of(link, splits) for link in chain.links)
  return AugmentedSource(
      name=top.name,
      split=split,
      base_files={name: [(file.path, file.num_records) for file in base_split.files]
                  for name, base_split in base_dataset.splits.items()},
      base_features=base_dataset.features_source,
      links=links,
      constants=_constants(chain, splits),
      segments=_segments(ranges, links),
      decoders=decoders,
  )


def _tfrecord_base(top: chain_lib.Link, recorded: Mapping[str, Any]) -> errors.SourceError:
  """The refusal of an overlay whose base is stored as TFRecord, which has no index to read by."""
  what = "raw TFRecord files" if recorded.get("kind") == base_lib.RECORDS else (
      f"{recorded['name']} {recorded.get('version')}, stored as TFRecord")
  return errors.SourceError(
      errors.with_hint(
          f"Overlay {top.name} was built over {what} (at {recorded.get('location')}); the random-access "
          "source reads the base by index from ArrayRecord files",
          "Build the base with `tfds build ... --file_format array_record` and the overlay over that build, "
          "or read this overlay with tfds_builders.load_augmented",
      )
  )


def _check_counts(base_dataset: base_lib.Base, splits: set[str]) -> None:
  """Each base file of the splits holds the records its dataset_info.json says (read from the file's index).

  The identity cannot tell: ArrayRecord files are padded to whole blocks, so
  a file that lost or gained records often keeps its size.
  """
  for split in sorted(splits):
    for file in base_dataset.splits[split].files:
      found = base_lib.count_array_records(file.path)
      if found != file.num_records:
        raise tfrecord_io.count_mismatch(file.path, file.num_records, found, file.count_source)


def _constants(chain: chain_lib.Chain, splits: set[str]) -> dict[str, dict[str, Any]]:
  """Split -> the chain's constant fields there, typed as the stored fields are (`_typed`)."""
  features = chain.features()
  return {
      split: {name: _typed(features[name], value) for name, value in chain_lib.constant_values(chain, split).items()}
      for split in splits
  }


def _segments(ranges: list[tuple[str, int, int]], links: Sequence[_LinkRecords]) -> list[_Segment]:
  """The source's parts: each range's base indices, without those a link leaves out (`_matched` False)."""
  segments = []
  for split, start, stop in ranges:
    flags = [link.matched(split)[start:stop] for link in links if link.matched(split) is not None]
    if not flags:
      segments.append(_Segment(split, range(start, stop)))
      continue
    kept = np.logical_and.reduce(flags)
    segments.append(_Segment(split, start + np.flatnonzero(kept)))
  return segments


@dataclasses.dataclass(frozen=True)
class _Segment:
  """Consecutive source indices: base examples `indices` of `split`."""

  split: str
  indices: range | np.ndarray


class _TensorRecords:
  """Decodes a link's records to NumPy as TFDS's `deserialize_example_np` does, for its Tensor features only.

  A link's features are all `tfds.features.Tensor`s (new fields and alignment),
  so a protobuf parse and one array per feature suffice; TFDS's generic
  parser costs about as much per example as reading the base record
  (tests/augmented/test_random_access.py compares every example with
  `load_augmented`).
  """

  def __init__(self, features: tfds.features.FeaturesDict, names: Sequence[str]):
    self._fields = []
    for name in names:
      feature = features[name]
      content = feature.to_json_content()
      raw = (getattr(content, "encoding", "") or "none") == "bytes"
      shape = tuple(-1 if dim is None else dim for dim in feature.shape)
      self._fields.append((name, np.dtype(feature.np_dtype), shape, raw))

  def __call__(self, record: bytes) -> dict[str, Any]:
    found = tf_example_pb2.Example.FromString(record).features.feature
    decoded = {}
    for name, dtype, shape, raw in self._fields:
      value = found[name]
      if raw:  # Encoding.BYTES: the array's little-endian bytes, one bytes_list value
        array = np.frombuffer(value.bytes_list.value[0], dtype.newbyteorder("<")).astype(dtype)
      elif dtype.kind == "O":
        array = np.array(list(value.bytes_list.value), dtype=object)
      elif dtype.kind == "f":
        array = np.array(value.float_list.value, dtype=np.float32).astype(dtype)
      else:
        array = np.array(value.int64_list.value, dtype=np.int64).astype(dtype)
      decoded[name] = array.reshape(shape)
    return decoded


class _LinkRecords:
  """One overlay link's records, read by base index; each read checked against the base record's fingerprint.

  A TFRecord shard is indexed once (its frames' starts, walked compiled);
  an ArrayRecord shard is read by index with its own reader.
  """

  def __init__(self, link: chain_lib.Link, frames: Mapping[str, list[np.ndarray | None]],
               matched: Mapping[str, np.ndarray]):
    self.link = link
    self._frames = frames  # split -> per shard: frame starts and the file's end (None: ArrayRecord)
    self._matched = matched
    self._starts = {split: [0, *np.cumsum([count for _, _, count in files]).tolist()]
                    for split, files in link.files.items()}
    self._handles: dict[str, Any] = {}
    self._lock = threading.Lock()
    self._decoder = _TensorRecords(link.features, [*link.stored_names, overlay_format.BASE_INDEX,
                                                   overlay_format.BASE_FINGERPRINT])

  @classmethod
  def of(cls, link: chain_lib.Link, splits: set[str]) -> _LinkRecords:
    """The link's shards of `splits` indexed (and its `_matched` flags read, under missing_policy `skip`)."""
    skips = link.metadata.get("missing_policy") == "skip" and bool(link.stored_names)
    frames, matched = {}, {}
    for split, files in link.files.items():
      if split not in splits:
        continue
      frames[split], flags = [], []
      for path, size, count in files:
        if base_lib.is_array_record_shard(path):
          frames[split].append(None)
          if skips:
            flags.append(_array_record_matched(link, path, count))
          continue
        starts, shard_flags = _indexed(tfrecord_io.RecordFile(epath.Path(path), ""), count, skips)
        frames[split].append(np.append(starts, size))
        flags.append(shard_flags)
      if skips:
        matched[split] = np.concatenate(flags) if flags else np.zeros(0, np.bool_)
    return cls(link, frames, matched)

  def matched(self, split: str) -> np.ndarray | None:
    """Per base example of the split, whether the link keeps it; None: it keeps every one."""
    return self._matched.get(split)

  def fields(self, split: str, index: int, fingerprint: int) -> dict[str, Any]:
    """The link's stored fields for base example `split[index]`, its alignment checked."""
    if not self.link.stored_names:
      return {}
    record = self._record(split, index)
    try:
      decoded = self._decoder(record)
    except Exception as error:  # pylint: disable=broad-except  # protobuf or decode errors, named here
      raise errors.SourceError(
          f"{self.link.title}: the record of base example {split}[{index}] does not decode ({error}). "
          "Rebuild the overlay.") from error
    if int(decoded[overlay_format.BASE_INDEX]) != index:
      raise errors.SourceError(
          f"Overlay {self.link.name} is misaligned with its base: the overlay record read for base example "
          f"{split}[{index}] holds base index {int(decoded[overlay_format.BASE_INDEX])}. Rebuild the overlay.")
    if int(decoded[overlay_format.BASE_FINGERPRINT]) != fingerprint:
      raise errors.SourceError(
          f"Overlay {self.link.name} does not match its base at base example {split}[{index}]: the base record's "
          "fingerprint differs from the one the overlay was built from (the base was rewritten since). "
          "Rebuild the overlay against this base.")
    return {name: _typed(self.link.features[name], decoded[name]) for name in self.link.stored_names}

  def _record(self, split: str, index: int) -> bytes:
    starts = self._starts[split]
    shard = bisect.bisect_right(starts, index) - 1
    path = self.link.files[split][shard][0]
    position = index - starts[shard]
    frames = self._frames[split][shard]
    if frames is None:
      return base_lib.read_array_records(self._handle(path, array_record=True), path, [position])[0]
    start, end = int(frames[position]), int(frames[position + 1])
    with self._lock:  # one handle per shard: seek and read together
      handle = self._handle(path, array_record=False)
      handle.seek(start)
      frame = handle.read(end - start)
    data = np.frombuffer(frame, np.uint8)
    length = len(frame) - _HEADER - _CRC
    stored = int.from_bytes(frame[-_CRC:], "little") if len(frame) >= _HEADER + _CRC else -1
    if length < 0 or fast.crc32c.masked_crc32c(data, _HEADER, length) != stored:
      raise errors.SourceError(
          errors.with_hint(f"{path}: record {position} (base example {split}[{index}]) is corrupt or truncated",
                           "Restore the overlay's files, or rebuild it"))
    return frame[_HEADER:_HEADER + length]

  def _handle(self, path: str, array_record: bool) -> Any:
    handle = self._handles.get(path)
    if handle is None:
      handle = base_lib.open_array_record(path) if array_record else epath.Path(path).open("rb")
      self._handles[path] = handle
    return handle

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_handles"], state["_lock"] = {}, None  # reopened in the worker that unpickles it
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()


def _indexed(file: tfrecord_io.RecordFile, count: int, skips: bool) -> tuple[np.ndarray, np.ndarray | None]:
  """A TFRecord overlay shard's frame starts (and `_matched` flags), in one compiled walk; its count checked."""
  starts, flags = [], []
  options = {"key": overlay_format.MATCHED, "key_kind": "int64_list"} if skips else {}
  for block in fast.record_index.scan(file, **options):
    starts.append(block.offsets)
    if skips:
      flags.append((block.key_counts != 1) | (block.keys != 0))  # no flag: an overlay that keeps every example
  found = sum(len(part) for part in starts)
  if found != count:
    raise tfrecord_io.count_mismatch(file.path, count, found, "the overlay's dataset_info.json (shard_lengths)")
  joined = np.concatenate(starts) if starts else np.zeros(0, np.int64)
  return joined, (np.concatenate(flags) if flags else np.zeros(0, np.bool_)) if skips else None


def _array_record_matched(link: chain_lib.Link, path: str, count: int) -> np.ndarray:
  """An ArrayRecord overlay shard's `_matched` flags, read record by record."""
  found = base_lib.count_array_records(path)
  if found != count:
    raise tfrecord_io.count_mismatch(path, count, found, "the overlay's dataset_info.json (shard_lengths)")
  records = base_lib.read_array_records(base_lib.open_array_record(path), path, range(count))
  return np.array([bool(link.features.deserialize_example_np(record).get(overlay_format.MATCHED, True))
                   for record in records], np.bool_)


def _typed(feature: Any, value: Any) -> Any:
  """A decoded value with its scalars as NumPy scalars of the feature's dtype, as `tfds.as_numpy` gives them."""
  if isinstance(feature, tfds.features.FeaturesDict) and isinstance(value, dict):
    return {name: _typed(feature[name], item) for name, item in value.items()}
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value[()]  # a 0-d array: tf.data gives the scalar
  if isinstance(value, (np.ndarray, np.generic, bytes, dict, list, tuple)) or value is None:
    return value
  dtype = getattr(feature, "np_dtype", None)
  if dtype is None or np.dtype(dtype).kind in "OSU":
    return value
  return np.dtype(dtype).type(value)


class AugmentedSource:
  """Base examples and their overlay's new fields, by index; see `augmented_source`.

  Picklable (Grain's worker processes): readers and file handles are opened
  again, lazily, where it is unpickled.
  """

  def __init__(self, *, name: str, split: str, base_files: Mapping[str, list[tuple[str, int]]],
               base_features: base_lib.FeaturesSource, links: Sequence[_LinkRecords],
               constants: Mapping[str, Mapping[str, Any]], segments: Sequence[_Segment],
               decoders: Mapping[str, Any] | None):
    self._name = name
    self._split = split
    self._base_files = base_files
    self._file_starts = {split: [0, *np.cumsum([count for _, count in files]).tolist()]
                         for split, files in base_files.items()}
    self._base_features = base_features
    self._links = tuple(links)
    self._constants = constants
    self._segments = tuple(segments)
    self._segment_starts = [0, *np.cumsum([len(segment.indices) for segment in segments]).tolist()]
    self._decoders = decoders
    self._readers: dict[str, Any] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._segment_starts[-1]

  def __repr__(self) -> str:
    return (f"AugmentedSource(overlay={self._name!r}, split={self._split!r}, examples={len(self)}, "
            f"links={len(self._links)})")

  def __getitem__(self, key: SupportsIndex) -> dict[str, Any]:
    split, index = self._locate(key)
    (record,) = self._base_records(split, [index])
    return self._example(split, index, record)

  def __getitems__(self, keys: Sequence[SupportsIndex]) -> list[dict[str, Any]]:
    """Examples of several indices, each base file's records read in one call (Grain's batches)."""
    located = [self._locate(key) for key in keys]
    records: dict[tuple[str, int], bytes] = {}
    for split in {split for split, _ in located}:
      indices = sorted({index for one, index in located if one == split})
      records.update({(split, index): record for index, record in zip(indices, self._base_records(split, indices))})
    return [self._example(split, index, records[(split, index)]) for split, index in located]

  def __iter__(self):
    for key in range(len(self)):
      yield self[key]

  def _locate(self, key: SupportsIndex) -> tuple[str, int]:
    """The split and base index of source index `key` (negative counts from the end)."""
    position = given = operator.index(key)  # TypeError for a float, str or slice, as a Sequence gives
    if position < 0:
      position += len(self)
    if not 0 <= position < len(self):
      raise IndexError(f"Index {given} is out of range for {self!r} ({len(self)} examples).")
    part = bisect.bisect_right(self._segment_starts, position) - 1
    segment = self._segments[part]
    return segment.split, int(segment.indices[position - self._segment_starts[part]])

  def _base_records(self, split: str, indices: Sequence[int]) -> list[bytes]:
    """Base records of a split, by index, read shard by shard."""
    starts = self._file_starts[split]
    by_shard: dict[int, list[int]] = {}
    for index in indices:
      by_shard.setdefault(bisect.bisect_right(starts, index) - 1, []).append(index)
    found = {}
    for shard, shard_indices in by_shard.items():
      path, _ = self._base_files[split][shard]
      positions = [index - starts[shard] for index in shard_indices]
      found.update(zip(shard_indices, base_lib.read_array_records(self._reader(path), path, positions)))
    return [found[index] for index in indices]

  def _reader(self, path: str) -> Any:
    reader = self._readers.get(path)
    if reader is None:
      with self._lock:
        reader = self._readers.get(path) or base_lib.open_array_record(path)
        self._readers[path] = reader
    return reader

  def _example(self, split: str, index: int, record: bytes) -> dict[str, Any]:
    (fingerprint,) = base_lib.fingerprints([record]).tolist()
    features = base_lib.features_from_json(*self._base_features)
    example = _typed(features, features.deserialize_example_np(record, decoders=self._decoders))
    for link in self._links:  # links in chain order: a later link's field replaces an earlier one's
      example.update(link.fields(split, index, fingerprint))
    example.update(self._constants[split])
    return example

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_readers"], state["_lock"] = {}, None
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()
