"""Protobuf and TFRecord wire constants of `tf.train.Example` files: the only place they are spelled.

A protobuf field tag is `field_number << 3 | wire_type`. Every field of an
Example that this package writes or walks is length-delimited (wire type 2)
except the unpacked numbers a parser must also accept. Each tag is given as
an int (compiled walks compare bytes with it) and, where writers join bytes,
as its one-byte form (`*_BYTE`).
"""

from __future__ import annotations

# Wire types.
VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5


def tag(field_number: int, wire_type: int = LENGTH_DELIMITED) -> int:
  """The tag of a field: its number and wire type in one varint (one byte below field 16)."""
  return field_number << 3 | wire_type


# tf.train.Example: `features` (field 1), a Features message.
EXAMPLE_FEATURES = tag(1)
# tf.train.Features: `feature` (field 1), a map<string, Feature>, each entry a message of key then value.
FEATURES_ENTRY = tag(1)
MAP_KEY = tag(1)
MAP_VALUE = tag(2)
# tf.train.Feature: a oneof of three lists; the field number of each kind.
KIND_FIELDS = {"bytes_list": 1, "float_list": 2, "int64_list": 3}
FEATURE_BYTES_LIST = tag(KIND_FIELDS["bytes_list"])
FEATURE_FLOAT_LIST = tag(KIND_FIELDS["float_list"])
FEATURE_INT64_LIST = tag(KIND_FIELDS["int64_list"])
FEATURE_LIST_TAGS = {kind: tag(field) for kind, field in KIND_FIELDS.items()}
# BytesList, FloatList, Int64List: `value` (field 1): one bytes value, or numbers packed.
LIST_VALUE = tag(1)
# The unpacked forms a parser also accepts: one float (fixed32) or one int64 (varint) per field.
FLOAT_VALUE_UNPACKED = tag(1, FIXED32)
INT64_VALUE_UNPACKED = tag(1, VARINT)

EXAMPLE_FEATURES_BYTE = bytes([EXAMPLE_FEATURES])
FEATURES_ENTRY_BYTE = bytes([FEATURES_ENTRY])
MAP_KEY_BYTE = bytes([MAP_KEY])
MAP_VALUE_BYTE = bytes([MAP_VALUE])
FEATURE_FLOAT_LIST_BYTE = bytes([FEATURE_FLOAT_LIST])
FEATURE_INT64_LIST_BYTE = bytes([FEATURE_INT64_LIST])
FEATURE_BYTES_LIST_BYTE = bytes([FEATURE_BYTES_LIST])
LIST_VALUE_BYTE = bytes([LIST_VALUE])

# A TFRecord frame: length (8, little-endian) and its masked CRC32C (4), the data, the data's masked CRC32C (4).
FRAME_LENGTH_BYTES = 8
FRAME_HEADER_BYTES = 12
FRAME_CRC_BYTES = 4
FRAME_BYTES = FRAME_HEADER_BYTES + FRAME_CRC_BYTES
# TFRecord's CRC32C mask: rotate right by 15 bits, then add this delta (mod 2**32).
MASKED_CRC_DELTA = 0xA282EAD8
