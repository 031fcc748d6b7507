"""Tests of the registry: publish, verify, list, namespaces, atomicity, and the CLI verbs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

import tfds_builders
from tfds_builders import cli
from tfds_builders import registry
from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.numpy_arrays import Builder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
  builder = Builder(config="demo", data_dir=str(tmp_path_factory.mktemp("data")))
  builder.download_and_prepare()
  return Path(builder.data_path)


def _tree(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_publish_copies_files_and_records_checksums(demo_dir, tmp_path) -> None:
  target = registry.publish(demo_dir, tmp_path)
  assert Path(target) == tmp_path / "numpy_arrays" / "demo" / "1.0.0"
  published = _tree(Path(target))
  for name, content in _tree(demo_dir).items():
    if name != "croissant.json":
      assert published[name] == content
  record = json.loads(published[registry.CHECKSUMS_FILENAME])
  checksums = record["sha256"]
  assert set(checksums) == set(_tree(demo_dir))
  # The published Croissant gains the publication date; everything else is the build's.
  built, stamped = (json.loads(tree["croissant.json"]) for tree in (_tree(demo_dir), published))
  assert stamped.pop("datePublished") == record["published_at"]
  assert stamped == built
  assert checksums["croissant.json"] == hashlib.sha256(published["croissant.json"]).hexdigest()
  assert registry.verify(tmp_path) == (1, [])
  assert [p.name for p in (tmp_path / "numpy_arrays" / "demo").iterdir()] == ["1.0.0"]


def test_publishing_an_existing_version_is_refused_unless_overwrite(demo_dir, tmp_path) -> None:
  registry.publish(demo_dir, tmp_path)
  with pytest.raises(FileExistsError, match="numpy_arrays/demo:1.0.0 is already published.*--overwrite"):
    registry.publish(demo_dir, tmp_path)
  marker = tmp_path / "numpy_arrays" / "demo" / "1.0.0" / "features.json"
  marker.write_text("changed")
  registry.publish(demo_dir, tmp_path, overwrite=True)
  assert marker.read_bytes() == (demo_dir / "features.json").read_bytes()
  assert sorted(p.name for p in (tmp_path / "numpy_arrays" / "demo").iterdir()) == ["1.0.0"]


def test_verify_reports_damaged_missing_and_unexpected_files(demo_dir, tmp_path) -> None:
  version_dir = Path(registry.publish(demo_dir, tmp_path))
  shard = next(version_dir.glob("*train.tfrecord*"))
  shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
  (version_dir / "metadata.json").unlink()
  (version_dir / "stray.txt").write_text("x")
  checked, damages = registry.verify(tmp_path / "numpy_arrays")
  assert checked == 1
  assert {(Path(d.path).name, d.problem.split(" ")[0]) for d in damages} == {
      (shard.name, "checksum"), ("metadata.json", "missing"), ("stray.txt", "unexpected"),
  }


def test_verify_of_an_empty_path_is_an_error(tmp_path) -> None:
  with pytest.raises(errors.SourceError, match="No published dataset version"):
    registry.verify(tmp_path)


def test_list_reports_size_counts_date_and_provenance(demo_dir, tmp_path) -> None:
  registry.publish(demo_dir, tmp_path)
  (entry,) = registry.list_versions(tmp_path)
  assert (entry.dataset, entry.config, entry.version) == ("numpy_arrays", "demo", "1.0.0")
  assert entry.num_examples == {"train": 8, "test": 2}
  assert entry.num_bytes == sum(len(c) for c in _tree(Path(entry.path)).values())
  assert entry.built_at.startswith("20")
  assert entry.provenance_summary == f"built by numpy_arrays {tfds_builders.__version__} from 6 source(s)"


def test_cli_publish_list_verify_exit_codes(demo_dir, tmp_path, capsys) -> None:
  assert cli.main(["publish", str(demo_dir), str(tmp_path)]) == cli.EXIT_OK
  assert cli.main(["publish", str(demo_dir), str(tmp_path)]) == cli.EXIT_ERROR
  assert "already published" in capsys.readouterr().err
  assert cli.main(["list", str(tmp_path)]) == cli.EXIT_OK
  assert "numpy_arrays/demo:1.0.0" in capsys.readouterr().out
  assert cli.main(["verify", str(tmp_path)]) == cli.EXIT_OK
  (tmp_path / "numpy_arrays/demo/1.0.0/features.json").write_text("{}")
  assert cli.main(["verify", str(tmp_path / "numpy_arrays/demo/1.0.0")]) == cli.EXIT_ERROR
  assert "DAMAGED" in capsys.readouterr().out


def test_namespace_config_errors_are_clear(tmp_path) -> None:
  config = tmp_path / "registry.toml"
  config.write_text("[other]\nx = 1\n")
  with pytest.raises(errors.ConfigError, match=r"no \[namespaces\] table"):
    registry.register(config_path=config)
  with pytest.raises(errors.ConfigError, match="not found"):
    registry.register(config_path=tmp_path / "missing.toml")


def test_namespace_registration_hook_still_works(demo_dir, tmp_path) -> None:
  """Guards the TFDS-internal hook behind register_namespace (TFDS pinned <4.10)."""
  registry.publish(demo_dir, tmp_path)
  tfds_internals.register_namespace("hooktest", tmp_path)
  tfds_internals.register_namespace("hooktest", tmp_path)  # idempotent
  with pytest.raises(ValueError, match="already registered"):
    tfds_internals.register_namespace("hooktest", tmp_path / "elsewhere")
  builder = tfds.builder("hooktest:numpy_arrays/demo:1.0.0")
  assert builder.info.splits["train"].num_examples == 8


_FRESH_PROCESS = """
import sys, tensorflow_datasets as tfds
import tfds_builders  # registers the namespaces of $TFDS_BUILDERS_REGISTRY_CONFIG
examples = list(tfds.as_numpy(tfds.load("team:numpy_arrays/demo:1.0.0", split="train")))
builder_modules = [m for m in sys.modules if m.startswith("tfds_builders.numpy_arrays")]
print(len(examples), int(examples[0]["label"]), builder_modules)
"""


@pytest.mark.slow
def test_load_by_namespace_in_a_fresh_process_without_builder_code(demo_dir, tmp_path) -> None:
  registry.publish(demo_dir, tmp_path / "reg")
  config = tmp_path / "registry.toml"
  config.write_text(f'[namespaces]\nteam = "{tmp_path / "reg"}"\n')
  expected = [int(e["label"]) for e in tfds.as_numpy(tfds.builder_from_directory(str(demo_dir)).as_dataset(split="train"))]
  env = {**os.environ, registry.CONFIG_ENV: str(config), "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], env=env, capture_output=True, text=True, check=True)
  assert result.stdout.split("\n")[-2] == f"8 {expected[0]} []"


_SLOW_PUBLISH = """
import sys
from tfds_builders import registry
def slow_copy(source, destination):
  print("copying", flush=True)
  import time; time.sleep(30)
