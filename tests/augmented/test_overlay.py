"""Overlays: load_augmented equals materialize, alignment and base checks, the walk that reads only frames and keys."""

from __future__ import annotations

import functools
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders
from tfds_builders.augmented import Builder
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tests import helpers
from tests.augmented.common import FUNCTIONS
from tests.augmented.common import assert_examples_equal
from tests.augmented.common import assert_nothing_loadable
from tests.helpers import example_bytes
from tests.augmented.common import examples
from tests.augmented.common import features_of
from tests.augmented.common import frames_of
from tests.augmented.common import labels_csv
from tests.augmented.common import prepared_dir
from tests.augmented.common import provenance_of
from tests.augmented.common import raw_base
from tests.augmented.common import read_records
from tests.augmented.common import stored

make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)


# -------------------------------------------------------------- overlay --


@pytest.mark.parametrize("split", ["train", "test", "train[2:6]", "train[:50%]+test", "test[-2:]", "train[1:2]"])
def test_overlay_load_equals_materialize(tmp_path, split):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  config = dict(base_records=sources, side_table=table, join_key="id", function=f"{FUNCTIONS}:score_and_words",
                features={"words": "string[None]"})
  materialized = build(tmp_path, "full", **config)
  overlay = build(tmp_path, "over", mode="overlay", **config)
  want = examples(materialized.as_dataset(split=split))
  got = load_augmented(overlay.data_dir, split=split)
  assert_examples_equal(examples(got), want)
  # By name too, and a list of splits gives a list of datasets.
  by_name = load_augmented("augmented/over", split=[split, "test"], data_dir=str(tmp_path / "tfds"))
  assert_examples_equal(examples(by_name[0]), want)
  assert len(examples(by_name[1])) == 3


