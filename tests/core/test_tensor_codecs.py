"""Tests of core.tensor_codecs: (dtype, shape, policy) -> feature and wire kind, refusals, round trips through TFDS."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import tensor_codecs
from tfds_builders.core.tensor_codecs import EXACT, LISTS, STRING

BYTES = "bytes"
NONE = "none"

# (dtype, policy) -> (feature dtype, encoding, wire kind): every dtype each policy stores.
STORAGE = {
    ("bool", EXACT): ("bool", BYTES, "bytes_list"),
    ("int8", EXACT): ("int8", BYTES, "bytes_list"),
    ("int16", EXACT): ("int16", BYTES, "bytes_list"),
    ("int32", EXACT): ("int32", BYTES, "bytes_list"),
    ("int64", EXACT): ("int64", BYTES, "bytes_list"),
    ("uint8", EXACT): ("uint8", BYTES, "bytes_list"),
    ("uint16", EXACT): ("uint16", BYTES, "bytes_list"),
    ("uint32", EXACT): ("uint32", NONE, "int64_list"),  # TF cannot decode raw uint32
    ("uint64", EXACT): ("uint64", BYTES, "bytes_list"),
    ("float16", EXACT): ("float16", BYTES, "bytes_list"),
    ("float32", EXACT): ("float32", BYTES, "bytes_list"),
    ("float64", EXACT): ("float64", BYTES, "bytes_list"),
    ("complex64", EXACT): ("complex64", BYTES, "bytes_list"),
    ("complex128", EXACT): ("complex128", BYTES, "bytes_list"),
    ("bool", LISTS): ("bool", NONE, "int64_list"),
    ("int8", LISTS): ("int8", NONE, "int64_list"),
    ("int16", LISTS): ("int16", NONE, "int64_list"),
    ("int32", LISTS): ("int32", NONE, "int64_list"),
    ("int64", LISTS): ("int64", NONE, "int64_list"),
    ("uint8", LISTS): ("uint8", NONE, "int64_list"),
    ("uint16", LISTS): ("uint16", NONE, "int64_list"),
    ("uint32", LISTS): ("uint32", NONE, "int64_list"),
    ("float16", LISTS): ("float16", NONE, "float_list"),
    ("float32", LISTS): ("float32", NONE, "float_list"),
    ("float64", LISTS): ("float64", BYTES, "bytes_list"),  # a float_list would round it
    (STRING, LISTS): ("string", NONE, "bytes_list"),
}
SHAPES = {EXACT: [(), (3,), (None,), (2, None, 3), (None, None)], LISTS: [(), (3,), (None,), (2, None)]}
ROWS = [
    (dtype, shape, policy, *expected)
    for (dtype, policy), expected in STORAGE.items()
    for shape in SHAPES[policy]
    if not (dtype == "uint32" and shape.count(None) > 1)  # refused: see SHAPE_REFUSALS
]

# (dtype, policy) -> fragments of the reason it is refused.
REFUSALS = [
    (np.dtype(object), EXACT, ["object arrays", "pickled code", "convert them to a numeric dtype"]),
    (np.dtype([("a", "<i4"), ("b", "<f8")]), EXACT, ["structured or void", "np.savez(path"]),
    (np.dtype("S4"), EXACT, ["byte-string arrays", "store them as uint8"]),
    (np.dtype("<U4"), EXACT, ["unicode string arrays", "encode them to uint8"]),
    (np.dtype("datetime64[D]"), EXACT, ["datetime64", "a.view('int64')", "record the unit"]),
    (np.dtype("timedelta64[s]"), EXACT, ["timedelta64", "a.view('int64')"]),
    (STRING, EXACT, ["unicode string arrays"]),
    ("no_such_dtype", EXACT, ["no TensorFlow equivalent"]),
    ("uint64", LISTS, ["cannot be stored exactly in a tf.train.Example"]),
    ("complex64", LISTS, ["cannot be stored exactly"]),
    ("complex128", LISTS, ["cannot be stored exactly"]),
    ("datetime64", LISTS, ["cannot be stored exactly"]),
    ("object", LISTS, ["cannot be stored exactly"]),
    ("no_such_dtype", LISTS, ["cannot be stored exactly"]),
]
if np.dtype(np.longdouble).itemsize > 8:
  REFUSALS += [(np.dtype(np.longdouble), EXACT, ["TensorFlow cannot hold", "cast explicitly"]),
               (np.dtype(np.clongdouble), EXACT, ["TensorFlow cannot hold", "cast explicitly"])]

# A list holds one varying dimension at most; raw bytes keep any shape (TFDS stores it beside them).
SHAPE_REFUSALS = [
    ("uint32", (None, None), EXACT, True),
    ("int64", (None, None), LISTS, True),
    (STRING, (None, None), LISTS, True),
    ("float64", (None, None), LISTS, False),
    ("int64", (None, None), EXACT, False),
]


def _value(dtype: str, shape: tuple[int | None, ...]) -> np.ndarray:
  """An example value of `dtype`, varying dims 2 long, holding each dtype's edge values."""
  concrete = tuple(2 if dim is None else dim for dim in shape)
  size = int(np.prod(concrete, dtype=np.int64))
  if dtype == STRING:
    items = [b"", "é".encode(), b"\x00\xff", b"x" * 300][:size] + [b"s"] * max(0, size - 4)
    return np.array(items, dtype=object).reshape(concrete)
  np_dtype = np.dtype(dtype)
  if np_dtype.kind == "b":
    edges = [True, False]
  elif np_dtype.kind in "iu":
    info = np.iinfo(np_dtype)
    edges = [info.min, info.max, 0, 1]
  elif np_dtype.kind == "f":
    info = np.finfo(np_dtype)
    edges = [-0.0, np.inf, -np.inf, info.max, info.tiny, 0.1, np.nan]
  else:
    edges = [complex(1.5, -0.0), complex(np.inf, 0.1), complex(0.0, np.nan)]
  values = [edges[i % len(edges)] for i in range(size)]
  return np.array(values, dtype=np_dtype).reshape(concrete)


