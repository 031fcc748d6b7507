"""A small prepared TFDS base for the augmented tests, built once per module that uses it."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds


# ------------------------------------------------------ a prepared base --


tfds.disable_progress_bar()


class AugmentedTestBase(tfds.core.GeneratorBasedBuilder):
  """A small prepared TFDS dataset with TFDS features (Image, ClassLabel, Text)."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.2.0": "Test base."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "image": tfds.features.Image(shape=(4, 4, 1)),
            "label": tfds.features.ClassLabel(names=["cat", "dog", "bird"]),
            "caption": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    shift = 0 if str(self.version) == "1.2.0" else 50
    return {"train": self._generate_examples(shift, 12), "test": self._generate_examples(shift + 12, 4)}

  def _generate_examples(self, start: int, count: int):
    for index in range(start, start + count):
      yield index, {
          "id": index,
          "image": np.full((4, 4, 1), index, np.uint8),
          "label": index % 3,
          "caption": "x" * (index % 5 + 1),
      }


class AugmentedTestBaseOld(AugmentedTestBase, skip_registration=True):
  """The same dataset at an older version, with other examples."""

  name = "augmented_test_base"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "Older test base."}


@pytest.fixture(scope="module")
def prepared_base(tmp_path_factory) -> pathlib.Path:
  """AugmentedTestBase 1.2.0 (train in 3 shards) and 1.1.0, under one data_dir."""
  data_dir = tmp_path_factory.mktemp("prepared")
  for builder_class in (AugmentedTestBase, AugmentedTestBaseOld):
    builder = builder_class(data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
  return data_dir

