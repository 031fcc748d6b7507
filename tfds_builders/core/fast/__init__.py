"""Compiled (Numba) frame walks, block framing and CRC32C, behind one lazy facade.

`from tfds_builders.core import fast` imports nothing heavy; the first use of
`fast.record_index`, `fast.record_blocks` or `fast.crc32c` imports Numba and
compiles (or loads from cache) that module's kernels, as TFDS's
`epy.lazy_imports` defers its optional dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers only: at run time `__getattr__` imports on first use
  from tfds_builders.core.fast import crc32c  # pylint: disable=g-bad-import-order
  from tfds_builders.core.fast import record_blocks
  from tfds_builders.core.fast import record_index

_MODULES = ("crc32c", "record_blocks", "record_index")
__all__ = list(_MODULES)


def __getattr__(name: str) -> Any:
  if name in _MODULES:
    # import_module binds the submodule on this package, so later uses skip __getattr__.
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted([*globals(), *_MODULES])
