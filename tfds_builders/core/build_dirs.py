"""What a failed build created under data_dir is removed again; what existed before is never touched."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import tfds_internals


@contextlib.contextmanager
def removed_on_failure(
    builder: tfds.core.DatasetBuilder,
    download_dir: os.PathLike | str | None = None,
    download_config: tfds.download.DownloadConfig | None = None,
) -> Iterator[None]:
  """Removes the folders (and TFDS's default-config note) that a failing `download_and_prepare` created.

  TFDS removes its `incomplete.*` folder itself, but not the folders it made
  on the way: `data_dir/<name>/<config>/`, `.config/metadata.json`,
  `downloads/extracted/`, `data_dir` itself. Only folders that did not exist
  before and are empty again are removed, so a folder holding other versions
  or configs, or anything written meanwhile by another build, stays.

  Args:
    builder: The builder about to prepare.
    download_dir: `download_and_prepare`'s argument (default: data_dir/downloads).
    download_config: Its argument (for a custom `extract_dir`).
  """
  root = epath.Path(builder.data_dir_root)
  downloads = epath.Path(download_dir) if download_dir else root / "downloads"
  extract_dir = getattr(download_config, "extract_dir", None)
  # TFDS notes the default config name in `data_dir/<name>/.config/` before building.
  note = tfds_internals.config_metadata_path(builder.data_path.parent.parent)
  targets = [
      builder.data_path, downloads / "extracted",
      epath.Path(extract_dir) if extract_dir else downloads,
      note.parent,
  ]
  new_dirs = _missing_with_ancestors(targets)
  note_is_new = not note.exists()
  try:
    yield
  except BaseException:
    if not (builder.data_path / "dataset_info.json").exists():  # not prepared after all
      if note_is_new:
        note.unlink(missing_ok=True)
      _remove_empty(new_dirs)
    raise


def _missing_with_ancestors(paths: Iterable[epath.Path]) -> list[epath.Path]:
  """Each path and its ancestors up to the first that exists, deepest first."""
  missing: set[epath.Path] = set()
  for path in paths:
    while not path.exists() and path != path.parent:
      missing.add(path)
      path = path.parent
  return sorted(missing, key=lambda path: len(path.parts), reverse=True)


def _remove_empty(dirs: Iterable[epath.Path]) -> None:
  for path in dirs:  # deepest first, so parents are empty by their turn
    try:
      if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    except OSError:
      pass  # filled meanwhile, or gone: either way not ours to remove
