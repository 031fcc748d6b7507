"""How many shards a split gets and how many examples each holds: TFDS's rule, resolved once."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.core import wire

# What TFDS adds per example when it sizes shards: a TFRecord frame.
RECORD_OVERHEAD = wire.FRAME_BYTES
# TFDS's default shard size bounds: 64 MiB and 1 GiB.
_TFDS_MIN_SHARD_BYTES, _TFDS_MAX_SHARD_BYTES = tfds_internals.default_shard_bytes()
# TFDS picks the shard count among powers of two up to this, then multiples of it.
_MAX_POWER_OF_TWO_SHARDS = 1024


@dataclasses.dataclass(frozen=True)
class ShardSizing:
  """The shard flags of a build (`--num_shards`, `--max_shard_size_mb`), as data.

  Attributes:
    num_shards: Exactly this many shards, or None for TFDS's size rule.
    min_shard_bytes: The size TFDS keeps shards above (64 MiB by default).
    max_shard_bytes: The size shards stay below (1 GiB by default).
  """

  num_shards: int | None = None
  min_shard_bytes: int = _TFDS_MIN_SHARD_BYTES
  max_shard_bytes: int = _TFDS_MAX_SHARD_BYTES

  def __post_init__(self):
    if self.num_shards is not None and self.num_shards < 1:
      raise errors.ConfigError(f"--num_shards {self.num_shards}: give a positive number of shards.")
    if self.max_shard_bytes < 1:
      raise errors.ConfigError(f"max_shard_size {self.max_shard_bytes} bytes: give a positive size.")

  @classmethod
  def of(cls, shard_config: Any, max_shard_bytes: int | None = None) -> ShardSizing:
    """The sizing of `download_config.get_shard_config()`, capped at `max_shard_bytes`."""
    cap = shard_config.max_shard_size
    if max_shard_bytes is not None:
      cap = min(cap, max_shard_bytes)
    # A max below the min (`--max_shard_size_mb 1`) wins: shards stay below it.
    return cls(shard_config.num_shards or None, min(shard_config.min_shard_size, cap), cap)

  def number_of_shards(self, serialized_bytes: int, num_examples: int) -> int:
    """TFDS's shard count for a split of this size (`ShardConfig.get_number_shards`).

    The largest power of two (at most 1024) whose shards fall between the min
    and max size, and no more shards than examples. Unlike TFDS 4.9.10, whose
    rule reads the class defaults, the configured min and max are honoured:
    when no power of two fits, shards are cut at the max size.

    Args:
      serialized_bytes: The examples' serialized bytes, without framing.
      num_examples: The split's example count.
    """
    if self.num_shards:
      return self.num_shards
    total = serialized_bytes + num_examples * RECORD_OVERHEAD
    fewest = total // self.max_shard_bytes
    most = total // self.min_shard_bytes
    if fewest > _MAX_POWER_OF_TWO_SHARDS:
      count = _MAX_POWER_OF_TWO_SHARDS * math.ceil(fewest / _MAX_POWER_OF_TWO_SHARDS)
      return max(1, min(count, num_examples))
    power = _MAX_POWER_OF_TWO_SHARDS
    while power >= 2:
      if fewest <= power <= most and power <= num_examples:
        return power
      power //= 2
    # Nothing fits (a max below 2x the min, or few large examples): cut at the max.
    return max(1, min(math.ceil(total / self.max_shard_bytes), num_examples))

  def shard_lengths(self, serialized_bytes: int, num_examples: int, split: str = "") -> list[int]:
    """Examples per shard, as even as TFDS's precise sharding makes them.

    Raises:
      ConfigError: if `--num_shards` asks for more shards than the split has examples.
    """
    count = self.number_of_shards(serialized_bytes, num_examples)
    if count > num_examples:
      raise errors.ConfigError(
          f"Split {split!r} has {num_examples} examples, fewer than --num_shards {count}. "
          "Ask for at most that many shards (or build more examples)."
      )
    ends = tfds_internals.shard_boundaries(num_examples, count)
    return [end - start for start, end in zip([0, *ends[:-1]], ends)]

  def piece_bytes(self) -> int:
    """How large a temporary piece grows while a split's size is still unknown.

    Twice the min size: TFDS's shards land between one and two min sizes, and
    a piece that turns out to be a whole shard is renamed, not copied.
    """
    return max(1, min(2 * self.min_shard_bytes, self.max_shard_bytes))
