"""EVERY touch of a private TFDS API: builder hooks, registration, writers, shard sizing and small utilities.

TFDS has no public API for any of these. Each is reached through one named
function here, the supported TFDS range is pinned in setup.py
(`>=4.9.4,<4.10`), and tests/test_tfds_internals.py checks every private name
these functions use, so a TFDS upgrade that moves one fails there, naming the
function. TFDS's folder conventions (incomplete build dirs, the dataset's
`.config/metadata.json`, namespace names) are named here too.

The designated overrides of TFDS attributes stay in their classes, and the
same test fails on any other:
- `StreamingBuilder._generate_splits` (core/streaming_builder.py), the one
  private TFDS method overridden, whose signature the test checks;
- `StreamingBuilder.download_and_prepare`: TFDS's, plus removing what a failed
  build created (core/build_dirs.py), public and overridden by TFDS's own
  folder builders too;
- TFDS's abstract `_info`, `_split_generators` and `_generate_examples`,
  defined once in StreamingBuilder;
- augmented's `canonical_version` and `release_notes`: a version made from a
  prepared base follows the base's version, which TFDS reads only from
  `VERSION` or the config (a per-config `version` cannot depend on the base
  without overriding TFDS's private config resolution).
Builders otherwise override only StreamingBuilder's own hooks
(`_build_context`, `_split_streams`, `_after_build`).
Imports are made inside the functions, so `import tfds_builders` stays light.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


# --- TFDS's folder and name conventions, which it spells only inside its own code. ---


@functools.cache
def incomplete_dir_pattern() -> re.Pattern[str]:
  """Names of the dirs TFDS builds a version in before renaming it: `incomplete.<6 of A-Z0-9>_<version>`.

  TFDS's `file_utils.incomplete_dir` names them from `constants.INCOMPLETE_PREFIX`;
  the `<32 hex>.` form is older TFDS's. Nothing else of that name is touched.
  """
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top

  return re.compile(rf"^{re.escape(constants.INCOMPLETE_PREFIX)}(?:[A-Z0-9]{{6}}_|[0-9a-f]{{32}}\.).+$")


def config_metadata_path(dataset_dir: epath.PathLike) -> epath.Path:
  """Where TFDS notes a dataset's default config: `<data_dir>/<dataset>/.config/metadata.json`."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top

  return epath.Path(dataset_dir) / ".config" / constants.METADATA_FILENAME


@functools.cache
def namespace_pattern() -> re.Pattern[str]:
  """The namespace names `tfds.load("namespace:dataset")` parses.

  TFDS spells it only inside `naming._NAME_REG` (`[\\w\\-]+:` before the
  dataset name); the contract test checks the two agree.
  """
  return re.compile(r"[\w-]+")


# --- Builder internals: what StreamingBuilder needs of GeneratorBasedBuilder. ---


def prepared_data_dir(builder: Any) -> str | None:
  """The version directory a builder reads a prepared dataset from (TFDS's `_data_dir`), or None."""
  return getattr(builder, "_data_dir", None)


def filename_template(builder: Any, split_name: str) -> Any:
  """The `tfds.core.ShardedFileTemplate` of a split's shards, as TFDS's own writer names them."""
  return builder._get_filename_template(split_name=split_name)  # pylint: disable=protected-access


@contextlib.contextmanager
def beam_pipeline(builder: Any, download_config: Any) -> Iterator[Any]:
  """Yields the Beam pipeline TFDS would run the build in, and runs it on exit.

  TFDS's `SplitBuilder` only supplies the pipeline (runner and options from
  `--beam_pipeline_options`); the partitions are written by our writer.
  """
  from tensorflow_datasets.core import split_builder as split_builder_lib  # pylint: disable=g-import-not-at-top

  pipeline_owner = split_builder_lib.SplitBuilder(
      split_dict=builder.info.splits,
      features=builder.info.features,
      dataset_size=builder.info.dataset_size,
      max_examples_per_split=None,
      beam_options=download_config.beam_options,
      beam_runner=download_config.beam_runner,
      example_writer=builder._example_writer(),  # pylint: disable=protected-access
  )
  with pipeline_owner.maybe_beam_pipeline():
    yield pipeline_owner.beam_pipeline