def test_overlay_holds_only_the_new_fields_and_alignment(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  assert set(overlay.info.features) == {"label", "weight", "_base_index", "_base_fingerprint"}
  base_records = read_records(sources["train"])
  frames = frames_of(sources["train"])
  for index, (record, raw, (length, crc)) in enumerate(zip(stored(overlay), base_records, frames, strict=True)):
    assert set(features_of(record)) == {"label", "weight", "_base_index", "_base_fingerprint"}
    decoded = overlay.info.features.deserialize_example_np(record)
    assert decoded["_base_index"] == index
    assert length == len(raw)
    assert decoded["_base_fingerprint"] == (length << 32 | crc)
  metadata = overlay.info.metadata["augmented"]
  assert metadata["mode"] == "overlay"
  assert metadata["base"]["kind"] == "records"
  assert metadata["base"]["splits"]["train"] == [["train-0.tfrecord", "", 4, os.path.getsize(sources["train"][0])],
                                                 ["train-1.tfrecord", "", 3, os.path.getsize(sources["train"][1])]]
  assert metadata["missing"] == {"train": 0, "test": 0}


def test_overlay_of_a_prepared_base_with_shard_slices(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  overlay = build(tmp_path, mode="overlay", base=str(prepared_dir(prepared_base)), side_table=str(table),
                  join_key="id", overwrite_fields=["label"])
  base_builder = tfds.builder_from_directory(str(prepared_dir(prepared_base)))
  base_examples = examples(base_builder.as_dataset(split="train", shuffle_files=False))
  got = examples(load_augmented(overlay.data_dir, split="train"))
  assert [e["id"] for e in got] == [e["id"] for e in base_examples]
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]  # overwritten
  np.testing.assert_array_equal([e["image"] for e in got], [e["image"] for e in base_examples])
  # `shard` slices count the base's shards, as for the base itself.
  shard_lengths = base_builder.info.splits["train"].shard_lengths
  assert len(shard_lengths) == 3
  sliced = examples(load_augmented(overlay.data_dir, split="train[1shard:2shard]"))
  assert [e["id"] for e in sliced] == [e["id"] for e in base_examples[shard_lengths[0]:sum(shard_lengths[:2])]]
  with pytest.raises(errors.ConfigError, match="does not apply to the overlay's splits"):
    load_augmented(overlay.data_dir, split="validation")
  # Decoders reach the base features; the slice's cardinality is known.
  undecoded = load_augmented(overlay.data_dir, split="test[:3]", decoders={"image": tfds.decode.SkipDecoding()})
  assert int(undecoded.cardinality()) == 3
  assert all(e["image"].startswith(b"\x89PNG") for e in examples(undecoded))


def test_overlay_rejects_another_base(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  overlay = build(tmp_path, mode="overlay", base=str(prepared_dir(prepared_base)), side_table=str(table),
                  join_key="id", overwrite_fields=["label"])
  # Another version of the base, by directory and by name.
  with pytest.raises(errors.SourceError, match=r"built from another base .*version is '1.1.0', the overlay was built from '1.2.0'"):
    load_augmented(overlay.data_dir, split="train", base=str(prepared_dir(prepared_base, "1.1.0")))
  with pytest.raises(errors.SourceError, match="version is '1.1.0'"):
    load_augmented(overlay.data_dir, split="train", base="augmented_test_base:1.1.0", base_data_dir=str(prepared_base))
  # Another dataset altogether.
  other = build(tmp_path, "other", base_records=raw_base(tmp_path / "raw"), side_table=str(labels_csv(tmp_path / "o.csv", range(100, 110))), join_key="id")
  with pytest.raises(errors.SourceError, match="name is 'augmented/other', the overlay was built from 'augmented_test_base'"):
    load_augmented(overlay.data_dir, split="train", base=other.data_dir)
  # The right base, by name, loads.
  assert len(examples(load_augmented(overlay.data_dir, split="test", base="augmented_test_base:1.2.0", base_data_dir=str(prepared_base)))) == 4


def test_overlay_rejects_raw_files_that_differ(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  other = raw_base(tmp_path / "other", {"train": [4, 4], "test": [3]})
  with pytest.raises(errors.SourceError, match=r"not those the overlay was built from: train-1.tfrecord is \d+ bytes"):
    load_augmented(overlay.data_dir, split="train", base=other)
  with pytest.raises(errors.ConfigError, match="built from raw TFRecord files; pass them as base="):
    load_augmented(overlay.data_dir, split="train", base=str(tmp_path / "raw"))
  with pytest.raises(errors.SourceError, match="1 files, the overlay's base had 2"):
    load_augmented(overlay.data_dir, split="train", base={"train": sources["train"][:1], "test": sources["test"]})
  # The same files moved elsewhere load when passed explicitly.
  moved = tmp_path / "moved"
  shutil.copytree(tmp_path / "raw", moved)
  shutil.rmtree(tmp_path / "raw")
  with pytest.raises(errors.SourceError, match="No TFRecord file found"):
    load_augmented(overlay.data_dir, split="train")
  got = examples(load_augmented(overlay.data_dir, split="train", base={"train": str(moved / "train-*"), "test": str(moved / "test-*")}))
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]


def test_overlay_detects_a_base_rewritten_in_place(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  # Record 5 of train (second file, index 1) gets other text of the same length:
  # the files keep their names, sizes and counts, only the content differs.
  second = pathlib.Path(sources["train"][1])
  records = read_records([second])
  changed = records[1].replace(b"word105", b"WORD105")
  assert len(changed) == len(records[1]) and changed != records[1]
  helpers.write_records(second, [records[0], changed, records[2]])
  assert len(examples(load_augmented(overlay.data_dir, split="train[:5]"))) == 5  # before it: fine
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"does not match its base at base example.*\b5\b"):
    examples(load_augmented(overlay.data_dir, split="train"))
  with pytest.raises(tf.errors.InvalidArgumentError, match="does not match its base"):
    examples(load_augmented(overlay.data_dir, split="train[5:6]"))


def test_overlay_detects_misaligned_overlay_records(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  shard = overlay.info.splits["train"].filepaths[0]
  records = read_records([shard])
  helpers.write_records(pathlib.Path(shard), [records[1], records[0], *records[2:]])  # two overlay examples swapped
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"misaligned with its base.*base example.*\b0\b.*holds base index.*\b1\b"):
    examples(load_augmented(overlay.data_dir, split="train"))


def test_overlay_detects_a_base_with_fewer_records_than_recorded(tmp_path):
  sources = raw_base(tmp_path / "raw", {"train": [4]})
  overlay = build(tmp_path, mode="overlay", base_records=sources,
                  side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 104))), join_key="id")
  # The last record is dropped and the one before grows by as many bytes, so
  # the file keeps its name and size: only the loader's checks can tell.
  path = pathlib.Path(sources["train"][0])
  size = path.stat().st_size
  records = read_records([path])
  for pad in range(len(records[3]), len(records[3]) + 32):
    grown = example_bytes(id=[102], text=[b"x" * pad], score=[1.0], tokens=[0])
    helpers.write_records(path, [*records[:2], grown])
    if path.stat().st_size == size:
      break
  assert path.stat().st_size == size
  assert len(examples(load_augmented(overlay.data_dir, split="train[:2]"))) == 2
  with pytest.raises(tf.errors.InvalidArgumentError, match="does not match its base at base example"):
    examples(load_augmented(overlay.data_dir, split="train"))
  with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 1 element but contained only 0"):
    examples(load_augmented(overlay.data_dir, split="train[3:]"))


