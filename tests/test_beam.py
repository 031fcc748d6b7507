"""Every builder on Beam's DirectRunner (2 worker processes) gives the local path's dataset."""

from __future__ import annotations

import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from tfds_builders.numpy_arrays import Builder as NumpyArraysBuilder

_TWO_WORKER_PROCESSES = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _records(builder: tfds.core.DatasetBuilder, split: str) -> list[bytes]:
  """The stored records of a split, in order: equal lists mean equal datasets."""
  files = builder.info.splits[split].filenames
  return [r.numpy() for r in tfds.core.utils.lazy_imports_utils.tensorflow.data.TFRecordDataset(
      [str(builder.data_path / name) for name in files]
  )]


def _build_both(builder_cls, config, tmp_path):
  local = builder_cls(config=config, data_dir=str(tmp_path / "local"))
  local.download_and_prepare()
  on_beam = builder_cls(config=config, data_dir=str(tmp_path / "beam"))
  on_beam.download_and_prepare(
      download_config=tfds.download.DownloadConfig(beam_options=PipelineOptions(_TWO_WORKER_PROCESSES))
  )
  return local, on_beam


@pytest.mark.parametrize("builder_cls, config", [(NumpyArraysBuilder, "demo")])
def test_beam_output_equals_local(builder_cls, config, tmp_path) -> None:
  local, on_beam = _build_both(builder_cls, config, tmp_path)
  assert set(on_beam.info.splits) == set(local.info.splits)
  for split in local.info.splits:
    assert on_beam.info.splits[split].num_examples == local.info.splits[split].num_examples
    assert _records(on_beam, split) == _records(local, split)
  assert on_beam.info.features.to_json() == local.info.features.to_json()