def apache_beam() -> Any:
  """The `apache_beam` module, imported through TFDS's lazy importer (a clear error if missing)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds.core.lazy_imports.apache_beam


# --- Writers, shard sizing and hashing: TFDS's rules, reused so our shards match its own. ---


def example_writer_for(file_format: Any) -> Callable[[Any, Iterable[tuple[Any, bytes]]], Any]:
  """TFDS's `write_examples(path, (key, serialized) pairs)` for a shard file format."""
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top

  return file_adapters.ADAPTER_FOR_FORMAT[file_format].write_examples


def streams_with_tf_data(file_format: Any) -> bool:
  """Whether TFDS can read shards of `file_format` as a `tf.data` pipeline."""
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top

  return file_adapters.ADAPTER_FOR_FORMAT[file_format].SUPPORTS_TF_DATA


def records_dataset(file_format: Any, filename: Any) -> Any:
  """A `tf.data.Dataset` of one shard's serialized records, read by TFDS's adapter for `file_format`."""
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top

  return file_adapters.ADAPTER_FOR_FORMAT[file_format].make_tf_data(filename)


def default_shard_bytes() -> tuple[int, int]:
  """TFDS's default `(min, max)` shard sizes in bytes (64 MiB, 1 GiB)."""
  from tensorflow_datasets.core.utils import shard_utils  # pylint: disable=g-import-not-at-top

  return shard_utils.DEFAULT_MIN_SHARD_SIZE, shard_utils.DEFAULT_MAX_SHARD_SIZE


def shard_boundaries(num_examples: int, num_shards: int) -> Sequence[int]:
  """Where TFDS ends each of `num_shards` shards of `num_examples` examples."""
  from tensorflow_datasets.core.utils import shard_utils  # pylint: disable=g-import-not-at-top

  return shard_utils.get_shard_boundaries(num_examples, num_shards)


def key_hasher(salt: str) -> Callable[[Any], int]:
  """TFDS's `hash_key(key)` for a split salted with `salt`, the order its shuffling writer uses."""
  from tensorflow_datasets.core import hashing  # pylint: disable=g-import-not-at-top

  return hashing.Hasher(salt).hash_key


# --- Metadata, progress bars and small utilities. ---


def dataset_reference(
    dataset_name: str, config: str | None, version: str | None, data_dir: str
) -> Any:
  """A TFDS `DatasetReference`, for `DatasetInfo.add_tfds_data_source_access`."""
  from tensorflow_datasets.core import naming  # pylint: disable=g-import-not-at-top

  return naming.DatasetReference(dataset_name=dataset_name, config=config, version=version, data_dir=data_dir)


def tensor_encoding(feature: Any) -> Any:
  """How a `tfds.features.Tensor` stores its values (`tfds.features.Encoding`); TFDS keeps it private."""
  return feature._encoding  # pylint: disable=protected-access


def tf_dtype_name(np_dtype: Any) -> str:
  """TensorFlow's name of a feature's NumPy dtype (`string`, `uint8`, ...), as `TensorInfo.tf_dtype.name`.

  `TensorInfo.tf_dtype` imports TensorFlow (~4 s, ~570 MB) to answer; a
  build that never touches a tensor should not pay that for a name.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  dtype = np.dtype(np_dtype)
  return "string" if dtype.kind in "OSU" else dtype.name


def flatten_nest_dict(nest: Mapping[str, Any]) -> dict[str, Any]:
  """TFDS's flattening of nested features or examples into `{"a/b": leaf}`."""
  from tensorflow_datasets.core import utils  # pylint: disable=g-import-not-at-top

  return utils.flatten_nest_dict(nest)


def progress_bar(**tqdm_kwargs: Any) -> Any | None:
  """A TFDS tqdm bar (honouring `tfds.disable_progress_bar()`), or None when it is hidden."""
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top

  bar = tqdm_utils.tqdm(**tqdm_kwargs)
  if isinstance(bar, tqdm_utils.EmptyTqdm) or bar.disable:
    bar.close()
    return None
  return bar


def disable_gcs_access() -> None:
  """Stops TFDS from looking datasets up on its GCS bucket (offline tests, benchmarks)."""
  from tensorflow_datasets.core.utils import gcs_utils  # pylint: disable=g-import-not-at-top

  gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
