"""Expanding user-given files, directories and globs into sorted source paths."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from etils import epath

from tfds_builders.core import errors
from tfds_builders.core import remote

_GLOB_CHARS = frozenset("*?[")


def resolve(path: str, root: str | None) -> epath.Path:
  """Returns `path` as an absolute path, relative ones taken from `root`."""
  resolved = epath.Path(path).expanduser()
  if root and not resolved.is_absolute():
    resolved = epath.Path(root).expanduser() / resolved
  return resolved


def expand(
    patterns: Sequence[str] | str,
    *,
    kind: str,
    keep: Callable[[str], bool],
    root: str | None = None,
) -> list[epath.Path]:
  """Expands files, directories (searched recursively) and globs.

  Args:
    patterns: Paths, directories or glob patterns.
    kind: What the files are, for messages (e.g. `.npy/.npz`).
    keep: Which file names count when listing a directory.
    root: Directory that relative patterns are taken from.

  Returns:
    The matching files, in pattern order then sorted by path, without repeats.

  Raises:
    SourceError: if a pattern matches no file.
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  found: list[epath.Path] = []
  for pattern in patterns:
    matches = _expand_one(resolve(pattern, root), keep)
    if not matches:
      raise errors.SourceError(
          errors.with_hint(
              f"No {kind} file found at {pattern!r}"
              + (f" (looked in {root})" if root else ""),
              "Check the path, or pass a directory or a glob such as 'data/*'.",
          )
      )
    found.extend(path for path in matches if path not in found)
  return found


def _expand_one(path: epath.Path, keep: Callable[[str], bool]) -> list[epath.Path]:
  text = str(path)
  if any(char in text for char in _GLOB_CHARS):
    return sorted(epath.Path(match) for match in remote.glob(text))
  if path.is_dir():
    return sorted(
        path / relative_dir / name
        for directory, _, names in remote.walk(path)
        for relative_dir in [epath.Path(directory).relative_to(path)]
        for name in names
        if keep(name)
    )
  return [path] if path.exists() else []


def source_names(sources: Sequence[epath.Path], root: str | None) -> list[str]:
  """Stable, unique, non-absolute names for sources, used in example keys.

  Relative to `root` when every source is under it; otherwise relative to the
  sources' deepest common directory, so `x/p.npy` and `y/p.npy` stay distinct.
  """
  if root:
    base = epath.Path(root).expanduser()
    try:
      return [str(path.relative_to(base)) for path in sources]
    except ValueError:
      pass  # some source lies outside root
  if len(sources) == 1:
    return [sources[0].name]
  # By path parts, not strings: os.path.commonpath would fold the `//` of `s3://` into `/`.
  depth = len(os.path.commonprefix([path.parent.parts for path in sources]))
  common = sources[0]
  while len(common.parts) > depth:
    common = common.parent
  return [str(path.relative_to(common)) for path in sources]


def bundled_data_dir(builder_name: str) -> epath.Path:
  """The `dummy_data/<builder_name>` folder of this checkout."""
  return epath.Path(__file__).parents[2] / "dummy_data" / builder_name
