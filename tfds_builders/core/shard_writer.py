"""Streams pre-serialized examples into size-bounded shards, in generation order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core import naming

from tfds_builders.core import errors

KeySerialized = tuple[object, bytes]


class _ShardFeed:
  """Yields examples for one shard until its byte budget is spent."""

  def __init__(self, first: KeySerialized, rest: Iterator[KeySerialized], budget: int):
    self._first = first
    self._rest = rest
    self._budget = budget
    self.num_examples = 0
    self.exhausted = False

  def __iter__(self) -> Iterator[KeySerialized]:
    item: KeySerialized | None = self._first
    size = 0
    while item is not None:
      yield item
      self.num_examples += 1
      size += len(item[1])
      if size >= self._budget:
        return
      item = next(self._rest, None)
    self.exhausted = True


class SplitWriter:
  """Writes one split of serialized examples without TFDS's shuffle buffer.

  TFDS's `Writer` holds up to 1 GiB of examples in memory to sort them by
  hashed key; our builders keep generation order (`disable_shuffling`), so
  examples go straight to disk and memory stays flat in dataset size. Shards
  are written under temporary names and renamed to TFDS's
  `-NNNNN-of-NNNNN` names once their count is known.
  """

  def __init__(
      self,
      filename_template: naming.ShardedFileTemplate,
      file_format: file_adapters.FileFormat,
      max_shard_bytes: int,
  ):
    self._template = filename_template
    self._adapter = file_adapters.ADAPTER_FOR_FORMAT[file_format]
    self._max_shard_bytes = max_shard_bytes

  def write(self, examples: Iterable[KeySerialized]) -> tfds.core.SplitInfo:
    """Writes every example and returns the split's info.

    Raises:
      SourceError: if `examples` is empty.
    """
    iterator = iter(examples)
    temp_paths: list[epath.Path] = []
    shard_lengths: list[int] = []
    first = next(iterator, None)
    while first is not None:
      feed = _ShardFeed(first, iterator, self._max_shard_bytes)
      temp_paths.append(self._temp_path(len(temp_paths)))
      self._adapter.write_examples(temp_paths[-1], feed)
      shard_lengths.append(feed.num_examples)
      first = None if feed.exhausted else next(iterator, None)
    if not temp_paths:
      raise errors.SourceError(
          f"Split {self._template.split!r} has no examples. Give it at least "
          "one source record, or leave the split out of the config."
      )
    num_bytes = 0
    for index, temp_path in enumerate(temp_paths):
      final_path = self._template.sharded_filepath(
          shard_index=index, num_shards=len(temp_paths)
      )
      temp_path.rename(final_path)
      num_bytes += final_path.stat().length
    return tfds.core.SplitInfo(
        name=self._template.split,
        shard_lengths=shard_lengths,
        num_bytes=num_bytes,
        filename_template=self._template,
    )

  def _temp_path(self, index: int) -> epath.Path:
    prefix = self._template.filepath_prefix()
    return epath.Path(f"{prefix}.part{index:05d}.tmp")
