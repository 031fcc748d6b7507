"""Tests of the shared core: wire-format serialization, shard writing, provenance, paths."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core import naming

from tfds_builders.core import errors
from tfds_builders.core import example_schema
from tfds_builders.core import paths
from tfds_builders.core import provenance
from tfds_builders.core import serialization
from tfds_builders.core import shard_writer
from tfds_builders.core import tfrecord_io
from tfds_builders.core import wire
from tfds_builders.core.fast import record_blocks
from tfds_builders.core.fast import record_index


def _encode_mapping(values: dict[str, bytes]) -> bytes:
  """An Example of one-value bytes features, built by the fast path."""
  return serialization.example(
      serialization.bytes_feature(serialization.FeatureKey(name), payload) for name, payload in values.items()
  )


def _proto(features: dict[str, tf.train.Feature]) -> tf.train.Example:
  return tf.train.Example(features=tf.train.Features(feature=features))


# -- serialization ----------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**35, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
  expected = _proto({"v": tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))})
  encoded = serialization.example([serialization.int64_feature(serialization.FeatureKey("v"), [value])])
  assert tf.train.Example.FromString(encoded) == expected


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16384, 3_000_000])
def test_bytes_feature_parses_as_protobuf_built_example(size: int) -> None:
  payload = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
  encoded = serialization.example(
      [serialization.bytes_feature(serialization.FeatureKey("data/é"), memoryview(payload))]
  )
  expected = _proto({"data/é": tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload]))})
  assert tf.train.Example.FromString(encoded) == expected


def test_mixed_features_match_protobuf_and_tf_parser() -> None:
  floats = np.array([0.5, -1.25, np.inf], np.float32)
  encoded = serialization.example([
      serialization.int64_feature(serialization.FeatureKey("ints"), [-1, 0, 2**40]),
      serialization.float_feature(serialization.FeatureKey("floats"), floats),
      serialization.bytes_list_feature(serialization.FeatureKey("words"), [b"a", b"", b"xyz"]),
      serialization.int64_feature(serialization.FeatureKey("empty"), []),
  ])
  expected = _proto({
      "ints": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1, 0, 2**40])),
      "floats": tf.train.Feature(float_list=tf.train.FloatList(value=floats)),
      "words": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"", b"xyz"])),
      "empty": tf.train.Feature(int64_list=tf.train.Int64List(value=[])),
  })
  assert tf.train.Example.FromString(encoded) == expected
  parsed = tf.io.parse_single_example(encoded, {
      "ints": tf.io.FixedLenFeature([3], tf.int64),
      "floats": tf.io.FixedLenFeature([3], tf.float32),
      "words": tf.io.VarLenFeature(tf.string),
  })
  assert parsed["ints"].numpy().tolist() == [-1, 0, 2**40]
  assert parsed["floats"].numpy().tobytes() == floats.tobytes()
  assert parsed["words"].values.numpy().tolist() == [b"a", b"", b"xyz"]


def test_example_from_joined_entries_equals_example() -> None:
  entries = [
      serialization.int64_feature(serialization.FeatureKey("ints"), [-1, 2**40]),
      serialization.bytes_feature(serialization.FeatureKey("text"), b"x" * 300),
      serialization.float_feature(serialization.FeatureKey("f"), np.array([0.5], np.float32)),
  ]
  joined = [b"".join(entry) for entry in entries]
  assert serialization.example_from_entries(joined) == serialization.example(entries)
  assert serialization.example_from_entries([]) == serialization.example([])


def test_merged_examples_parse_as_union_of_features() -> None:
  left = _encode_mapping({"left/x": b"1", "left/y": b"22"})
  right = _encode_mapping({"right/x": b"333"})
  merged = tf.train.Example.FromString(serialization.merge_examples(left, right))
  assert {k: v.bytes_list.value[0] for k, v in merged.features.feature.items()} == {
      "left/x": b"1", "left/y": b"22", "right/x": b"333",
  }
  fast = tf.io.parse_single_example(
      serialization.merge_examples(left, right),
      {name: tf.io.FixedLenFeature([], tf.string) for name in ("left/x", "left/y", "right/x")},
  )
  assert fast["right/x"].numpy() == b"333"


# -- shard writer -----------------------------------------------------------


def _template(tmp_path, split: str = "train") -> naming.ShardedFileTemplate:
  return naming.ShardedFileTemplate(
      data_dir=tmp_path, dataset_name="demo", split=split, filetype_suffix="tfrecord"
  )


def test_split_writer_cuts_shards_by_size_and_keeps_order(tmp_path) -> None:
  records = [(i, _encode_mapping({"i": str(i).encode() * 50})) for i in range(25)]
  writer = shard_writer.SplitWriter(
      _template(tmp_path), file_adapters.FileFormat.TFRECORD, max_shard_bytes=500
  )
  info = writer.write(records)

  shard_files = sorted(p.name for p in tmp_path.iterdir())
  assert shard_files == [f"demo-train.tfrecord-{i:05d}-of-{len(shard_files):05d}" for i in range(len(shard_files))]
  assert len(shard_files) > 1
  assert sum(info.shard_lengths) == 25
  assert info.num_bytes == sum((tmp_path / name).stat().st_size for name in shard_files)
  read_back = [r.numpy() for r in tf.data.TFRecordDataset([str(tmp_path / n) for n in shard_files])]
  assert read_back == [serialized for _, serialized in records]
  per_shard = [sum(1 for _ in tf.data.TFRecordDataset(str(tmp_path / n))) for n in shard_files]
  assert per_shard == list(info.shard_lengths)


def _blocked(records: list[tuple[int, bytes]], pattern: list[int]) -> list:
  """The records as a stream of single examples (0) and framed blocks (their size)."""

  stream, at = [], 0
  for size in pattern:
    if size == 0:
      stream.append(records[at])
      at += 1
    else:
      chunk = records[at:at + size]
      stream.append(([key for key, _ in chunk], record_blocks.framed([value for _, value in chunk])))
      at += size
  assert at == len(records)
  return stream


@pytest.mark.parametrize("file_format", [file_adapters.FileFormat.TFRECORD, file_adapters.FileFormat.ARRAY_RECORD])
def test_split_writer_takes_blocks_between_records_and_cuts_them_at_the_budget(tmp_path, file_format) -> None:
  records = [(i, _encode_mapping({"i": bytes([i]) * 90})) for i in range(40)]
  (tmp_path / "one_by_one").mkdir()
  (tmp_path / "blocked").mkdir()
  template = naming.ShardedFileTemplate(
      data_dir=tmp_path / "one_by_one", dataset_name="demo", split="train", filetype_suffix=file_format.file_suffix
  )
  expected = shard_writer.SplitWriter(template, file_format, max_shard_bytes=1000).write(records)
  blocked_template = naming.ShardedFileTemplate(
      data_dir=tmp_path / "blocked", dataset_name="demo", split="train", filetype_suffix=file_format.file_suffix
  )
  stream = _blocked(records, [0, 0, 25, 0, 3, 0, 8])  # a block spans shards; records follow blocks in a shard
  info = shard_writer.SplitWriter(blocked_template, file_format, max_shard_bytes=1000).write(stream)
  assert list(info.shard_lengths) == list(expected.shard_lengths)
  for index in range(len(info.shard_lengths)):
    one = expected.filename_template.sharded_filepath(shard_index=index, num_shards=len(info.shard_lengths))
    other = info.filename_template.sharded_filepath(shard_index=index, num_shards=len(info.shard_lengths))
    if file_format == file_adapters.FileFormat.TFRECORD:  # byte for byte what TensorFlow's writer wrote
      assert other.read_bytes() == one.read_bytes()


def test_head_and_unblocked_cut_a_stream_by_examples() -> None:
  records = [(i, _encode_mapping({"i": bytes([i]) * 5})) for i in range(12)]
  stream = _blocked(records, [0, 5, 0, 4, 0])
  assert list(shard_writer.unblocked(stream)) == records
  for count in (0, 1, 2, 5, 8, 12, 50):
    assert list(shard_writer.unblocked(shard_writer.head(stream, count))) == records[:count]


def test_split_writer_refuses_an_empty_split(tmp_path) -> None:
  writer = shard_writer.SplitWriter(
      _template(tmp_path, "test"), file_adapters.FileFormat.TFRECORD, max_shard_bytes=500
  )
  with pytest.raises(errors.SourceError, match="Split 'test' has no examples"):
    writer.write([])
  assert list(tmp_path.iterdir()) == []


# -- provenance -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("host=db user=me password=s3cret dbname=x", "host=db user=me password=*** dbname=x"),
        ("password='se cret' host=db", "password=*** host=db"),
        ("postgresql://me:s3cret@db:5432/x", "postgresql://me:***@db:5432/x"),
        ("postgresql://me@db/x", "postgresql://me@db/x"),
        ("no secrets here", "no secrets here"),
    ],
)
def test_redact_strings(text: str, expected: str) -> None:
  assert provenance.redact(text) == expected


def test_redact_nested_values_and_secret_keys() -> None:
  value = {"dsn": "password=abc", "db_password": "abc", "token": "t", "list": ["x://u:p@h"], "n": 3}
  assert provenance.redact(value) == {
      "dsn": "password=***", "db_password": "***", "token": "***", "list": ["x://u:***@h"], "n": 3,
  }


def test_build_provenance_records_config_and_versions() -> None:
  config = tfds.core.BuilderConfig(name="mine", description="password=hunter2")
  record = provenance.build_provenance(builder_name="b", config=config, sources=["s"])
  assert record["builder"] == "b"
  assert record["config"]["name"] == "mine"
  assert record["config"]["description"] == "password=***"
  assert record["sources"] == ["s"]
  assert record["package_version"] and record["tfds_version"] == tfds.__version__
  assert "hunter2" not in json.dumps(record)


def test_read_provenance_names_the_missing_file(tmp_path) -> None:
  with pytest.raises(FileNotFoundError, match="metadata.json not found"):
    provenance.read_provenance(tmp_path)


# -- paths ------------------------------------------------------------------


def test_expand_directories_globs_and_relative_paths(tmp_path) -> None:
  for name in ["a/1.npy", "a/sub/2.npz", "a/skip.txt", "b/3.npy"]:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  found = paths.expand(
      ["a", "b/*.npy", "a/1.npy"], kind="array", keep=lambda n: n.endswith((".npy", ".npz")), root=str(tmp_path)
  )
  assert paths.source_names(found, str(tmp_path)) == ["a/1.npy", "a/sub/2.npz", "b/3.npy"]
  assert paths.source_names(found, None) == ["a/1.npy", "a/sub/2.npz", "b/3.npy"]
  assert paths.source_names(found[:1], None) == ["1.npy"]


def test_expand_names_the_pattern_that_matched_nothing(tmp_path) -> None:
  with pytest.raises(errors.SourceError, match=r"No \.npy file found at 'missing/\*\.npy'.*Check the path"):
    paths.expand(["missing/*.npy"], kind=".npy", keep=lambda n: True, root=str(tmp_path))


# -- example_schema: declared schemas, non-Example records --------------------


def test_parse_schema_reads_what_describe_writes() -> None:
  schema = example_schema.parse_schema({"a": "int64_list[3]", "b": " bytes_list[*] ", "c": "float_list[0]"})
  assert schema == {
      "a": example_schema.FeatureSpec("int64_list", 3),
      "b": example_schema.FeatureSpec("bytes_list", None),
      "c": example_schema.FeatureSpec("float_list", 0),
  }
  assert {name: spec.spec_text() for name, spec in schema.items()} == {
      "a": "int64_list[3]", "b": "bytes_list[*]", "c": "float_list[0]"}


@pytest.mark.parametrize("text", ["int64", "int64_list", "int64_list[-1]", "string_list[1]", "int64_list[2", ""])
def test_parse_schema_names_the_malformed_feature(text: str) -> None:
  with pytest.raises(errors.ConfigError, match=r"Feature 'x' is declared as .*KIND\[LENGTH\]"):
    example_schema.parse_schema({"x": text})


def test_check_only_example_fields_refuses_sequence_examples() -> None:
  sequence = tf.train.SequenceExample()
  sequence.context.feature["id"].int64_list.value.append(1)
  sequence.feature_lists.feature_list["frames"].feature.add().int64_list.value.append(2)
  parsed = example_schema.parse_example(sequence.SerializeToString(), "seq.tfrecord", 4)
  assert list(parsed.features.feature) == ["id"]  # protobuf alone accepts it silently
  with pytest.raises(errors.SchemaError, match=r"seq.tfrecord: record 4 is not a tf.train.Example.*SequenceExample"):
    example_schema.check_only_example_fields(parsed, "seq.tfrecord", 4)
  plain = _proto({"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})
  example_schema.check_only_example_fields(plain, "ok.tfrecord", 0)


# -- example_schema.infer_files: the batched pass gives what the exact one gives --


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited protobuf field."""
  return bytes([number << 3 | 2]) + serialization.varint(len(payload)) + payload


