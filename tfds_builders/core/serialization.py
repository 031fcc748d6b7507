"""Fast paths that build serialized `tf.train.Example`s without TFDS's Python encoding.

The protobuf wire format of an Example is a handful of nested
length-delimited fields, so an example whose features are already bytes can be
assembled with one `b"".join`, copying each payload once. Two serialized
Examples concatenated byte-wise parse as one Example holding the union of their
features (protobuf merges repeated top-level messages), which is what
`merge_examples` relies on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Union

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2

from tfds_builders.core import wire

Payload = Union[bytes, bytearray, memoryview]

_SMALL_VARINTS = tuple(bytes([n]) for n in range(128))


def varint(value: int) -> bytes:
  """Encodes a non-negative int as a protobuf varint."""
  if value < 128:
    return _SMALL_VARINTS[value]
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _int64_varint(value: int) -> bytes:
  return varint(value & 0xFFFFFFFFFFFFFFFF)  # negatives as two's complement


class FeatureKey:
  """The pre-encoded map key of one flat Example feature."""

  __slots__ = ("name", "key_field")

  def __init__(self, name: str):
    self.name = name
    encoded = name.encode("utf-8")
    self.key_field = wire.MAP_KEY_BYTE + varint(len(encoded)) + encoded


def bytes_feature(key: FeatureKey, payload: Payload) -> list[Payload]:
  """Parts of a map entry holding a one-value bytes_list."""
  return [_bytes_feature_head(key.key_field, len(payload)), payload]


@functools.lru_cache(maxsize=4096)
def _bytes_feature_head(key_field: bytes, size: int) -> bytes:
  # Fixed-shape features repeat the same (key, size) on every example, so the
  # header is built once instead of eight varints per example.
  list_size = 1 + len(varint(size)) + size
  feature_size = 1 + len(varint(list_size)) + list_size
  entry_size = len(key_field) + 1 + len(varint(feature_size)) + feature_size
  return b"".join([
      wire.FEATURES_ENTRY_BYTE, varint(entry_size), key_field, wire.MAP_VALUE_BYTE, varint(feature_size),
      wire.FEATURE_BYTES_LIST_BYTE, varint(list_size), wire.LIST_VALUE_BYTE, varint(size),
  ])


def bytes_list_feature(key: FeatureKey, values: Sequence[bytes]) -> list[Payload]:
  """Parts of a map entry holding a bytes_list of several values."""
  body = b"".join(wire.LIST_VALUE_BYTE + varint(len(value)) + value for value in values)
  return _entry(key, 1 + len(varint(len(body))) + len(body), [wire.FEATURE_BYTES_LIST_BYTE + varint(len(body)), body])


def int64_feature(key: FeatureKey, values: Iterable[int]) -> list[Payload]:
  """Parts of a map entry holding a packed int64_list."""
  packed = b"".join(_int64_varint(int(value)) for value in values)
  inner = wire.LIST_VALUE_BYTE + varint(len(packed)) + packed if packed else b""
  return _entry(key, 1 + len(varint(len(inner))) + len(inner), [wire.FEATURE_INT64_LIST_BYTE + varint(len(inner)) + inner])


def int64_scalar_encoder(key: FeatureKey) -> Callable[[int], bytes]:
  """A function from one int to its map entry as a one-value int64_list.

  The scalar case is per-example hot (ids, labels, counts), so the framing,
  which depends only on the varint's length (1 to 10 bytes), is built once per
  key, and varints below 2**21 are unrolled.
  """
  prefixes = int64_scalar_prefixes(key)
  small = [prefixes[1] + varint(n) for n in range(128)]
  two, three = prefixes[2], prefixes[3]

  def encode(value: int) -> bytes:
    if 0 <= value < 128:
      return small[value]
    if 0 < value < 1 << 21:
      if value < 1 << 14:
        return two + bytes(((value & 0x7F) | 0x80, value >> 7))
      return three + bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    encoded = _int64_varint(value)
    return prefixes[len(encoded)] + encoded

  return encode


def int64_scalar_prefixes(key: FeatureKey) -> list[bytes]:
  """The map entry of a one-value int64_list up to its varint, by the varint's length (index 1 to 10)."""
  return [b""] + [fixed_entry_head(key, "int64_list", n) for n in range(1, 11)]


