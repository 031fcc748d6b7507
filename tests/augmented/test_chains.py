"""Overlay chains: an overlay on an overlay, loaded through every link, and each refusal of a broken chain."""

from __future__ import annotations

import functools
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfds_builders.augmented import Builder
from tfds_builders.augmented import load_augmented
from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tests import helpers
from tests.augmented.common import FUNCTIONS
from tests.augmented.common import assert_examples_equal
from tests.augmented.common import examples
from tests.augmented.common import labels_csv
from tests.augmented.common import prepared_dir
from tests.augmented.common import raw_base
from tests.augmented.common import read_records
from tests.augmented.common import weights_csv

build = functools.partial(helpers.build, Builder)
WORDS = dict(function=f"{FUNCTIONS}:score_and_words", features={"words": "string[None]"})


def _two_links(tmp_path: pathlib.Path, **first: object):
  """A raw base, link 1 joining labels.csv on id, link 2 adding the function's fields on link 1."""
  sources = raw_base(tmp_path / "raw")
  table = labels_csv(tmp_path / "labels.csv", range(100, 110))
  link1 = build(tmp_path, "link1", mode="overlay", base_records=sources, side_table=table, join_key="id", **first)
  link2 = build(tmp_path, "link2", mode="overlay", base=link1.data_dir, **WORDS)
  return sources, table, link1, link2


def _edit_metadata(link, edit) -> None:
  path = pathlib.Path(link.data_dir) / "metadata.json"
  metadata = json.loads(path.read_text())
  edit(metadata[overlay_format.METADATA_KEY])
  path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("split", ["train", "test", "train[2:6]", "train[:50%]+test"])
def test_chain_loads_as_materialize_of_all_fields(tmp_path, split):
  sources, table, link1, link2 = _two_links(tmp_path)
  full = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id", **WORDS)
  assert_examples_equal(examples(load_augmented(link2.data_dir, split=split)),
                        examples(full.as_dataset(split=split)))
  # Link 1 alone still loads, without link 2's fields.
  assert set(examples(load_augmented(link1.data_dir, split="test"))[0]) == {
      "id", "text", "score", "tokens", "label", "weight"}


def test_a_link_records_its_parent_and_the_root_base(tmp_path):
  _, _, link1, link2 = _two_links(tmp_path)
  first, second = (link.info.metadata[overlay_format.METADATA_KEY] for link in (link1, link2))
  assert second["base"] == first["base"]  # the root base, which every link is aligned with
  assert second["parent"]["name"] == "augmented/link1/1.0.0"
  assert second["parent"]["location"] == str(link1.data_path)
  assert len(second["parent"]["digest"]) == 64
  assert first["parent"] is None
  assert str(link2.version) == "1.1.0"  # the minor version after its parent's
  assert set(link2.info.features) == {"double_score", "words", "_base_index", "_base_fingerprint"}


def test_a_chain_by_name_and_three_links_with_an_overwrite(tmp_path):
  sources, table, link1, link2 = _two_links(tmp_path)
  data_dir = str(tmp_path / "tfds")
  # Link 3 replaces link 1's weight: the later link wins, when it says so.
  link3 = build(tmp_path, "link3", mode="overlay", base="augmented/link2:1.1.0", base_data_dir=data_dir,
                side_table=weights_csv(tmp_path / "weights.csv", range(100, 110)), side_table_key="id",
                join_key="id", side_table_columns=["weight"], overwrite_fields=["weight"],
                features={"weight": "float32"})
  got = examples(load_augmented("augmented/link3:1.2.0", split="train", data_dir=data_dir))
  assert [e["weight"] for e in got] == [np.float32(e["id"] / 8) for e in got]
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]
  assert [list(e["words"]) for e in got] == [e["text"].split() for e in got]
  assert link3.info.metadata["augmented"]["parent"]["name"] == "augmented/link2/1.1.0"
  # Without overwrite_fields, writing link 1's field again is refused, naming the link.
  message = helpers.assert_build_fails(
      Builder, tmp_path, errors.ConfigError, "New field 'weight'", "is already written by overlay augmented/link1/1.0.0",
      "list it in overwrite_fields", name="clash", mode="overlay", base=str(link2.data_path),
      side_table=tmp_path / "weights.csv", join_key="id", side_table_columns=["weight"])
  assert str(link1.data_path) in message


