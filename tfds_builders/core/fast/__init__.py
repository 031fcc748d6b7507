"""Compiled (Numba) frame walks, block framing and CRC32C, behind one lazy facade.

`from tfds_builders.core import fast` imports nothing heavy; the first use of
`fast.record_index`, `fast.record_blocks` or `fast.crc32c` imports Numba and
compiles (or loads from cache) that module's kernels, as TFDS's
`epy.lazy_imports` defers its optional dependencies. A kernel that lives
beside the one builder using it is wrapped in `fast.jit`, which does the same
on its first call.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # for type checkers only: at run time `__getattr__` imports on first use
  from tfds_builders.core.fast import crc32c  # pylint: disable=g-bad-import-order
  from tfds_builders.core.fast import pair_blocks
  from tfds_builders.core.fast import permutation
  from tfds_builders.core.fast import pg_binary
  from tfds_builders.core.fast import record_blocks
  from tfds_builders.core.fast import record_index

_MODULES = ("crc32c", "pair_blocks", "permutation", "pg_binary", "record_blocks", "record_index")
__all__ = [*_MODULES, "jit"]
# How every kernel is compiled: cached on disk across processes, and releasing
# the GIL so that threads (tf.data, Beam) run kernels side by side.
JIT_OPTIONS = {"cache": True, "nogil": True}

KernelT = TypeVar("KernelT", bound=Callable[..., Any])


def jit(kernel: KernelT) -> KernelT:
  """`kernel` compiled with Numba (`JIT_OPTIONS`) on its first call; Numba is imported only then.

  Args:
    kernel: A module-level function of NumPy arrays and scalars in Numba's
      nopython subset.

  Returns:
    A function that calls the compiled kernel.
  """

  @functools.cache
  def compiled() -> Callable[..., Any]:
    import numba  # pylint: disable=g-import-not-at-top  # the facade's one deferred import outside its modules

    return numba.njit(**JIT_OPTIONS)(kernel)

  @functools.wraps(kernel)
  def call(*args: Any) -> Any:
    return compiled()(*args)

  return call  # type: ignore[return-value]


def __getattr__(name: str) -> Any:
  if name in _MODULES:
    # import_module binds the submodule on this package, so later uses skip __getattr__.
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted({*globals(), *_MODULES})
