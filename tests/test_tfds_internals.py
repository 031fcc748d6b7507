"""The contract with TFDS's private API: every name tfds_internals uses exists, shaped as it expects.

A TFDS upgrade that moves, renames or reshapes one of them fails here, and the
failure names the function of `tfds_builders.tfds_internals` to update.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import tfds_internals
from tfds_builders.core import streaming_builder

# setup.py pins `tensorflow-datasets>=4.9.4,<4.10`: the range this contract was checked on.
_PINNED = ((4, 9, 4), (4, 10, 0))


def _version(text: str) -> tuple[int, ...]:
  return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def test_tfds_is_in_the_pinned_range():
  low, high = _PINNED
  assert low <= _version(tfds.__version__) < high, (
      f"TFDS {tfds.__version__} is outside the pinned range; check every row of this file, then move the pin."
  )


# (function of tfds_internals, TFDS module, attribute path, leading parameter names it relies on, or None)
_CONTRACT = [
    ("register_builders_lazily", "tensorflow_datasets.core.registered", "DatasetBuilderProvider", None),
    ("register_builders_lazily", "tensorflow_datasets.core.registered", "DatasetBuilderProvider.has_dataset", ["self", "name"]),
    ("register_builders_lazily", "tensorflow_datasets.core.registered", "DatasetBuilderProvider.get_builder_cls", ["self", "name"]),
    ("register_builders_lazily", "tensorflow_datasets.core.registered", "_DATASET_PROVIDER_REGISTRY", None),
    ("register_builders_lazily", "tensorflow_datasets.core.registered", "add_dataset_builder_provider", ["provider"]),
    ("register_builders_lazily", "tensorflow_datasets.core.registered", "list_imported_builders", []),
    ("resolve_folder_import", "tensorflow_datasets.core.registered", "_MODULE_TO_DATASETS", None),
    ("register_namespace", "tensorflow_datasets.core.community", "community_register", []),
    ("register_namespace", "tensorflow_datasets.core.community.config", "NamespaceConfig", None),
    ("register_namespace", "tensorflow_datasets.core.community.registry", "DatasetRegistry.has_namespace", ["self", "namespace"]),
    ("register_namespace", "tensorflow_datasets.core.community.registry", "DatasetRegistry.add_namespace", ["self", "namespace", "config", "registers"]),
    ("register_namespace", "tensorflow_datasets.core.community.register_path", "DataDirRegister.__init__", ["self", "namespaces"]),
    ("register_namespace", "tensorflow_datasets.core.community.register_path", "DataDirRegister.builder", None),
    ("register_namespace", "tensorflow_datasets.core.community.register_path", "DataDirRegister.get_builder_root_dirs", ["self", "name"]),
    ("filename_template", "tensorflow_datasets.core.dataset_builder", "DatasetBuilder._get_filename_template", ["self", "split_name"]),
    ("beam_pipeline", "tensorflow_datasets.core.dataset_builder", "GeneratorBasedBuilder._example_writer", ["self"]),
    ("beam_pipeline", "tensorflow_datasets.core.split_builder", "SplitBuilder.__init__",
     ["self", "split_dict", "features", "dataset_size", "beam_options", "beam_runner", "max_examples_per_split",
      "example_writer", "shard_config", "ignore_duplicates"]),
    ("beam_pipeline", "tensorflow_datasets.core.split_builder", "SplitBuilder.maybe_beam_pipeline", ["self"]),
    ("beam_pipeline", "tensorflow_datasets.core.split_builder", "SplitBuilder.beam_pipeline", None),
    ("apache_beam", "tensorflow_datasets.core", "lazy_imports", None),
    ("example_writer_for", "tensorflow_datasets.core.file_adapters", "ADAPTER_FOR_FORMAT", None),
    ("example_writer_for", "tensorflow_datasets.core.file_adapters", "FileAdapter.write_examples", ["path", "iterator"]),
    ("records_dataset", "tensorflow_datasets.core.file_adapters", "TfRecordFileAdapter.make_tf_data", ["filename"]),
    ("streams_with_tf_data", "tensorflow_datasets.core.file_adapters", "TfRecordFileAdapter.SUPPORTS_TF_DATA", None),
    ("default_shard_bytes", "tensorflow_datasets.core.utils.shard_utils", "DEFAULT_MIN_SHARD_SIZE", None),
    ("default_shard_bytes", "tensorflow_datasets.core.utils.shard_utils", "DEFAULT_MAX_SHARD_SIZE", None),
    ("shard_boundaries", "tensorflow_datasets.core.utils.shard_utils", "get_shard_boundaries", ["num_examples", "number_of_shards"]),
    ("key_hasher", "tensorflow_datasets.core.hashing", "Hasher.__init__", ["self", "salt"]),
    ("key_hasher", "tensorflow_datasets.core.hashing", "Hasher.hash_key", ["self", "key"]),
    ("dataset_reference", "tensorflow_datasets.core.naming", "DatasetReference",
     ["dataset_name", "namespace", "config", "version", "data_dir", "split_mapping", "info_filenames"]),
    ("flatten_nest_dict", "tensorflow_datasets.core.utils", "flatten_nest_dict", ["d"]),
    ("progress_bar", "tensorflow_datasets.core.utils.tqdm_utils", "tqdm", None),
    ("progress_bar", "tensorflow_datasets.core.utils.tqdm_utils", "EmptyTqdm", None),
    ("disable_gcs_access", "tensorflow_datasets.core.utils.gcs_utils", "_is_gcs_disabled", None),
]


@pytest.mark.parametrize(
    ("function", "module", "attribute", "parameters"), _CONTRACT,
    ids=[f"{function}:{module.rpartition('.')[2]}.{attribute}" for function, module, attribute, _ in _CONTRACT],
)
def test_private_tfds_name_is_where_tfds_internals_expects_it(function, module, attribute, parameters):
  assert callable(getattr(tfds_internals, function)), f"tfds_internals.{function} is gone: drop its rows here"
  where = f"{module}.{attribute}, used by tfds_internals.{function}"
  try:
    value = importlib.import_module(module)
  except ImportError as error:
    pytest.fail(f"{module} no longer imports ({error}): update tfds_internals.{function}")
  for part in attribute.split("."):
    assert hasattr(value, part), f"TFDS moved {where}: update that function"
    value = getattr(value, part)
  if parameters is not None:
    # The parameters we pass lead the signature; TFDS may add optional ones after them.
    got = list(inspect.signature(value).parameters)
    assert got[:len(parameters)] == parameters, f"TFDS changed the signature of {where}: {got}, expected {parameters} first"


def test_the_one_designated_override_keeps_tfds_signature():
  """StreamingBuilder._generate_splits overrides TFDS's; a renamed or reshaped method would silently stop being called."""
  tfds_method = inspect.signature(tfds.core.GeneratorBasedBuilder._generate_splits)  # pylint: disable=protected-access
  ours = inspect.signature(streaming_builder.StreamingBuilder._generate_splits)  # pylint: disable=protected-access
  assert list(tfds_method.parameters) == list(ours.parameters) == ["self", "dl_manager", "download_config"]


