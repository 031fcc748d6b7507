"""A seeded bijection on [0, size): a keyed Feistel network on an A×B grid with cycle walking, compiled.

An exact-size sample of a range is its first K items in a shuffled order:
`{perm(t) : t < K}`. A member test is then `perm_inverse(p) < K`, and the
t-th sampled item is `perm(t)`, both O(1) without storing the sample.

The network permutes [0, A·B) with A = ceil(sqrt(size)) and B = ceil(size / A),
a value being the pair (high, low) = divmod(value, B). Each of `ROUNDS` rounds
(an even number) adds a keyed splitmix64 of one part to the other, modulo that
part's radix, and swaps them: an unbalanced Feistel network, a bijection for
any round function. A·B - size < A, so cycle walking (re-applying it until
the value falls below `size`, which keeps it a bijection of [0, size)) is
rarely needed: a power-of-two domain would walk up to twice per value.
"""

from __future__ import annotations

import dataclasses
import operator
import math

import numba
import numpy as np

ROUNDS = 4
# Sizes a permutation takes: the Feistel grid's arithmetic stays inside int64.
MAX_SIZE = 1 << 62
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX_1 = 0xBF58476D1CE4E5B9
_MIX_2 = 0x94D049BB133111EB
# The same constants as uint64, so that the kernels' arithmetic wraps instead of widening.
_GOLDEN_U = np.uint64(_GOLDEN)
_MIX_1_U = np.uint64(_MIX_1)
_MIX_2_U = np.uint64(_MIX_2)
_SHIFT_30, _SHIFT_27, _SHIFT_31 = np.uint64(30), np.uint64(27), np.uint64(31)
_SHIFT_32 = np.uint64(32)


def splitmix64_int(value: int) -> int:
  """splitmix64's finalizer of a Python int (mod 2**64)."""
  value = (value + _GOLDEN) & _MASK
  value = ((value ^ (value >> 30)) * _MIX_1) & _MASK
  value = ((value ^ (value >> 27)) * _MIX_2) & _MASK
  return value ^ (value >> 31)


@dataclasses.dataclass(frozen=True)
class Permutation:
  """The seeded bijection of [0, size); equal seeds and sizes give the same one everywhere.

  Attributes:
    size: The range permuted; at least 1.
    seed: Any int; its low 64 bits choose the round keys (a splitmix64 chain).
  """

  size: int
  seed: int = 0

  def __post_init__(self):
    if not 1 <= self.size < MAX_SIZE:
      raise ValueError(f"Permutation: size={self.size}; use 1 to 2**62 - 1.")

  @property
  def radices(self) -> tuple[int, int]:
    """(A, B): the network permutes [0, A·B), A·B >= size > A·B - A."""
    high = max(2, math.isqrt(self.size - 1) + 1)
    return high, max(2, -(-self.size // high))

  @property
  def keys(self) -> np.ndarray:
    """The round keys (uint64), from the seed by a splitmix64 chain."""
    keys, state = [], operator.index(self.seed) & _MASK  # a NumPy integer seed as a Python int
    for _ in range(ROUNDS):
      state = splitmix64_int(state)
      keys.append(state)
    return np.asarray(keys, np.uint64)

  def __call__(self, indices: np.ndarray | int) -> np.ndarray | int:
    """perm(t) of each t in [0, size) (an int for an int)."""
    return self._apply(indices, _forward_array)

  def inverse(self, values: np.ndarray | int) -> np.ndarray | int:
    """perm^-1(p) of each p in [0, size) (an int for an int)."""
    return self._apply(values, _inverse_array)

  def _apply(self, values, kernel):
    array = np.asarray(values, np.int64)
    if array.size and (array.min() < 0 or array.max() >= self.size):
      raise ValueError(f"Permutation: values must lie in [0, {self.size}).")
    out = kernel(np.ascontiguousarray(array.reshape(-1)), self.size, *self.radices, self.keys).reshape(array.shape)
    return int(out) if np.ndim(values) == 0 else out


# ---------------------------------------------------------------- kernels --
# uint64 throughout: unsigned division has none of Python's floor-division fix-ups; error_model="numpy" drops
# the division-by-zero checks (radices are at least 2).


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _round_function(value, key, radix):
  """splitmix64 of value ^ key, taken into [0, radix) by its high 32 bits (radix < 2^32)."""
  value = (value ^ key) + _GOLDEN_U
  value = (value ^ (value >> _SHIFT_30)) * _MIX_1_U
  value = (value ^ (value >> _SHIFT_27)) * _MIX_2_U
  value = value ^ (value >> _SHIFT_31)
  return ((value >> _SHIFT_32) * radix) >> _SHIFT_32


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _encrypt(value, high_radix, low_radix, keys):
  """One pass of the network over [0, A·B): (high, low) -> (low, high + F(low) mod its radix), ROUNDS times."""
  high = value // low_radix
  low = value - high * low_radix
  for round_index in range(keys.shape[0]):
    mixed = high + _round_function(low, keys[round_index], high_radix)
    if mixed >= high_radix:
      mixed -= high_radix
    high, low = low, mixed
    high_radix, low_radix = low_radix, high_radix
  return high * low_radix + low


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _decrypt(value, high_radix, low_radix, keys):
  """The inverse of `_encrypt` (the rounds undone in reverse order; ROUNDS is even, so the radices start as A, B)."""
  high = value // low_radix
  low = value - high * low_radix
  for round_index in range(keys.shape[0] - 1, -1, -1):
    # (high, low) came from (low - F(high), high), low taken modulo the current low radix.
    mixing = _round_function(high, keys[round_index], low_radix)
    unmixed = low + low_radix - mixing if low < mixing else low - mixing
    high, low = unmixed, high
    high_radix, low_radix = low_radix, high_radix
  return high * low_radix + low


@numba.njit(cache=True, nogil=True, error_model="numpy")
def forward(index, size, high_radix, low_radix, keys):
  """perm(index) for index in [0, size): the network applied until the value falls below size."""
  size, high_radix, low_radix = np.uint64(size), np.uint64(high_radix), np.uint64(low_radix)
  value = _encrypt(np.uint64(index), high_radix, low_radix, keys)
  while value >= size:
    value = _encrypt(value, high_radix, low_radix, keys)
  return np.int64(value)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def inverse(value, size, high_radix, low_radix, keys):
  """perm^-1(value) for value in [0, size)."""
  size, high_radix, low_radix = np.uint64(size), np.uint64(high_radix), np.uint64(low_radix)
  index = _decrypt(np.uint64(value), high_radix, low_radix, keys)
  while index >= size:
    index = _decrypt(index, high_radix, low_radix, keys)
  return np.int64(index)


@numba.njit(cache=True, nogil=True)
def _forward_array(indices, size, high_radix, low_radix, keys):
  out = np.empty_like(indices)
  for position in range(indices.shape[0]):
    out[position] = forward(indices[position], size, high_radix, low_radix, keys)
  return out


@numba.njit(cache=True, nogil=True)
def _inverse_array(values, size, high_radix, low_radix, keys):
  out = np.empty_like(values)
  for position in range(values.shape[0]):
    out[position] = inverse(values[position], size, high_radix, low_radix, keys)
  return out
