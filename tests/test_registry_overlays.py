"""Overlays in the registry: publish records the base's digest, namespace loads find and check it."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import helpers
from tfds_builders import cli
from tfds_builders import registry
from tfds_builders.augmented import Builder as Augmented
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tfds_builders.numpy_arrays import Builder as NumpyArrays

BASE = "numpy_arrays/demo:1.0.0"
OVERLAY = "augmented/cfg:1.0.0"


def doubled_label(example: dict[str, Any]) -> dict[str, Any]:
  return {"double": int(example["label"]) * 2}


def _build(tmp_path: Path, name: str = "cfg") -> tuple[Path, Path]:
  """(base dir, overlay dir): numpy_arrays demo and an overlay of it adding `double`."""
  base = NumpyArrays(config="demo", data_dir=str(tmp_path / "data"))
  base.download_and_prepare()
  overlay = helpers.build(Augmented, tmp_path, name, base=base.data_path, mode="overlay", version="1.0.0",
                          function=f"{__name__}:doubled_label")
  return Path(base.data_path), Path(overlay.data_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
  return _build(tmp_path_factory.mktemp("built"))


def _namespace(root: Path, **kwargs: Any) -> str:
  """A fresh namespace for `root` (a namespace is registered once per process)."""
  name = f"h4{uuid.uuid4().hex[:8]}"
  registry.register(name, root, **kwargs)
  return name


def _record(version_dir: Path) -> dict[str, Any]:
  return json.loads((version_dir / registry.OVERLAY_FILENAME).read_text())


def _edit_metadata(overlay_dir: Path, copy_to: Path, **base_fields: Any) -> Path:
  """A copy of an overlay whose metadata.json `augmented` entry is changed (base fields, or `parent`)."""
  shutil.copytree(overlay_dir, copy_to)
  path = copy_to / "metadata.json"
  metadata = json.loads(path.read_text())
  parent = base_fields.pop("parent", "keep")
  if parent != "keep":
    metadata["augmented"]["parent"] = parent
  metadata["augmented"]["base"].update(base_fields)
  path.write_text(json.dumps(metadata))
  return copy_to


def _damaged_copy(base_dir: Path, copy_to: Path) -> Path:
  """The base with one byte of its label file changed: same dataset, other files."""
  shutil.copytree(base_dir, copy_to)
  features = copy_to / "features.json"
  features.write_text(features.read_text() + " ")
  return copy_to


# ----------------------------------------------------------------- digest --


def test_the_digest_is_the_same_from_checksums_and_from_a_local_dir(built, tmp_path) -> None:
  base_dir, _ = built
  published = Path(registry.publish(base_dir, tmp_path))
  # The definition, computed here independently: sha256sum lines of the built files, sorted by name.
  lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                  for p in sorted(base_dir.iterdir()) if p.name != "croissant.json")
  want = hashlib.sha256(lines.encode()).hexdigest()
  assert registry.version_digest(base_dir) == want
  assert registry.published_digest(published) == want
  assert registry.version_digest(published) == want  # publish's own files are left out
  assert (published / "croissant.json").read_bytes() != (base_dir / "croissant.json").read_bytes()


# ---------------------------------------------------------------- publish --


def test_publish_records_the_base_and_resolve_finds_it(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  base_published = Path(registry.publish(base_dir, tmp_path))
  overlay_published = Path(registry.publish(overlay_dir, tmp_path))
  assert overlay_published == tmp_path / "augmented" / "cfg" / "1.0.0"
  assert _record(overlay_published) == {
      "format": 1,
      "base": {"dataset": "numpy_arrays", "config": "demo", "version": "1.0.0",
               "digest": registry.version_digest(base_dir), "location": str(base_dir), "registry": None},
      "parent": None,
  }
  checksums = json.loads((overlay_published / registry.CHECKSUMS_FILENAME).read_text())["sha256"]
  assert checksums[registry.OVERLAY_FILENAME] == hashlib.sha256(
      (overlay_published / registry.OVERLAY_FILENAME).read_bytes()).hexdigest()
  assert registry.verify(tmp_path) == (2, [])
  assert not (base_published / registry.OVERLAY_FILENAME).exists()  # a plain dataset gets none

  namespace = _namespace(tmp_path)
  resolved = registry.resolve_overlay(f"{namespace}:{OVERLAY}")
  assert resolved.version_dir == overlay_published
  assert resolved.locations == {str(base_dir): str(base_published)}
  # What the loader does with it: the base found in the registry, zipped with the overlay.
  dataset = load_augmented(str(resolved.version_dir), split="train", base=resolved.locations[str(base_dir)])
  got = list(tfds.as_numpy(dataset))
  want = list(tfds.as_numpy(tfds.builder_from_directory(str(base_dir)).as_dataset(split="train")))
  assert len(got) == len(want) == 8
  for example, base_example in zip(got, want):
    assert sorted(example) == ["double", "image", "label"]
    np.testing.assert_array_equal(example["image"], base_example["image"])
    assert example["double"] == 2 * base_example["label"]


def test_plain_tfds_load_sees_only_the_new_fields(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(base_dir, tmp_path)
  registry.publish(overlay_dir, tmp_path)
  namespace = _namespace(tmp_path)
  examples = list(tfds.as_numpy(tfds.load(f"{namespace}:{OVERLAY}", split="train")))
  assert len(examples) == 8
  assert sorted(examples[0]) == ["_base_fingerprint", "_base_index", "double"]
  assert [int(e["_base_index"]) for e in examples] == list(range(8))


def test_an_overlay_published_before_its_base_is_refused(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  with pytest.raises(errors.SourceError) as refused:
    registry.publish(overlay_dir, tmp_path)
  message = str(refused.value)
  assert f"Overlay {OVERLAY} ({overlay_dir / 'metadata.json'})" in message
  assert f"its base {BASE} is not published; looked for {tmp_path / 'numpy_arrays' / 'demo' / '1.0.0'}" in message
  assert "Publish the base first" in message and "--base_registry NAMESPACE_OR_ROOT" in message
  assert not (tmp_path / "augmented" / "cfg" / "1.0.0").exists()
  registry.publish(base_dir, tmp_path)
  registry.publish(overlay_dir, tmp_path)  # now it is
  assert registry.verify(tmp_path) == (2, [])


def test_publish_refuses_a_registry_base_with_other_files(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(_damaged_copy(base_dir, tmp_path / "other"), tmp_path / "reg")
  with pytest.raises(errors.SourceError) as refused:
    registry.publish(overlay_dir, tmp_path / "reg")
  message = str(refused.value)
  published = registry.published_digest(tmp_path / "reg" / "numpy_arrays" / "demo" / "1.0.0")
  assert f"(digest {published}) is not the one the overlay was built from at {base_dir} " \
         f"(digest {registry.version_digest(base_dir)})" in message
  assert f"tfds-builders publish {base_dir} <registry> --overwrite" in message


def test_publish_refuses_a_base_gone_from_where_it_was_built_or_published_without_checksums(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(base_dir, tmp_path / "reg")
  moved = _edit_metadata(overlay_dir, tmp_path / "moved", location=str(tmp_path / "gone"))
  with pytest.raises(errors.SourceError, match=(
      rf"its base {BASE} is no longer at {tmp_path / 'gone'}, where the overlay was built from; publish checks "
      rf"that {tmp_path / 'reg' / 'numpy_arrays' / 'demo' / '1.0.0'} holds the same files\. Restore it")):
    registry.publish(moved, tmp_path / "reg")
  # As `tfds build --publish_dir` leaves it: no checksums, so no digest to record.
  shutil.copytree(base_dir, tmp_path / "bare" / "numpy_arrays" / "demo" / "1.0.0")
  with pytest.raises(errors.SourceError, match=rf"1\.0\.0 has no {registry.CHECKSUMS_FILENAME}\. Publish it with"):
    registry.publish(overlay_dir, tmp_path / "bare")


def test_resolve_refuses_a_base_republished_with_other_files(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(base_dir, tmp_path / "reg")
  registry.publish(overlay_dir, tmp_path / "reg")
  registry.publish(_damaged_copy(base_dir, tmp_path / "other"), tmp_path / "reg", overwrite=True)
  namespace = _namespace(tmp_path / "reg")
  with pytest.raises(errors.SourceError) as refused:
    registry.resolve_overlay(f"{namespace}:{OVERLAY}")
  message = str(refused.value)
  base_published = tmp_path / "reg" / "numpy_arrays" / "demo" / "1.0.0"
  assert f"its base {BASE} in namespace {namespace!r}" in message
  assert f"({base_published}) has digest {registry.published_digest(base_published)}" in message
  assert f"published over digest {registry.version_digest(base_dir)}" in message
  assert "Re-publish the base the overlay was built from, or rebuild the overlay" in message


def test_resolve_refuses_a_base_no_longer_published(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(base_dir, tmp_path)
  registry.publish(overlay_dir, tmp_path)
  shutil.rmtree(tmp_path / "numpy_arrays")
  namespace = _namespace(tmp_path)
  with pytest.raises(errors.SourceError, match=(
      rf"its base: {BASE} is not published in namespace '{namespace}' \({tmp_path}\); looked for "
      rf"{tmp_path / 'numpy_arrays' / 'demo' / '1.0.0'}\. Publish it there")):
    registry.resolve_overlay(f"{namespace}:{OVERLAY}")


def test_resolve_refuses_unknown_names_and_namespaces(tmp_path) -> None:
  with pytest.raises(errors.ConfigError, match="namespace 'nosuchh4' is not registered in this process"):
    registry.resolve_overlay(f"nosuchh4:{OVERLAY}")
  with pytest.raises(errors.ConfigError, match="is no namespace name"):
    registry.resolve_overlay(OVERLAY)
  namespace = _namespace(tmp_path)
  with pytest.raises(errors.ConfigError, match=r"config name '\.\.' is not a valid TFDS config name"):
    registry.resolve_overlay(f"{namespace}:augmented/..:1.0.0")


# ------------------------------------------------------- another registry --


@pytest.mark.parametrize("by", ["root", "namespace"])
def test_a_base_in_another_registry_named_at_publish_time(by, built, tmp_path) -> None:
  base_dir, overlay_dir = built
  base_published = Path(registry.publish(base_dir, tmp_path / "bases"))
  with pytest.raises(errors.SourceError, match="its base numpy_arrays/demo:1.0.0 is not published"):
    registry.publish(overlay_dir, tmp_path / "team")
  named = str(tmp_path / "bases") if by == "root" else _namespace(tmp_path / "bases")
  registry.publish(overlay_dir, tmp_path / "team", base_registry=named)
  recorded = _record(tmp_path / "team" / "augmented" / "cfg" / "1.0.0")["base"]["registry"]
  assert recorded == {by: named}
  resolved = registry.resolve_overlay(f"{_namespace(tmp_path / 'team')}:{OVERLAY}")
  assert resolved.locations == {str(base_dir): str(base_published)}


def test_a_base_namespace_not_registered_on_load_is_named(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(base_dir, tmp_path / "bases")
  registry.publish(overlay_dir, tmp_path / "team", base_registry=_namespace(tmp_path / "bases"))
  version_dir = tmp_path / "team" / "augmented" / "cfg" / "1.0.0"
  record = _record(version_dir)
  record["base"]["registry"] = {"namespace": "elsewhere"}  # as a reader without that namespace sees it
  (version_dir / registry.OVERLAY_FILENAME).write_text(json.dumps(record))
  namespace = _namespace(tmp_path / "team", verify=False)
  with pytest.raises(errors.SourceError, match=(
      r"its base is published in namespace 'elsewhere', which is not registered here\. "
      r"Register it \(registry.register\('elsewhere', ROOT\) or TFDS_BUILDERS_REGISTRY_CONFIG\)")):
    registry.resolve_overlay(f"{namespace}:{OVERLAY}")


def test_base_registry_is_refused_for_a_dataset_that_is_no_overlay(built, tmp_path) -> None:
  base_dir, _ = built
  with pytest.raises(errors.ConfigError, match=f"--base_registry x: {base_dir} is not an overlay"):
    registry.publish(base_dir, tmp_path, base_registry="x")


def test_cli_publish_with_base_registry(built, tmp_path, capsys) -> None:
  base_dir, overlay_dir = built
  assert cli.main(["publish", str(base_dir), str(tmp_path / "bases")]) == cli.EXIT_OK
  assert cli.main(["publish", str(overlay_dir), str(tmp_path / "team")]) == cli.EXIT_ERROR
  assert "its base numpy_arrays/demo:1.0.0 is not published" in capsys.readouterr().err
  assert cli.main(["publish", str(overlay_dir), str(tmp_path / "team"),
                   "--base_registry", str(tmp_path / "bases")]) == cli.EXIT_OK
  assert _record(tmp_path / "team" / "augmented" / "cfg" / "1.0.0")["base"]["registry"] == {
      "root": str(tmp_path / "bases")}


# ---------------------------------------------------------------- chains --


def tripled_label(example: dict[str, Any]) -> dict[str, Any]:
  return {"triple": int(example["label"]) * 3}


def _chain(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
  """(parent, top): `augmented/top` is an overlay built on the overlay `augmented/cfg` (a two-link chain)."""
  _, overlay_dir = built
  top = helpers.build(Augmented, tmp_path, "top", base=overlay_dir, mode="overlay", version="1.0.0",
                      function=f"{__name__}:tripled_label")
  return overlay_dir, Path(top.data_path)


def test_a_chain_records_and_resolves_every_link(built, tmp_path) -> None:
  base_dir, _ = built
  parent_dir, top_dir = _chain(built, tmp_path)
  root = tmp_path / "reg"
  registry.publish(base_dir, root)
  with pytest.raises(errors.SourceError, match="its parent augmented/cfg:1.0.0 is not published"):
    registry.publish(top_dir, root)
  parent_published = Path(registry.publish(parent_dir, root))
  top_published = Path(registry.publish(top_dir, root))
  assert _record(top_published)["parent"] == {
      "dataset": "augmented", "config": "cfg", "version": "1.0.0", "digest": registry.version_digest(parent_dir),
      "location": str(parent_dir), "registry": None}
  resolved = registry.resolve_overlay(f"{_namespace(root)}:augmented/top:1.0.0")
  assert resolved.version_dir == top_published
  assert resolved.locations == {str(parent_dir): str(parent_published),
                                str(base_dir): str(root / "numpy_arrays" / "demo" / "1.0.0")}


def test_a_chain_with_a_cycle_is_refused(built, tmp_path) -> None:
  base_dir, _ = built
  parent_dir, top_dir = _chain(built, tmp_path)
  root = tmp_path / "reg"
  registry.publish(base_dir, root)
  parent_published = Path(registry.publish(parent_dir, root))
  top_published = Path(registry.publish(top_dir, root))
  record = _record(parent_published)  # cfg now claims to sit on top, which sits on cfg
  record["parent"] = {**_record(top_published)["parent"], "config": "top",
                      "digest": registry.published_digest(top_published)}
  (parent_published / registry.OVERLAY_FILENAME).write_text(json.dumps(record))
  namespace = _namespace(root, verify=False)  # the edit breaks the checksums; the chain check stands alone
  with pytest.raises(errors.SourceError, match=rf"chain of parents .*top/1.0.0 -> .*cfg/1.0.0 -> .*top/1.0.0 has a cycle"):
    registry.resolve_overlay(f"{namespace}:augmented/top:1.0.0")


# --------------------------------------------------------------- hostile --


@pytest.mark.parametrize("fields, problem", [
    ({"name": "../../etc"}, r"base: dataset name '\.\.' is not a valid TFDS dataset name"),
    ({"name": "numpy_arrays/../x"}, r"base: config name '\.\./x' is not a valid TFDS config name"),
    ({"version": "1.0.0/../../x"}, r"base: version '1\.0\.0/\.\./\.\./x' is not a valid TFDS version"),
    ({"kind": "records"}, r"its base is 'records' \(raw TFRecord files\), which no registry holds"),
])
def test_publish_refuses_hostile_base_names_before_joining(fields, problem, built, tmp_path) -> None:
  _, overlay_dir = built
  hostile = _edit_metadata(overlay_dir, tmp_path / "hostile", **fields)
  with pytest.raises(errors.SourceError, match=problem):
    registry.publish(hostile, tmp_path / "reg")
  assert not (tmp_path / "reg" / "augmented").exists()
  assert not (tmp_path / "etc").exists()


def test_a_symlinked_base_folder_is_refused(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(base_dir, tmp_path / "elsewhere")
  (tmp_path / "reg" / "numpy_arrays" / "demo").mkdir(parents=True)
  (tmp_path / "reg" / "numpy_arrays" / "demo" / "1.0.0").symlink_to(
      tmp_path / "elsewhere" / "numpy_arrays" / "demo" / "1.0.0")
  with pytest.raises(errors.SourceError, match=r"1\.0\.0 is a symlink .*a registry holds real folders only"):
    registry.publish(overlay_dir, tmp_path / "reg")


def test_resolve_refuses_a_hostile_record_before_joining(built, tmp_path) -> None:
  base_dir, overlay_dir = built
  registry.publish(base_dir, tmp_path)
  version_dir = Path(registry.publish(overlay_dir, tmp_path))
  record = _record(version_dir)
  record["base"]["dataset"] = "../../outside"
  (version_dir / registry.OVERLAY_FILENAME).write_text(json.dumps(record))
  with pytest.raises(errors.SourceError, match="checksum mismatch"):  # a verified namespace: caught as damage
    registry.resolve_overlay(f"{_namespace(tmp_path)}:{OVERLAY}")
  with pytest.raises(errors.SourceError, match=r"base: dataset name '\.\./\.\./outside' is not a valid TFDS dataset name"):
    registry.resolve_overlay(f"{_namespace(tmp_path, verify=False)}:{OVERLAY}")


# ------------------------------------------------------------ end to end --


def test_a_resolved_chain_loads_with_nothing_left_where_it_was_built(tmp_path) -> None:
  base_dir, overlay_dir = _build(tmp_path / "build")
  parent_dir, top_dir = _chain((base_dir, overlay_dir), tmp_path / "build")
  want = list(tfds.as_numpy(tfds.builder_from_directory(str(base_dir)).as_dataset(split="train")))
  for version_dir in (base_dir, parent_dir, top_dir):
    registry.publish(version_dir, tmp_path / "reg")
  shutil.rmtree(tmp_path / "build")  # a teammate's machine: everything is only in the registry
  resolved = registry.resolve_overlay(f"{_namespace(tmp_path / 'reg')}:augmented/top:1.0.0")
  assert sorted(resolved.locations) == sorted(map(str, (base_dir, parent_dir)))
  got = list(tfds.as_numpy(load_augmented(str(resolved.version_dir), split="train", locations=resolved.locations)))
  assert len(got) == len(want) == 8
  for example, base_example in zip(got, want):
    assert sorted(example) == ["double", "image", "label", "triple"]
    np.testing.assert_array_equal(example["image"], base_example["image"])
    assert (example["double"], example["triple"]) == (2 * base_example["label"], 3 * base_example["label"])


def test_load_augmented_by_namespace_returns_the_full_examples(tmp_path) -> None:
  base_dir, overlay_dir = _build(tmp_path / "build")
  want = list(tfds.as_numpy(tfds.builder_from_directory(str(base_dir)).as_dataset(split="train")))
  registry.publish(base_dir, tmp_path / "reg")
  registry.publish(overlay_dir, tmp_path / "reg")
  shutil.rmtree(tmp_path / "build" / "data")  # a teammate's machine: the base is only in the registry
  got = list(tfds.as_numpy(load_augmented(f"{_namespace(tmp_path / 'reg')}:{OVERLAY}", split="train")))
  assert len(got) == 8
  for example, base_example in zip(got, want):
    assert sorted(example) == ["double", "image", "label"]
    np.testing.assert_array_equal(example["image"], base_example["image"])
    assert example["double"] == 2 * base_example["label"]
