"""Builders that know their example counts up front: exact counts, shards planned without a re-cut."""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core import naming
from tensorflow_datasets.core.utils import shard_utils

from tests import faults
from tfds_builders import augmented
from tfds_builders import concatenated
from tfds_builders import cross_product
from tfds_builders import numpy_arrays
from tfds_builders.core import errors
from tfds_builders.core import serialization
from tfds_builders.core import shard_plan
from tfds_builders.core import shard_writer


RECUT = "re-cutting"
_IN_ORDER = tfds.ReadConfig(interleave_cycle_length=1)


def _lengths(num_examples: int, num_shards: int) -> list[int]:
  ends = shard_utils.get_shard_boundaries(num_examples, num_shards)
  return [stop - start for start, stop in zip([0, *ends[:-1]], ends)]


def _recut_lines(caplog) -> list[str]:
  return [record.getMessage() for record in caplog.records if RECUT in record.getMessage()]


def _interleave(stopping_strategy: str, weights: dict[str, float] | None) -> concatenated.BuilderConfig:
  demo = concatenated.Builder.BUILDER_CONFIGS[0]
  return concatenated.BuilderConfig(
      name=f"interleave_{stopping_strategy}", data_root=demo.data_root, sources=demo.sources,
      mixing="interleave", weights=weights, stopping_strategy=stopping_strategy)


# Every config whose counts are known before generation: (builder module, config).
_BUNDLED = [
    (numpy_arrays, "demo"),
    (numpy_arrays, "variable_shapes"),
    (concatenated, "demo"),
    (concatenated, "interleaved"),
    (concatenated, _interleave("first_exhausted", {"site_a": 1.0, "site_b": 3.0})),
    (concatenated, _interleave("all_exhausted", None)),
    (cross_product, "product"),
    (cross_product, "combinations"),
    (augmented, "demo"),
    (augmented, "demo_function"),
    (augmented, augmented.BuilderConfig(
        name="overlay_checked", data_root=str(augmented.Builder.BUILDER_CONFIGS[0].data_root),
        base_records={"train": ["base/train-*.tfrecord"], "test": ["base/test-*.tfrecord"]},
        side_table="labels.csv", join_key="id", mode="overlay", verify_base=True)),
]


def test_every_builder_predicts_each_split_exactly_and_writes_it_without_a_recut(tmp_path, caplog) -> None:
  caplog.set_level(logging.INFO, logger="absl")
  for module, config in _BUNDLED:
    name = config if isinstance(config, str) else config.name
    # Predicted by a builder that has generated nothing.
    unbuilt = module.Builder(config=config, data_dir=str(tmp_path / "unbuilt" / name))
    predicted = {split: unbuilt.expected_examples(split) for split in ("train", "test")}
    builder = module.Builder(config=config, data_dir=str(tmp_path / name))
    # Two shards: a split of unknown count is written as one piece, then re-cut into them.
    num_shards = 2 if min(filter(None, predicted.values())) >= 2 else 1
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=num_shards))
    built = {split: info.num_examples for split, info in builder.info.splits.items()}
    assert {split: predicted.get(split) for split in built} == built, name
    assert all(len(info.shard_lengths) == num_shards for info in builder.info.splits.values()), name
    assert not _recut_lines(caplog), name
  # The bundled counts, as the dataset cards state them.
  assert cross_product.Builder(config="product", data_dir=str(tmp_path)).expected_examples("train") == 20
  assert cross_product.Builder(config="combinations", data_dir=str(tmp_path)).expected_examples("train") == 10


def test_a_sample_is_counted_before_it_is_drawn(tmp_path) -> None:
  # cross_product 1.1.0 keeps exactly round(rate x pairs): 0.5 of the 5 x 4 bundled pairs.
  sampled = cross_product.BuilderConfig(
      name="sampled", data_root=str(cross_product.Builder.BUILDER_CONFIGS[0].data_root),
      left=["genotypes.tfrecord"], right=["environments.tfrecord.gz"], sample_rate=0.5)
  builder = cross_product.Builder(config=sampled, data_dir=str(tmp_path))
  assert builder.expected_examples("train") == 10
  builder.download_and_prepare()
  assert builder.info.splits["train"].num_examples == 10


def test_counts_that_only_generation_tells_are_none(tmp_path) -> None:
  # An overlay whose own walk counts the base records, and a materialized join that drops rows.
  assert augmented.Builder(config="demo_overlay", data_dir=str(tmp_path)).expected_examples("train") is None
  skipping = augmented.BuilderConfig(
      name="skipping", data_root=str(augmented.Builder.BUILDER_CONFIGS[0].data_root),
      base_records={"train": ["base/train-*.tfrecord"]}, side_table="labels.csv", join_key="id",
      missing_policy="skip")
  assert augmented.Builder(config=skipping, data_dir=str(tmp_path)).expected_examples("train") is None