def _packed(values: list[int]) -> bytes:
  return b"".join(serialization.varint(value & (2**64 - 1)) for value in values)


def _wire(*entries: tuple[str, bytes]) -> bytes:
  """An Example of map entries in the order given; each value is a serialized Feature."""
  return _field(1, b"".join(_field(1, _field(1, key.encode()) + _field(2, feature)) for key, feature in entries))


def _ints(values: list[int]) -> bytes:
  return _field(3, _field(1, _packed(values)) if values else b"")


def _floats(values: list[float]) -> bytes:
  return _field(2, _field(1, np.asarray(values, "<f4").tobytes()) if values else b"")


def _strings(values: list[bytes]) -> bytes:
  return _field(1, b"".join(_field(1, value) for value in values))


def _exact_inference(files: list[tfrecord_io.RecordFile]):
  """What infer_files must give: every record parsed, checked and merged in order."""
  schema, counts, first_seen = None, [], None
  for file in files:
    count = 0
    for index, record in enumerate(record_index.read_records(file)):
      example = example_schema.parse_example(record, file.name, index)
      example_schema.check_only_example_fields(example, file.name, index)
      spec = example_schema.spec_of(example)
      if schema is None:
        schema, first_seen = spec, f"{file.name}: record {index}"
      else:
        schema = example_schema.merge(schema, spec, file.name, index, first_seen)
      count += 1
    counts.append(count)
  return schema, counts


