"""The only module that touches TFDS internals: lazy builder names, folder imports and (checked) namespaces.

TFDS has no public API for any of them. The hooks are isolated here, the
supported TFDS range is pinned in setup.py (`>=4.9.4,<4.10`), and
tests/test_registry.py and tests/test_tfds_cli.py check they still work.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from etils import epath

from tfds_builders.core import errors
from tfds_builders.core import safe_paths

BeforeLoad = Callable[[epath.Path], None]


def register_builders_lazily(package: str, names: Sequence[str]) -> None:
  """Makes `tfds.builder(name)` import `package.name` on first use, and `tfds.list_builders()` list `names`.

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
  # `tfds.list_builders()` (and so `tfds build --exclude_datasets`) lists only
  # imported classes and TFDS's own folders; ours are listed without importing them.
  listed = registered.list_imported_builders
  if not hasattr(listed, "lazy_names"):
    @functools.wraps(listed)
    def list_imported_builders() -> list[str]:
      return sorted(set(listed()) | set(list_imported_builders.lazy_names))
    list_imported_builders.lazy_names = set()
    registered.list_imported_builders = list_imported_builders
  registered.list_imported_builders.lazy_names.update(names)


def resolve_folder_import(package_name: str) -> None:
  """Makes a builder package imported by its folder resolve to `tfds_builders.<name>`.

  `tfds build tfds_builders/<name>` imports the folder as the top-level package
  `<name>` and its module as `<name>.<name>_dataset_builder`: a second copy of
  the module, whose classes and functions Beam workers cannot unpickle (no
  `<name>` on their path). Called by each builder package's `__init__`,
  this puts the canonical package and builder module in
  `sys.modules` under the folder names, so the import returns the canonical
  module (importlib re-checks `sys.modules` after importing the parent) and
  only one `Builder` class exists.

  Args:
    package_name: The `__name__` the builder package is being imported under.
  """
  builder_name = package_name.rpartition(".")[2]
  canonical_package = f"{__package__}.{builder_name}"
  if package_name == canonical_package or not _is_our_folder(package_name, canonical_package):
    return  # a copy of the folder elsewhere (a user's fork) stays the user's own code
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top

  folder_module = f"{package_name}.{builder_name}_dataset_builder"
  builder_module = importlib.import_module(f"{canonical_package}.{builder_name}_dataset_builder")
  sys.modules[package_name] = importlib.import_module(canonical_package)
  sys.modules[folder_module] = builder_module
  # `tfds build` looks the class up by the module name it imported.
  registered._MODULE_TO_DATASETS[folder_module] = [builder_module.Builder]  # pylint: disable=protected-access


def _is_our_folder(package_name: str, canonical_package: str) -> bool:
  """Whether the package being imported is this installation's builder folder itself."""
  folder = getattr(sys.modules.get(package_name), "__file__", None)
  spec = importlib.util.find_spec(canonical_package)
  if not folder or spec is None or not spec.origin:
    return False
  try:
    return os.path.samefile(os.path.dirname(folder), os.path.dirname(spec.origin))
  except OSError:
    return False


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
