"""core.fast.record_index: frames and join keys read from headers, checked against struct and protobuf."""

from __future__ import annotations

import gzip
import pathlib
import struct

import numpy as np
import pytest
import tensorflow as tf
from etils import epath

from tfds_builders.core import errors
from tfds_builders.core import serialization
from tfds_builders.core import tfrecord_io
from tfds_builders.core.fast import crc32c
from tfds_builders.core.fast import record_blocks
from tfds_builders.core.fast import record_index


def delimited(field: int, payload: bytes) -> bytes:
  return serialization.varint(field << 3 | 2) + serialization.varint(len(payload)) + payload


def entry(name: str, feature: bytes) -> bytes:
  return delimited(1, delimited(1, name.encode()) + delimited(2, feature))


def example(*entries: bytes) -> bytes:
  return delimited(1, b"".join(entries))


def int64s(*values: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def proto(**features: tf.train.Feature) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


# Records whose key `id` protobuf reads in every way the wire format allows.
RECORDS = [
    proto(id=int64s(7), image=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x" * 5000]))),
    proto(image=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"y" * 300])), id=int64s(-5)),
    proto(id=int64s(1, 2)),  # two values
    proto(other=int64s(1)),  # no key
    proto(id=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"7"]))),  # another kind
    proto(id=tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))),
    proto(id=int64s()),  # an empty list
    proto(id=int64s(2**62 + 3)),
    example(entry("id", delimited(3, b"\x08" + serialization.varint(41)))),  # unpacked int64
    example(entry("id", delimited(3, b"\x08\x01")), entry("id", delimited(3, b"\x08\x02"))),  # later entry wins
    example(entry("id", delimited(3, b"\x08\x01"))) + example(entry("x", delimited(3, b"\x08\x02"))),  # merged
    *(AMBIGUOUS := [
        # A Feature with two kind fields: protobuf keeps the last (or merges
        # two lists), TF's parser reads the first. With no one answer, the scan
        # calls the record malformed.
        example(entry("id", delimited(1, b"") + delimited(3, b"\x08\x09"))),
        example(entry("id", delimited(3, b"\x08\x09") + delimited(1, b""))),
        example(entry("id", delimited(3, b"\x08\x01") + delimited(3, b"\x08\x02"))),
    ]),
    b"",  # an empty Example
]


def protobuf_view(raw: bytes, name: str, kind: str) -> tuple[int, object]:
  """(count, last value) of a feature as protobuf parses it."""
  feature = tf.train.Example.FromString(raw).features.feature
  values = list(getattr(feature[name], kind).value) if name in feature else []
  return len(values), (values[-1] if values else None)


def write(path: pathlib.Path, records: list[bytes], compression: str = "") -> tfrecord_io.RecordFile:
  with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type=compression)) as writer:
    for record in records:
      writer.write(record)
  return tfrecord_io.RecordFile(epath.Path(path), compression)


def struct_frames(path: pathlib.Path) -> list[tuple[int, int, int]]:
  """(offset, length, stored CRC) of each record, parsed with struct."""
  data = path.read_bytes()
  frames, offset = [], 0
  while offset < len(data):
    (length,) = struct.unpack_from("<Q", data, offset)
    frames.append((offset, length, struct.unpack_from("<I", data, offset + 12 + length)[0]))
    offset += 16 + length
  return frames


def scanned(record_file: tfrecord_io.RecordFile, **options) -> dict[str, list]:
  blocks = list(record_index.scan(record_file, **options))
  assert [block.first for block in blocks] == list(np.cumsum([0] + [len(b) for b in blocks[:-1]]))
  return {
      "frames": [(int(o), int(n), int(c)) for b in blocks for o, n, c in zip(b.offsets, b.lengths, b.crcs)],
      "counts": [int(c) for b in blocks for c in (b.key_counts if b.key_counts is not None else [])],
      "keys": [k.item() if isinstance(k, np.generic) else k for b in blocks for k in (b.keys if b.keys is not None else [])],
  }