def _outcome(infer, files):
  try:
    return infer(files)
  except (errors.SchemaError, errors.SourceError) as error:
    return type(error).__name__, str(error)


_CANONICAL = [
    _wire(("a", _ints([1])), ("b", _strings([b"x" * 200])), ("c", _floats([1.5, 2.0]))),
    _wire(("c", _floats([0.5, 1.0])), ("a", _ints([-1])), ("b", _strings([b""]))),  # other key order
    _wire(("a", _ints([2**40])), ("b", _strings([b"y"])), ("c", _floats([3.0, 4.0]))),
]
_UNPACKED = _field(1, _field(1, _field(1, b"a") + _field(2, _field(3, b"\x08\x05")))
                   + _field(1, _field(1, b"b") + _field(2, _strings([b"z"])))
                   + _field(1, _field(1, b"c") + _field(2, _field(2, b"\x0d" + np.float32(1).tobytes() * 1 + b"\x0d" + np.float32(2).tobytes()))))
_VALUE_BEFORE_KEY = _field(1, _field(1, _field(2, _ints([7])) + _field(1, b"a"))
                           + _field(1, _field(1, b"b") + _field(2, _strings([b"q"])))
                           + _field(1, _field(1, b"c") + _field(2, _floats([1.0, 1.0]))))
