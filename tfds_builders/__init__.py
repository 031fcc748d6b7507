"""TensorFlow Datasets builders for everyday data workflows; importing registers them."""

from __future__ import annotations

from tfds_builders.version import __version__  # noqa: F401

# Every builder folder tfds_builders/<name>/ holding <name>_dataset_builder.py.
BUILDERS = ("numpy_arrays", "cross_product", "concatenated", "database", "augmented")

from tfds_builders import registry as _registry  # noqa: E402
from tfds_builders import tfds_internals as _tfds_internals  # noqa: E402

# Registration is lazy: `tfds.load("numpy_arrays/demo", data_dir=...)` imports
# the builder module on first use, so importing this package stays cheap and a
# process that only loads published datasets never imports builder code.
_tfds_internals.register_builders_lazily(__name__, BUILDERS)
# Namespaces of $TFDS_BUILDERS_REGISTRY_CONFIG, for tfds.load("team:name/..."); a
# broken config is logged once, never raised, so this import cannot fail on it.
_registry.register_from_env()


def load_augmented(*args, **kwargs):
  """An `augmented` overlay zipped onto its base; see `tfds_builders.augmented.load_augmented`."""
  from tfds_builders.augmented import overlay_loader  # pylint: disable=g-import-not-at-top

  return overlay_loader.load_augmented(*args, **kwargs)


def augmented_source(*args, **kwargs):
  """An overlay over an ArrayRecord base, read by index (Grain); see `tfds_builders.augmented.random_access`."""
  from tfds_builders.augmented import random_access  # pylint: disable=g-import-not-at-top

  return random_access.augmented_source(*args, **kwargs)