@pytest.mark.parametrize("block_records", [1, 4, 65536])
def test_frames_and_int_keys_equal_struct_and_protobuf(tmp_path, block_records, monkeypatch):
  monkeypatch.setattr(record_index, "_WINDOW_BYTES", 1000)  # records cross window edges
  record_file = write(tmp_path / "r.tfrecord", RECORDS)
  found = scanned(record_file, key="id", key_kind="int64_list", block_records=block_records)
  assert found["frames"] == struct_frames(tmp_path / "r.tfrecord")
  for raw, count, key in zip(RECORDS, found["counts"], found["keys"], strict=True):
    want_count, want_value = protobuf_view(raw, "id", "int64_list")
    if raw in AMBIGUOUS:
      want_count = record_index.MALFORMED
    assert count == want_count, raw
    if count == 1:
      assert key == want_value, raw


LAYOUT = {"id": "int64_list", "image": "bytes_list"}
# Records with their number of values of each LAYOUT feature, or None where the
# layout check must refuse them (other features or kinds, non-canonical wire).
LAYOUT_RECORDS = [(raw, None) for raw in RECORDS[2:]] + [
    (RECORDS[0], [1, 1]),
    (RECORDS[1], [1, 1]),  # image first
    (proto(id=int64s(3), image=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"", b"c" * 200]))), [1, 3]),
    (proto(id=int64s(-1, 2**63 - 1, 0), image=tf.train.Feature(bytes_list=tf.train.BytesList())), [3, 0]),
    (proto(id=int64s(4), image=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"z"])), extra=int64s(1)), None),
    (example(entry("id", delimited(3, delimited(1, b"\xff" * 10 + b"\x01"))), entry("image", delimited(1, b""))), None),
    (example(entry("id", delimited(3, delimited(1, b"\x85"))), entry("image", delimited(1, b""))), None),
    (example(entry("id", delimited(3, b"\x08\x05")), entry("image", delimited(1, b""))), None),  # unpacked
    (example(entry("image", delimited(1, delimited(1, b"q"))), entry("id", b"")), None),  # a Feature with no kind
    (example(entry("id", delimited(3, delimited(1, b"\x05"))), entry("image", delimited(1, b""))), [1, 0]),
]


@pytest.mark.parametrize("block_records", [1, 65536])
def test_layout_check_equals_protobuf_on_canonical_records_and_reads_the_key(tmp_path, block_records):
  layout = record_index.ExampleLayout.of(LAYOUT)
  record_file = write(tmp_path / "r.tfrecord", [raw for raw, _ in LAYOUT_RECORDS])
  blocks = list(record_index.scan(record_file, key="id", layout=layout, block_records=block_records))
  conforms = np.concatenate([block.conforms for block in blocks])
  value_counts = np.concatenate([block.value_counts for block in blocks])
  for (raw, want), conform, counts in zip(LAYOUT_RECORDS, conforms, value_counts, strict=True):
    assert conform == (want is not None), raw
    if conform:
      assert counts.tolist() == want, raw
      assert want == [protobuf_view(raw, name, kind)[0] for name, kind in LAYOUT.items()]
  # Keys read by the layout's parse equal those of the key-only walk.
  assert scanned(record_file, key="id", layout=layout, block_records=block_records) == scanned(record_file, key="id")
  # ExampleLayout.check on records in a buffer finds the same.
  frames = np.array([(offset + 12, offset + 12 + length) for offset, length, _ in struct_frames(tmp_path / "r.tfrecord")])
  data = np.frombuffer((tmp_path / "r.tfrecord").read_bytes(), np.uint8)
  checked, checked_counts = layout.check(data, frames[:, 0], frames[:, 1])
  assert checked.tolist() == conforms.tolist()
  assert checked_counts[checked].tolist() == value_counts[conforms].tolist()


def test_crc32c_gives_the_checksums_tensorflow_writes(tmp_path):
  rng = np.random.default_rng(0)
  records = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in [0, 1, 7, 8, 9, 15, 16, 17, 100, 4099]]
  write(tmp_path / "c.tfrecord", records)
  data = np.frombuffer((tmp_path / "c.tfrecord").read_bytes(), np.uint8)
  for offset, length, stored_crc in struct_frames(tmp_path / "c.tfrecord"):
    header_crc = int.from_bytes(data[offset + 8:offset + 12].tobytes(), "little")
    assert crc32c.masked_crc32c(data, offset + 12, length) == stored_crc, length
    assert crc32c.masked_crc32c(data, offset, 8) == header_crc
  # Unaligned starts and every tail length: the CRC of a slice equals the CRC of its copy at offset 0.
  buffer = rng.integers(0, 256, 300, dtype=np.uint8)
  for start in range(9):
    for count in range(0, 40):
      copy = buffer[start:start + count].copy()
      assert crc32c.masked_crc32c(buffer, start, count) == crc32c.masked_crc32c(copy, 0, count)