def test_a_shuffled_overlay_is_refused(tmp_path) -> None:
  config = augmented.BuilderConfig(
      name="shuffled_overlay", data_root=str(augmented.Builder.BUILDER_CONFIGS[0].data_root),
      base_records={"train": ["base/train-*.tfrecord"]}, side_table="labels.csv", join_key="id",
      mode="overlay", shuffle=True)
  with pytest.raises(errors.ConfigError) as raised:
    augmented.Builder(config=config, data_dir=str(tmp_path)).download_and_prepare()
  faults.assert_message(raised.value, ["'shuffled_overlay'", "shuffle: true", "zipped with its base by position",
                                       "mode='materialize'"])
  assert not list(tmp_path.rglob("*.tfrecord*"))


def _examples(count: int, size: int = 1000) -> list[tuple[str, bytes]]:
  key = serialization.FeatureKey("x")
  return [(f"{i:06d}", serialization.example([serialization.bytes_feature(key, bytes([i % 251]) * size)]))
          for i in range(count)]


@pytest.mark.parametrize("expected", [600, 999, 2000])
def test_a_wrong_count_falls_back_to_a_recut_with_the_right_layout(tmp_path, caplog, expected) -> None:
  caplog.set_level(logging.INFO, logger="absl")
  template = naming.ShardedFileTemplate(
      data_dir=tmp_path, dataset_name="d", split="train", filetype_suffix="tfrecord")
  sizing = shard_plan.ShardSizing(num_shards=4)
  info = shard_writer.SplitWriter(template, file_adapters.FileFormat.TFRECORD, sizing).write(
      _examples(1000), expected_examples=expected)
  assert info.shard_lengths == _lengths(1000, 4)
  assert len(_recut_lines(caplog)) == 1
  stored = [record for path in sorted(tmp_path.glob("d-train.tfrecord-*")) for record in _read(path)]
  assert stored == [serialized for _, serialized in _examples(1000)]
  assert not list(tmp_path.glob("*.tmp"))


def _read(path: pathlib.Path) -> list[bytes]:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return [bytes(record.numpy()) for record in tf.data.TFRecordDataset(str(path))]


@pytest.mark.slow
def test_tfds_build_with_a_known_count_plans_its_shards_and_reads_back_bit_exact(tmp_path) -> None:
  rng = np.random.default_rng(15)
  images = rng.integers(0, 256, (300, 16, 16, 3), dtype=np.uint8)
  labels = rng.standard_normal(300).astype(">f8")  # big-endian: stored as little-endian, same values
  source = tmp_path / "arrays.npz"
  np.savez(source, image=images, label=labels)

  known = faults.tfds_build("numpy_arrays", {"name": "mine", "splits": {"train": [str(source)]}},
                            tmp_path / "known", "--num_shards", "3", "--max_examples_per_split", "250")
  builder = tfds.builder_from_directory(str(tmp_path / "known/numpy_arrays/mine/1.0.0"))
  assert builder.info.splits["train"].shard_lengths == _lengths(250, 3) == [83, 84, 83]
  assert RECUT not in known.stdout + known.stderr
  assert "Generated 250 train examples" in known.stdout + known.stderr
  arrays = numpy_arrays.to_numpy(builder.as_dataset(split="train", read_config=_IN_ORDER))
  assert arrays["image"].dtype == np.uint8 and arrays["image"].tobytes() == images[:250].tobytes()
  assert arrays["label"].dtype == np.float64 and np.array_equal(arrays["label"], labels[:250])
  # Without it TFDS interleaves the unordered split's shards 16 examples at a time.
  interleaved = numpy_arrays.to_numpy(builder.as_dataset(split="train"))
  assert not np.array_equal(interleaved["image"], images[:250])
  assert sorted(map(bytes, interleaved["image"])) == sorted(map(bytes, images[:250]))

  # Hashed split_fractions: the count is known only once the keys are hashed, so the pieces are re-cut.
  hashed = faults.tfds_build(
      "numpy_arrays", {"name": "hashed", "paths": [str(source)], "split_fractions": {"train": 0.5, "test": 0.5}},
      tmp_path / "hashed", "--num_shards", "3")
  assert numpy_arrays.Builder(config=numpy_arrays.BuilderConfig(
      name="hashed", paths=[str(source)], split_fractions={"train": 0.5, "test": 0.5}),
      data_dir=str(tmp_path / "x")).expected_examples("train") is None
  output = hashed.stdout + hashed.stderr
  assert "Split train: re-cutting 1 pieces into 3 shards" in output
  assert "Split test: re-cutting 1 pieces into 3 shards" in output


def test_a_build_into_s3_is_refused_naming_the_data_dir_and_what_to_do(s3_bucket) -> None:
  # TFDS reads s3:// (through our fsspec path class) before preparing; TensorFlow's writers cannot.
  data_dir = f"{s3_bucket}/tfds"
  with pytest.raises(errors.ConfigError) as raised:
    numpy_arrays.Builder(config="demo", data_dir=data_dir).download_and_prepare()
  faults.assert_message(raised.value, [
      f"--data_dir {data_dir}:", "has no s3:// filesystem", "Build into a local --data_dir",
      "tfds-builders publish DATA_DIR/<name>/<config>/<version> s3://bucket/registry"])
  import s3fs  # pylint: disable=import-outside-toplevel
  # Nothing generated, no incomplete dir left: only TFDS's own record of the config (.config/metadata.json).
  left = s3fs.S3FileSystem().find(s3_bucket)
  assert all("/tfds/numpy_arrays/.config/" in path for path in left), left
