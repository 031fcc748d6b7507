"""Deterministic weighted interleaving of sources, following Hugging Face `interleave_datasets`.

The order depends only on the sources' lengths, the weights and the seed, so
every build (local or Beam) writes the same examples in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from tfds_builders.core import errors

MIXINGS = ("concatenate", "interleave")
STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")
_DRAWS_PER_BATCH = 1000  # as Hugging Face: the same seed gives the same draws


def check(weights: Sequence[float] | None, stopping_strategy: str) -> None:
  """Raises ConfigError for an unknown strategy or non-positive weights."""
  errors.check_choice(stopping_strategy, STOPPING_STRATEGIES, "stopping_strategy")
  if weights is not None and not all(w > 0 and np.isfinite(w) for w in weights):
    raise errors.ConfigError(
        f"weights {list(weights)} must all be positive numbers (a source with weight "
        "0 would never be drawn: leave it out of the split instead)."
    )


def schedule(
    lengths: Sequence[int],
    weights: Sequence[float] | None,
    seed: int,
    stopping_strategy: str,
) -> Iterator[int]:
  """Yields, step by step, which source the next example comes from.

  Without weights, sources take turns (round robin); with weights, each step
  draws a source with probability weight / sum(weights) from a NumPy
  generator seeded with `seed`.

  Args:
    lengths: Number of examples of each source (all positive).
    weights: Relative sampling weights, or None for round robin.
    seed: Seed of the draws.
    stopping_strategy: `first_exhausted`: stop once any source has given
      its last example. `all_exhausted`: a source that runs out starts over
      (its examples repeat) until every source has given its last example at
      least once. `all_exhausted_without_replacement`: sources that run out
      drop out of the draw; every example is used exactly once.
  """
  if weights is None:
    yield from _round_robin(lengths, stopping_strategy)
  elif stopping_strategy == "all_exhausted_without_replacement":
    yield from _weighted_without_replacement(lengths, weights, seed)
  else:
    yield from _weighted(lengths, weights, seed, stopping_strategy == "all_exhausted")


def _round_robin(lengths: Sequence[int], stopping_strategy: str) -> Iterator[int]:
  rounds = min(lengths) if stopping_strategy == "first_exhausted" else max(lengths)
  for step in range(rounds):
    for source, length in enumerate(lengths):
      if step < length or stopping_strategy == "all_exhausted":
        yield source


def _draws(rng: np.random.Generator, sources: Sequence[int], weights: Sequence[float]) -> Iterator[int]:
  probabilities = np.asarray(weights, dtype=np.float64)
  probabilities /= probabilities.sum()
  while True:
    for draw in rng.choice(len(sources), size=_DRAWS_PER_BATCH, p=probabilities):
      yield sources[int(draw)]


def _weighted(lengths: Sequence[int], weights: Sequence[float], seed: int, oversample: bool) -> Iterator[int]:
  """Hugging Face's loop: stop when any (or, oversampling, every) source ran out."""
  rng = np.random.default_rng(seed)
  position = [0] * len(lengths)
  exhausted = [False] * len(lengths)
  for source in _draws(rng, range(len(lengths)), weights):
    yield source
    position[source] += 1
    if position[source] >= lengths[source]:
      exhausted[source] = True
      position[source] = 0
      if (all if oversample else any)(exhausted):
        return


def _weighted_without_replacement(lengths: Sequence[int], weights: Sequence[float], seed: int) -> Iterator[int]:
  """Draws among the sources with examples left, renormalizing as they run out."""
  rng = np.random.default_rng(seed)
  remaining = list(lengths)
  while True:
    active = [source for source, left in enumerate(remaining) if left]
    if not active:
      return
    for source in _draws(rng, active, [weights[s] for s in active]):
      yield source
      remaining[source] -= 1
      if not remaining[source]:
        break  # redraw among the sources still active


def counts(
    lengths: Sequence[int], weights: Sequence[float] | None, seed: int, stopping_strategy: str
) -> list[int]:
  """How many examples each source contributes (repeats included)."""
  taken = [0] * len(lengths)
  for source in schedule(lengths, weights, seed, stopping_strategy):
    taken[source] += 1
  return taken