def test_a_join_key_from_an_earlier_link_is_refused(tmp_path):
  _, _, _, link2 = _two_links(tmp_path)
  helpers.write_csv(tmp_path / "by_label.csv", ["label", "name"], [[0, "zero"], [1, "one"], [2, "two"]])
  helpers.assert_build_fails(
      Builder, tmp_path, errors.ConfigError, "join_key 'label' is a field of overlay augmented/link1/1.0.0",
      "joins on the root base's features", mode="overlay", base=str(link2.data_path),
      side_table=tmp_path / "by_label.csv", join_key="label")


def test_a_link_with_skipped_examples_drops_them_from_the_chain(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = labels_csv(tmp_path / "labels.csv", [100, 102, 104, 105, 108])
  link1 = build(tmp_path, "link1", mode="overlay", base_records=sources, side_table=table, join_key="id",
                missing_policy="skip")
  link2 = build(tmp_path, "link2", mode="overlay", base=link1.data_dir, **WORDS)
  full = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id", missing_policy="skip", **WORDS)
  got = examples(load_augmented(link2.data_dir, split="train"))
  assert [e["id"] for e in got] == [100, 102, 104, 105]
  assert_examples_equal(got, examples(full.as_dataset(split="train")))


def test_a_chain_of_a_prepared_base_overwriting_a_base_feature(tmp_path, prepared_base):
  table = labels_csv(tmp_path / "labels.csv", range(16))
  link1 = build(tmp_path, "link1", mode="overlay", base=str(prepared_dir(prepared_base)), side_table=table,
                join_key="id", overwrite_fields=["label"])
  link2 = build(tmp_path, "link2", mode="overlay", base=str(link1.data_path),
                function=f"{FUNCTIONS}:caption_length")
  got = examples(load_augmented(link2.data_dir, split="train[1shard:3shard]"))
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]  # link 1's label, not the base's ClassLabel
  assert [e["caption_length"] for e in got] == [len(e["caption"]) for e in got]
  assert got[0]["image"].shape == (4, 4, 1)


def test_a_constants_only_link_is_not_read(tmp_path):
  sources, table, link1, _ = _two_links(tmp_path)
  tagged = build(tmp_path, "tagged", mode="overlay", base=str(link1.data_path),
                 constant_fields={"source": "web", "split_weight": {"train": 1.0, "test": 0.5}})
  got = examples(load_augmented(tagged.data_dir, split="train[:2]+test[:1]"))
  assert [e["source"] for e in got] == [b"web"] * 3
  assert [float(e["split_weight"]) for e in got] == [1.0, 1.0, 0.5]
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]
  full = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id",
               constant_fields={"source": "web", "split_weight": {"train": 1.0, "test": 0.5}})
  assert_examples_equal(examples(load_augmented(tagged.data_dir, split="test")), examples(full.as_dataset(split="test")))


# ------------------------------------------------------------- refusals --


def test_a_missing_link_names_who_recorded_it_and_a_moved_one_loads_with_locations(tmp_path):
  _, _, link1, link2 = _two_links(tmp_path)
  moved = tmp_path / "moved" / "1.0.0"
  shutil.move(link1.data_path, moved)
  with pytest.raises(errors.SourceError, match=r"link augmented/link1/1.0.0 is missing: overlay augmented/link2/1.1.0 "
                     r"at .* records it at .*link1/1.0.0.*pass locations="):
    load_augmented(link2.data_dir, split="train")
  got = examples(load_augmented(link2.data_dir, split="train", locations={str(link1.data_path): str(moved)}))
  assert [e["label"] for e in got] == [e["id"] % 3 for e in got]


def test_a_rebuilt_link_is_refused(tmp_path):
  sources, _, link1, link2 = _two_links(tmp_path)
  shutil.rmtree(link1.data_path)
  build(tmp_path, "link1", mode="overlay", base_records=sources,
        side_table=labels_csv(tmp_path / "other.csv", range(100, 110)), join_key="id", side_table_columns=["label"])
  with pytest.raises(errors.SourceError, match=r"link overlay augmented/link1/1.0.0 at .* is not the one overlay "
                     r"augmented/link2/1.1.0 at .* was built on: its digest is"):
    load_augmented(link2.data_dir, split="train")
  # A build on the chain refuses it too.
  with pytest.raises(errors.SourceError, match="was rebuilt or modified since"):
    build(tmp_path, "link3", mode="overlay", base=str(link2.data_path), constant_fields={"x": 1})


