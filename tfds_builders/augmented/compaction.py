"""`compact`: an overlay chain and its root base written as one ordinary TFDS dataset (materialize of the same fields)."""

from __future__ import annotations

from etils import epath

from tfds_builders.augmented import augmented_dataset_builder
from tfds_builders.augmented import chain as chain_lib
from tfds_builders.core import errors
from tfds_builders.core import safe_paths


def compact(overlay: str, out_data_dir: str, *, data_dir: str | None = None, name: str | None = None,
            version: str | None = None) -> epath.Path:
  """Materializes an overlay and the chain under it into one ordinary TFDS dataset; returns its directory.

  Its records hold the root base's bytes, then every link's fields taken
  byte-exact from the links' records: what `materialize` writes for the
  same fields. Neither the overlay nor the base is modified.

  Args:
    overlay: The overlay's version directory, or `augmented/<config>[:version]` under `data_dir`.
    out_data_dir: The data_dir written to (`augmented/<name>/<version>/` in it).
    data_dir: Where an overlay given by name is.
    name: The config name (default: the overlay's; `<it>_compacted` for a
      bundled config's overlay, whose name TFDS keeps for the bundled config).
    version: The version (default: the minor version after the overlay's).

  Raises:
    SourceError, ConfigError: as `resolve` for a broken chain or a missing base;
      ConfigError for a name or version that is not a valid TFDS one, a
      bundled config's name, or an output version directory that exists already.
  """
  hint = "Pick another --name or --version"
  if version is not None:
    safe_paths.check_name("version", version, "compact --version", hint, errors.ConfigError)
  top = chain_lib.open_link(overlay, data_dir)
  bundled = [config.name for config in augmented_dataset_builder.Builder.BUILDER_CONFIGS]
  if name in bundled:  # TFDS refuses a custom config named like a bundled one
    raise errors.ConfigError(errors.with_hint(
        f"compact --name {name!r} is the name of a bundled augmented config ({', '.join(bundled)})", hint))
  if name is None:
    name = top.name.split("/")[1]
    name = f"{name}_compacted" if name in bundled else name  # e.g. the bundled demo_overlay
  config = augmented_dataset_builder.BuilderConfig(
      name=name, base=top.location, mode="materialize", version=version,
      description=f"Compaction of overlay {top.name}.",
  )
  builder = augmented_dataset_builder.Builder(config=config, data_dir=str(out_data_dir))
  target = epath.Path(builder.data_path)
  if target.exists():  # TFDS would reuse what is there (the overlay itself, if it is the same folder)
    raise errors.ConfigError(errors.with_hint(
        f"compact: {target} exists already ({'the overlay itself' if _same(target, top.location) else 'a prepared dataset'})",
        f"{hint}, or another OUT_DATA_DIR; a compaction never replaces a dataset"))
  builder.download_and_prepare()
  return target


def _same(path: epath.Path, location: str) -> bool:
  try:
    return path.resolve() == epath.Path(location).resolve()
  except OSError:
    return False
