"""missing_policy: error names the key, skip drops and counts (or flags in an overlay), default fills."""

from __future__ import annotations

import functools

import pytest
import tensorflow_datasets as tfds

from tfds_builders.augmented import Builder
from tfds_builders.augmented import BuilderConfig
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tests import helpers
from tests.augmented.common import assert_examples_equal
from tests.augmented.common import assert_nothing_loadable
from tests.augmented.common import examples
from tests.augmented.common import labels_csv
from tests.augmented.common import raw_base
from tests.augmented.common import stored

make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)


def test_missing_policy_error_names_the_key(tmp_path):
  table = labels_csv(tmp_path / "labels.csv", [i for i in range(100, 110) if i != 104])
  with pytest.raises(errors.SourceError, match=r"train-1.tfrecord record 0 has id=104, which side table .* does not have.*missing_policy"):
    build(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id")
  assert_nothing_loadable(tmp_path / "tfds")


def test_missing_policy_skip_drops_and_counts(tmp_path):
  sources = raw_base(tmp_path / "raw")
  table = str(labels_csv(tmp_path / "labels.csv", [100, 102, 104, 107, 108]))
  materialized = build(tmp_path, "m", base_records=sources, side_table=table, join_key="id", missing_policy="skip")
  assert [e["id"] for e in examples(materialized.as_dataset(split="train"))] == [100, 102, 104]
  assert [e["id"] for e in examples(materialized.as_dataset(split="test"))] == [107, 108]
  assert materialized.info.metadata["augmented"]["missing"] == {"train": 4, "test": 1}
  overlay = build(tmp_path, "o", mode="overlay", base_records=sources, side_table=table, join_key="id", missing_policy="skip")
  assert overlay.info.splits["train"].num_examples == 7  # aligned 1:1 with the base
  assert overlay.info.metadata["augmented"]["missing"] == {"train": 4, "test": 1}
  assert_examples_equal(examples(load_augmented(overlay.data_dir, split="train")),
                        examples(materialized.as_dataset(split="train")))
  assert [e["id"] for e in examples(load_augmented(overlay.data_dir, split="train[1:5]"))] == [102, 104]


def test_missing_policy_default(tmp_path):
  table = labels_csv(tmp_path / "labels.csv", [100, 101])
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                  missing_policy="default", missing_defaults={"label": -1, "weight": 0.0})
  got = examples(builder.as_dataset(split="train"))
  assert [e["label"] for e in got] == [1, 2, -1, -1, -1, -1, -1]
  assert [e["weight"] for e in got] == [100 / 8, 101 / 8, 0, 0, 0, 0, 0]
  with pytest.raises(errors.ConfigError, match=r"needs missing_defaults for every side-table column: missing \['weight'\]"):
    make_builder(tmp_path, "d2", base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                 missing_policy="default", missing_defaults={"label": -1})
  with pytest.raises(errors.ConfigError, match="missing_defaults: 'x' is string, but the feature is int64"):
    make_builder(tmp_path, "d3", base_records=raw_base(tmp_path / "raw"), side_table=str(table), join_key="id",
                 missing_policy="default", missing_defaults={"label": "x", "weight": 0.0})


def test_beam_overlay_equals_local_and_counts_skipped(tmp_path):
  sources = raw_base(tmp_path / "raw")
  config = BuilderConfig(name="beam", mode="overlay", base_records=sources, missing_policy="skip",
                         side_table=str(labels_csv(tmp_path / "labels.csv", [100, 103, 108])), join_key="id")
  local = Builder(config=config, data_dir=str(tmp_path / "local"))
  local.download_and_prepare()
  on_beam = Builder(config=config, data_dir=str(tmp_path / "beam"))
  on_beam.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_runner="DirectRunner"))
  for split in ("train", "test"):
    assert stored(on_beam, split) == stored(local, split)
  assert on_beam.info.metadata["augmented"]["missing"] == {"train": 5, "test": 2}
  assert [e["id"] for e in examples(load_augmented(on_beam.data_dir, split="train"))] == [100, 103]
