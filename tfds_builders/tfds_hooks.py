"""The only module that touches TFDS internals: lazy builder names and namespaces.

TFDS has no public API for either. Both hooks are isolated here, the supported
TFDS range is pinned in setup.py (`>=4.9.4,<4.10`), and tests/test_registry.py
checks they still work.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from etils import epath


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


def register_namespace(namespace: str, root: epath.PathLike) -> None:
  """Makes `tfds.load("namespace:dataset/config:version")` read from `root`.

  `root` is laid out like a TFDS data_dir (`<dataset>/<config>/<version>/`),
  so TFDS's own data-dir register loads it without any builder code.

  Raises:
    ValueError: if the namespace is already registered with another root.
  """
  from tensorflow_datasets.core import community  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.community import config as config_lib  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.community import register_path  # pylint: disable=g-import-not-at-top

  root_path = epath.Path(root)
  dataset_registry = community.community_register()
  if dataset_registry.has_namespace(namespace):
    existing = list(dataset_registry.config_per_namespace[namespace].paths)
    if existing == [root_path]:
      return
    raise ValueError(
        f"Namespace {namespace!r} is already registered for {existing}; "
        f"cannot register it again for {root_path}."
    )
  namespace_config = config_lib.NamespaceConfig(paths=[root_path])
  dataset_registry.add_namespace(
      namespace=namespace,
      config=namespace_config,
      registers=[register_path.DataDirRegister(namespaces={namespace: namespace_config})],
  )
