"""Every builder on Beam's DirectRunner (2 worker processes) gives the local path's dataset."""

from __future__ import annotations

import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from tfds_builders.augmented import Builder as AugmentedBuilder
from tfds_builders.concatenated import Builder as ConcatenatedBuilder
from tfds_builders.cross_product import Builder as CrossProductBuilder
from tfds_builders.database import Builder as DatabaseBuilder
from tfds_builders.database import BuilderConfig as DatabaseConfig
from tfds_builders.numpy_arrays import Builder as NumpyArraysBuilder

pytestmark = pytest.mark.slow  # each test starts Beam worker processes: 17-36 s

_TWO_WORKER_PROCESSES = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
# PostgreSQL, 4 key-range partitions per split read in one exported snapshot;
# the DSN comes from the environment the `postgres_dsn` fixture checks.
_DATABASE_ON_POSTGRES = DatabaseConfig(
    name="beam_postgres", dsn_env="TFDS_BUILDERS_PG_DSN",
    query="SELECT g AS id, md5(g::text) AS digest, g % 7 AS bucket, g * 0.5 AS half "
          "FROM generate_series(1, 3000) AS g",
    split_percent={"train": 70, "test": 30}, split_key="id", order_by="id",
    partition_key="id", num_partitions=4,
    columns={"bucket": {"categorical": True}, "half": {"normalize": "standard"}},
)


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


@pytest.mark.parametrize("builder_cls, config", [
    (NumpyArraysBuilder, "demo"),
    (ConcatenatedBuilder, "demo"),
    (ConcatenatedBuilder, "interleaved"),
    (CrossProductBuilder, "product"),
    (AugmentedBuilder, "demo_function"),
    (DatabaseBuilder, "demo"),
])
def test_beam_output_equals_local(builder_cls, config, tmp_path) -> None:
  _assert_beam_equals_local(builder_cls, config, tmp_path)


def test_database_on_postgres_beam_output_equals_local(postgres_dsn, tmp_path) -> None:
  del postgres_dsn  # the config reads it from TFDS_BUILDERS_PG_DSN; the fixture checks the server
  _assert_beam_equals_local(DatabaseBuilder, _DATABASE_ON_POSTGRES, tmp_path)


def _assert_beam_equals_local(builder_cls, config, tmp_path) -> None:
  local, on_beam = _build_both(builder_cls, config, tmp_path)
  assert set(on_beam.info.splits) == set(local.info.splits)
  for split in local.info.splits:
    assert on_beam.info.splits[split].num_examples == local.info.splits[split].num_examples
    assert _records(on_beam, split) == _records(local, split)
  assert on_beam.info.features.to_json() == local.info.features.to_json()
