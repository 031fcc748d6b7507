"""The contract with TFDS's private API: every name tfds_internals uses exists, shaped as it expects.

A TFDS upgrade that moves, renames or reshapes one of them fails here, and the
failure names the function of `tfds_builders.tfds_internals` to update.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os

from etils import epath
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
    ("incomplete_dir_pattern", "tensorflow_datasets.core.constants", "INCOMPLETE_PREFIX", None),
    ("incomplete_dir_pattern", "tensorflow_datasets.core.utils.file_utils", "incomplete_dir", ["dirname"]),
    ("config_metadata_path", "tensorflow_datasets.core.constants", "METADATA_FILENAME", None),
    ("config_metadata_path", "tensorflow_datasets.core.dataset_builder", "load_default_config_name", ["builder_dir"]),
    ("namespace_pattern", "tensorflow_datasets.core.naming", "_NAME_REG", None),
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


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int16, np.int32, np.int64, np.uint64, np.float16,
                                   np.float32, np.float64, np.complex64, np.complex128, np.object_, np.str_, np.bytes_])
def test_tf_dtype_name_is_what_tensor_info_says(dtype):
  feature = tfds.features.Tensor(shape=(2,), dtype=dtype)
  assert tfds_internals.tf_dtype_name(feature.get_tensor_info().np_dtype) == feature.get_tensor_info().tf_dtype.name


def test_the_registers_keep_the_state_register_namespace_reads():
  from tensorflow_datasets.core import community  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import file_adapters  # pylint: disable=import-outside-toplevel

  dataset_registry = community.community_register()
  for attribute in ("config_per_namespace", "registers_per_namespace"):
    assert hasattr(dataset_registry, attribute), f"TFDS moved DatasetRegistry.{attribute}: update tfds_internals.register_namespace"
  for file_format, adapter in file_adapters.ADAPTER_FOR_FORMAT.items():
    assert hasattr(adapter, "SUPPORTS_TF_DATA"), f"{file_format}: update tfds_internals.streams_with_tf_data"


@pytest.mark.parametrize("name", ["incomplete.AB12CD_1.0.0", f"incomplete.{'0' * 32}.1.0.0"])
def test_incomplete_dir_pattern_matches_tfds_names_of_now_and_before(name):
  assert tfds_internals.incomplete_dir_pattern().match(name)


@pytest.mark.parametrize("name", ["incomplete.ab12cd_1.0.0", "incomplete.", "incomplete.notes", "1.0.0", "xincomplete.AB12CD_1.0.0"])
def test_incomplete_dir_pattern_leaves_other_names_alone(name):
  assert not tfds_internals.incomplete_dir_pattern().match(name)


def test_incomplete_dir_pattern_matches_what_this_tfds_creates(tmp_path):
  """A renamed scheme would silently disable the stale-build cleanup (core/streaming_builder.py)."""
  from tensorflow_datasets.core.utils import file_utils  # pylint: disable=import-outside-toplevel

  with file_utils.incomplete_dir(tmp_path / "1.0.0") as build_dir:
    assert tfds_internals.incomplete_dir_pattern().match(os.path.basename(os.path.normpath(build_dir))), (
        f"TFDS names its build dirs like {build_dir}: update incomplete_dir_pattern")


def test_config_metadata_path_is_where_tfds_notes_the_default_config(tmp_path):
  from tensorflow_datasets.core import dataset_builder  # pylint: disable=import-outside-toplevel

  assert tfds_internals.config_metadata_path(tmp_path) == tmp_path / ".config" / "metadata.json"
  # What TFDS's download_and_prepare writes, and reads back when no config is named.
  dataset_builder._save_default_config_name(common_dir=epath.Path(tmp_path), default_config_name="demo")  # pylint: disable=protected-access
  written = tfds_internals.config_metadata_path(tmp_path)
  assert written.exists(), f"TFDS moved the default-config note to {list(tmp_path.rglob('*'))}: update config_metadata_path"
  assert json.loads(written.read_text()) == {"default_config_name": "demo"}
  assert dataset_builder.load_default_config_name(epath.Path(tmp_path)) == "demo"


@pytest.mark.parametrize("namespace", [
    "team", "my-team", "my_team", "T1", "9lives", "-", "\u00e9quipe",
    "", "a.b", "a b", "a/b", "a:b", "a+b", "team!",
])
def test_namespace_pattern_accepts_what_tfds_parses_as_a_namespace(namespace):
  from tensorflow_datasets.core import naming  # pylint: disable=import-outside-toplevel

  parsed = naming._NAME_REG.match(f"{namespace}:dataset")  # pylint: disable=protected-access
  tfds_parses = bool(parsed) and parsed.group("dataset_name") == f"{namespace}:dataset"
  assert bool(tfds_internals.namespace_pattern().fullmatch(namespace)) == tfds_parses, (
      f"TFDS {'parses' if tfds_parses else 'refuses'} the namespace {namespace!r}: update namespace_pattern")


_BUILDERS = ("numpy_arrays", "concatenated", "cross_product", "database", "augmented")
# Set by Python on every class; none is a TFDS behaviour.
_CLASS_BOOKKEEPING = {
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__annotations__",
    "__abstractmethods__", "_abc_impl", "__parameters__", "__orig_bases__", "__firstlineno__",
    "__static_attributes__",
}
# The designated overrides of TFDS attributes (tfds_internals' docstring says why each), by class.
_DESIGNATED = {
    "StreamingBuilder": {
        "_info", "_split_generators", "_generate_examples",  # TFDS's abstract methods, defined once
        "_generate_splits",  # the one private TFDS method overridden
        "download_and_prepare",  # plus removing what a failed build created
    },
    "augmented.Builder": {"canonical_version", "release_notes"},  # the version follows a prepared base's
}


def _behaviours(klass: type) -> set[str]:
  """The methods, properties, cached properties and other descriptors a class itself defines."""
  return {
      attribute for attribute, value in vars(klass).items()
      if attribute not in _CLASS_BOOKKEEPING and (callable(value) or hasattr(value, "__get__"))
  }


@pytest.mark.parametrize("name", _BUILDERS)
def test_no_builder_overrides_a_tfds_attribute_beyond_the_designated_ones(name):
  builder_cls = importlib.import_module(f"tfds_builders.{name}").Builder
  tfds_attributes = {
      attribute for klass in tfds.core.GeneratorBasedBuilder.__mro__ if klass is not object
      for attribute in vars(klass)
  }
  for klass in builder_cls.__mro__:
    if klass is tfds.core.GeneratorBasedBuilder:
      break
    label = "StreamingBuilder" if klass is streaming_builder.StreamingBuilder else f"{name}.{klass.__qualname__}"
    overridden = sorted((_behaviours(klass) & tfds_attributes) - _DESIGNATED.get(label, set()))
    assert not overridden, (
        f"{label} overrides TFDS's {overridden}: use StreamingBuilder's hooks "
        "(_build_context, _split_streams, _after_build), or name the method differently"
    )


@pytest.mark.parametrize("label", sorted(_DESIGNATED))
def test_each_designated_override_still_overrides_a_tfds_attribute(label):
  """A designated override TFDS no longer has, or we no longer define, leaves the allow-list stale."""
  klass = (streaming_builder.StreamingBuilder if label == "StreamingBuilder"
           else importlib.import_module(f"tfds_builders.{label.split('.')[0]}").Builder)
  for attribute in _DESIGNATED[label]:
    assert attribute in vars(klass), f"{label} no longer defines {attribute}: drop it from _DESIGNATED"
    assert hasattr(tfds.core.GeneratorBasedBuilder, attribute), (
        f"TFDS no longer has {attribute}, so {label}.{attribute} overrides nothing: update tfds_internals")
