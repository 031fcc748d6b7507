"""The DatasetInfo fields a TFDS user expects: supervised keys, homepage, citation, license."""

from __future__ import annotations

from typing import Any

HOMEPAGE = "https://github.com/tfds-builders/tfds_builders"


def info_fields(builder: Any) -> dict[str, Any]:
  """`DatasetInfo` keyword arguments from the builder's config and defaults."""
  config = builder.builder_config
  keys = getattr(config, "supervised_keys", None)
  return {
      "supervised_keys": tuple(keys) if keys else None,
      "homepage": getattr(config, "homepage", None) or HOMEPAGE,
      "citation": getattr(config, "citation", None),
      "license": getattr(config, "license", None),
  }


def after_build(builder: Any) -> None:
  """Runs once every split is written, before TFDS writes `dataset_info.json`."""