registry._copy_file = slow_copy
registry.publish(sys.argv[1], sys.argv[2], overwrite=True)
"""


@pytest.mark.slow
def test_a_killed_publish_leaves_the_previous_version_intact(demo_dir, tmp_path) -> None:
  version_dir = Path(registry.publish(demo_dir, tmp_path))
  before = _tree(version_dir)
  process = subprocess.Popen(
      [sys.executable, "-c", _SLOW_PUBLISH, str(demo_dir), str(tmp_path)],
      stdout=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
  )
  lines = iter(process.stdout.readline, "")
  assert "copying" in (line.strip() for line in lines)  # now mid-publish
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=30)
  assert _tree(version_dir) == before
  assert registry.verify(tmp_path) == (1, [])
  assert [e.version for e in registry.list_versions(tmp_path)] == ["1.0.0"]
  assert tfds.builder_from_directory(str(version_dir)).info.splits["train"].num_examples == 8
  registry.publish(demo_dir, tmp_path, overwrite=True)  # a rerun succeeds
  assert registry.verify(tmp_path) == (1, [])


@pytest.mark.slow
def test_tfds_build_publish_dir_gives_a_loadable_registry(tmp_path) -> None:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  subprocess.run(
      [str(Path(sys.executable).parent / "tfds"), "build", str(REPO / "tfds_builders" / "numpy_arrays"),
       "--config", "demo", "--data_dir", str(tmp_path / "data"), "--publish_dir", str(tmp_path / "reg")],
      env=env, check=True, capture_output=True,
  )
  (entry,) = registry.list_versions(tmp_path / "reg")
  assert entry.num_examples == {"train": 8, "test": 2}
  _, damages = registry.verify(tmp_path / "reg")
  assert [d.problem for d in damages] == ["no checksums recorded (not published with tfds-builders publish)"]
  registry.register("published", tmp_path / "reg")
  with pytest.raises(errors.SourceError, match="no checksums recorded.*Re-publish it"):
    tfds.load("published:numpy_arrays/demo:1.0.0", split="test")
  registry.register("published", tmp_path / "reg", verify=False)  # the explicit opt-out
  assert len(list(tfds.load("published:numpy_arrays/demo:1.0.0", split="test"))) == 2


# A secret in a registry URL: refused up front, never echoed (the user info is shown as ***).
_SECRET_URLS = ("s3://AKIAEXAMPLE:supersecretkey@reg/root", "s3://AKIAEXAMPLE@reg/root",
                "s3://AKIAEXAMPLE:super/secretkey@reg/root", "gs://AKIAEXAMPLE:supersecretkey@reg/root")


@pytest.mark.parametrize("url", _SECRET_URLS)
def test_every_registry_entry_point_refuses_a_url_with_credentials(url, demo_dir, tmp_path) -> None:
  calls = {
      "register": lambda: registry.register("team", url),
      "publish": lambda: registry.publish(demo_dir, url),
      "verify": lambda: registry.verify(url),
      "list": lambda: registry.list_versions(url),
  }
  shown = url.split("://")[0] + "://***@reg/root"
  for name, call in calls.items():
    with pytest.raises(errors.ConfigError) as refused:
      call()
    message = str(refused.value)
    assert "AKIAEXAMPLE" not in message and "secret" not in message, (name, message)
    assert f"Registry root {shown} carries credentials" in message, (name, message)
    assert "put credentials in the AWS_* environment variables or ~/.aws, not in the URL" in message
  config = tmp_path / "registry.toml"
  config.write_text(f'[namespaces]\nteam = "{url}"\n')
  with pytest.raises(errors.ConfigError, match=rf"Registry config {config}: namespaces.team = .*://\*\*\*@reg/root"):
    registry.read_namespaces(config)


@pytest.mark.slow
def test_the_cli_refuses_credential_urls_for_list_publish_verify_and_export(demo_dir) -> None:
  url = _SECRET_URLS[0]
  argvs = [["list", url], ["publish", str(demo_dir), url], ["verify", url],
           ["export", str(demo_dir), f"{url}/demo.zip"], ["import", f"{url}/demo.zip", str(demo_dir.parent)]]
  for argv in argvs:
    process = subprocess.run([str(Path(sys.executable).parent / "tfds-builders"), *argv],
                             capture_output=True, text=True, check=False,
                             env={**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert process.returncode == 1, (argv, process.stderr)
    assert "supersecretkey" not in process.stderr + process.stdout and "AKIAEXAMPLE" not in process.stderr
    assert "s3://***@reg/root" in process.stderr and "not in the URL" in process.stderr, (argv, process.stderr)


@pytest.mark.parametrize("toml, problem", [
    ('[namespaces]\n"bad:name" = "/r"\n', r"namespaces.bad:name: 'bad:name' is no namespace name"),
    ('[namespaces]\n"../up" = "/r"\n', r"'\.\./up' is no namespace name"),
    ('[namespaces]\n"" = "/r"\n', r"'' is no namespace name"),
    ('["a/b"]\npaths = ["/r"]\n', r"a/b.paths: 'a/b' is no namespace name"),
    ('[team]\npaths = ["/r"]\n[namespaces]\nteam = "/s"\n',
     r"namespace 'team' is defined twice \(team.paths and namespaces.team\); keep one"),
])
def test_read_namespaces_refuses_names_tfds_cannot_parse_and_duplicates(toml, problem, tmp_path) -> None:
  config = tmp_path / "registry.toml"
  config.write_text(toml)
  with pytest.raises(errors.ConfigError, match=rf"Registry config {config}: .*{problem}"):
    registry.read_namespaces(config)


def test_relative_roots_resolve_against_the_toml_folder(tmp_path, monkeypatch) -> None:
  (tmp_path / "conf").mkdir()
  config = tmp_path / "conf" / "registry.toml"
  config.write_text('[namespaces]\nteam = "reg"\nup = "../shared/reg"\nabs = "/srv/reg"\n'
                    '[my-team]\npaths = ["s3://bucket/reg"]\n')
  monkeypatch.chdir(tmp_path)  # not the TOML's folder
  assert registry.read_namespaces("conf/registry.toml") == {
      "team": str(tmp_path / "conf" / "reg"), "up": str(tmp_path / "conf" / ".." / "shared" / "reg"),
      "abs": "/srv/reg", "my-team": "s3://bucket/reg"}