_SEQUENCE = tf.train.SequenceExample(
    context=tf.train.Features(feature={"a": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}),
    feature_lists=tf.train.FeatureLists(feature_list={"f": tf.train.FeatureList(feature=[tf.train.Feature()])}),
).SerializeToString()


@pytest.mark.parametrize("compression", [None, "GZIP"])
@pytest.mark.parametrize("batch_bytes", [48, 700, 16 << 20])
@pytest.mark.parametrize("records, more", [
    pytest.param(_CANONICAL, [], id="canonical"),
    pytest.param(_CANONICAL, [_wire(("a", _ints([1, 2])), ("b", _strings([b"1", b"2"])), ("c", _floats([])))], id="lengths-vary"),
    pytest.param(_CANONICAL, [_UNPACKED, _VALUE_BEFORE_KEY], id="valid-unusual-encodings"),
    pytest.param(_CANONICAL, [_wire(("a", b""), ("b", _strings([b"k"])), ("c", _floats([1.0, 2.0])))], id="kind-less-feature"),
    pytest.param(_CANONICAL, [_wire(("a", _ints([1])), ("a", _ints([2])), ("b", _strings([b"k"])), ("c", _floats([1, 2])))], id="duplicate-key"),
    pytest.param(_CANONICAL, [_wire(("a", _ints([1])), ("b", _strings([b"v"] * 100)), ("c", _floats([1, 2])))], id="long-bytes-list"),
    pytest.param(_CANONICAL, [_wire(("a", _field(3, _field(1, b"\xff" * 10 + b"\x01"))), ("b", _strings([b""])), ("c", _floats([1, 2])))], id="11-byte-varint"),
    pytest.param(_CANONICAL, [_wire(("a", _ints([1])), ("b", _strings([b"k"])), ("c", _floats([1, 2])), ("d", _ints([])))], id="extra-feature"),
    pytest.param(_CANONICAL, [_wire(("a", _ints([1])), ("c", _floats([1, 2])))], id="missing-feature"),
    pytest.param(_CANONICAL, [_wire(("a", _floats([1])), ("b", _strings([b"k"])), ("c", _floats([1, 2])))], id="other-kind"),
    pytest.param(_CANONICAL, [_CANONICAL[0] + _field(2, b"unknown")], id="unknown-field"),
    pytest.param(_CANONICAL, [b"\xff\xff not a proto"], id="not-an-example"),
    pytest.param([_SEQUENCE], _CANONICAL, id="sequence-example"),
    pytest.param([b""], _CANONICAL, id="empty-example-first"),
    pytest.param([], _CANONICAL, id="empty-file-first"),
])
def test_infer_files_gives_what_the_exact_pass_gives(tmp_path, monkeypatch, batch_bytes, compression, records, more) -> None:
  monkeypatch.setattr(example_schema, "_BATCH_BYTES", batch_bytes)  # 48: one record outgrows the buffer
  monkeypatch.setattr(record_index, "_WINDOW_BYTES", batch_bytes)  # and the mapped window
  files = []
  for number, file_records in enumerate([records * 3, records + more + records]):
    path = tmp_path / f"part-{number}.tfrecord"
    with tf.io.TFRecordWriter(str(path), options=compression) as writer:
      for record in file_records:
        writer.write(record)
    files += tfrecord_io.expand([str(path)])
  assert _outcome(example_schema.infer_files, files) == _outcome(_exact_inference, files)