def _decode(codec: tensor_codecs.TensorCodec, serialized: bytes) -> np.ndarray:
  features = tfds.features.FeaturesDict({"x": codec.feature()})
  return features.deserialize_example(serialized)["x"].numpy()


def _assert_bit_exact(decoded: np.ndarray, value: np.ndarray, dtype: str) -> None:
  if dtype == STRING:
    assert np.asarray(decoded, dtype=object).tolist() == value.tolist()
    return
  assert decoded.dtype == value.dtype and decoded.shape == value.shape
  assert decoded.tobytes() == value.tobytes()  # NaN payloads and -0.0 included


@pytest.mark.parametrize("dtype, shape, policy, feature_dtype, encoding, wire_kind", ROWS)
def test_resolution_table(dtype, shape, policy, feature_dtype, encoding, wire_kind):
  codec = tensor_codecs.resolve(dtype, shape, policy)
  feature = codec.feature()
  assert (codec.wire_kind, codec.raw_bytes) == (wire_kind, encoding == BYTES)
  assert feature.to_json_content().dtype == feature_dtype
  assert feature.to_json_content().encoding == encoding
  assert feature.shape == shape
  assert not codec.shape_refused
  # What TFDS serializes the feature as is the wire kind the codec writes.
  infos = feature.get_serialized_info()
  info = infos["value"] if codec.stores_shape else infos
  assert tensor_codecs.wire_kind(info.np_dtype) == wire_kind


@pytest.mark.parametrize("dtype, shape, policy, feature_dtype, encoding, wire_kind", ROWS)
def test_round_trip_through_tfds_is_bit_exact(dtype, shape, policy, feature_dtype, encoding, wire_kind):
  codec = tensor_codecs.resolve(dtype, shape, policy)
  value = _value(dtype, shape)
  if dtype == STRING:
    stored = value.item() if shape == () else value.ravel().tolist()
  else:
    stored = value
  serialized = serialization.example([codec.encoder("x")(stored)])
  _assert_bit_exact(_decode(codec, serialized), value, dtype)


@pytest.mark.parametrize("dtype, policy", list(STORAGE))
def test_scalar_and_column_encoders_write_the_same_entries(dtype, policy):
  codec = tensor_codecs.resolve(dtype, (), policy)
  values = _value(dtype, (7,))
  entries = [b"".join(codec.encoder("x")(value)) for value in values]
  scalar = codec.scalar_encoder("x")
  assert [scalar(value) for value in values.tolist()] == entries  # Python scalars: the hot path
  column = fast.record_blocks.ByteColumn.from_items(values.tolist()) if dtype == STRING else values
  assert codec.column_entries("x", column).items() == entries


def test_int64_lists_take_python_ints_as_they_are():
  codec = tensor_codecs.resolve("int64", (None,), LISTS)
  # NumPy would widen this list to float64; the encoder must not.
  assert codec.encoder("x")([1, 2**62 + 1]) == serialization.int64_feature(
      serialization.FeatureKey("x"), [1, 2**62 + 1])


@pytest.mark.parametrize("dtype, policy, fragments", REFUSALS)
def test_refused_dtypes_say_why(dtype, policy, fragments):
  reason = tensor_codecs.refusal(dtype, policy)
  assert reason is not None
  for fragment in fragments:
    assert fragment in reason
  with pytest.raises(tensor_codecs.RefusedDtype) as raised:
    tensor_codecs.resolve(dtype, (), policy)
  assert str(raised.value) == reason


@pytest.mark.parametrize("dtype, shape, policy, refused", SHAPE_REFUSALS)
def test_a_list_holds_one_varying_dimension(dtype, shape, policy, refused):
  codec = tensor_codecs.resolve(dtype, shape, policy)
  assert codec.shape_refused is refused
  assert codec.stores_shape is (not refused)


def test_the_byte_order_is_little_endian():
  codec = tensor_codecs.resolve(np.dtype(">f4"), (2,), EXACT)
  assert codec.dtype == np.dtype("<f4")
  value = np.array([1.5, -2.0], ">f4")
  serialized = serialization.example([codec.encoder("x")(value)])
  _assert_bit_exact(_decode(codec, serialized), value.astype("<f4"), "float32")


def test_an_unknown_policy_is_an_error():
  with pytest.raises(ValueError, match="policy must be one of"):
    tensor_codecs.resolve("int64", (), "bits")
