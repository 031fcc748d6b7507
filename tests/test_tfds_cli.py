"""TFDS's own command line and listing on our builders: Beam through the folder form, list_builders, a broken registry config."""

from __future__ import annotations

import json
import pathlib

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_builders
from tfds_builders import registry

from tests import faults
from tests import helpers

pytestmark = pytest.mark.slow  # every test runs `tfds build` in a subprocess

# `--config_idx 0`: each builder's first config, all built by one `tfds build`.
_FIRST_CONFIGS = {
    "numpy_arrays": "demo", "concatenated": "demo", "cross_product": "product",
    "database": "demo", "augmented": "demo",
}
_MULTI_PROCESSING = "runner=DirectRunner,direct_running_mode=multi_processing,direct_num_workers=2"
_WARNING = registry.CONFIG_ENV


def _records(version_dir: pathlib.Path) -> dict[str, list[bytes]]:
  """Every split's stored records, in order: equal mappings mean equal datasets."""
  info = tfds.builder_from_directory(str(version_dir)).info
  return {
      split: [record.numpy() for record in tf.data.TFRecordDataset(
          [str(version_dir / name) for name in info.splits[split].filenames])]
      for split in info.splits
  }


def _warnings(output: str) -> list[str]:
  return [line for line in output.splitlines() if _WARNING in line]


def test_beam_pipeline_options_multi_processing_builds_every_builder_as_locally(tmp_path) -> None:
  missing_config = tmp_path / "no_such_registry.toml"
  result = faults.run_command(
      [faults.TFDS, "build", *(str(faults.REPO / "tfds_builders" / name) for name in _FIRST_CONFIGS),
       "--config_idx", "0", "--data_dir", str(tmp_path / "beam"), f"--beam_pipeline_options={_MULTI_PROCESSING}"],
      **{registry.CONFIG_ENV: str(missing_config)},
  )
  assert "Done consuming work" in result.stderr  # the examples were written by worker processes
  # The main process and every worker import tfds_builders: each logs the missing config, none fails.
  logged = _warnings(result.stdout + result.stderr)  # TFDS's CLI logs to stdout
  assert logged and all(str(missing_config) in line for line in logged)
  for name, config in _FIRST_CONFIGS.items():
    builder_cls = tfds.builder_cls(name)
    local = builder_cls(config=config, data_dir=str(tmp_path / "local"))
    local.download_and_prepare()
    on_beam = helpers.version_dir(tmp_path / "beam", name, config)
    assert _records(on_beam) == _records(pathlib.Path(local.data_path)), name
    assert all(_records(on_beam).values()), f"{name}: an empty split"


_FOLDER_IMPORT = """
import pickle, sys
import tensorflow_datasets as tfds
from tensorflow_datasets.scripts.cli import build  # what `tfds build <folder>` runs to find the class
import tfds_builders
for name in tfds_builders.BUILDERS:
  builder_cls, _ = build._get_builder_cls_and_kwargs(f"{REPO}/tfds_builders/{name}", has_imports=False)
  canonical = sys.modules[f"tfds_builders.{name}"]
  print(name, builder_cls.__module__, builder_cls is canonical.Builder, sys.modules[name] is canonical,
        tfds.builder_cls(name) is builder_cls, b"tfds_builders." in pickle.dumps(builder_cls))
"""


def test_a_builder_folder_imports_as_the_canonical_module() -> None:
  lines = faults.run_python(_FOLDER_IMPORT.replace("{REPO}", str(faults.REPO))).stdout.splitlines()
  assert lines[-len(tfds_builders.BUILDERS):] == [
      f"{name} tfds_builders.{name}.{name}_dataset_builder True True True True" for name in tfds_builders.BUILDERS
  ]


_LIST_BUILDERS = """
import json, sys
import tfds_builders
after_import = sorted(m for m in sys.modules if m.startswith(tuple(f"tfds_builders.{b}" for b in tfds_builders.BUILDERS)))
import tensorflow_datasets as tfds
names = tfds.list_builders(with_community_datasets=False)
after_list = sorted(m for m in sys.modules if m.startswith(tuple(f"tfds_builders.{b}" for b in tfds_builders.BUILDERS)))
print(json.dumps({"names": names, "after_import": after_import, "after_list": after_list}))
"""


def test_list_builders_lists_ours_lazily_and_exclude_datasets_reaches_them(tmp_path) -> None:
  listed = json.loads(faults.run_python(_LIST_BUILDERS).stdout.splitlines()[-1])
  assert set(tfds_builders.BUILDERS) <= set(listed["names"])
  assert "mnist" in listed["names"] and len(listed["names"]) == len(set(listed["names"]))  # TFDS's own too, once each
  assert listed["after_import"] == listed["after_list"] == []
  # `tfds build --exclude_datasets` builds every listed dataset but those: here all but numpy_arrays,
  # with a registry config that is not TOML, which must not stop it.
  bad_config = tmp_path / "registry.toml"
  bad_config.write_text("namespaces = [\n")
  excluded = sorted(set(listed["names"]) - {"numpy_arrays"})
  result = faults.run_command(
      [faults.TFDS, "build", "--imports", "tfds_builders", f"--exclude_datasets={','.join(excluded)}",
       "--config", "demo", "--data_dir", str(tmp_path / "data")],
      **{registry.CONFIG_ENV: str(bad_config)},
  )
  assert faults.loadable_dirs(tmp_path / "data") == [tmp_path / "data" / "numpy_arrays" / "demo" / "1.0.0"]
  info = tfds.builder_from_directory(str(tmp_path / "data" / "numpy_arrays" / "demo" / "1.0.0")).info
  assert (info.splits["train"].num_examples, info.splits["test"].num_examples) == (8, 2)
  (warning,) = _warnings(result.stdout + result.stderr)
  assert f"{bad_config} is not valid TOML" in warning