def test_infer_files_parses_only_the_first_of_canonical_records(tmp_path, monkeypatch) -> None:
  path = tmp_path / "many.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in _CANONICAL * 100:
      writer.write(record)
  parsed = []
  parse = example_schema.parse_example
  monkeypatch.setattr(example_schema, "parse_example", lambda *args: parsed.append(args[2]) or parse(*args))
  schema, counts = example_schema.infer_files(tfrecord_io.expand([str(path)]))
  assert parsed == [0] and counts == [300]
  assert schema == {"a": example_schema.FeatureSpec("int64_list", 1), "b": example_schema.FeatureSpec("bytes_list", 1),
                    "c": example_schema.FeatureSpec("float_list", 2)}
  assert example_schema.infer_files([]) == (None, [])


def test_infer_files_reports_corruption_before_a_schema_error(tmp_path) -> None:
  path = tmp_path / "bad.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in _CANONICAL:
      writer.write(record)
  data = bytearray(path.read_bytes())
  data[12 + 3] ^= 0xFF  # inside record 0's Example, so it no longer parses; its CRC no longer matches
  path.write_bytes(bytes(data))
  with pytest.raises(errors.SourceError, match=r"bad.tfrecord: record 0 is corrupt or truncated"):
    example_schema.infer_files(tfrecord_io.expand([str(path)]))
  data[12 + 3] ^= 0xFF
  path.write_bytes(bytes(data[:-3]))  # a truncated last record
  with pytest.raises(errors.SourceError, match=r"bad.tfrecord: record 2 is corrupt or truncated"):
    example_schema.infer_files(tfrecord_io.expand([str(path)]))



@pytest.mark.parametrize("file_format", [file_adapters.FileFormat.TFRECORD, file_adapters.FileFormat.ARRAY_RECORD])
def test_split_writer_formats_hold_the_same_records_and_lengths(tmp_path, file_format) -> None:
  records = [(i, _encode_mapping({"i": bytes([i]) * 100})) for i in range(30)]
  template = naming.ShardedFileTemplate(
      data_dir=tmp_path, dataset_name="demo", split="train", filetype_suffix=file_format.file_suffix
  )
  info = shard_writer.SplitWriter(template, file_format, max_shard_bytes=1000).write(records)
  # TFDS's rule at a 1000-byte max: ceil(30 framed records / 1000 B) shards, counts as even as TFDS cuts them.
  num_shards = -(-30 * (len(records[0][1]) + wire.FRAME_BYTES) // 1000)
  ends = [round(30 * i / num_shards) for i in range(num_shards + 1)]
  expected = [stop - start for start, stop in zip(ends, ends[1:])]
  assert list(info.shard_lengths) == expected
  shards = [template.sharded_filepath(shard_index=i, num_shards=len(expected)) for i in range(len(expected))]
  if file_format == file_adapters.FileFormat.TFRECORD:
    read_back = [r.numpy() for r in tf.data.TFRecordDataset([str(p) for p in shards])]
  else:
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

    read_back = [record for p in shards for record in array_record_module.ArrayRecordReader(str(p)).read_all()]
  assert read_back == [serialized for _, serialized in records]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, -1, -(2**63), 2**63 - 1, 2**35])