def fixed_entry_head(key: FeatureKey, storage: str, width: int) -> bytes:
  """The map entry of one value stored in `width` bytes, up to that value.

  Such an entry is this head, then the value's bytes: a writer encodes the
  head once per feature and appends each value, with no framing per value.

  Args:
    key: The feature.
    storage: `bytes` (a one-value bytes_list of `width` bytes: a raw float64,
      a key text), `float_list` (`width // 4` float32s) or `int64_list` (one
      int64 whose varint is `width` bytes long).
    width: The value's size in bytes.
  """
  if storage == "bytes":
    template = bytes_feature(key, bytes(width))
  elif storage == "float_list":
    template = float_feature(key, np.zeros(width // 4, np.float32))
  elif storage == "int64_list":
    template = int64_feature(key, (1 << (7 * (width - 1)),))  # the smallest int with a varint this long
  else:
    raise ValueError(f"fixed_entry_head takes storage 'bytes', 'float_list' or 'int64_list', not {storage!r}.")
  # The framing depends only on the sizes: a template of this width, minus its value, is every entry's head.
  return b"".join(template)[:-width]


def float_feature(key: FeatureKey, values: np.ndarray) -> list[Payload]:
  """Parts of a map entry holding a packed float_list (little-endian float32)."""
  packed = np.ascontiguousarray(values, dtype="<f4").tobytes()
  inner = wire.LIST_VALUE_BYTE + varint(len(packed)) + packed if packed else b""
  return _entry(key, 1 + len(varint(len(inner))) + len(inner), [wire.FEATURE_FLOAT_LIST_BYTE + varint(len(inner)) + inner])


def _entry(key: FeatureKey, feature_size: int, feature_parts: list[Payload]) -> list[Payload]:
  entry_size = len(key.key_field) + 1 + len(varint(feature_size)) + feature_size
  head = wire.FEATURES_ENTRY_BYTE + varint(entry_size) + key.key_field + wire.MAP_VALUE_BYTE + varint(feature_size)
  return [head, *feature_parts]


def example(entries: Iterable[list[Payload]]) -> bytes:
  """Joins map entries (from the `*_feature` functions) into an Example."""
  parts = [part for entry in entries for part in entry]
  size = sum(len(part) for part in parts)
  return b"".join([wire.EXAMPLE_FEATURES_BYTE, varint(size), *parts])


def merge_examples(*serialized: bytes) -> bytes:
  """One Example with the union of the features of serialized Examples.

  Feature names must not collide: with a shared name the later value wins
  for bytes, but numeric lists would be appended.
  """
  return b"".join(serialized)


def rename_features(serialized: bytes, rename: Callable[[str], str | None]) -> bytes:
  """Re-serializes an Example with renamed features; `None` drops one.

  Done once per record (e.g. to prefix one side of a cross product), after
  which `merge_examples` combines records without parsing them again. Output
  is deterministic: map entries are written in sorted key order.
  """
  source = tf_example_pb2.Example.FromString(serialized)
  target = tf_example_pb2.Example()
  for name, feature in source.features.feature.items():
    new_name = rename(name)
    if new_name is not None:
      target.features.feature[new_name].CopyFrom(feature)
  return target.SerializeToString(deterministic=True)


def example_head(size: int) -> bytes:
  """The bytes before `size` bytes of map entries that make them an Example."""
  return wire.EXAMPLE_FEATURES_BYTE + varint(size)


def example_from_entries(entries: Sequence[bytes]) -> bytes:
  """Joins map entries that are already single `bytes` into an Example.

  The fast path of row encoders that cache each feature's framing, so an
  entry is one `bytes` (e.g. `b"".join(bytes_feature(key, payload))`): one
  join, no flattening. `example(entry_parts)` gives the same bytes.
  """
  return b"".join([wire.EXAMPLE_FEATURES_BYTE, varint(sum(map(len, entries))), *entries])


def map_entries(record: bytes) -> Iterator[tuple[str, bytes]]:
  """`(key, entry)` of every map entry of a serialized Example, each entry's bytes as stored (head included).

  Raises:
    ValueError: for bytes that are no Example of length-delimited fields.
  """
  view = memoryview(record)
  for features in _delimited(view, 0, len(view), wire.EXAMPLE_FEATURES):
    for start, stop in _spans(view, features[0], features[1], wire.FEATURES_ENTRY):
      entry = view[start:stop]
      key_start, key_stop = next(_delimited(view, _body_start(view, start), stop, wire.MAP_KEY))
      yield bytes(view[key_start:key_stop]).decode("utf-8"), bytes(entry)


def _body_start(view: memoryview, entry_start: int) -> int:
  """Where the body of the length-delimited field starting at `entry_start` begins."""
  _, position = _varint(view, entry_start + 1)
  return position


def _spans(view: memoryview, start: int, stop: int, tag: int) -> Iterator[tuple[int, int]]:
  """Whole fields (head and body) with `tag` between start and stop."""
  position = start
  while position < stop:
    if view[position] != tag:
      raise ValueError(f"unexpected field tag {view[position]} at byte {position}")
    size, body = _varint(view, position + 1)
    if body + size > stop:
      raise ValueError(f"field at byte {position} runs past its message")
    yield position, body + size
    position = body + size


def _delimited(view: memoryview, start: int, stop: int, tag: int) -> Iterator[tuple[int, int]]:
  """Bodies of the fields with `tag` between start and stop (others are skipped only if length-delimited)."""
  position = start
  while position < stop:
    field_tag = view[position]
    size, body = _varint(view, position + 1)
    if body + size > stop:
      raise ValueError(f"field at byte {position} runs past its message")
    if field_tag == tag:
      yield body, body + size
    position = body + size


def _varint(view: memoryview, position: int) -> tuple[int, int]:
  """The varint at `position` and where the bytes after it start (overflow-safe: at most 64 bits)."""
  value, shift = 0, 0
  while True:
    if position >= len(view) or shift > 63:
      raise ValueError("truncated varint")
    byte = view[position]
    value |= (byte & 0x7F) << shift
    position += 1
    if not byte & 0x80:
      return value, position
    shift += 7