def test_load_augmented_refuses_what_is_not_an_overlay(tmp_path):
  materialized = build(tmp_path, base_records=raw_base(tmp_path / "raw"),
                       side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 110))), join_key="id")
  with pytest.raises(errors.SourceError, match="mode='materialize': it already holds the base features"):
    load_augmented(materialized.data_dir, split="train")
  other = tfds.builder("numpy_arrays/demo", data_dir=str(tmp_path / "np"))
  other.download_and_prepare()
  with pytest.raises(errors.SourceError, match="is not an overlay"):
    load_augmented(other.data_dir, split="train")
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset"):
    load_augmented(str(tmp_path / "nowhere"), split="train")


def test_the_package_level_loader_delegates_to_the_overlay_loader(tmp_path):
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset"):
    tfds_builders.load_augmented(str(tmp_path / "nowhere"), split="train")


# ------------------------------------------------ the overlay's sparse read --


@pytest.mark.parametrize("missing_policy", ["error", "skip"])
def test_overlay_reading_frames_equals_one_reading_every_record(tmp_path, missing_policy):
  sources = raw_base(tmp_path / "raw")
  kept = [i for i in range(100, 110) if missing_policy == "error" or i % 4]
  config = dict(base_records=sources, side_table=str(labels_csv(tmp_path / "l.csv", kept)), join_key="id",
                mode="overlay", missing_policy=missing_policy)
  sparse = build(tmp_path, "sparse", **config)
  verified = build(tmp_path, "verified", verify_base=True, **config)
  for split in ("train", "test"):
    assert stored(sparse, split) == stored(verified, split)
  assert_examples_equal(examples(load_augmented(sparse.data_dir, split="train")),
                        examples(load_augmented(verified.data_dir, split="train")))
  # The sparse overlay learned the raw base's schema (tokens: lengths 1 to 3) and counts in its own walk.
  assert sparse.info.metadata["augmented"]["base"] == verified.info.metadata["augmented"]["base"]
  assert sparse.info.metadata["augmented"]["base"]["features"]["content"]["features"]["tokens"]["tensor"]["shape"] == {"dimensions": ["-1"]}
  assert provenance_of(sparse)["base"] == provenance_of(verified)["base"]


def _flip_a_byte_of_record_1(path: pathlib.Path, records: list[bytes]) -> None:
  data = bytearray(helpers.write_records(path, records).read_bytes())
  data[12 + len(records[0]) + 4 + 12 + 5] ^= 0xFF  # inside record 1's Example (12-byte header, 4-byte CRC)
  path.write_bytes(bytes(data))


def _truncate(path: pathlib.Path, records: list[bytes]) -> None:
  path.write_bytes(helpers.write_records(path, records).read_bytes()[:-3])


def _replace_record_1(record: bytes):
  return lambda path, records: helpers.write_records(path, [records[0], record] + records[2:])


