"""Constant fields: one value per split, resolved and encoded once, stored in metadata.json as map entries."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.augmented import fields
from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tfds_builders.core import serialization

CONSTANT = "constant"
PER_SPLIT = "per-split constant"


@dataclasses.dataclass(frozen=True)
class ConstantField:
  """One constant field and its serialized map entry in each split.

  Attributes:
    spec: Its feature (declared or inferred), source `constant` or `per-split constant`.
    entries: Split -> the map entry `FieldCodec.encode` gives for the split's value.
  """

  spec: fields.FieldSpec
  entries: Mapping[str, bytes]


def resolve(
    constant_fields: Mapping[str, Any], declared: Mapping[str, fields.FieldSpec], splits: Sequence[str]
) -> tuple[ConstantField, ...]:
  """The config's `constant_fields`, typed and encoded once per split.

  Args:
    constant_fields: `{name: value}` (the same in every split) or
      `{name: {split: value}}` (a per-split constant naming every split).
    declared: The config's declared features; others are inferred from the values.
    splits: The splits being built.

  Raises:
    ConfigError: naming the field (and split) of a per-split constant that
      misses or adds a split, a value of no supported type, or a value that
      does not fit its declared feature.
  """
  return tuple(_resolved(name, value, declared.get(name), list(splits)) for name, value in constant_fields.items())


def _resolved(name: str, value: Any, declared: fields.FieldSpec | None, splits: list[str]) -> ConstantField:
  if isinstance(value, Mapping):
    source = PER_SPLIT
    missing = [split for split in splits if split not in value]
    unknown = sorted(str(split) for split in value if split not in splits)
    if missing or unknown:
      raise errors.ConfigError(
          errors.with_hint(
              f"constant_fields[{name!r}] is a per-split constant for splits {sorted(map(str, value))}; "
              f"the build has splits {splits}: missing {missing}, unknown {unknown}",
              "Give a value for exactly the splits built (see `splits`), or one value for all of them",
          )
      )
    per_split = {split: value[split] for split in splits}
  else:
    source = CONSTANT
    per_split = {split: value for split in splits}
  if declared is not None:
    spec = dataclasses.replace(declared, source=source)
  else:
    try:
      spec = fields.infer(name, list(per_split.values()), source, [f"split {split!r}" for split in per_split])
    except errors.SchemaError as error:
      raise errors.ConfigError(f"constant_fields[{name!r}]: {error}") from None
  codec = fields.FieldCodec(spec)
  entries = {}
  for split, split_value in per_split.items():
    try:
      entries[split] = b"".join(codec.encode(split_value))
    except fields.FieldValueError as error:
      origin = "declared in `features`" if spec.declared else "inferred from the values"
      raise errors.ConfigError(
          errors.with_hint(
              f"constant_fields[{name!r}], split {split!r}: {error} ({origin})",
              f"Give a value of that type and shape for every split, or declare another: features={{{name!r}: ...}}",
          )
      ) from None
  return ConstantField(spec, entries)


def metadata_entry(constants: Sequence[ConstantField]) -> dict[str, dict[str, str]]:
  """`constant_fields` of the overlay's metadata: `{name: {split: encode_constant(entry)}}`."""
  return {
      constant.spec.name: {split: overlay_format.encode_constant(entry) for split, entry in constant.entries.items()}
      for constant in constants
  }


def split_entries(constants: Sequence[ConstantField], split: str) -> bytes:
  """The constants' map entries for `split`, end to end in field order: what every record of it gets."""
  return b"".join(constant.entries[split] for constant in constants)


# -------------------------------------------------------- the read side --


def features(metadata: Mapping[str, Any]) -> tfds.features.FeaturesDict:
  """The features of one overlay link's constant fields, from its metadata's `new_fields`."""
  return _features(_specs_json(metadata))


def values(metadata: Mapping[str, Any], split: str) -> dict[str, Any]:
  """The constant fields of one overlay link in `split`, decoded as TFDS decodes the stored fields (NumPy, no TF).

  Each entry is checked first (`entry`). The arrays are read-only and cached:
  every caller shares them.

  Args:
    metadata: The link's `augmented` metadata entry (`overlay_format.read_metadata`).
    split: A split name of the base (not a split spec).

  Raises:
    SourceError: if a constant has no value for the split, or its entry is
      not one its feature writes.
  """
  return {name: _checked_entry(metadata, name, split)[1] for name in overlay_format.constant_names(metadata)}


def entry(metadata: Mapping[str, Any], name: str, split: str) -> bytes:
  """A constant's stored map entry for `split`, checked to be exactly the entry its feature writes for its value.

  metadata.json is not covered by any digest of the overlay's own: an entry
  of another field or kind, two entries, or bytes that are no entry would
  otherwise be decoded (or compacted) as found.

  Raises:
    SourceError: naming the field, the split and what to do.
  """
  return _checked_entry(metadata, name, split)[0]


def _checked_entry(metadata: Mapping[str, Any], name: str, split: str) -> tuple[bytes, Any]:
  """A constant's stored entry for `split` and its value (`_checked`)."""
  constants = metadata.get(overlay_format.CONSTANT_FIELDS)
  stored = constants.get(name) if isinstance(constants, Mapping) else None
  if not isinstance(stored, Mapping) or not isinstance(stored.get(split), str):
    raise _bad_entry(name, split, f"no value for split {split!r}" if isinstance(stored, Mapping) else "no entry")
  return _checked(name, json.dumps(metadata["new_fields"][name]), stored[split], split)


@functools.lru_cache(maxsize=1024)
def _checked(name: str, spec_json: str, text: str, split: str) -> tuple[bytes, Any]:
  """The entry's bytes and its value decoded as TFDS decodes the stored fields, once the entry is found canonical."""
  try:
    raw = base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError) as error:
    raise _bad_entry(name, split, f"its entry is not base64 ({error})") from None
  codec = fields.FieldCodec(fields.FieldSpec.from_json(name, json.loads(spec_json)))
  one_field = _features(json.dumps([[name, json.loads(spec_json)]]))
  feature = one_field[name]
  try:
    value = one_field.deserialize_example_np(serialization.example_from_entries([raw]))[name]
    canonical = b"".join(codec.encode(value))
  except Exception as error:  # pylint: disable=broad-except  # protobuf, TFDS or codec errors, named here
    raise _bad_entry(name, split, f"its entry does not decode as {codec.spec.spec_text()} ({error})") from None
  if canonical != raw:
    raise _bad_entry(name, split, f"its entry is not the one {codec.spec.spec_text()} writes for its value")
  if not (feature.np_dtype == np.object_ and feature.shape == ()):  # a scalar string stays bytes
    # TFDS's NumPy parser gives Python scalars for some lists: one dtype, as the stored fields decode.
    value = np.array(value, dtype=feature.np_dtype)
    value.setflags(write=False)
  return raw, value


def _bad_entry(name: str, split: str, problem: str) -> errors.SourceError:
  return errors.SourceError(
      errors.with_hint(
          f"Constant field {name!r} of the overlay, split {split!r}: {problem}; its metadata.json was changed "
          "since the build",
          "Rebuild the overlay (its metadata.json holds the constants)",
      )
  )


def _specs_json(metadata: Mapping[str, Any]) -> str:
  """The constant fields' specs, as a hashable key: name -> FieldSpec JSON, in field order."""
  names = overlay_format.constant_names(metadata)
  return json.dumps([[name, metadata["new_fields"][name]] for name in names])


@functools.lru_cache(maxsize=64)
def _features(specs_json: str) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      name: fields.FieldSpec.from_json(name, spec_json).feature() for name, spec_json in json.loads(specs_json)
  })
