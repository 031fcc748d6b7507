"""The overlay's contract between writer and loader: alignment fields, metadata keys and the base's identity."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import serialization

# The builder's entry in metadata.json, read back by the loader.
METADATA_KEY = "augmented"
# 3 added constant fields and chains (a parent overlay); 2 had neither, and reads the same.
OVERLAY_FORMAT = 3
READABLE_FORMATS = (2, 3)
# Metadata entries of format 3:
#   "new_fields": every field this link adds, {name: FieldSpec.to_json()}, stored or constant;
#   "constant_fields": {name: {split: base64 of the field's serialized map entry}}: fields
#     written into no record, materialized at read time (a per-split constant has one entry
#     per split; a constant has the same entry in every split);
#   "parent": None, or the overlay this one sits on, {"name", "version", "location", "digest"}
#     (digest: `link_digest` of the parent). "base" is then the chain's root base, which every
#     link's records are aligned with.
CONSTANT_FIELDS = "constant_fields"
PARENT = "parent"
# Alignment fields of an overlay example: the base example's index in its split
# and a fingerprint of its raw record; `_matched` is False where the side table
# had no row under missing_policy="skip".
BASE_INDEX = "_base_index"
BASE_FINGERPRINT = "_base_fingerprint"
MATCHED = "_matched"
ALIGNMENT_FIELDS = (BASE_INDEX, BASE_FINGERPRINT, MATCHED)
FINGERPRINT = "length << 32 | masked CRC32C of the base record, as stored in its TFRecord frame (core.record_index)"


class FileIdentity(NamedTuple):
  """What an overlay records of one base file; stored in metadata.json as a list in this order."""

  name: str  # the file name, not its path: a base may move and keep its identity
  compression: str
  num_records: int | None
  num_bytes: int


def alignment_features(flags_unmatched: bool) -> dict[str, tfds.features.Tensor]:
  """The overlay's alignment features; `_matched` only where unmatched examples are kept, flagged."""
  # Stored as 8 raw bytes each, so that a batch's entries are built at once.
  alignment = {
      BASE_INDEX: tfds.features.Tensor(
          shape=(), dtype=np.int64, encoding=tfds.features.Encoding.BYTES,
          doc="Index of the base example in its split."),
      BASE_FINGERPRINT: tfds.features.Tensor(
          shape=(), dtype=np.int64, encoding=tfds.features.Encoding.BYTES,
          doc=f"Fingerprint of the base record ({FINGERPRINT})."),
  }
  if flags_unmatched:
    alignment[MATCHED] = tfds.features.Tensor(shape=(), dtype=np.bool_, doc="False: no side-table row, dropped on load.")
  return alignment


class AlignmentEntries:
  """An overlay's alignment entries for a batch, assembled with NumPy.

  The base index and fingerprint are int64 features stored as 8 raw bytes
  (TFDS `Encoding.BYTES`), and `_matched` is 0 or 1, so every record's
  entries have the same width: constant heads with the values' bytes in
  between.
  """

  def __init__(self, flags_unmatched: bool):
    heads = []
    for name in (BASE_INDEX, BASE_FINGERPRINT):
      head = serialization.fixed_entry_head(serialization.FeatureKey(name), "bytes", 8)
      heads.append(np.frombuffer(head, np.uint8))
    self._heads = heads
    self._matched = None
    if flags_unmatched:
      matched_key = serialization.FeatureKey(MATCHED)
      self._matched = np.array([
          np.frombuffer(b"".join(serialization.int64_feature(matched_key, (flag,))), np.uint8) for flag in (0, 1)
      ])
    self._width = sum(len(head) + 8 for head in heads) + (self._matched.shape[1] if flags_unmatched else 0)

  def entries(self, indices: np.ndarray, fingerprints: np.ndarray, matched: np.ndarray | None) -> np.ndarray:
    """Each record's alignment entries, a row of a (records, width) uint8 array.

    Args:
      indices: Each record's index in its split.
      fingerprints: Each record's frame fingerprint.
      matched: Whether each record's key has a side-table row (None: all do);
        ignored unless unmatched examples are flagged.
    """
    count = len(indices)
    block = np.empty((count, self._width), np.uint8)
    column = 0
    for head, values in zip(self._heads, (indices, fingerprints)):
      block[:, column:column + len(head)] = head
      column += len(head)
      block[:, column:column + 8] = values.astype("<i8").view(np.uint8).reshape(count, 8)
      column += 8
    if self._matched is not None:
      block[:, column:] = self._matched[np.ones(count, np.int64) if matched is None else matched.astype(np.int64)]
    return block