# Ways to damage a base file of 3 records: each writes the damaged file.
BAD_SECOND_FILES = {
    "corrupt": _flip_a_byte_of_record_1,
    "truncated": _truncate,
    "other-kind": _replace_record_1(example_bytes(id=[b"two"], text=[b"t"], score=[1.0], tokens=[1])),
    "not-an-example": _replace_record_1(b"\xff\xff not a proto"),
    "extra-feature": _replace_record_1(example_bytes(id=[1], text=[b"t"], score=[1.0], tokens=[1], x=[2])),
}


@pytest.mark.parametrize("damage", sorted(BAD_SECOND_FILES))
def test_a_walked_overlay_names_a_bad_base_record_as_a_first_read_does(tmp_path, damage):
  """An overlay learns a raw base's schema in its walk: a bad record fails the build with the first read's error."""
  sources = raw_base(tmp_path / "raw")
  path = pathlib.Path(sources["train"][1])
  original = path.read_bytes()
  BAD_SECOND_FILES[damage](path, read_records([path]))
  table = str(labels_csv(tmp_path / "l.csv", range(100, 110)))
  with pytest.raises((errors.SourceError, errors.SchemaError)) as first_read:
    make_builder(tmp_path, base_records=sources, side_table=table, join_key="id")  # materialize: read first
  with pytest.raises(first_read.type) as walked:
    build(tmp_path, "o", mode="overlay", base_records=sources, side_table=table, join_key="id")
  bad = f"{path}: record {2 if damage == 'truncated' else 1} "  # the last record is truncated
  assert bad in str(walked.value) and bad in str(first_read.value)
  if damage != "truncated":  # the frame walk words a truncated record its own way
    assert str(walked.value) == str(first_read.value)
  assert_nothing_loadable(tmp_path / "tfds")
  path.write_bytes(original)  # repaired: a rerun succeeds
  builder = build(tmp_path, "o", mode="overlay", base_records=sources, side_table=table, join_key="id")
  assert builder.info.splits["train"].num_examples == 7


def test_a_walked_overlay_cut_short_still_records_the_whole_base(tmp_path):
  sources = raw_base(tmp_path / "raw")
  config = dict(mode="overlay", base_records=sources, side_table=str(labels_csv(tmp_path / "l.csv", range(100, 110))),
                join_key="id")
  whole = build(tmp_path, "whole", **config)
  cut = make_builder(tmp_path, "cut", **config)
  cut.download_and_prepare(download_config=tfds.download.DownloadConfig(max_examples_per_split=2))
  assert cut.info.splits["train"].num_examples == 2
  assert cut.info.metadata["augmented"]["base"] == whole.info.metadata["augmented"]["base"]


def test_a_walked_overlay_skips_empty_files_and_refuses_an_empty_split(tmp_path):
  sources = raw_base(tmp_path / "raw")
  empty = tmp_path / "raw" / "empty.tfrecord"
  empty.write_bytes(b"")
  table = str(labels_csv(tmp_path / "l.csv", range(100, 110)))
  builder = build(tmp_path, "o", mode="overlay", base_records={"train": [str(empty)] + sources["train"]},
                  side_table=table, join_key="id")
  assert builder.info.metadata["augmented"]["base"]["splits"]["train"][0] == ["empty.tfrecord", "", 0, 0]
  assert [e["id"] for e in examples(load_augmented(builder.data_dir, split="train"))] == list(range(100, 107))
  with pytest.raises(errors.SourceError, match=r"Base split\(s\) \['test'\] hold no records"):
    make_builder(tmp_path, "e", mode="overlay", base_records={"train": sources["train"], "test": [str(empty)]},
                 side_table=table, join_key="id")
  with pytest.raises(errors.SourceError, match=r"hold no records\. Give files with at least one"):
    make_builder(tmp_path, "n", mode="overlay", base_records={"train": [str(empty)]}, side_table=table, join_key="id")


def test_verify_base_applies_to_overlays_only(tmp_path):
  with pytest.raises(errors.ConfigError, match="verify_base only applies with mode='overlay'"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table="x.csv", join_key="id", verify_base=True)