def test_the_data_dir_attribute_is_where_prepared_data_dir_reads_it(tmp_path):
  builder = tfds.builder("numpy_arrays", data_dir=str(tmp_path))
  assert tfds_internals.prepared_data_dir(builder) == builder.data_dir, "TFDS renamed `_data_dir`: update prepared_data_dir"


def test_the_helpers_return_what_tfds_does():
  assert tfds_internals.default_shard_bytes() == (64 << 20, 1 << 30)
  assert list(tfds_internals.shard_boundaries(10, 3)) == [3, 7, 10]
  assert tfds_internals.flatten_nest_dict({"a": {"b": 1}, "c": 2}) == {"a/b": 1, "c": 2}
  assert tfds_internals.key_hasher("train")("x") == tfds_internals.key_hasher("train")("x")
  assert tfds_internals.streams_with_tf_data(tfds.core.FileFormat.TFRECORD)
  assert callable(tfds_internals.example_writer_for(tfds.core.FileFormat.TFRECORD))
  assert tfds_internals.apache_beam().Pipeline
  zlib_tensor = tfds.features.Tensor(shape=(2,), dtype=np.int64, encoding=tfds.features.Encoding.ZLIB)
  assert tfds_internals.tensor_encoding(zlib_tensor) == tfds.features.Encoding.ZLIB, "update tensor_encoding"


def test_the_registers_keep_the_state_register_namespace_reads():
  from tensorflow_datasets.core import community  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import file_adapters  # pylint: disable=import-outside-toplevel

  dataset_registry = community.community_register()
  for attribute in ("config_per_namespace", "registers_per_namespace"):
    assert hasattr(dataset_registry, attribute), f"TFDS moved DatasetRegistry.{attribute}: update tfds_internals.register_namespace"
  for file_format, adapter in file_adapters.ADAPTER_FOR_FORMAT.items():
    assert hasattr(adapter, "SUPPORTS_TF_DATA"), f"{file_format}: update tfds_internals.streams_with_tf_data"


_BUILDERS = ("numpy_arrays", "concatenated", "cross_product", "database", "augmented")
# TFDS's abstract methods, which StreamingBuilder defines once for every builder.
_DESIGNATED = {"_info", "_split_generators", "_generate_examples", "_generate_splits"}


@pytest.mark.parametrize("name", _BUILDERS)
def test_no_builder_overrides_a_private_tfds_method(name):
  builder_cls = importlib.import_module(f"tfds_builders.{name}").Builder
  tfds_private = {
      attribute for klass in tfds.core.GeneratorBasedBuilder.__mro__
      for attribute, value in vars(klass).items()
      if attribute.startswith("_") and not attribute.startswith("__") and callable(value)
  }
  for klass in builder_cls.__mro__:
    if klass is streaming_builder.StreamingBuilder:
      break
    overridden = sorted(tfds_private & set(vars(klass)))
    assert not overridden, (
        f"{klass.__qualname__} overrides TFDS's private {overridden}: use StreamingBuilder's hooks "
        "(_build_context, _split_streams, _after_build) instead"
    )
  assert _DESIGNATED <= set(vars(streaming_builder.StreamingBuilder))