def test_int64_scalar_feature_matches_protobuf(value: int) -> None:
  encoded = serialization.example([[serialization.int64_scalar_encoder(serialization.FeatureKey("n"))(value)]])
  expected = _proto({"n": tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))})
  assert tf.train.Example.FromString(encoded) == expected


def test_check_choice_names_the_field_value_and_choices() -> None:
  errors.check_choice("rows", ("rows", "files"), "layout")
  with pytest.raises(errors.ConfigError, match=r"^layout='cols'; use one of \('rows', 'files'\)\.$"):
    errors.check_choice("cols", ("rows", "files"), "layout")
  with pytest.raises(ValueError, match=r"^cfg: mode='x'"):
    errors.check_choice("x", ("a",), "mode", lambda message: ValueError(f"cfg: {message}"))


def test_prepared_builder_expands_home_and_refuses_an_unprepared_name(tmp_path, monkeypatch) -> None:
  import tfds_builders.numpy_arrays  # pylint: disable=import-outside-toplevel
  from tfds_builders.core import errors  # pylint: disable=import-outside-toplevel
  from tfds_builders.core import tfrecord_io  # pylint: disable=import-outside-toplevel

  tfds_builders.numpy_arrays.Builder(config="demo", data_dir=str(tmp_path / "tfds")).download_and_prepare()
  monkeypatch.setenv("HOME", str(tmp_path))
  # `~` as a shell would expand it, by name and by directory (TFDS alone takes it literally).
  by_name = tfrecord_io.prepared_builder("numpy_arrays/demo:1.0.0", "~/tfds")
  assert dict(by_name.info.splits.items()).keys() == {"train", "test"}
  assert by_name.info.splits["train"].num_examples == 8
  by_dir = tfrecord_io.prepared_builder("~/tfds/numpy_arrays/demo/1.0.0")
  assert by_dir.info.splits["test"].num_examples == 2
  # TFDS hands back an unprepared builder with no splits for a name it cannot find prepared.
  with pytest.raises(errors.SourceError, match=r"No prepared TFDS dataset at 'numpy_arrays/demo:1.0.0' in data_dir "
                     r".*elsewhere.*Pass a version directory"):
    tfrecord_io.prepared_builder("numpy_arrays/demo:1.0.0", str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("name", ["../x", "a/b", "1.0.0", ""])
def test_a_config_name_that_is_no_tfds_config_name_is_refused_before_anything_is_written(tmp_path, name):
  # The name becomes a folder under data_dir/<builder>/: "../x" would write beside it.
  from tfds_builders import cross_product  # pylint: disable=import-outside-toplevel

  config = dataclasses.replace(cross_product.Builder.BUILDER_CONFIGS[0], name=name)
  with pytest.raises(errors.ConfigError, match="is not a valid TFDS config name|looks like a version"):
    cross_product.Builder(config=config, data_dir=str(tmp_path / "data"))
  assert not (tmp_path / "x").exists() and not any((tmp_path).rglob("dataset_info.json"))


def test_map_entries_gives_each_entry_as_stored_and_refuses_what_is_no_example():
  entries = [b"".join(serialization.int64_feature(serialization.FeatureKey("a"), (1, 300))),
             b"".join(serialization.bytes_feature(serialization.FeatureKey("é"), b"xyz"))]
  example = serialization.example_from_entries(entries)
  assert list(serialization.map_entries(example)) == [("a", entries[0]), ("é", entries[1])]
  assert tf.train.Example.FromString(example).features.feature["a"].int64_list.value == [1, 300]
  for broken in (example[:-1], example[:1] + b"\xff" * 11):
    with pytest.raises(ValueError, match="runs past its message|truncated varint"):
      list(serialization.map_entries(broken))
