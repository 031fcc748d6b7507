"""The only module that touches TFDS internals: lazy builder names and (checked) namespaces.

TFDS has no public API for either. Both hooks are isolated here, the supported
TFDS range is pinned in setup.py (`>=4.9.4,<4.10`), and tests/test_registry.py
checks they still work.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from etils import epath

from tfds_builders.core import errors
from tfds_builders.core import safe_paths

BeforeLoad = Callable[[epath.Path], None]


def register_builders_lazily(package: str, names: Sequence[str]) -> None:
  """Makes `tfds.builder(name)` import `package.name` on first use.

  So `import tfds_builders` stays light (no TensorFlow import), and a process
  that only loads published datasets never imports the builder modules.
  """
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top

  class _LazyProvider(registered.DatasetBuilderProvider):

    def has_dataset(self, name: str) -> bool:
      return name in names

    def get_builder_cls(self, name: str):
      return importlib.import_module(f"{package}.{name}").Builder

  if not any(type(p).__qualname__ == _LazyProvider.__qualname__ for p in registered._DATASET_PROVIDER_REGISTRY):  # pylint: disable=protected-access
    registered.add_dataset_builder_provider(_LazyProvider())


def register_namespace(namespace: str, root: epath.PathLike, before_load: BeforeLoad | None = None) -> None:
  """Makes `tfds.load("namespace:dataset/config:version")` read from `root`.

  `root` is laid out like a TFDS data_dir (`<dataset>/<config>/<version>/`),
  so TFDS's own data-dir register loads it without any builder code.

  Args:
    namespace: The namespace name.
    root: The registry root.
    before_load: Called with a version directory before TFDS reads it (when
      the load names its config and version) and again with the directory
      TFDS resolved; raising stops the load. Registering the same namespace
      and root again replaces it.

  Raises:
    ConfigError: if the namespace is already registered with another root.
  """
  from tensorflow_datasets.core import community  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.community import config as config_lib  # pylint: disable=g-import-not-at-top

  root_path = epath.Path(root)
  dataset_registry = community.community_register()
  if dataset_registry.has_namespace(namespace):
    existing = list(dataset_registry.config_per_namespace[namespace].paths)
    if existing == [root_path]:
      for register in dataset_registry.registers_per_namespace.get(namespace, ()):
        if hasattr(register, "before_load"):
          register.before_load = before_load
      return
    raise errors.ConfigError(
        f"Namespace {namespace!r} is already registered for {existing}; "
        f"cannot register it again for {root_path}."
    )
  namespace_config = config_lib.NamespaceConfig(paths=[root_path])
  dataset_registry.add_namespace(
      namespace=namespace,
      config=namespace_config,
      registers=[_checked_register_class()(namespaces={namespace: namespace_config}, before_load=before_load)],
  )


@functools.cache
def _checked_register_class():
  """TFDS's DataDirRegister, calling `before_load` on the version directory it is about to read."""
  from tensorflow_datasets.core.community import register_path  # pylint: disable=g-import-not-at-top

  class CheckedDataDirRegister(register_path.DataDirRegister):

    def __init__(self, namespaces, before_load: BeforeLoad | None):
      super().__init__(namespaces)
      self.before_load = before_load

    def builder(self, name, **builder_kwargs: Any):
      if self.before_load:
        # TFDS reads dataset_info.json while making the builder: check first when the name says where.
        for version_dir in self._named_version_dirs(name, builder_kwargs):
          self.before_load(version_dir)
      builder = super().builder(name, **builder_kwargs)
      if self.before_load:
        self.before_load(epath.Path(builder.data_path))
      return builder

    def _named_version_dirs(self, name, builder_kwargs) -> list[epath.Path]:
      config, version = builder_kwargs.get("config"), builder_kwargs.get("version")
      if not (isinstance(version, str) and safe_paths.VERSION.fullmatch(version)):
        return []
      if config is not None and not (isinstance(config, str) and safe_paths.CONFIG_NAME.fullmatch(config)):
        return []
      parts = [config, version] if config else [version]
      return [
          root.joinpath(*parts) for root in self.get_builder_root_dirs(name)
          if (root.joinpath(*parts) / "dataset_info.json").exists()
      ]

  return CheckedDataDirRegister
