"""Constant fields: metadata only in an overlay (no data bytes), every record's last entries in materialize."""

from __future__ import annotations

import base64
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders.augmented import Builder
from tfds_builders.augmented import constants
from tfds_builders.augmented import load_augmented
from tfds_builders.augmented import fields
from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tfds_builders.core import serialization
from tests import faults
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
assert_build_fails = functools.partial(helpers.assert_build_fails, Builder)

# One of each kind: a string, a float64 that float32 would round, an array, a per-split value.
CONSTANTS = {
    "source": "web",
    "rate": 0.1,
    "grid": [[1, 2, 3], [4, 5, 6]],
    "split_weight": {"train": 1.0, "test": 0.5},
    "tags": {"train": ["a", "bb"], "test": ["ccc"]},
}


def _entry(name: str, dtype: str, shape: tuple, value) -> bytes:
  """The map entry FieldCodec writes for `value`: the oracle the metadata must hold."""
  return b"".join(fields.FieldCodec(fields.FieldSpec(name, dtype, shape, "test")).encode(value))


def _entries_of(example: bytes) -> bytes:
  """The map entries of a serialized Example: what follows its tag and length varint."""
  end = 1
  while example[end] & 0x80:
    end += 1
  return example[end + 1:]


def _shards(version_dir: str | os.PathLike) -> list[str]:
  return sorted(name for name in os.listdir(version_dir) if ".tfrecord" in name or ".array_record" in name)


# ------------------------------------------------------- the read side --


def test_values_decode_every_dtype_as_its_feature():
  declared = {"half": fields.parse_declared("half", "float32", ""), "small": fields.parse_declared("small", "uint8[2]", "")}
  resolved = constants.resolve(
      {"count": 7, "half": 0.5, "small": [1, 255], "flag": True, "words": ["x", "yy"], "name": b"\xff\x00",
       "pair": np.array([0.1, 1e-300])},
      declared, ["train"])
  metadata = {"new_fields": {constant.spec.name: constant.spec.to_json() for constant in resolved},
              overlay_format.CONSTANT_FIELDS: constants.metadata_entry(resolved)}
  got = constants.values(metadata, "train")
  assert {name: (value.dtype.name, value.shape) for name, value in got.items() if name != "name"} == {
      "count": ("int64", ()), "half": ("float32", ()), "small": ("uint8", (2,)), "flag": ("bool", ()),
      "words": ("object", (2,)), "pair": ("float64", (2,))}
  assert got["count"] == 7 and got["half"] == 0.5 and list(got["small"]) == [1, 255] and got["flag"]
  assert list(got["words"]) == [b"x", b"yy"] and got["name"] == b"\xff\x00"
  assert got["pair"].tobytes() == np.array([0.1, 1e-300]).tobytes()
  assert constants.split_entries(resolved, "train") == _stored(metadata, "train")


# ------------------------------------------------------------ overlay --