def _masked(crc: int) -> int:
  """TFRecord's mask, spelled out as TensorFlow's crc32c.h does (not through the module)."""
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("data, crc", [
    (b"123456789", 0xE3069283),  # CRC32C's check value (Castagnoli's catalogue)
    (b"\0" * 32, 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
    (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of ones
    (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing bytes
])
def test_masked_crc32c_equals_published_check_values(data, crc):
  buffer = np.frombuffer(data, np.uint8)
  assert crc32c.masked_crc32c(buffer, 0, len(data)) == _masked(crc)
  assert crc32c.masked(crc32c.extend(crc32c.INITIAL, buffer, 0, len(data))) == _masked(crc)


def test_bytes_keys_and_gzip(tmp_path):
  records = [proto(name=tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"n{i}".encode() * i]))) for i in range(50)]
  plain = scanned(write(tmp_path / "p.tfrecord", records), key="name", key_kind="bytes_list")
  zipped = scanned(write(tmp_path / "g.tfrecord.gz", records, "GZIP"), key="name", key_kind="bytes_list")
  assert plain["keys"] == [protobuf_view(raw, "name", "bytes_list")[1] for raw in records]
  assert plain["counts"] == [1] * 50
  assert zipped == plain
  assert plain["frames"] == struct_frames(tmp_path / "p.tfrecord")


def test_what_is_no_example_is_malformed(tmp_path):
  records = [b"\xff\xff not a proto", example(entry("id", b"\x1a\x05\x08")), proto(id=int64s(3))]
  found = scanned(write(tmp_path / "r.tfrecord", records), key="id")
  assert found["counts"] == [record_index.MALFORMED, record_index.MALFORMED, 1]


def test_fingerprints_of_a_slice(tmp_path):
  record_file = write(tmp_path / "r.tfrecord", RECORDS)
  frames = struct_frames(tmp_path / "r.tfrecord")
  every = [length << 32 | crc for _, length, crc in frames]
  np.testing.assert_array_equal(record_index.fingerprints(record_file), every)
  np.testing.assert_array_equal(record_index.fingerprints(record_file, 3, 4), every[3:7])
  np.testing.assert_array_equal(record_index.fingerprints(record_file, 14, 10), every[14:])


def test_a_missing_file_is_a_source_error_naming_it(tmp_path):
  path = tmp_path / "missing.tfrecord"
  with pytest.raises(errors.SourceError, match=rf"{path} cannot be read \(.*No such file.*\).*Check that the file exists"):
    list(record_index.scan(tfrecord_io.RecordFile(epath.Path(path), "")))


def test_an_empty_file_has_no_records(tmp_path):
  (tmp_path / "e.tfrecord").write_bytes(b"")
  assert not list(record_index.scan(tfrecord_io.RecordFile(epath.Path(tmp_path / "e.tfrecord"), "")))


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_a_truncated_file_names_the_record(tmp_path, compression):
  path = tmp_path / "r.tfrecord"
  write(path, RECORDS[:3])
  offset = struct_frames(path)[2][0]
  data = path.read_bytes()[:-3]
  path.write_bytes(gzip.compress(data) if compression else data)
  with pytest.raises(errors.SourceError, match=rf"r.tfrecord: record 2 \(at byte {offset}\) is truncated"):
    list(record_index.scan(tfrecord_io.RecordFile(epath.Path(path), compression)))


def test_a_corrupt_header_names_the_record(tmp_path):
  path = tmp_path / "r.tfrecord"
  write(path, RECORDS[:3])
  offset = struct_frames(path)[1][0]
  data = bytearray(path.read_bytes())
  data[offset + 9] ^= 0x01  # the length's CRC
  path.write_bytes(bytes(data))
  with pytest.raises(errors.SourceError, match=rf"record 1 \(at byte {offset}\) has a corrupt header"):
    list(record_index.scan(tfrecord_io.RecordFile(epath.Path(path), "")))