def _with_two_ids(record: bytes) -> bytes:
  example = tf.train.Example.FromString(record)
  example.features.feature["id"].int64_list.value.append(7)
  return example.SerializeToString()


def _prepared_copy_with(tmp_path: pathlib.Path, prepared_base: pathlib.Path, replace) -> tuple[pathlib.Path, str, int]:
  """A copy of the prepared base whose second train shard has its record 1 replaced (`replace(record)`)."""
  base_dir = tmp_path / "base"
  shutil.copytree(prepared_dir(prepared_base), base_dir)
  shard = tfds.builder_from_directory(str(base_dir)).info.splits["train"].filepaths[1]
  records = read_records([shard])
  records[1] = replace(records[1])
  helpers.write_records(pathlib.Path(shard), records)
  return base_dir, pathlib.Path(shard).name, 1


@pytest.mark.parametrize("replace, message", [
    (lambda record: _with_two_ids(record), r"record 1 has 2 values of join key 'id'"),
    (lambda record: b"\xff\xff not a proto", r"record 1 is not a tf.train.Example"),
])
def test_overlay_names_the_record_whose_join_key_it_cannot_read(tmp_path, prepared_base, replace, message):
  base_dir, shard_name, _ = _prepared_copy_with(tmp_path, prepared_base, replace)
  with pytest.raises(errors.SchemaError, match=rf"{shard_name}: {message}"):
    build(tmp_path, "o", mode="overlay", base=str(base_dir), side_table=str(labels_csv(tmp_path / "l.csv", range(16))),
          join_key="id", overwrite_fields=["label"])
  assert_nothing_loadable(tmp_path / "tfds")


def test_an_overlay_checks_record_data_when_building_and_when_loaded(tmp_path, prepared_base):
  base_dir, shard_name, _ = _prepared_copy_with(tmp_path, prepared_base, lambda record: record)
  shard = base_dir / shard_name
  config = dict(mode="overlay", base=str(base_dir), side_table=str(labels_csv(tmp_path / "l.csv", range(16))),
                join_key="id", overwrite_fields=["label"])
  overlay = build(tmp_path, "before", **config)  # built on the intact base
  data = bytearray(shard.read_bytes())
  # Inside the last record's PNG: not its join key, wherever protobuf put the map entries.
  data[data.rindex(b"\x89PNG") + 20] ^= 0xFF
  shard.write_bytes(bytes(data))
  last = tfds.builder_from_directory(str(base_dir)).info.splits["train"].shard_lengths[1] - 1
  corrupt = rf"{shard_name}: record {last} is corrupt or truncated \(at byte \d+: its \d+ bytes of data do not match"
  for name, options in (("verified", {"verify_base": True}), ("sparse", {})):
    with pytest.raises(errors.SourceError, match=corrupt):
      build(tmp_path, name, **options, **config)
  assert not list((tmp_path / "tfds" / "augmented").glob("verified/*/dataset_info.json"))
  assert not list((tmp_path / "tfds" / "augmented").glob("sparse/*/dataset_info.json"))
  # The overlay built before the damage: the loader names the base file and record.
  with pytest.raises(errors.SourceError, match=rf"cannot be read from base example train\[\d+\] on: .*{shard_name}: record {last}"):
    examples(load_augmented(overlay.data_dir, split="train"))


def test_an_overlay_names_a_record_whose_header_is_corrupt(tmp_path, prepared_base):
  base_dir, shard_name, _ = _prepared_copy_with(tmp_path, prepared_base, lambda record: record)
  shard = base_dir / shard_name
  offset = 16 + len(read_records([shard])[0])  # record 1's header
  data = bytearray(shard.read_bytes())
  data[offset + 1] ^= 0xFF  # its length
  shard.write_bytes(bytes(data))
  with pytest.raises(errors.SourceError, match=rf"{shard_name}: record 1 \(at byte {offset}\) has a corrupt header"):
    build(tmp_path, "o", mode="overlay", base=str(base_dir), side_table=str(labels_csv(tmp_path / "l.csv", range(16))),
          join_key="id", overwrite_fields=["label"])
  assert_nothing_loadable(tmp_path / "tfds")


