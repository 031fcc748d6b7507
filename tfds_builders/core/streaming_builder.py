"""A GeneratorBasedBuilder whose examples arrive already serialized, written in order."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import shard_writer

# Same cap as TFDS's default ShardConfig, so readers see familiar shard sizes.
DEFAULT_MAX_SHARD_BYTES = 1024 * 1024 * 1024


class StreamingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of our builders: `_generate_examples` yields `(key, Example bytes)`.

  The bytes must be a serialized `tf.train.Example` that
  `self.info.features` decodes; `core.serialization` builds them. Skipping
  TFDS's per-example Python encoding and its shuffle buffer is what keeps our
  builds near the raw TFRecord floor with flat memory. Examples are stored in
  generation order (`disable_shuffling=True`), so keys only need to be unique
  and deterministic.
  """

  MAX_SHARD_BYTES = DEFAULT_MAX_SHARD_BYTES

  def streaming_info(
      self, *, description: str, features: tfds.features.FeaturesDict | None
  ) -> tfds.core.DatasetInfo:
    """DatasetInfo for `_info()`: ordered, with a metadata dict for provenance."""
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=features,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def is_prepared(self) -> bool:
    """Whether this version is already on disk (then features come from it)."""
    data_path = getattr(self, "_data_dir", None)
    return bool(data_path) and (
        tfds.core.Path(data_path) / "dataset_info.json"
    ).exists()

  def record_provenance(self, **details: Any) -> None:
    """Stores what this build reads (secrets redacted) in `metadata.json`."""
    self.info.metadata[provenance.PROVENANCE_KEY] = provenance.build_provenance(
        builder_name=self.name,
        config=self.builder_config,
        dataset_version=str(self.version),
        **details,
    )

  def _generate_splits(
      self,
      dl_manager: tfds.download.DownloadManager,
      download_config: tfds.download.DownloadConfig,
  ) -> list[tfds.core.SplitInfo]:
    if download_config.beam_runner or download_config.beam_options:
      raise errors.ConfigError(
          f"{self.name}: the Beam path is not available for this builder yet. "
          "Build without --beam_pipeline_options."
      )
    split_infos = []
    for split_name, examples in self._split_generators(dl_manager).items():
      split_infos.append(
          self._write_split(split_name, examples, download_config)
      )
    return split_infos

  def _write_split(
      self,
      split_name: str,
      examples: Iterable[shard_writer.KeySerialized],
      download_config: tfds.download.DownloadConfig,
  ) -> tfds.core.SplitInfo:
    if download_config.max_examples_per_split is not None:
      examples = itertools.islice(examples, download_config.max_examples_per_split)
    shard_config = download_config.get_shard_config()
    max_bytes = min(self.MAX_SHARD_BYTES, shard_config.max_shard_size)
    writer = shard_writer.SplitWriter(
        filename_template=self._get_filename_template(split_name=split_name),
        file_format=self.info.file_format,
        max_shard_bytes=max_bytes,
    )
    return writer.write(examples)
