"""Compaction: an overlay chain materialized into one dataset, byte-identical to materialize of the same fields."""

from __future__ import annotations

import functools
import hashlib
import pathlib

import pytest
import tensorflow_datasets as tfds

from tfds_builders import cli
from tfds_builders.augmented import Builder
from tfds_builders.augmented import BuilderConfig
from tfds_builders.augmented import compact
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tests import helpers
from tests.augmented.common import FUNCTIONS
from tests.augmented.common import assert_examples_equal
from tests.augmented.common import examples
from tests.augmented.common import features_of
from tests.augmented.common import labels_csv
from tests.augmented.common import prepared_dir
from tests.augmented.common import raw_base
from tests.augmented.common import read_records
from tests.augmented.common import stored

build = functools.partial(helpers.build, Builder)
WORDS = dict(function=f"{FUNCTIONS}:score_and_words", features={"words": "string[None]"})


def _hashes(*roots: pathlib.Path) -> dict[str, str]:
  return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()
          for root in roots for path in sorted(pathlib.Path(root).rglob("*")) if path.is_file()}


def _assert_same_records(left, right) -> None:
  for split in ("train", "test"):
    assert stored(left, split) == stored(right, split), split


def test_compacting_an_overlay_gives_the_bytes_of_materialize(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  overlay = build(tmp_path, "over", mode="overlay", base_records=sources, side_table=table, join_key="id")
  materialized = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id")
  compacted = build(tmp_path, "compact", base=str(overlay.data_path))
  _assert_same_records(compacted, materialized)
  assert str(compacted.version) == "1.1.0"  # the minor version after the overlay's
  assert compacted.info.release_notes == {
      "1.1.0": "Compacts the overlay chain tfrecords <- augmented/over/1.0.0 into one dataset."}
  assert set(compacted.info.features) == {"id", "text", "score", "tokens", "label", "weight"}
  assert compacted.info.metadata["augmented"]["parent"]["name"] == "augmented/over/1.0.0"


@pytest.mark.parametrize("missing_policy", ["error", "skip"])
def test_compacting_a_chain_gives_the_bytes_of_materialize_of_all_fields(tmp_path, missing_policy):
  sources = raw_base(tmp_path / "raw")
  table = labels_csv(tmp_path / "labels.csv", range(100, 110) if missing_policy == "error" else [100, 103, 106, 107])
  policy = dict(missing_policy=missing_policy)
  link1 = build(tmp_path, "link1", mode="overlay", base_records=sources, side_table=table, join_key="id", **policy)
  link2 = build(tmp_path, "link2", mode="overlay", base=str(link1.data_path), **WORDS)
  materialized = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id", **policy, **WORDS)
  compacted = build(tmp_path, "compact", base=str(link2.data_path))
  _assert_same_records(compacted, materialized)
  assert str(compacted.version) == "1.2.0"
  # A compaction may add fields of its own, after the chain's: the function's, here.
  with_function = build(tmp_path, "plus", base=str(link1.data_path), **WORDS)
  _assert_same_records(with_function, materialized)


def test_compacting_a_chain_of_a_prepared_base_drops_overwritten_base_features(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  base = str(prepared_dir(prepared_base))
  link1 = build(tmp_path, "link1", mode="overlay", base=base, side_table=table, join_key="id", overwrite_fields=["label"])
  link2 = build(tmp_path, "link2", mode="overlay", base=str(link1.data_path), function=f"{FUNCTIONS}:caption_length")
  materialized = build(tmp_path, "full", base=base, side_table=table, join_key="id", overwrite_fields=["label"],
                       function=f"{FUNCTIONS}:caption_length")
  compacted = build(tmp_path, "compact", base=str(link2.data_path))
  _assert_same_records(compacted, materialized)
  assert_examples_equal(examples(compacted.as_dataset(split="train")), examples(load_augmented(link2.data_dir, split="train")))


def test_compacting_overwrites_and_constants_equals_loading_the_chain(tmp_path):
  sources = raw_base(tmp_path / "raw")
  link1 = build(tmp_path, "link1", mode="overlay", base_records=sources,
                side_table=labels_csv(tmp_path / "labels.csv", range(100, 110)), join_key="id")
  link2 = build(tmp_path, "link2", mode="overlay", base=str(link1.data_path),
                side_table=labels_csv(tmp_path / "again.csv", range(100, 110)), join_key="id",
                side_table_columns=["label"], overwrite_fields=["label"])
  link3 = build(tmp_path, "link3", mode="overlay", base=str(link2.data_path), constant_fields={"source": "web"})
  compacted = build(tmp_path, "compact", base=str(link3.data_path))
  for split in ("train", "test"):
    assert_examples_equal(examples(compacted.as_dataset(split=split)), examples(load_augmented(link3.data_dir, split=split)))
  # The label entry is link 2's alone: one value per record, not two appended.
  labels = [list(features_of(record)["label"].int64_list.value) for record in stored(compacted)]
  assert labels == [[index % 3] for index in range(100, 107)]


def test_compaction_checks_every_link_record(tmp_path):
  sources = raw_base(tmp_path / "raw")
  link1 = build(tmp_path, "link1", mode="overlay", base_records=sources,
                side_table=labels_csv(tmp_path / "labels.csv", range(100, 110)), join_key="id")
  shard = pathlib.Path(link1.info.splits["train"].filepaths[0])
  records = read_records([shard])
  helpers.write_records(shard, [records[1], records[0], *records[2:]])
  with pytest.raises(errors.SourceError, match=r"link overlay augmented/link1/1.0.0 at .* is misaligned with its "
                     r"base: the record read for base example train\[0\] holds base index 1"):
    build(tmp_path, "compact", base=str(link1.data_path))


def test_the_compact_command_writes_a_new_version_and_only_reads(tmp_path, capsys):
  sources = raw_base(tmp_path / "raw")
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  link1 = build(tmp_path, "link1", mode="overlay", base_records=sources, side_table=table, join_key="id")
  link2 = build(tmp_path, "link2", mode="overlay", base=str(link1.data_path), **WORDS)
  before = _hashes(tmp_path / "raw", tmp_path / "tfds")
  out = tmp_path / "out"
  assert cli.main(["compact", str(link2.data_path), str(out)]) == cli.EXIT_OK
  written = out / "augmented" / "link2" / "1.2.0"
  assert capsys.readouterr().out.splitlines()[-1] == f"compacted {link2.data_path} into {written}"
  assert _hashes(tmp_path / "raw", tmp_path / "tfds") == before
  materialized = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id", **WORDS)
  _assert_same_records(tfds.builder_from_directory(str(written)), materialized)
  # By name, with a name and version of its own; the Python API says where it wrote.
  assert cli.main(["compact", "augmented/link2:1.1.0", str(out), "--data_dir", str(tmp_path / "tfds"),
                   "--name", "flat", "--version", "2.0.0"]) == cli.EXIT_OK
  assert capsys.readouterr().out.splitlines()[-1].endswith(str(out / "augmented" / "flat" / "2.0.0"))
  assert compact(str(link1.data_path), str(out)) == out / "augmented" / "link1" / "1.1.0"


def test_the_compact_command_refuses_what_is_not_an_overlay(tmp_path, capsys):
  materialized = build(tmp_path, "full", base_records=raw_base(tmp_path / "raw"),
                       side_table=labels_csv(tmp_path / "labels.csv", range(100, 110)), join_key="id")
  assert cli.main(["compact", str(materialized.data_path), str(tmp_path / "out")]) == cli.EXIT_ERROR
  err = capsys.readouterr().err
  assert err.count("\n") == 1
  assert err.startswith("tfds-builders compact: error: ") and "mode='materialize': it already holds the base" in err
  assert not (tmp_path / "out").exists()


def test_compacting_a_link_of_constants_gives_the_bytes_of_materialize_with_constants(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  constants = {"source": "web", "split_weight": {"train": 1.0, "test": 0.5}}
  link1 = build(tmp_path, "link1", mode="overlay", base_records=sources, side_table=table, join_key="id")
  link2 = build(tmp_path, "link2", mode="overlay", base=str(link1.data_path), constant_fields=constants)
  materialized = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id", constant_fields=constants)
  _assert_same_records(build(tmp_path, "compact", base=str(link2.data_path)), materialized)


def test_compact_never_replaces_a_dataset_and_checks_its_name_and_version(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  overlay = build(tmp_path, "over", mode="overlay", base_records=sources, side_table=table, join_key="id")
  data_dir = tmp_path / "tfds"
  with pytest.raises(errors.ConfigError, match=r"over/1.0.0 exists already \(the overlay itself\).*never replaces"):
    compact(str(overlay.data_path), str(data_dir), version="1.0.0")
  written = compact(str(overlay.data_path), str(data_dir))
  assert written == data_dir / "augmented" / "over" / "1.1.0"
  with pytest.raises(errors.ConfigError, match=r"over/1.1.0 exists already \(a prepared dataset\)"):
    compact(str(overlay.data_path), str(data_dir))
  with pytest.raises(errors.ConfigError, match=r"config name '../evil' is not a valid TFDS config name"):
    compact(str(overlay.data_path), str(tmp_path / "out"), name="../evil")
  with pytest.raises(errors.ConfigError, match=r"compact --version: version 'v2' is not a valid TFDS version"):
    compact(str(overlay.data_path), str(tmp_path / "out"), version="v2")
  assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_a_link_stored_as_array_record_is_refused_by_tf_data_readers_naming_the_one_that_reads_it(tmp_path):
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  config = dict(mode="overlay", base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id")
  overlay = Builder(config=BuilderConfig(name="ar", **config), data_dir=str(tmp_path / "tfds"),
                    file_format="array_record")
  overlay.download_and_prepare()
  refusal = r"is stored as ArrayRecord \(augmented-train.array_record-00000-of-00001\); {} reads .*augmented_source"
  with pytest.raises(errors.SourceError, match=refusal.format(r"load_augmented \(tf.data\)")):
    load_augmented(str(overlay.data_path), split="train")
  with pytest.raises(errors.SourceError, match=refusal.format("compaction")):
    compact(str(overlay.data_path), str(tmp_path / "out"))


def test_the_overlay_of_a_bundled_config_compacts_under_a_name_of_its_own(tmp_path, capsys):
  # TFDS refuses a custom config named like a bundled one: demo_overlay compacts as demo_overlay_compacted.
  Builder(config="demo_overlay", data_dir=str(tmp_path / "data")).download_and_prepare()
  out = tmp_path / "out"
  assert cli.main(["compact", "augmented/demo_overlay", str(out), "--data_dir", str(tmp_path / "data")]) == cli.EXIT_OK
  written = out / "augmented" / "demo_overlay_compacted" / "1.1.0"
  assert capsys.readouterr().out.splitlines()[-1].endswith(str(written))
  materialized = Builder(config="demo", data_dir=str(tmp_path / "data"))  # the same join, materialized
  materialized.download_and_prepare()
  _assert_same_records(tfds.builder_from_directory(str(written)), materialized)
  with pytest.raises(errors.ConfigError, match=r"compact --name 'demo' is the name of a bundled augmented config"):
    compact("augmented/demo_overlay", str(out), data_dir=str(tmp_path / "data"), name="demo")
