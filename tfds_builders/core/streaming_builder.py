"""A GeneratorBasedBuilder whose examples arrive already serialized, written in order."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds
from tensorflow_datasets.core import split_builder as split_builder_lib

from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import shard_writer

# Same cap as TFDS's default ShardConfig, so readers see familiar shard sizes.
DEFAULT_MAX_SHARD_BYTES = 1024 * 1024 * 1024

KeySerialized = shard_writer.KeySerialized
StreamItem = shard_writer.StreamItem
PartitionFn = Callable[[], Iterator[StreamItem]]


@dataclasses.dataclass
class StreamingConfig(tfds.core.BuilderConfig):
  """Config fields every builder of ours shares.

  Attributes:
    use_beam: Run the split's partitions on Apache Beam. Also chosen
      automatically when `tfds build` gets `--beam_pipeline_options`; with
      neither, the build runs in this process.
  """

  use_beam: bool = False


@dataclasses.dataclass(frozen=True)
class Partitions:
  """A split as independent example generators whose outputs follow each other.

  Locally the partitions run one after another into size-bounded shards; on
  Beam each runs on a worker and becomes one shard. Either way the dataset
  holds the same examples, keys and order. Each generator must be picklable
  (a `functools.partial` of a module-level function, say).
  """

  generators: Sequence[PartitionFn]

  def __iter__(self) -> Iterator[StreamItem]:
    return itertools.chain.from_iterable(generate() for generate in self.generators)


class StreamingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of our builders: `_generate_examples` yields `(key, Example bytes)`.

  The bytes must be a serialized `tf.train.Example` that
  `self.info.features` decodes; `core.serialization` builds them. Runs of
  small examples may come as one block, `(keys, shard_writer.FramedRecords)`, framed
  by `core.record_blocks` and written with one call. Skipping
  TFDS's per-example Python encoding and its shuffle buffer is what keeps our
  builds near the raw TFRecord floor with flat memory. Examples are stored in
  generation order (`disable_shuffling=True`), so keys only need to be unique
  and deterministic.
  """

  MAX_SHARD_BYTES = DEFAULT_MAX_SHARD_BYTES

  # The dataset card's summary; each builder sets it from its `_DESCRIPTION`.
  DESCRIPTION = ""

  def _info(self) -> tfds.core.DatasetInfo:
    # A prepared version's features come from its features.json, so loading it
    # needs neither the sources nor a new inference.
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=None if self.is_prepared() else self.inferred_features(),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def inferred_features(self) -> tfds.features.FeaturesDict:
    """The features this config's sources give; read only before preparing."""
    raise NotImplementedError

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

  def _uses_beam(self, download_config: tfds.download.DownloadConfig) -> bool:
    return bool(
        download_config.beam_runner
        or download_config.beam_options
        or getattr(self.builder_config, "use_beam", False)
    )

  def _generate_splits(
      self,
      dl_manager: tfds.download.DownloadManager,
      download_config: tfds.download.DownloadConfig,
  ) -> list[tfds.core.SplitInfo]:
    if not self._uses_beam(download_config):
      return [
          self._write_split(name, examples, download_config)
          for name, examples in self._split_generators(dl_manager).items()
      ]
    # TFDS's SplitBuilder only supplies the pipeline (runner and options from
    # `--beam_pipeline_options`); the partitions are written by our writer.
    pipeline_owner = split_builder_lib.SplitBuilder(
        split_dict=self.info.splits,
        features=self.info.features,
        dataset_size=self.info.dataset_size,
        max_examples_per_split=None,
        beam_options=download_config.beam_options,
        beam_runner=download_config.beam_runner,
        example_writer=self._example_writer(),
    )
    with pipeline_owner.maybe_beam_pipeline():
      finalizers = [
          shard_writer.write_partitions_with_beam(
              pipeline_owner.beam_pipeline,
              _partitions_of(name, examples).generators,
              self._get_filename_template(split_name=name),
              self.info.file_format,
          )
          for name, examples in self._split_generators(dl_manager).items()
      ]
    return [finalize() for finalize in finalizers]

  def _write_split(
      self,
      split_name: str,
      examples: Iterable[StreamItem],
      download_config: tfds.download.DownloadConfig,
  ) -> tfds.core.SplitInfo:
    if download_config.max_examples_per_split is not None:
      examples = shard_writer.head(examples, download_config.max_examples_per_split)
    shard_config = download_config.get_shard_config()
    max_bytes = min(self.MAX_SHARD_BYTES, shard_config.max_shard_size)
    writer = shard_writer.SplitWriter(
        filename_template=self._get_filename_template(split_name=split_name),
        file_format=self.info.file_format,
        max_shard_bytes=max_bytes,
    )
    return writer.write(examples)


def _partitions_of(split_name: str, examples: Iterable[KeySerialized]) -> Partitions:
  if not isinstance(examples, Partitions):
    raise errors.ConfigError(
        f"Split {split_name!r} cannot run on Beam: its examples are not "
        "divided into Partitions. Build it without Beam."
    )
  return examples