@pytest.mark.skipif(not crc32c.HARDWARE, reason="this CPU has no SSE4.2 crc32 instruction")
def test_the_crc_instruction_and_the_tables_agree():
  rng = np.random.default_rng(11)
  data = rng.integers(0, 256, 4096, dtype=np.uint8)
  for start, count in [(0, 0), (0, 1), (3, 7), (1, 8), (5, 9), (0, 4096), (17, 1000), (4095, 1)]:
    assert crc32c.hardware_masked_crc32c(data, start, count) == crc32c.table_masked_crc32c(data, start, count)
  assert crc32c.hardware_masked_crc32c(data, 4000, 200) == crc32c.table_masked_crc32c(data, 4000, 200) == -1


@pytest.mark.skipif(not crc32c.HARDWARE, reason="this CPU has no SSE4.2 crc32 instruction")
def test_the_crc_instruction_and_the_tables_extend_a_register_alike():
  data = np.random.default_rng(12).integers(0, 256, 4096, dtype=np.uint8)
  register = crc32c.INITIAL
  for start, end in [(0, 3), (3, 11), (11, 11), (11, 2000), (2000, 4096)]:  # a CRC of bytes arriving in parts
    assert crc32c.hardware_extend(register, data, start, end) == crc32c.table_extend(register, data, start, end)
    register = crc32c.extend(register, data, start, end)
  assert crc32c.masked(register) == crc32c.table_masked_crc32c(data, 0, 4096)


def _blocks_of(path: pathlib.Path, **options) -> list[record_index.Block]:
  return list(record_index.scan(tfrecord_io.RecordFile(epath.Path(path), ""), with_window=True, **options))


def test_reframed_appends_suffixes_and_frames_as_tensorflow_does(tmp_path):
  records = [proto(id=int64s(i), pad=int64s(*range(i % 300))) for i in range(700)]
  path = tmp_path / "a.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  suffixes = [b"s" * (i % 40) for i in range(len(records))]
  file = tfrecord_io.RecordFile(epath.Path(path), "")
  (block,) = _blocks_of(path)
  part = block.rows(100, 650)
  column = record_blocks.ByteColumn.from_items(suffixes[100:650])
  expected = tmp_path / "expected.tfrecord"
  with tf.io.TFRecordWriter(str(expected)) as writer:
    for record, suffix in zip(records[100:650], suffixes[100:650]):
      writer.write(record + suffix)
  framed = record_index.reframed(file, part, column)
  assert framed.data.tobytes() == expected.read_bytes()
  assert framed.records() == [r + s for r, s in zip(records[100:650], suffixes[100:650])]
  unchanged = record_index.reframed(file, part)  # no suffixes: the source's own frames, checked
  assert unchanged.records() == records[100:650]
  assert unchanged.data.tobytes() == path.read_bytes()[part.offsets[0]:int(block.offsets[650])]
  with pytest.raises(ValueError, match="one suffix per record"):
    record_index.reframed(file, part, record_blocks.ByteColumn.from_items(suffixes[:10]))
  # The kernel copies suffix bytes raw: a strided view or a wider dtype never reaches it.
  backwards = record_blocks.ByteColumn(column.data[::-1], column.offsets)
  wide = record_blocks.ByteColumn(column.data.astype(np.int64), column.offsets)
  for bad in (backwards, wide):
    with pytest.raises(ValueError, match="contiguous uint8 data"):
      record_index.reframed(file, part, bad)


def test_reframed_names_a_record_whose_data_does_not_match_its_crc(tmp_path):
  path = tmp_path / "a.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i in range(20):
      writer.write(proto(id=int64s(i)))
  data = bytearray(path.read_bytes())
  offset = 0
  for _ in range(7):
    offset += int.from_bytes(data[offset:offset + 8], "little") + 16
  data[offset + 13] ^= 0x01
  path.write_bytes(bytes(data))
  file = tfrecord_io.RecordFile(epath.Path(path), "")
  (block,) = _blocks_of(path)
  expected = rf"record 7 is corrupt or truncated \(at byte {offset}: its \d+ bytes of data do not match their checksum"
  for suffixes in (None, record_blocks.ByteColumn.from_items([b"x"] * 20)):
    with pytest.raises(errors.SourceError, match=expected):
      record_index.reframed(file, block, suffixes)
  with pytest.raises(errors.SourceError, match=expected):  # as the record reader says it
    list(record_index.read_records(file))