def identity_digest(identity: Mapping[str, Any]) -> str:
  """SHA-256 of a base identity (`base.Base.identity()`), as hex."""
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def first_file_mismatch(recorded: Sequence[Sequence[Any]], found: Sequence[Sequence[Any]]) -> str:
  """How the files found differ from those recorded (name, size, compression), or ''."""
  if len(recorded) != len(found):
    return f"{len(found)} files, the overlay's base had {len(recorded)}"
  for want, got in zip(map(FileIdentity._make, recorded), map(FileIdentity._make, found)):
    if want.name != got.name:
      return f"file {got.name!r} where the overlay's base had {want.name!r}"
    if want.num_bytes != got.num_bytes:
      return f"{got.name} is {got.num_bytes} bytes, the overlay's base file was {want.num_bytes}"
    if want.compression != got.compression:
      return f"{got.name} has compression {got.compression!r}, the overlay's base file had {want.compression!r}"
  return ""


def identity_difference(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
  """The first way two base identities differ, for the overlay loader's error."""
  for field in ("kind", "name", "version"):  # the name holds no version
    if expected.get(field) != actual.get(field):
      return f"{field} is {actual.get(field)!r}, the overlay was built from {expected.get(field)!r}"
  if expected["features"] != actual["features"]:
    return "its features differ from those the overlay was built from"
  if sorted(expected["splits"]) != sorted(actual["splits"]):
    return f"its splits are {sorted(actual['splits'])}, the overlay's base had {sorted(expected['splits'])}"
  for split, files in expected["splits"].items():
    mismatch = first_file_mismatch(files, actual["splits"][split])
    if mismatch:
      return f"split {split!r}: {mismatch}"
    counts = ([FileIdentity._make(file).num_records for file in files],
              [FileIdentity._make(file).num_records for file in actual["splits"][split]])
    if counts[0] != counts[1]:
      return f"split {split!r} has {sum(counts[1])} examples, the overlay's base had {sum(counts[0])}"
  return "its identity differs"


def read_metadata(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """An overlay's metadata entry, checked to be an overlay this loader reads.

  Raises:
    SourceError: for a dataset the augmented builder did not write, a
      materialized one, or another overlay format.
  """
  metadata = (builder.info.metadata or {}).get(METADATA_KEY)
  where = f"{builder.info.full_name} at {builder.data_path}"
  if not metadata:
    raise errors.SourceError(
        f"{where} is not an overlay: it was not built by the augmented builder "
        "(its metadata.json has no 'augmented' entry). Load it with tfds.load."
    )
  if metadata.get("mode") != "overlay":
    raise errors.SourceError(
        f"{where} was built with mode={metadata.get('mode')!r}: it already holds the base "
        "features. Load it with tfds.load or tfds.builder_from_directory."
    )
  if metadata.get("format") not in READABLE_FORMATS:
    raise errors.SourceError(
        f"{where} has overlay format {metadata.get('format')!r}; this loader reads formats "
        f"{list(READABLE_FORMATS)}. Rebuild the overlay with this version of tfds_builders."
    )
  return metadata


def encode_constant(entry: bytes) -> str:
  """A constant field's map entry as metadata.json stores it."""
  return base64.b64encode(entry).decode("ascii")


def constant_names(metadata: Mapping[str, Any]) -> list[str]:
  """The constant fields of one link, in field order."""
  constants = metadata.get(CONSTANT_FIELDS) or {}
  return [name for name in metadata["new_fields"] if name in constants]


def stored_names(metadata: Mapping[str, Any]) -> list[str]:
  """The new fields one link stores in its records, in field order."""
  constants = metadata.get(CONSTANT_FIELDS) or {}
  return [name for name in metadata["new_fields"] if name not in constants]


def link_digest(metadata: Mapping[str, Any], shards: Mapping[str, Sequence[tuple[str, int, int]]]) -> str:
  """SHA-256 identifying one overlay link: its metadata entry and its shards' names, sizes and record counts.

  Args:
    metadata: The link's `augmented` metadata entry.
    shards: Split -> `(file name, bytes, records)` of each shard, in order.
  """
  identity = {"metadata": metadata, "shards": {split: [list(shard) for shard in files] for split, files in sorted(shards.items())}}
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