def test_a_cycle_is_refused(tmp_path):
  _, _, link1, link2 = _two_links(tmp_path)
  reference = link2.info.metadata["augmented"]["parent"] | {"name": "augmented/link2/1.1.0",
                                                             "location": str(link2.data_path)}
  _edit_metadata(link1, lambda entry: entry.update(parent=reference))
  with pytest.raises(errors.SourceError, match=r"chain has a cycle: overlay augmented/link1/1.0.0 at .* records parent "
                     r"overlay augmented/link2/1.1.0 at .*, which is already in the chain"):
    load_augmented(link2.data_dir, split="train")


def test_two_links_writing_one_field_and_another_root_are_refused(tmp_path):
  _, _, link1, link2 = _two_links(tmp_path)
  original = (pathlib.Path(link2.data_dir) / "metadata.json").read_text()
  _edit_metadata(link2, lambda entry: entry["new_fields"].update(label={"dtype": "int64", "shape": [], "source": "x"}))
  with pytest.raises(errors.ConfigError, match=r"links overlay augmented/link1/1.0.0 at .* and overlay "
                     r"augmented/link2/1.1.0 at .* both write field 'label'.*overwrite_fields of augmented/link2"):
    load_augmented(link2.data_dir, split="train")
  (pathlib.Path(link2.data_dir) / "metadata.json").write_text(original)
  _edit_metadata(link2, lambda entry: entry["base"].update(digest="0" * 64))
  with pytest.raises(errors.SourceError, match="have different root bases"):
    load_augmented(link2.data_dir, split="train")


def test_a_misaligned_link_record_stops_the_chain(tmp_path):
  _, _, link1, link2 = _two_links(tmp_path)
  shard = link1.info.splits["train"].filepaths[0]
  records = read_records([shard])
  _edit_shard = [records[1], records[0], *records[2:]]
  helpers.write_records(pathlib.Path(shard), _edit_shard)  # same names, sizes and counts: the digest holds
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[Overlay\] \[augmented/link1/1.0.0\] \[is misaligned with its base"):
    examples(load_augmented(link2.data_dir, split="train"))


def test_a_moved_root_base_loads_with_locations(tmp_path, prepared_base):
  base = tmp_path / "base" / "1.2.0"
  shutil.copytree(prepared_dir(prepared_base), base)
  link1 = build(tmp_path, "link1", mode="overlay", base=str(base),
                side_table=labels_csv(tmp_path / "labels.csv", range(16)), join_key="id", overwrite_fields=["label"])
  link2 = build(tmp_path, "link2", mode="overlay", base=str(link1.data_path), constant_fields={"source": "web"})
  moved = tmp_path / "moved" / "1.2.0"
  shutil.move(base, moved)
  with pytest.raises(errors.SourceError, match="No prepared TFDS dataset"):
    load_augmented(link2.data_dir, split="test")
  got = examples(load_augmented(link2.data_dir, split="test", locations={str(base): str(moved)}))
  assert sorted(e["id"] for e in got) == [12, 13, 14, 15]  # in the base's stored order
  assert [(e["label"], e["source"]) for e in got] == [(e["id"] % 3, b"web") for e in got]


def test_a_root_base_changed_since_the_chain_is_refused_at_build_and_at_load(tmp_path, prepared_base):
  base = tmp_path / "base" / "1.2.0"
  shutil.copytree(prepared_dir(prepared_base), base)
  link1 = build(tmp_path, "link1", mode="overlay", base=str(base),
                side_table=labels_csv(tmp_path / "labels.csv", range(16)), join_key="id", overwrite_fields=["label"])
  shard = sorted(base.glob("*-train.tfrecord-*"))[0]
  with open(shard, "ab") as out:  # one byte more: the base's identity no longer matches the chain's
    out.write(b"\0")
  with pytest.raises(errors.SourceError, match=r"was built from another base than .*: split 'train': .* bytes.*"
                                               r"Restore the base it was built from at .*, or rebuild the chain"):
    build(tmp_path, "link2", mode="overlay", base=str(link1.data_path), constant_fields={"source": "web"})
  with pytest.raises(errors.SourceError, match=r"was built from another base than .*Pass the base it was built from"):
    load_augmented(str(link1.data_path), split="train")
