"""The DatasetInfo fields a TFDS user expects: supervised keys, homepage, citation, license."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from typing import Any

from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.core import provenance

# The project's repository; each builder's homepage is its dataset card there.
HOMEPAGE = "https://github.com/tfds-builders/tfds_builders"
CARD_FIELDS = ("supervised_keys", "homepage", "citation", "license")

# Feature names that say "model input" / "target", for the (input, target)
# pair of `as_supervised=True`. `tokens`, `id`, `score` say neither.
_INPUT_NAMES = ("image", "images", "x", "X", "features", "inputs", "input", "data", "text", "audio")
_TARGET_NAMES = ("label", "labels", "y", "Y", "target", "targets")


def card_url(builder_name: str) -> str:
  """The dataset card of one of our builders, in the project's repository."""
  return f"{HOMEPAGE}/blob/main/docs/{builder_name}.md"


def paired_supervised_keys(feature_names: Iterable[str]) -> tuple[str, str] | None:
  """`(input, target)` when exactly one feature is named like an input and one like a target.

  `image`/`label`, `text`/`label`, `x`/`y`, `features`/`target`; None when
  either is missing or ambiguous (`image` and `text`): never a guess.
  """
  names = set(feature_names)
  inputs = [name for name in _INPUT_NAMES if name in names]
  targets = [name for name in _TARGET_NAMES if name in names]
  return (inputs[0], targets[0]) if len(inputs) == 1 and len(targets) == 1 else None


def info_fields(builder: Any) -> dict[str, Any]:
  """`DatasetInfo` keyword arguments from the builder's config and defaults.

  A config value wins. Else the homepage is the builder's dataset card and,
  for builders with `PAIRS_SUPERVISED_KEYS`, the supervised keys are the
  features named as an input/target pair. For a prepared version only config
  values are given: TFDS restores the rest from its dataset_info.json (a field
  set in code would override what the build recorded).

  Raises:
    ConfigError: if `supervised_keys` does not name two top-level features.
  """
  config = builder.builder_config
  fields = {name: getattr(config, name, None) or None for name in CARD_FIELDS}
  if builder.has_prepared_version():
    check_supervised_keys(fields["supervised_keys"], None, config.name)
    return _as_info_kwargs(fields)
  defaults = {"homepage": card_url(builder.name)}
  if getattr(builder, "PAIRS_SUPERVISED_KEYS", False):
    defaults["supervised_keys"] = paired_supervised_keys(builder.inferred_features().keys())
  fields = {name: value if value is not None else defaults.get(name) for name, value in fields.items()}
  if fields["supervised_keys"]:
    check_supervised_keys(fields["supervised_keys"], builder.inferred_features(), config.name)
  return _as_info_kwargs(fields)


def _as_info_kwargs(fields: dict[str, Any]) -> dict[str, Any]:
  keys = fields["supervised_keys"]
  # `--config '{JSON}'` gives a list; TFDS takes a tuple.
  return {**fields, "supervised_keys": tuple(keys) if keys else None}


def check_supervised_keys(keys: Sequence[str] | None, features: Any, config_name: str = "") -> None:
  """Raises ConfigError unless `keys` names two top-level features.

  Args:
    keys: The configured `(input, target)` names, or None.
    features: The dataset's top-level FeaturesDict (or None if unknown yet).
    config_name: Named in the message.
  """
  if not keys:
    return
  where = f"config {config_name!r}: " if config_name else ""
  if isinstance(keys, str) or len(keys) != 2 or not all(isinstance(key, str) for key in keys):
    raise errors.ConfigError(
        f"{where}supervised_keys={keys!r}; give two feature names, (input, target), "
        'e.g. ["image", "label"].'
    )
  if features is None:
    return
  available = list(features.keys())
  missing = [key for key in keys if key not in available]
  if missing:
    raise errors.ConfigError(
        f"{where}supervised_keys names {missing[0]!r}, which is not a feature of "
        f"this dataset; the features are {available}. Name two of them, (input, target)."
    )


def after_build(builder: Any) -> None:
  """Runs once every split is written, before TFDS writes `dataset_info.json`.

  Checks the supervised keys against the written features, records in
  `DatasetInfo.data_source_accesses` what the build read (from its
  provenance, secrets redacted), and writes `croissant.json` beside the shards.
  """
  from tfds_builders.core import croissant  # pylint: disable=g-import-not-at-top

  info = builder.info
  check_supervised_keys(info.supervised_keys, info.features, builder.builder_config.name)
  record = info.metadata.get(provenance.PROVENANCE_KEY) if info.metadata is not None else None
  if record:
    record_accesses(info, provenance.sources_read(record))
  croissant.write_for_build(builder)


def record_accesses(info: Any, sources: Iterable[provenance.SourceRead]) -> None:
  """Adds each source to `info.data_source_accesses`, as TFDS's own builders do."""
  for source in sources:
    if source.kind == "file":
      # A list, so TFDS neither splits the path at commas nor globs a literal `[`.
      path = source.location if source.is_pattern or "://" in source.location else glob.escape(source.location)
      info.add_file_data_source_access([path])
    elif source.kind == "tfds":
      info.add_tfds_data_source_access(tfds_internals.dataset_reference(
          dataset_name=source.name, config=source.config or None,
          version=source.version or None, data_dir=source.location,
      ))
    elif source.kind == "sql":
      info.add_sql_data_source_access(source.query)
      # The proto's SqlQuery has no connection field: its Url says where it ran.
      info.as_proto.data_source_accesses[-1].url.url = provenance.redact(source.location)
