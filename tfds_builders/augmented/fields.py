"""New fields: their features (declared or inferred), the check of every value, and the wire encoding."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import tensor_codecs

# New fields are stored in their native lists (float64 as raw bytes): what a
# TFDS `Tensor` feature of their dtype writes.
POLICY = tensor_codecs.LISTS
_SPEC_TEXT = re.compile(r"^\s*(\w+)\s*(?:\[\s*([^\]]*)\s*\])?\s*$")


class FieldValueError(Exception):
  """A value that does not fit its field; the caller names the example."""


@dataclasses.dataclass(frozen=True)
class FieldSpec:
  """One new field: dtype, shape (None: varies) and where its values come from.

  Attributes:
    name: Feature name in the output.
    dtype: A NumPy dtype name from `tensor_codecs.LIST_DTYPES`, or `"string"`.
    shape: Per-example shape; at most one dimension is None.
    source: Where the values come from, for messages and release notes,
      e.g. `"function my_pkg.labels:add_label"`.
    declared: Whether the config declared the feature (else it was inferred).
  """

  name: str
  dtype: str
  shape: tuple[int | None, ...]
  source: str
  declared: bool = False

  def spec_text(self) -> str:
    """The dtype and shape as a config declares them, e.g. `float32[None,3]`."""
    dims = ",".join("None" if dim is None else str(dim) for dim in self.shape)
    return f"{self.dtype}[{dims}]" if self.shape else self.dtype

  def codec(self) -> tensor_codecs.TensorCodec:
    """How this field is stored (`tensor_codecs`, policy `LISTS`)."""
    return tensor_codecs.resolve(self.dtype, self.shape, POLICY)

  def feature(self) -> tfds.features.Tensor:
    """The TFDS feature of this field; float64 is stored as exact bytes."""
    return self.codec().feature(doc=f"Added from {self.source}.")

  def to_json(self) -> dict[str, Any]:
    return {"dtype": self.dtype, "shape": list(self.shape), "source": self.source,
            "declared": self.declared}

  @classmethod
  def from_json(cls, name: str, spec_json: Mapping[str, Any]) -> FieldSpec:
    """The FieldSpec `to_json` gave (metadata.json's `new_fields`)."""
    return cls(name, spec_json["dtype"], tuple(spec_json["shape"]), spec_json["source"],
               bool(spec_json.get("declared", False)))


def parse_declared(name: str, declared: str | Mapping[str, Any], source: str) -> FieldSpec:
  """A FieldSpec from the config: `"int64"`, `"float32[3]"`, `"string[None]"`,
  or `{"dtype": "float32", "shape": [None, 3]}`.

  Raises:
    ConfigError: for an unknown dtype or a bad shape.
  """
  def fail(reason: str) -> errors.ConfigError:
    return errors.ConfigError(
        errors.with_hint(
            f"features[{name!r}] = {declared!r}: {reason}",
            f"Declare a dtype of {tensor_codecs.LIST_DTYPES} with an optional shape, e.g. "
            "'int64', 'float32[3]', 'string[None]' or "
            "{'dtype': 'float32', 'shape': [None]}",
        )
    )

  if isinstance(declared, Mapping):
    dtype = str(declared.get("dtype", ""))
    shape_values = declared.get("shape", [])
    if not isinstance(shape_values, (list, tuple)):
      raise fail("shape must be a list")
    dims = list(shape_values)
  else:
    match = _SPEC_TEXT.match(str(declared))
    if not match:
      raise fail("unreadable")
    dtype = match.group(1)
    dims = [part.strip() for part in match.group(2).split(",") if part.strip()] if match.group(2) else []
  dtype = {"str": tensor_codecs.STRING, "bytes": tensor_codecs.STRING, "int": "int64", "float": "float64"}.get(dtype, dtype)
  if tensor_codecs.refusal(dtype, POLICY):
    raise fail(f"unsupported dtype {dtype!r}")
  shape = []
  for dim in dims:
    if dim is None or str(dim).lower() in ("none", "-1"):
      shape.append(None)
    elif str(dim).isdigit():
      shape.append(int(dim))
    else:
      raise fail(f"bad dimension {dim!r}")
  if shape.count(None) > 1:
    raise fail("at most one dimension may be None")
  return FieldSpec(name, dtype, tuple(shape), source, declared=True)


def infer(name: str, values: Sequence[Any], source: str, where: Sequence[str]) -> FieldSpec:
  """The FieldSpec covering the first values of a field.

  The dtype is that of the values (Python ints are int64, floats float64,
  str/bytes strings); dimensions that differ between them become None.

  Args:
    name: The field.
    values: Its first values, one per example.
    source: Where they come from.
    where: The example (or row) of each value, for messages.

  Raises:
    SchemaError: for values of no supported dtype, or that disagree in kind
      or rank.
  """
  arrays = [_as_array(value, name, label) for value, label in zip(values, where)]
  kinds = {_kind_of(array.dtype) for array in arrays}
  if len(kinds) > 1 and kinds != {"int", "float"}:
    raise errors.SchemaError(
        errors.with_hint(
            f"Field {name!r} from {source} has values of different types in its "
            f"first examples ({', '.join(f'{label}: {array.dtype}' for label, array in zip(where, arrays))})",
            f"Return one type for every example, or declare it: features={{{name!r}: 'float32'}}",
        )
    )
  if kinds == {tensor_codecs.STRING}:
    dtype = tensor_codecs.STRING
  else:
    dtype = np.result_type(*[array.dtype for array in arrays]).name
  reason = tensor_codecs.refusal(dtype, POLICY)
  if reason:
    raise errors.SchemaError(
        errors.with_hint(
            f"Field {name!r} from {source} has dtype {dtype} ({where[0]}), which {reason}",
            "Cast it (e.g. uint64 -> int64 if the values fit) or declare the "
            f"feature with a dtype of {tensor_codecs.LIST_DTYPES}",
        )
    )
  ranks = {array.ndim for array in arrays}
  if len(ranks) > 1:
    raise errors.SchemaError(
        f"Field {name!r} from {source} has values of different ranks in its first "
        f"examples: {sorted(ranks)}. Return arrays of one rank, or declare the "
        "feature with a None dimension."
    )
  shape = tuple(
      dims[0] if len(set(dims)) == 1 else None
      for dims in zip(*(array.shape for array in arrays))
  )
  if shape.count(None) > 1:
    raise errors.SchemaError(
        f"Field {name!r} from {source} varies in more than one dimension "
        f"({sorted({array.shape for array in arrays})}); a new field may vary "
        "in one dimension only. Flatten or pad the values."
    )
  return FieldSpec(name, dtype, shape, source)


def _kind_of(dtype: np.dtype) -> str:
  if dtype.kind in "USO":
    return tensor_codecs.STRING
  if dtype.kind == "b":
    return "bool"
  if dtype.kind in "iu":
    return "int"
  if dtype.kind == "f":
    return "float"
  return dtype.name


def _as_array(value: Any, name: str, where: str) -> np.ndarray:
  """A value as an array: str/bytes elements for strings, else numeric."""
  if isinstance(value, (str, bytes)):
    return np.asarray(value, dtype=object)
  try:
    array = np.asarray(value)
  except (ValueError, TypeError) as error:  # ragged nested lists
    raise errors.SchemaError(f"Field {name!r} of {where}: {value!r:.80} is not an array ({error}).") from error
  if array.dtype.kind == "O" and not all(isinstance(item, (str, bytes)) for item in array.flat):
    raise errors.SchemaError(
        f"Field {name!r} of {where}: {value!r:.80} holds objects that are "
        "neither numbers nor strings. Return numbers, strings or NumPy arrays."
    )
  return array


class FieldCodec:
  """Checks one field's value per example and encodes it as its map entry.

  The encoding is the field's `tensor_codecs` codec, resolved once here; this
  class adds the checks of each value (kind, shape, range) and the fast paths
  of Python scalars.
  """

  def __init__(self, spec: FieldSpec):
    self.spec = spec
    codec = spec.codec()
    self._codec = codec
    self._scalar = spec.shape == ()
    self._entries = codec.encoder(spec.name)
    if codec.is_string:
      self._encode = self._encode_string
      self._kinds = "USO"
    elif codec.wire_kind == "int64_list":
      self._encode = self._encode_ints
      self._kinds = "b" if spec.dtype == "bool" else "biu"
      info = np.iinfo(np.int64 if spec.dtype == "bool" else spec.dtype)
      self._range = (int(info.min), int(info.max)) if spec.dtype != "bool" else (0, 1)
      self._int64_scalar = codec.scalar_encoder(spec.name)
    else:  # float_list, or float64 as raw bytes
      self._encode = self._encode_floats
      self._kinds = "biuf"
      # Python floats take the scalar encoder: the common case of a float64 field.
      self._float_scalar = codec.scalar_encoder(spec.name) if codec.raw_bytes and self._scalar else None

  def encode(self, value: Any) -> list[serialization.Payload]:
    """The map-entry parts of `value`.

    Raises:
      FieldValueError: saying how the value differs from the feature.
    """
    return self._encode(value)

  def encode_column(self, values: Any) -> Any:
    """The map entries of a whole column of scalar values, encoded as `encode` would.

    Args:
      values: A NumPy array, or for strings a `fast.record_blocks.ByteColumn`.

    Returns:
      A `fast.record_blocks.ByteColumn`, or None for values only `encode` takes
      (non-scalar features, or values whose kind does not fit).

    Raises:
      FieldValueError: if a value is out of the feature's range.
    """
    is_bytes = isinstance(values, fast.record_blocks.ByteColumn)
    if not self._scalar or is_bytes != self._codec.is_string:
      return None
    if not is_bytes:
      if values.dtype.kind not in self._kinds:
        return None
      if self._codec.wire_kind == "int64_list" and len(values) and self.spec.dtype != "bool":
        low, high = int(values.min()), int(values.max())
        if low < self._range[0] or high > self._range[1]:
          raise FieldValueError(f"values {low}..{high} are out of the range of {self.spec.dtype}")
    return self._codec.column_entries(self.spec.name, values)

  def empty(self) -> list[serialization.Payload]:
    """Zeros (or empty strings) of the feature's shape, None dimensions empty."""
    shape = tuple(0 if dim is None else dim for dim in self.spec.shape)
    if self.spec.dtype == tensor_codecs.STRING:
      return self._encode(np.full(shape, b"", dtype=object))
    return self._encode(np.zeros(shape, dtype=self.spec.dtype))

  # Scalars of the matching Python type skip NumPy: the common case, per example.
  def _encode_ints(self, value: Any) -> list[serialization.Payload]:
    if self._scalar and type(value) is int and self.spec.dtype != "bool":  # pylint: disable=unidiomatic-typecheck
      if not self._range[0] <= value <= self._range[1]:
        raise FieldValueError(f"{value} is out of the range of {self.spec.dtype}")
      return [self._int64_scalar(value)]
    array = self._array(value)
    if array.size and self.spec.dtype != "bool":
      low, high = int(array.min()), int(array.max())
      if low < self._range[0] or high > self._range[1]:
        raise FieldValueError(f"values {low}..{high} are out of the range of {self.spec.dtype}")
    return self._entries(array)

  def _encode_floats(self, value: Any) -> list[serialization.Payload]:
    if self._float_scalar is not None and type(value) is float:  # pylint: disable=unidiomatic-typecheck
      return [self._float_scalar(value)]
    array = self._array(value)
    if array.size and np.dtype(self.spec.dtype).itemsize < array.dtype.itemsize:  # narrowed: 1e40 is no float32
      with np.errstate(over="ignore"):
        overflows = np.isinf(array.astype(self.spec.dtype)) & np.isfinite(array)
      if overflows.any():
        raise FieldValueError(f"{_show(value)} overflows {self.spec.dtype} (largest {np.finfo(self.spec.dtype).max:g})")
    return self._entries(array)

  def _encode_string(self, value: Any) -> list[serialization.Payload]:
    if self._scalar and isinstance(value, (str, bytes)):
      return self._entries(_utf8(value))
    array = self._array(value)
    # NumPy turns [1, "a"] into strings ('1', 'a'): the items as given must be strings already.
    given = array if isinstance(value, np.ndarray) and array.dtype.kind != "O" else np.asarray(value, dtype=object)
    if given.dtype.kind == "O" and not all(isinstance(item, (str, bytes, np.str_, np.bytes_)) for item in given.flat):
      raise FieldValueError(f"{_show(value)} holds non-strings")
    items = [_utf8(item) for item in array.ravel().tolist()]
    return self._entries(items[0] if self._scalar else items)

  def _array(self, value: Any) -> np.ndarray:
    kinds = self._kinds
    if isinstance(value, (str, bytes)):
      array = np.asarray(value, dtype=object)
    else:
      try:
        array = np.asarray(value)
      except (ValueError, TypeError) as error:
        raise FieldValueError(f"{_show(value)} is not an array ({error})") from error
    if array.size == 0 and array.dtype.kind == "f" and "f" not in kinds:
      array = array.astype(np.int64 if "i" in kinds else np.str_)  # np.asarray([]) is float64
    if array.dtype.kind not in kinds:
      got = "string" if array.dtype.kind in "USO" else array.dtype.name
      raise FieldValueError(f"{_show(value)} is {got}, but the feature is {self.spec.spec_text()}")
    if len(array.shape) != len(self.spec.shape) or any(
        want is not None and want != got for want, got in zip(self.spec.shape, array.shape)
    ):
      raise FieldValueError(
          f"{_show(value)} has shape {array.shape}, but the feature is {self.spec.spec_text()}"
      )
    return array


def _utf8(value: str | bytes) -> bytes:
  return value.encode("utf-8") if isinstance(value, str) else value


def _show(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def hint_for(spec: FieldSpec) -> str:
  """What to do when a value does not fit `spec`."""
  origin = "declared in `features`" if spec.declared else "inferred from the first examples"
  return (
      f"The feature is {spec.spec_text()} ({origin}). Return that type and shape "
      f"for every example, or declare the feature: features={{{spec.name!r}: "
      f"'{spec.dtype}[None]'}} for a varying length"
  )