_IMPORT_THEN_REGISTER = """
import tfds_builders
from tfds_builders import registry
from tfds_builders.core import errors
print("imported", flush=True)
try:
  registry.register()
except errors.ConfigError as error:
  print("ConfigError:", error)
"""


@pytest.mark.parametrize("broken, problem", [
    ("missing", "not found"),
    ("not_toml", "is not valid TOML"),
    ("a_folder", "cannot be read: .*Is a directory"),
    ("no_paths", r"team.paths = \[\]; give one registry root"),
    ("bad_name", r"namespaces.bad:name: 'bad:name' is no namespace name"),
    ("credentials", r"namespaces.team = s3://\*\*\*@reg/root carries credentials.*not in the URL"),
])
def test_a_broken_registry_config_warns_once_and_fails_only_register(broken, problem, tmp_path) -> None:
  config = tmp_path / "registry.toml"
  if broken == "not_toml":
    config.write_text('[namespaces]\nteam = "/shared\n')
  elif broken == "a_folder":
    config.mkdir()
  elif broken == "no_paths":
    config.write_text("[team]\npaths = []\n")
  elif broken == "bad_name":
    config.write_text('[namespaces]\n"bad:name" = "/shared"\n')
  elif broken == "credentials":
    config.write_text('[namespaces]\nteam = "s3://AKIAEXAMPLE:supersecretkey@reg/root"\n')
  env = {registry.CONFIG_ENV: str(config)}
  result = faults.run_python(_IMPORT_THEN_REGISTER, **env)
  (warning,) = _warnings(result.stderr)
  faults.assert_message(warning, [str(config), problem])
  assert result.stdout.startswith("imported\nConfigError: Registry config")
  faults.assert_message(result.stdout, [str(config), problem])
  assert "supersecretkey" not in result.stdout + result.stderr
  usage = faults.run_command([faults.CLI, "--help"], **env)
  assert usage.stdout.startswith("usage: tfds-builders")
  assert len(_warnings(usage.stderr)) == 1
  if broken == "a_folder":  # the folder form without Beam, under a broken config
    build = faults.run_command(
        [faults.TFDS, "build", str(faults.REPO / "tfds_builders" / "numpy_arrays"), "--config", "demo",
         "--data_dir", str(tmp_path / "data")], **env,
    )
    assert len(_warnings(build.stdout + build.stderr)) == 1
    info = tfds.builder_from_directory(str(tmp_path / "data" / "numpy_arrays" / "demo" / "1.0.0")).info
    assert info.splits["train"].num_examples == 8


_NAMESPACE_LOAD = """
import sys
import tensorflow_datasets as tfds
import tfds_builders
labels = [int(e["label"]) for e in tfds.as_numpy(tfds.load("team:numpy_arrays/demo:1.0.0", split="train"))]
print(labels, [m for m in sys.modules if m.startswith("tfds_builders.numpy_arrays")])
"""


def test_a_namespace_loads_from_a_tfds_style_toml(tmp_path) -> None:
  local = tfds.builder_cls("numpy_arrays")(config="demo", data_dir=str(tmp_path / "data"))
  local.download_and_prepare()
  registry.publish(local.data_path, tmp_path / "registry")
  config = tmp_path / "community-datasets.toml"
  config.write_text(
      '[team]\ninfo = """\nOur datasets.\n\nExample: tfds.load("team:numpy_arrays/demo")\n"""\n'
      f'paths = ["{tmp_path / "registry"}"]\n'
  )
  expected = [int(e["label"]) for e in tfds.as_numpy(local.as_dataset(split="train"))]
  result = faults.run_python(_NAMESPACE_LOAD, **{registry.CONFIG_ENV: str(config)})
  assert result.stdout.splitlines()[-1] == f"{expected} []"
  assert not _warnings(result.stderr)
  assert registry.read_namespaces(config) == {"team": str(tmp_path / "registry")}


def test_a_copy_of_a_builder_folder_elsewhere_builds_its_own_code(tmp_path) -> None:
  import shutil  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel

  # TFDS's usual workflow: copy a dataset folder and edit it. The copy must run, not ours.
  fork = tmp_path / "fork" / "numpy_arrays"
  shutil.copytree(faults.REPO / "tfds_builders" / "numpy_arrays", fork,
                  ignore=shutil.ignore_patterns("__pycache__"))
  module = fork / "numpy_arrays_dataset_builder.py"
  source = module.read_text()
  assert 'VERSION = tfds.core.Version("1.0.0")' in source
  module.write_text(source.replace('VERSION = tfds.core.Version("1.0.0")', 'VERSION = tfds.core.Version("7.7.7")'))
  array = tmp_path / "x.npy"
  np.save(array, np.arange(6, dtype=np.int16).reshape(3, 2))
  faults.run_command([
      faults.TFDS, "build", str(fork), "--data_dir", str(tmp_path / "data"),
      "--config", json.dumps({"name": "fork", "splits": {"train": [str(array)]}}),
  ])
  assert sorted(p.name for p in (tmp_path / "data" / "numpy_arrays" / "fork").iterdir()) == ["7.7.7"]