def test_constants_only_overlay_writes_metadata_and_no_data_bytes(tmp_path, prepared_base):
  overlay = build(tmp_path, mode="overlay", base=str(prepared_dir(prepared_base)), constant_fields=CONSTANTS,
                  features={"rate": "float64"})
  assert _shards(overlay.data_path) == []
  assert sorted(os.listdir(overlay.data_path)) == ["croissant.json", "dataset_info.json", "features.json",
                                                   "metadata.json"]
  metadata = overlay.info.metadata["augmented"]
  assert metadata["format"] == 3 and metadata["mode"] == "overlay"
  assert metadata["new_fields"] == {
      "source": {"dtype": "string", "shape": [], "source": "constant", "declared": False},
      "rate": {"dtype": "float64", "shape": [], "source": "constant", "declared": True},
      "grid": {"dtype": "int64", "shape": [2, 3], "source": "constant", "declared": False},
      "split_weight": {"dtype": "float64", "shape": [], "source": "per-split constant", "declared": False},
      "tags": {"dtype": "string", "shape": [None], "source": "per-split constant", "declared": False},
  }
  encoded = metadata["constant_fields"]
  assert set(encoded) == set(CONSTANTS) and all(set(per_split) == {"train", "test"} for per_split in encoded.values())
  assert base64.b64decode(encoded["source"]["test"]) == _entry("source", "string", (), "web")
  assert base64.b64decode(encoded["rate"]["train"]) == _entry("rate", "float64", (), 0.1)
  assert base64.b64decode(encoded["grid"]["train"]) == _entry("grid", "int64", (2, 3), np.array([[1, 2, 3], [4, 5, 6]]))
  assert base64.b64decode(encoded["split_weight"]["test"]) == _entry("split_weight", "float64", (), 0.5)
  assert base64.b64decode(encoded["tags"]["train"]) == _entry("tags", "string", (None,), ["a", "bb"])
  assert overlay_format.constant_names(metadata) == list(CONSTANTS)
  assert overlay_format.stored_names(metadata) == []
  # A valid TFDS dataset: TFDS opens it, every split says 0 examples in 0 bytes, no shard.
  reopened = tfds.builder_from_directory(str(overlay.data_path))
  assert {name: (split.num_examples, split.num_bytes, split.num_shards)
          for name, split in reopened.info.splits.items()} == {"train": (0, 0, 0), "test": (0, 0, 0)}
  assert set(reopened.info.features) == {"_base_index", "_base_fingerprint"}
  assert reopened.info.release_notes["1.3.0"].endswith(
      "(overlay): source (string) from constant; rate (float64) from constant; grid (int64[2,3]) from constant; "
      "split_weight (float64) from per-split constant; tags (string[None]) from per-split constant.")


def test_constants_decode_bit_exact_per_split(tmp_path, prepared_base):
  overlay = build(tmp_path, mode="overlay", base=str(prepared_dir(prepared_base)), constant_fields=CONSTANTS)
  metadata = tfds.builder_from_directory(str(overlay.data_path)).info.metadata["augmented"]
  train, test = constants.values(metadata, "train"), constants.values(metadata, "test")
  assert train["source"] == b"web" and test["source"] == b"web"
  assert train["rate"].dtype == np.float64 and train["rate"].tobytes() == np.float64(0.1).tobytes()
  assert train["split_weight"] == 1.0 and test["split_weight"] == 0.5 and test["split_weight"].dtype == np.float64
  np.testing.assert_array_equal(train["grid"], [[1, 2, 3], [4, 5, 6]])
  assert train["grid"].dtype == np.int64
  assert list(train["tags"]) == [b"a", b"bb"] and list(test["tags"]) == [b"ccc"]
  assert not train["grid"].flags.writeable  # shared by every caller: read-only
  assert constants.values(metadata, "train")["grid"] is train["grid"]  # decoded once per split
  assert set(constants.features(metadata)) == set(CONSTANTS)
  with pytest.raises(errors.SourceError, match="no value for split 'validation'"):
    constants.values(metadata, "validation")


