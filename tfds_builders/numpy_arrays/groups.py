"""Example groups: the arrays that form examples together, from listed or paired files."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from etils import epath
import numpy as np

from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import safe_paths
from tfds_builders.numpy_arrays import npy_files

Patterns = list[str] | str  # files, directories or globs
SUFFIXES = (".npy", ".npz")


@dataclasses.dataclass(frozen=True)
class Group:
  """Arrays that form examples together: one `.npy`, one `.npz`'s members, or paired `.npy` files.

  Attributes:
    key: Unique, deterministic name; example keys are `key` or `key:row`.
    sources: Feature name -> the array holding it.
  """

  key: str
  sources: Mapping[str, npy_files.ArraySource]

  @property
  def num_rows(self) -> int:
    """Its examples under `layout: rows` (its sources share their first axis)."""
    return next(iter(self.sources.values())).num_rows

  @property
  def cuts_by_rows(self) -> bool:
    """Whether any row range of it can be read alone (`npy_files.ArraySource.cuts_by_rows`)."""
    return all(source.cuts_by_rows for source in self.sources.values())

  def examples(
      self, layout: str, start: int = 0, stop: int | None = None
  ) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Yields `(key, {feature: array})`, streaming rows chunk by chunk.

    `start` and `stop` give only rows `[start, stop)`, with the keys they have
    in the whole group, of a group that `cuts_by_rows`.
    """
    if layout == "files":
      yield self.key, {
          name: little_endian(source.read_all())
          for name, source in self.sources.items()
      }
      return
    names = list(self.sources)
    chunk_rows = min(
        npy_files.rows_per_chunk(source.header) for source in self.sources.values()
    )
    # Rows are paired one by one, not block by block: sources may yield blocks
    # of different sizes (a Fortran-ordered array comes in one block).
    row_iters = [_rows(self.sources[name].iter_chunks(chunk_rows, start, stop)) for name in names]
    for row, arrays in enumerate(zip(*row_iters), start):
      yield f"{self.key}:{row:09d}", dict(zip(names, arrays))


def _rows(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
  """The rows of consecutive row blocks, in native byte order."""
  for chunk in chunks:
    yield from little_endian(chunk)


def little_endian(array: np.ndarray) -> np.ndarray:
  if array.dtype.byteorder == ">":
    return array.astype(array.dtype.newbyteorder("<"))
  return array


def listed_groups(
    patterns: Patterns, *, feature_name: str, npz_members: str, root: str | None
) -> list[Group]:
  """A group per `.npy` file, and per `.npz` (or per member, under `npz_members='examples'`)."""
  groups = []
  sources = paths.expand(
      patterns, kind=".npy/.npz", keep=lambda name: name.endswith(SUFFIXES), root=root
  )
  for path, name in zip(sources, paths.source_names(sources, root)):
    if path.name.endswith(".npy"):
      groups.append(Group(name, {feature_name: npy_files.ArraySource(path)}))
    elif npz_members == "features":
      members = npy_files.npz_sources(path)
      groups.append(Group(name, {_feature_name(path, m.member): m for m in members}))
    else:
      groups.extend(
          Group(f"{name}/{m.member}", {feature_name: m}) for m in npy_files.npz_sources(path)
      )
  return groups


def _feature_name(archive: epath.Path, member: str) -> str:
  """The feature an `.npz` member names: `x.npy` is feature `x`, if `x` is a valid feature name.

  Raises:
    SchemaError: naming the archive and member, for a name such as `a/../b`
      or one with spaces or control characters.
  """
  return safe_paths.check_name(
      "feature name", member[: -len(".npy")], f"{archive}[{safe_paths.shown(member)}]",
      "Rename the array: np.savez(path, name=array) stores it as the member name.npy; "
      "or set npz_members='examples'",
      errors.SchemaError,
  )


def paired_groups(
    mapping: Mapping[str, Patterns], *, root: str | None, config_name: str
) -> list[Group]:
  """A group per position: the i-th `.npy` file of every feature, in sorted order.

  Raises:
    ConfigError: if a feature lists an `.npz`.
    SourceError: if the features match different numbers of files.
  """
  files = {
      feature: paths.expand(
          patterns, kind=".npy", keep=lambda name: name.endswith(".npy"), root=root
      )
      for feature, patterns in mapping.items()
  }
  for feature, found in files.items():
    archives = [str(path) for path in found if not path.name.endswith(".npy")]
    if archives:
      raise errors.ConfigError(
          f"numpy_arrays config {config_name!r}: feature {feature!r} lists "
          f"{archives}; a feature mapping pairs .npy files. An .npz already holds "
          "its features: list it without a mapping (npz_members='features')."
      )
  counts = {feature: len(found) for feature, found in files.items()}
  if len(set(counts.values())) > 1:
    listing = "; ".join(
        f"{feature}: {[str(path) for path in found]}" for feature, found in files.items()
    )
    raise errors.SourceError(
        f"Paired features match different numbers of files {counts} ({listing}). "
        "Each example group needs one file per feature; fix the paths or globs "
        "so that they pair up in sorted order."
    )
  names = {feature: paths.source_names(found, root) for feature, found in files.items()}
  return [
      Group(
          "+".join(names[feature][index] for feature in files),
          {feature: npy_files.ArraySource(found[index]) for feature, found in files.items()},
      )
      for index in range(next(iter(counts.values())))
  ]
