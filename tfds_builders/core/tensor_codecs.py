"""(dtype, shape) -> TFDS feature + wire encoder: the float64 and uint32 rules and the refused dtypes, written once.

Every builder that writes `tf.train.Example`s itself (numpy_arrays, augmented
fields, database columns, raw Examples) resolves each feature once with
`resolve(dtype, shape, policy)` and then applies the codec's encoders. The
one legitimate difference between builders is the storage policy:

- `EXACT` (numpy_arrays): every numeric dtype as its raw little-endian bytes
  (`Encoding.BYTES`), so arrays are bit-exact whatever their dtype.
- `LISTS` (augmented, database, raw Examples): each dtype in its native list,
  ints and bool in an int64_list, float16/float32 in a float_list, strings in a
  bytes_list.

Under both, float64 is raw bytes (a float_list would round it to float32) and
uint32 an int64_list (TensorFlow cannot decode raw uint32; int64 holds it
exactly).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import wire

EXACT = "exact"
LISTS = "lists"
POLICIES = (EXACT, LISTS)
STRING = "string"
WIRE_KINDS = tuple(wire.KIND_FIELDS)  # bytes_list, float_list, int64_list

# The dtypes a LISTS codec stores exactly. uint64 and complex have no
# tf.train.Example list that TFDS decodes back exactly.
LIST_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
    "float16", "float32", "float64", STRING,
)
_EXACT_KINDS = "biufc"  # bool, signed, unsigned, float, complex
_REFUSED_KINDS = {
    "O": "object arrays may hold pickled code and have no fixed layout; "
    "convert them to a numeric dtype",
    "V": "structured or void dtypes are not stored as one tensor; save each "
    "field as its own array (np.savez(path, **{n: a[n] for n in a.dtype.names}))",
    "S": "byte-string arrays are not supported; store them as uint8 "
    "(np.frombuffer(...)) with their lengths",
    "U": "unicode string arrays are not supported; encode them to uint8",
    "M": "datetime64 is not supported; store a.view('int64') and record the unit",
    "m": "timedelta64 is not supported; store a.view('int64') and record the unit",
}
_LIST_REFUSAL = "cannot be stored exactly in a tf.train.Example"
_OBJECT = np.dtype(object)


class RefusedDtype(ValueError):
  """A dtype the policy cannot store exactly; the message is the reason."""


def refusal(dtype: np.dtype | str, policy: str) -> str | None:
  """Why `dtype` cannot be stored exactly under `policy`, or None if it can.

  Args:
    dtype: A NumPy dtype (or its name), or `"string"` (LISTS only).
    policy: `EXACT` or `LISTS`.
  """
  if policy == LISTS:
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    return None if name in LIST_DTYPES else _LIST_REFUSAL
  try:
    dtype = np.dtype(str if isinstance(dtype, str) and dtype == STRING else dtype)  # EXACT's strings are NumPy's unicode arrays
  except TypeError:
    return "this dtype has no TensorFlow equivalent"
  if dtype.kind in _REFUSED_KINDS or dtype.kind not in _EXACT_KINDS:
    return _REFUSED_KINDS.get(dtype.kind, "this dtype has no TensorFlow equivalent")
  if (dtype.kind == "f" and dtype.itemsize > 8) or dtype.itemsize > 16:
    return (
        "TensorFlow cannot hold it; cast explicitly (e.g. to float64) if the "
        "precision loss is acceptable"
    )
  return None


@dataclasses.dataclass(frozen=True)
class TensorCodec:
  """How one tensor feature is stored: its TFDS feature and its wire encoders.

  Attributes:
    dtype: The stored dtype, little-endian; `object` for strings.
    shape: Per-example shape; None dimensions vary.
    wire_kind: `bytes_list`, `float_list` or `int64_list`.
    raw_bytes: Whether a value is one bytes_list value of its raw bytes
      (`Encoding.BYTES`) rather than a list of its elements.
  """

  dtype: np.dtype
  shape: tuple[int | None, ...]
  wire_kind: str
  raw_bytes: bool

  @property
  def is_string(self) -> bool:
    return self.dtype == _OBJECT

  @property
  def stores_shape(self) -> bool:
    """Whether TFDS keeps the shape beside the bytes (`name/shape`, `name/value`): more than one varying dim."""
    return self.raw_bytes and self.shape.count(None) > 1

  @property
  def shape_refused(self) -> bool:
    """Whether the shape cannot be stored: a list holds one varying dimension at most."""
    return not self.raw_bytes and self.shape.count(None) > 1

  def feature(self, doc: str | None = None) -> tfds.features.Tensor:
    """The TFDS feature that decodes exactly what the encoders write."""
    dtype = np.object_ if self.is_string else np.dtype(self.dtype.name)
    encoding = tfds.features.Encoding.BYTES if self.raw_bytes else tfds.features.Encoding.NONE
    return tfds.features.Tensor(shape=self.shape, dtype=dtype, encoding=encoding, doc=doc)

  def encoder(self, name: str, cast: bool = True) -> Callable[[Any], list[serialization.Payload]]:
    """A function from one example's value to its map-entry parts.

    Args:
      name: The feature.
      cast: Whether raw-bytes values are cast to `dtype` first; False when
        they already are arrays of `dtype` (numpy_arrays' hot path).

    The value is in storage form: an array of numbers that casts exactly to
    `dtype` (int64 lists also take a flat `list` of ints, which NumPy might
    widen to float64); for strings, the bytes of a scalar or a flat list of
    bytes.
    """
    key = serialization.FeatureKey(name)
    if self.is_string and not self.shape:
      return lambda payload: serialization.bytes_feature(key, payload)
    if self.is_string:
      return lambda items: serialization.bytes_list_feature(key, items)
    if self.wire_kind == "int64_list":
      def encode_ints(values: Any) -> list[serialization.Payload]:
        # Lists go as they are: NumPy would widen Python ints past int64 to float64.
        flat = values if type(values) is list else values.ravel().tolist()  # pylint: disable=unidiomatic-typecheck
        return serialization.int64_feature(key, flat)

      return encode_ints
    if self.wire_kind == "float_list":
      return lambda values: serialization.float_feature(key, np.ravel(values))
    dtype = self.dtype
    if self.stores_shape:
      value_key = serialization.FeatureKey(f"{name}/value")
      shape_key = serialization.FeatureKey(f"{name}/shape")

      def encode_with_shape(values: Any) -> list[serialization.Payload]:
        array = np.asarray(values, dtype) if cast else values
        return serialization.int64_feature(shape_key, np.shape(array)) + (
            serialization.bytes_feature(value_key, _raw_bytes(array))
        )

      return encode_with_shape
    if not cast:
      return lambda values: serialization.bytes_feature(key, _raw_bytes(values))
    return lambda values: serialization.bytes_feature(key, _raw_bytes(np.asarray(values, dtype)))

  def scalar_encoder(
      self, name: str, to_bytes: Callable[[Any], Any] = bytes
  ) -> Callable[[Any], bytes]:
    """A function from one scalar value to its map entry, joined: the per-example hot path.

    The entry's framing is encoded once (per varint length, or per payload
    length for strings), then each value is appended.

    Args:
      name: The feature.
      to_bytes: For strings, what turns a non-`bytes` value into bytes.
    """
    key = serialization.FeatureKey(name)
    if self.is_string:
      return _bytes_scalar(key, to_bytes)
    if self.dtype == np.bool_ and not self.raw_bytes:
      # True/False (and 1/0, equal to them) only: anything else is a KeyError.
      by_value = {value: b"".join(serialization.int64_feature(key, (int(value),))) for value in (False, True)}
      return by_value.__getitem__
    if self.wire_kind == "int64_list":
      return serialization.int64_scalar_encoder(key)
    if self.wire_kind == "float_list":
      return _fixed_width(serialization.fixed_entry_head(key, "float_list", 4), struct.Struct("<f").pack)
    if self.dtype == np.float64:
      return _fixed_width(serialization.fixed_entry_head(key, "bytes", 8), struct.Struct("<d").pack)
    dtype = self.dtype
    head = serialization.fixed_entry_head(key, "bytes", dtype.itemsize)
    return lambda value: head + np.asarray(value, dtype).tobytes()

  def column_entries(self, name: str, values: Any) -> Any:
    """The map entries of a column of scalar values, one per row, as `scalar_encoder` writes them.

    Args:
      name: The feature.
      values: A NumPy array of numbers, or for strings a
        `fast.record_blocks.ByteColumn`.

    Returns:
      A `fast.record_blocks.ByteColumn`.
    """
    key = serialization.FeatureKey(name)
    blocks = fast.record_blocks
    if self.is_string:
      return blocks.bytes_entries(key, values)
    if self.wire_kind == "int64_list":
      return blocks.int64_entries(key, values.astype(np.int64))
    if self.wire_kind == "float_list":
      return blocks.fixed_entries(key, values.astype("<f4"), "float_list")
    return blocks.fixed_entries(key, values.astype(self.dtype), "bytes")


def resolve(dtype: np.dtype | str, shape: Sequence[int | None], policy: str) -> TensorCodec:
  """The codec of a tensor feature of `dtype` and `shape` under a storage policy.

  Args:
    dtype: A NumPy dtype (or its name), or `"string"` (LISTS only).
    shape: Per-example shape; None dimensions vary.
    policy: `EXACT` or `LISTS`.

  Raises:
    RefusedDtype: with `refusal`'s reason, if the policy cannot store `dtype`.
  """
  if policy not in POLICIES:
    raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}.")
  reason = refusal(dtype, policy)
  if reason is not None:
    raise RefusedDtype(reason)
  if isinstance(dtype, str) and dtype == STRING:
    return TensorCodec(_OBJECT, tuple(shape), "bytes_list", raw_bytes=False)
  dtype = np.dtype(dtype)
  if dtype == _OBJECT:  # LISTS only: refused under EXACT above
    return TensorCodec(_OBJECT, tuple(shape), "bytes_list", raw_bytes=False)
  stored = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype.newbyteorder("|")
  return TensorCodec(stored, tuple(shape), *_storage(stored, policy))


def _storage(dtype: np.dtype, policy: str) -> tuple[str, bool]:
  """The wire kind of a numeric dtype under `policy`, and whether it is raw bytes."""
  if dtype == np.uint32:
    return "int64_list", False  # TF cannot decode raw uint32; int64 holds every value
  if dtype == np.float64 or policy == EXACT:
    return "bytes_list", True  # a float_list would round float64 to float32
  return wire_kind(dtype), False


def wire_kind(dtype: Any) -> str:
  """The list a tensor of `dtype` is serialized in without raw-bytes encoding (TFDS's rule)."""
  dtype = np.dtype(dtype) if dtype is not None else _OBJECT
  if dtype.kind in "OSU":
    return "bytes_list"
  if dtype.kind == "f":
    return "float_list"
  return "int64_list"


def _raw_bytes(array: np.ndarray | np.generic) -> serialization.Payload:
  """The C-order bytes of an array, without a copy when it is contiguous."""
  # memoryview.cast refuses shapes with a zero dimension; those have no bytes.
  if isinstance(array, np.ndarray) and array.flags.c_contiguous and array.size:
    return memoryview(array).cast("B")
  return array.tobytes()


def _fixed_width(prefix: bytes, pack: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
  # A fixed-size payload has constant framing: the entry's head is encoded once.
  return lambda value: prefix + pack(value)


_CACHED_FRAMING_BYTES = 4096


def _bytes_scalar(key: serialization.FeatureKey, to_bytes: Callable[[Any], Any]) -> Callable[[Any], bytes]:
  # The framing of a one-value bytes_list depends only on the payload's
  # length: cache it per length (short values are the common case).
  heads: dict[int, bytes] = {}

  def store(payload: Any) -> bytes:
    if type(payload) is not bytes:  # pylint: disable=unidiomatic-typecheck  # the hot path
      payload = to_bytes(payload)
    size = len(payload)
    head = heads.get(size)
    if head is None:
      if size > _CACHED_FRAMING_BYTES:
        return b"".join(serialization.bytes_feature(key, payload))
      head = heads[size] = serialization.fixed_entry_head(key, "bytes", size) if size else (
          b"".join(serialization.bytes_feature(key, b"")))
    return head + payload

  return store