def test_overlay_with_stored_fields_and_constants_stores_only_the_others(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  plain = build(tmp_path, "plain", mode="overlay", base_records=sources, side_table=table, join_key="id")
  mixed = build(tmp_path, "mixed", mode="overlay", base_records=sources, side_table=table, join_key="id",
                constant_fields={"source": "web"})
  assert stored(mixed) == stored(plain) and stored(mixed, "test") == stored(plain, "test")
  assert set(mixed.info.features) == {"label", "weight", "_base_index", "_base_fingerprint"}
  metadata = mixed.info.metadata["augmented"]
  assert overlay_format.stored_names(metadata) == ["label", "weight"]
  assert overlay_format.constant_names(metadata) == ["source"]
  assert _stored(metadata, "train") == _entry("source", "string", (), "web")


@pytest.mark.parametrize("split", ["train", "test[1:]", "train[:50%]+test"])
def test_load_augmented_gives_what_materialize_stores(tmp_path, split):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  config = dict(base_records=sources, constant_fields=CONSTANTS, features={"rate": "float64"})
  for name, extra in (("only", {}), ("joined", {"side_table": table, "join_key": "id"})):
    materialized = build(tmp_path, f"{name}_full", **config, **extra)
    overlay = build(tmp_path, f"{name}_over", mode="overlay", **config, **extra)
    assert_examples_equal(examples(load_augmented(overlay.data_dir, split=split)),
                          examples(materialized.as_dataset(split=split, shuffle_files=False)))


def test_constants_only_overlay_does_not_read_the_base_records(tmp_path, prepared_base):
  base_dir = tmp_path / "base"
  shutil.copytree(prepared_dir(prepared_base), base_dir)
  for shard in base_dir.glob("*.tfrecord*"):  # every byte replaced, sizes kept
    shard.write_bytes(b"\xff" * shard.stat().st_size)
  overlay = build(tmp_path, mode="overlay", base=str(base_dir), constant_fields={"source": "web"})
  assert _shards(overlay.data_path) == []
  identity = overlay.info.metadata["augmented"]["base"]
  assert [file[2:] for file in identity["splits"]["train"]] == [
      [count, (base_dir / name).stat().st_size] for name, _, count, _ in identity["splits"]["train"]]
  # The same corrupt base fails a build that reads its records.
  assert_build_fails(tmp_path / "read", errors.SourceError, "corrupt", mode="overlay", base=str(base_dir),
                     function=f"{FUNCTIONS}:label_from_function", overwrite_fields=["label"])


# -------------------------------------------------------- materialize --


def test_materialize_appends_the_constant_entries_to_every_record(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", range(100, 110)))
  plain = build(tmp_path, "plain", base_records=sources, side_table=table, join_key="id")
  with_constants = build(tmp_path, "full", base_records=sources, side_table=table, join_key="id",
                         constant_fields=CONSTANTS, features={"rate": "float64"})
  overlay = build(tmp_path, "over", mode="overlay", base_records=sources, side_table=table, join_key="id",
                  constant_fields=CONSTANTS, features={"rate": "float64"})
  metadata = overlay.info.metadata["augmented"]
  for split in ("train", "test"):
    entries = _stored(metadata, split)
    assert len(entries) > 40
    # Each record: the base record's bytes, then one Example of the side table's entries and the constants'.
    base_records = read_records(sources[split])
    for raw, without, got in zip(base_records, stored(plain, split), stored(with_constants, split), strict=True):
      side_entries = _entries_of(without[len(raw):])
      assert got == raw + serialization.example_from_entries([side_entries, entries])
  example = next(iter(tfds.as_numpy(with_constants.as_dataset(split="test", shuffle_files=False))))
  assert example["split_weight"] == 0.5 and example["rate"].tobytes() == np.float64(0.1).tobytes()
  assert list(example["tags"]) == [b"ccc"] and example["source"] == b"web"
  # And the constants end every record, after the side table's fields.
  record = stored(with_constants, "train")[0]
  assert record.endswith(_stored(metadata, "train"))
  assert set(features_of(record)) == {"id", "text", "score", "tokens", "label", "weight", *CONSTANTS}


def test_materialize_from_constants_alone_copies_the_base_records(tmp_path):
  sources = raw_base(tmp_path / "raw")
  built = build(tmp_path, base_records=sources, constant_fields={"split_weight": {"train": 2, "test": 3}})
  entry = _entry("split_weight", "int64", (), 3)
  base_records = read_records(sources["test"])
  for raw, got in zip(base_records, stored(built, "test"), strict=True):
    assert got == raw + serialization.example_from_entries([entry])  # merge_examples: base bytes, then the entries
  assert built.info.features["split_weight"].np_dtype == np.int64


# ------------------------------------------------------------ refusals --


@pytest.mark.parametrize("constant_fields, declared, fragments", [
    ({"w": {"train": 1.0}}, {}, ["constant_fields['w']", "missing ['test']", "unknown []"]),
    ({"w": {"train": 1.0, "test": 2.0, "validation": 3.0}}, {}, ["constant_fields['w']", "unknown ['validation']"]),
    ({"w": "heavy"}, {"w": "float32"}, ["constant_fields['w'], split 'train'", "'heavy' is string", "float32"]),
    ({"w": [1.0, 2.0]}, {"w": "float32[3]"}, ["constant_fields['w'], split 'train'", "shape (2,)", "float32[3]"]),
    ({"w": {"train": 1, "test": 300}}, {"w": "uint8"}, ["constant_fields['w'], split 'test'", "300 is out of the range"]),
    ({"w": np.uint64(5)}, {}, ["constant_fields['w']", "uint64"]),
    ({"w": 2**64}, {}, ["constant_fields['w']"]),
    ({"w": {"train": 1, "test": "x"}}, {}, ["constant_fields['w']", "different types"]),
    ({"w": {"train": [1], "test": [[1]]}}, {}, ["constant_fields['w']", "different ranks"]),
    ({"w": 1}, {"w": "uint64"}, ["features['w']", "unsupported dtype 'uint64'"]),
    ({"w": [1, "a"]}, {}, ["constant_fields['w'], split 'train'", "[1, 'a'] holds non-strings"]),
    ({"w": 1e40}, {"w": "float32"}, ["constant_fields['w'], split 'train'", "overflows float32"]),
])
def test_constant_values_are_checked_against_their_features(tmp_path, constant_fields, declared, fragments):
  sources = raw_base(tmp_path / "raw")
  assert_build_fails(tmp_path, errors.ConfigError, *fragments, mode="overlay", base_records=sources,
                     constant_fields=constant_fields, features=declared)


@pytest.mark.parametrize("constant_fields, extra, error_type, fragments", [
    ({"text": "x"}, {}, errors.ConfigError, ["'text' (from constant) already exists in the base", "overwrite_fields"]),
    ({"_base_index": 1}, {}, errors.ConfigError, ["'_base_index' (from constant) uses a reserved name"]),
    ({"a/b": 1}, {}, errors.ConfigError, ["'a/b'", "contain no '/'"]),
    ({"label": 1}, {"side_table": "labels", "join_key": "id"}, errors.ConfigError,
     ["'label' comes from both side table", "and constant_fields"]),
    ({"flag": 1}, {"function": f"{FUNCTIONS}:raises_at_nine"}, errors.ConfigError,
     ["'flag' comes from both function", "and constant_fields"]),
    ("web", {}, errors.ConfigError, ["constant_fields='web'"]),
])
def test_constant_names_are_refused_like_other_new_fields(tmp_path, constant_fields, extra, error_type, fragments):
  sources = raw_base(tmp_path / "raw")
  if extra.get("side_table"):
    extra = {**extra, "side_table": str(labels_csv(tmp_path / "labels.csv", range(100, 110)))}
  assert_build_fails(tmp_path, error_type, *fragments, mode="overlay", base_records=sources,
                     constant_fields=constant_fields, **extra)


def test_overwrite_fields_lets_a_constant_replace_a_base_feature(tmp_path):
  sources = raw_base(tmp_path / "raw")
  built = build(tmp_path, base_records=sources, constant_fields={"text": "same"}, overwrite_fields=["text"])
  assert {example["text"] for example in tfds.as_numpy(built.as_dataset(split="train"))} == {b"same"}


def test_per_split_constants_follow_the_splits_built(tmp_path):
  sources = raw_base(tmp_path / "raw")
  overlay = build(tmp_path, mode="overlay", base_records=sources, splits=["test"],
                  constant_fields={"weight": {"test": 0.25}})
  assert overlay.info.metadata["augmented"]["constant_fields"] == {
      "weight": {"test": overlay_format.encode_constant(_entry("weight", "float64", (), 0.25))}}
  assert list(overlay.info.splits) == ["test"]


def test_a_config_without_any_source_of_fields_is_refused(tmp_path):
  assert_build_fails(tmp_path, errors.ConfigError, "`constant_fields`", "where the new fields come from",
                     mode="overlay", base_records=raw_base(tmp_path / "raw"))


# --------------------------------------------------------- command line --


@pytest.mark.slow
def test_tfds_build_command_line_takes_constant_fields(tmp_path):
  sources = raw_base(tmp_path / "raw")
  config = {"name": "cli_constants", "mode": "overlay", "base_records": sources,
            "constant_fields": {"source": "web", "weight": {"train": 1.0, "test": 0.5}},
            "features": {"source": "string"}}
  faults.tfds_build("augmented", config, tmp_path / "tfds")
  version_dir = tmp_path / "tfds" / "augmented" / "cli_constants" / "1.0.0"
  assert _shards(version_dir) == []
  metadata = json.loads((version_dir / "metadata.json").read_text())["augmented"]
  assert constants.values(metadata, "test")["weight"] == 0.5
  assert constants.values(metadata, "train")["source"] == b"web"
  assert metadata["new_fields"]["source"]["declared"] is True


@pytest.mark.slow
def test_benchmark_smoke_run_measures_both_builds(tmp_path):
  completed = subprocess.run(
      [sys.executable, "-m", "benchmarks", "overlays", "--smoke", "--results-dir", str(tmp_path / "results"),
       "--workdir", str(tmp_path)],
      cwd=faults.REPO, env=faults.ENV, capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads((tmp_path / "results" / "overlays-smoke.json").read_text())
  assert [row["phase"] for row in result["rows"]] == ["constant_overlay", "constant_materialize"]
  (line,) = result["ratios"]
  assert line["case"] == "constant field" and line["overlay_bytes"] < 100_000
  assert line["materialize_bytes"] > result["rows"][0]["input_bytes"]  # every base byte copied
  assert line["materialize_overlay_bytes"] > 10 and line["materialize_overlay_time"] > 0
  assert "| constant field |" in completed.stdout


def _stored(metadata, split: str) -> bytes:
  """The link's constant entries for `split`, end to end in field order, each checked (`constants.entry`)."""
  return b"".join(constants.entry(metadata, name, split) for name in overlay_format.constant_names(metadata))


def test_subnormal_floats_keep_their_bits_through_load_augmented(tmp_path):
  # A constant made inside tf.data's graph is folded with subnormals flushed to zero; the loader's are not.
  tiny = {"tiny64": 5e-324, "sub64": 2.2e-310, "tiny32": np.float32(1e-40)}
  overlay = build(tmp_path, "tiny", mode="overlay", base_records=raw_base(tmp_path / "raw"), constant_fields=tiny)
  (example,) = examples(load_augmented(overlay.data_dir, split="train[:1]"))
  for name, value in tiny.items():
    assert np.asarray(example[name]).tobytes() == np.asarray(value).tobytes(), name


def _tampered(version_dir: str, change) -> None:
  path = pathlib.Path(version_dir) / "metadata.json"
  metadata = json.loads(path.read_text())
  change(metadata["augmented"][overlay_format.CONSTANT_FIELDS])
  path.write_text(json.dumps(metadata))


_OTHER_FIELD = base64.b64encode(_entry("id", "int64", (), 424242)).decode()
_INT_FOR_STRING = base64.b64encode(_entry("source", "int64", (), 99)).decode()
_TWO_ENTRIES = base64.b64encode(_entry("source", "string", (), "web") + _entry("id", "int64", (), 1)).decode()


@pytest.mark.parametrize("change, problem", [
    (lambda constants: constants["source"].update(train="not base64!"), "its entry is not base64"),
    (lambda constants: constants["source"].update(train=_OTHER_FIELD), "its entry does not decode as string"),
    (lambda constants: constants["source"].update(train=_INT_FOR_STRING), "its entry does not decode as string"),
    (lambda constants: constants["source"].update(train=_TWO_ENTRIES), "its entry is not the one string writes"),
    (lambda constants: constants["source"].pop("train"), "no value for split 'train'"),
], ids=["base64", "other-field", "other-kind", "two-entries", "missing-split"])
def test_a_tampered_constant_is_refused_by_load_and_compaction(tmp_path, change, problem):
  overlay = build(tmp_path, "tampered", mode="overlay", base_records=raw_base(tmp_path / "raw"),
                  constant_fields={"source": "web"})
  _tampered(overlay.data_path, change)
  with pytest.raises(errors.SourceError, match=rf"Constant field 'source' of the overlay, split 'train': {problem}"):
    load_augmented(str(overlay.data_path), split="train")
  from tfds_builders.augmented import compact  # pylint: disable=import-outside-toplevel

  with pytest.raises(errors.SourceError, match=rf"Constant field 'source' .*{problem}"):
    compact(str(overlay.data_path), str(tmp_path / "compacted"))
  assert faults.loadable_dirs(tmp_path / "compacted") == []
