"""Fault suite of archive import, publish and namespace loads: hostile archives, dataset dirs and registries."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import stat
import struct
import sys
import uuid
import warnings
import zipfile
import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import faults
from tests.faults import FaultCase
from tfds_builders import archive
from tfds_builders import cli
from tfds_builders import registry
from tfds_builders.core import errors
from tfds_builders.core import safe_paths
from tfds_builders.core.fast import crc32c


PREFIX = "faults_demo/demo/1.0.0"
SHARD = f"{PREFIX}/faults_demo-train.tfrecord-00000-of-00001"
TRAIN_EXAMPLES = 9
ONE_LINE = r"\Aexit 1: tfds-builders \w+: error: [^\n]+\n\Z"  # no traceback
# A command that may import TensorFlow: TF's own start-up lines (if any), then our one-line error, no traceback.
LAST_LINE = r"\Aexit 1: (?:(?:(?!Traceback)[\s\S])*\n)?tfds-builders \w+: error: [^\n]+\n\Z"
NOT_OURS = r"Only archives written by `tfds-builders export` can be imported"
RECOPY = r"Copy the archive again, completely, or export it again"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> pathlib.Path:
  """A small prepared dataset with a config, two splits and a class label (so a labels file)."""
  rows = {
      split: [(i, {"score": float(i) / 4, "source": i % 2, "text": f"row {i}"}) for i in range(count)]
      for split, count in (("train", TRAIN_EXAMPLES), ("test", 3))
  }
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name="faults_demo", config="demo", version="1.0.0", data_dir=str(tmp_path_factory.mktemp("data")),
      features=tfds.features.FeaturesDict({
          "score": tfds.features.Scalar(dtype=np.float32),
          "source": tfds.features.ClassLabel(names=["site_a", "site_b"]),
          "text": tfds.features.Text(),
      }),
      split_datasets=rows, disable_shuffling=True,
  )
  return pathlib.Path(builder.data_path)


@pytest.fixture(scope="module")
def good_zip(demo_dir, tmp_path_factory) -> pathlib.Path:
  return pathlib.Path(archive.export(demo_dir, tmp_path_factory.mktemp("good") / "demo.zip"))


@pytest.fixture(scope="module")
def deflated_zip(demo_dir, tmp_path_factory) -> pathlib.Path:
  return pathlib.Path(archive.export(demo_dir, tmp_path_factory.mktemp("good") / "demo.zip", compression="deflate"))


@dataclasses.dataclass
class World:
  """A scratch tree: the destination, a sentinel folder beside it that nothing may touch, the inputs."""

  root: pathlib.Path
  data: pathlib.Path  # data_dir, or registry root
  outside: pathlib.Path  # the sentinel
  zip: pathlib.Path  # the archive under test
  dataset: pathlib.Path  # a copy of the demo dataset, for publish

  @property
  def sources(self) -> list[pathlib.Path]:
    return [self.zip, self.dataset, self.outside]


@pytest.fixture
def world(tmp_path, demo_dir) -> World:
  # The destination is nested two deep, so `../../x` would land in root/a, which is watched too.
  made = World(root=tmp_path, data=tmp_path / "a/b/data", outside=tmp_path / "outside",
               zip=tmp_path / "in/demo.zip", dataset=tmp_path / "in/demo/1.0.0")
  made.outside.mkdir()
  (made.outside / "keep.txt").write_text("sentinel")
  made.data.parent.mkdir(parents=True)
  shutil.copytree(demo_dir, made.dataset)
  return made


SENTINEL_SHA256 = hashlib.sha256(b"sentinel").hexdigest()


def digests(root: pathlib.Path) -> dict[str, str]:
  """sha256 of every file below root, by path relative to it."""
  return {str(pathlib.Path(path).relative_to(root)): digest for path, digest in faults.tree_hashes([root]).items()}


def check(case: FaultCase, run, repair, world: World, data_dir: pathlib.Path | None) -> object:
  """faults.check_fault, also guarding everything around the destination (root/a) and the sentinel."""
  watched = [*world.sources, world.root / "a"]
  return faults.check_fault(case, run, repair, watched, data_dir)


# ---------------------------------------------------------------- crafting --


def members_of(zip_path: pathlib.Path) -> tuple[list[tuple[zipfile.ZipInfo | str, bytes]], dict]:
  """The members of an archive (manifest aside) and its manifest."""
  with zipfile.ZipFile(zip_path) as zf:
    entries = [(info.filename, zf.read(info)) for info in zf.infolist() if info.filename != archive.MANIFEST_NAME]
    return entries, json.loads(zf.read(archive.MANIFEST_NAME))


def write_zip(
    out: pathlib.Path, entries, manifest: dict, *, unlisted=(), phantom=(), twin_of: str | None = None,
) -> None:
  """Writes members and a manifest listing them with their true sizes and CRCs (so only the fault differs).

  Args:
    out: The archive to write.
    entries: (name or ZipInfo, data) pairs, in order; a name may repeat.
    manifest: The manifest, whose `files` is recomputed.
    unlisted: Member names the manifest leaves out.
    phantom: Names the manifest lists that are not in the archive.
    twin_of: Adds a second directory entry `<twin_of>.link` sharing that member's data.
  """
  out.parent.mkdir(parents=True, exist_ok=True)
  with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as zf:
    warnings.simplefilter("ignore")  # zipfile warns on the duplicate names we want
    for name, data in entries:
      zf.writestr(name, data)
    if twin_of:
      twin = copy.copy(zf.getinfo(twin_of))
      twin.filename = twin.orig_filename = f"{twin_of}.link"
      zf.filelist.append(twin)
      zf.NameToInfo[twin.filename] = twin
    files = [
        {"name": info.filename, "size": info.file_size, "crc32": info.CRC}
        for info in zf.infolist() if info.filename not in unlisted
    ]
    files += [{"name": name, "size": 1, "crc32": 0} for name in phantom]
    zf.writestr(archive.MANIFEST_NAME, json.dumps({**manifest, "files": files}))


def symlink_member(name: str) -> zipfile.ZipInfo:
  """A member that unzip and tar would restore as a symlink (its data is the link's target)."""
  info = zipfile.ZipInfo(name)
  info.create_system = 3
  info.external_attr = (stat.S_IFLNK | 0o777) << 16
  return info


def _add(name: str):
  def craft(world: World, entries, manifest):
    write_zip(world.zip, [*entries, (name.format(outside=world.outside), b"evil")], manifest)
  return craft


def _symlink(world: World, entries, manifest):
  write_zip(world.zip, [*entries, (symlink_member(f"{PREFIX}/link"), b"../../../../outside")], manifest)


def _hard_link(world: World, entries, manifest):
  write_zip(world.zip, entries, manifest, twin_of=SHARD)


def _duplicate(world: World, entries, manifest):
  write_zip(world.zip, [*entries, (SHARD, b"second copy")], manifest)


def _unlisted(world: World, entries, manifest):
  write_zip(world.zip, [*entries, (f"{PREFIX}/evil.txt", b"evil")], manifest, unlisted={f"{PREFIX}/evil.txt"})


def _phantom(world: World, entries, manifest):
  write_zip(world.zip, entries, manifest, phantom=[f"{PREFIX}/ghost.txt"])


def _manifest(**changes):
  def craft(world: World, entries, manifest):
    edited = {**manifest, **{k: v for k, v in changes.items() if k != "dataset"}}
    edited["dataset"] = {**manifest["dataset"], **changes.get("dataset", {})}
    write_zip(world.zip, entries, edited)
  return craft


def _renamed_dataset(world: World, entries, manifest):
  """Manifest and member names agree on `other`, the dataset_info.json inside says `faults_demo`."""
  renamed = [(name.replace("faults_demo/", "other/", 1), data) for name, data in entries]
  dataset = {**manifest["dataset"], "name": "other"}
  write_zip(world.zip, renamed, {**manifest, "path": "other/demo/1.0.0", "dataset": dataset})


def _plain_dir(world: World) -> None:
  """A folder that is not a dataset where the import (or publish) would go."""
  (world.data / PREFIX).mkdir(parents=True)
  (world.data / PREFIX / "notes.txt").write_text("mine")


def _symlinked_parent(world: World) -> None:
  world.data.mkdir()
  (world.data / "faults_demo").symlink_to(world.outside, target_is_directory=True)


def _undo_destination(world: World) -> None:
  if (world.data / "faults_demo").is_symlink():
    (world.data / "faults_demo").unlink()
  if world.data.is_file():
    world.data.unlink()
  shutil.rmtree(world.data, ignore_errors=True)


def _data_dir_is_a_file(world: World) -> None:
  world.data.write_text("not a folder")


def _file_on_the_way(world: World) -> None:
  world.data.mkdir()
  (world.data / "faults_demo").write_text("not a folder")


def _nested_dataset(world: World) -> None:
  """The target holds a prepared dataset, and another one inside it (as config `1.0.0` would)."""
  shutil.copytree(world.dataset, world.data / PREFIX)
  shutil.copytree(world.dataset, world.data / PREFIX / "1.0.0")


def _written(world: World, plant) -> pathlib.Path | None:
  """The data_dir that must hold nothing loadable after the fault.

  None when the plant itself put datasets there: the watched tree, which
  holds data_dir, then proves that none was added, changed or removed.
  """
  return None if plant is _nested_dataset else world.data


LONG_DIRS = "/".join(["a" * 250] * 16)  # 4015 bytes: a valid member name, too long once joined to DATA_DIR
LONG_MEMBER = f"{PREFIX}/{LONG_DIRS}/{'b' * 250}/x"  # 4291 bytes
LONG_VERSION = "1.0." + "1" * 246  # a valid version; `incomplete.<8>.<version>` is over 255 bytes


def _long_version(world: World, entries, manifest):
  """Manifest, member names and dataset_info.json agree on a 250-character version."""
  prefix = PREFIX.replace("1.0.0", LONG_VERSION)
  renamed = [(name.replace(PREFIX, prefix, 1), data) for name, data in entries]
  dataset = {**manifest["dataset"], "version": LONG_VERSION}
  write_zip(world.zip, renamed, {**manifest, "path": prefix, "dataset": dataset})


IMPORT_CASES = [
    FaultCase("absolute_member", errors.SourceError,
              [r"demo\.zip: member '/.*/outside/evil\.txt'", "is absolute", NOT_OURS])
    .param(_add("{outside}/evil.txt"), None, False, False),
    FaultCase("dotdot_member", errors.SourceError,
              [r"demo\.zip: member '.*/\.\./\.\./outside/evil\.txt'", r"has a '\.\.' component", NOT_OURS])
    .param(_add(f"{PREFIX}/../../../../../outside/evil.txt"), None, False, False),
    FaultCase("backslash_member", errors.SourceError, [r"demo\.zip: member '.*evil\.txt'", "holds a backslash"])
    .param(_add(PREFIX + "/..\\..\\evil.txt"), None, False, False),
    FaultCase("drive_letter_member", errors.SourceError, [r"demo\.zip: member 'C:/evil\.txt'", "component 'C:'"])
    .param(_add("C:/evil.txt"), None, False, False),
    FaultCase("symlink_member", errors.SourceError,
              [rf"demo\.zip: member '{PREFIX}/link' is a symlink entry", "regular files only", NOT_OURS])
    .param(_symlink, None, False, False),
    FaultCase("hard_link_member", errors.SourceError,
              [rf"demo\.zip: member '{SHARD}(\.link)?' shares its data with member", "hard link"])
    .param(_hard_link, None, False, False),
    FaultCase("duplicate_member", errors.SourceError, [rf"demo\.zip: member '{SHARD}' occurs twice", NOT_OURS])
    .param(_duplicate, None, False, False),
    FaultCase("member_not_in_manifest", errors.SourceError,
              [r"demo\.zip does not match its manifest", rf"{PREFIX}/evil\.txt is not in the manifest", "export it again"])
    .param(_unlisted, None, False, False),
    FaultCase("manifest_entry_missing", errors.SourceError,
              [r"demo\.zip does not match its manifest", rf"{PREFIX}/ghost\.txt is missing"])
    .param(_phantom, None, False, False),
    FaultCase("manifest_path_dotdot", errors.SourceError,
              [r"demo\.zip: tfds_builders_archive\.json: path '\.\./\.\./x' is not 'faults_demo/demo/1\.0\.0'", NOT_OURS])
    .param(_manifest(path="../../x"), None, False, False),
    FaultCase("dataset_name_dotdot", errors.SourceError,
              [r"demo\.zip: tfds_builders_archive\.json dataset: dataset name '\.\./\.\./x' is not a valid TFDS dataset name", NOT_OURS])
    .param(_manifest(dataset={"name": "../../x"}), None, False, False),
    FaultCase("config_name_slash", errors.SourceError,
              [r"demo\.zip: tfds_builders_archive\.json dataset: config name 'demo/\.\./\.\.' is not a valid", NOT_OURS])
    .param(_manifest(dataset={"config": "demo/../.."}), None, False, False),
    FaultCase("manifest_names_another_dataset", errors.SourceError,
              [r"demo\.zip: member other/demo/1\.0\.0/dataset_info\.json", "names the dataset faults_demo/demo:1.0.0, but the manifest says other/demo:1.0.0"])
    .param(_renamed_dataset, None, False, False),
    FaultCase("overwrite_a_non_dataset_dir", errors.SourceError,
              [rf"demo\.zip: cannot overwrite .*/{PREFIX}", r"dataset_info\.json not found", "--overwrite only replaces a prepared faults_demo/demo:1.0.0 dataset"])
    .param(None, _plain_dir, True, False),
    FaultCase("symlink_on_the_way", errors.SourceError,
              [r"demo\.zip: .*/data/faults_demo is a symlink", "refusing to write through it", "Remove the symlink"])
    .param(None, _symlinked_parent, False, False),
    # A config named like a version would nest `faults_demo/1.0.0/1.0.0` in `faults_demo/1.0.0`.
    FaultCase("config_name_like_a_version", errors.SourceError,
              [r"demo\.zip: tfds_builders_archive\.json dataset: config name '1\.0\.0' looks like a version",
               r"inside the folder of version 1\.0\.0 of the dataset without config", NOT_OURS])
    .param(_manifest(dataset={"config": "1.0.0"}), None, False, False),
    FaultCase("overwrite_a_dataset_holding_another", errors.SourceError,
              [rf"demo\.zip: cannot overwrite .*/data/{PREFIX}: it holds another prepared dataset, .*/{PREFIX}/1\.0\.0",
               "--overwrite only replaces a prepared faults_demo/demo:1.0.0 dataset"])
    .param(None, _nested_dataset, True, False),
    FaultCase("data_dir_is_a_file", errors.ConfigError,
              [r"demo\.zip: DATA_DIR .*/a/b/data is a regular file, not a folder", "Pass a folder as DATA_DIR"])
    .param(None, _data_dir_is_a_file, False, False),
    FaultCase("folder_on_the_way_is_a_file", errors.SourceError,
              [r"demo\.zip: DATA_DIR .*/data: .*/data/faults_demo is a regular file where a folder must go",
               "Move it away, or import into another DATA_DIR"])
    .param(None, _file_on_the_way, False, False),
    FaultCase("member_path_too_long", errors.SourceError,
              [rf"demo\.zip: member '{PREFIX}/aaaa.*\.\.\. \({len(LONG_MEMBER) + 2} characters\)",
               f"is {len(LONG_MEMBER)} bytes long, over the 4095", NOT_OURS])
    .param(_add(LONG_MEMBER), None, False, False),
    FaultCase("destination_path_too_long", errors.SourceError,
              [rf"demo\.zip: member '{PREFIX}/aaaa.*would be extracted to a path of \d+ bytes in DATA_DIR .*/a/b/data",
               "over the 4095 a path may have", "Import into a DATA_DIR with a shorter path"])
    .param(_add(f"{PREFIX}/{LONG_DIRS}/x"), None, False, False),
    # What the filesystem refuses surfaces as a SourceError, never as a bare OSError.
    FaultCase("staging_name_too_long", errors.SourceError,
              [r"demo\.zip: cannot write the dataset into DATA_DIR .*/a/b/data: File name too long",
               r"incomplete\.[0-9a-f]{8}\.1\.0\.111", "nothing was imported"])
    .param(_long_version, None, False, False),
    # What users type: one line on stderr, exit code 1.
    FaultCase("cli_dotdot_member", faults.CommandFailed,
              [ONE_LINE, r"tfds-builders import: error: .*demo\.zip: member .*has a '\.\.' component", NOT_OURS])
    .param(_add(f"{PREFIX}/../../../../../outside/evil.txt"), None, False, True),
    FaultCase("cli_overwrite_a_non_dataset_dir", faults.CommandFailed,
              [ONE_LINE, "cannot overwrite", "--overwrite only replaces a prepared"])
    .param(None, _plain_dir, True, True),
    FaultCase("cli_data_dir_is_a_file", faults.CommandFailed,
              [ONE_LINE, r"tfds-builders import: error: .*demo\.zip: DATA_DIR .*/data is a regular file, not a folder"])
    .param(None, _data_dir_is_a_file, False, True),
]


def run_import(world: World, overwrite: bool, via_cli: bool):
  if via_cli:
    return faults.tfds_builders_cli("import", str(world.zip), str(world.data), *(["--overwrite"] * overwrite))
  return archive.import_(world.zip, world.data, overwrite=overwrite)


@pytest.mark.parametrize("case, craft, plant, overwrite, via_cli", IMPORT_CASES)
def test_hostile_archive_is_refused(case, craft, plant, overwrite, via_cli, world, good_zip):
  world.zip.parent.mkdir(exist_ok=True)
  if craft:
    craft(world, *members_of(good_zip))
  else:
    shutil.copyfile(good_zip, world.zip)
  if plant:
    plant(world)

  def repair():
    shutil.copyfile(good_zip, world.zip)
    _undo_destination(world)

  check(case, lambda: run_import(world, overwrite, via_cli), repair, world, _written(world, plant))
  assert digests(world.data / PREFIX) == digests(world.dataset)  # the rerun restored the dataset, byte for byte
  assert sorted(p.name for p in (world.data / "faults_demo/demo").iterdir()) == ["1.0.0"]  # no staging left
  assert digests(world.outside) == {"keep.txt": SENTINEL_SHA256}


# ------------------------------------------------------- damaged zip (class 6) --


def _flip(data: bytearray, offset: int, value: int | None = None) -> None:
  data[offset] = value if value is not None else data[offset] ^ 0xFF


def _payload_offset(data: bytes, info: zipfile.ZipInfo) -> int:
  name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
  return info.header_offset + 30 + name_length + extra_length


def _damage(member: str, how: str):
  """Damages `member` of the good archive.

  `flip` a payload byte, write an invalid deflate `block`, set compression
  `method` 99, or `encrypt` (set the encryption flag).
  """
  def craft(world: World, source: pathlib.Path) -> None:
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as zf:
      info, start_dir = zf.getinfo(member), zf.start_dir
    if how == "flip":
      _flip(data, _payload_offset(data, info) + 5)
    elif how == "block":
      _flip(data, _payload_offset(data, info), 0xFF)  # BFINAL=1, BTYPE=11: a reserved block type
    else:
      central = data.index(b"PK\x01\x02" + data[start_dir + 4:start_dir + 6], start_dir)
      while data[central + 46:central + 46 + len(member)] != member.encode():
        sizes = struct.unpack("<HHH", data[central + 28:central + 34])
        central += 46 + sum(sizes)
      if how == "method":
        for at in (info.header_offset + 8, central + 10):
          data[at:at + 2] = struct.pack("<H", 99)
      else:
        for at in (info.header_offset + 6, central + 8):
          data[at] |= 0x1
    world.zip.write_bytes(bytes(data))
  return craft


def _truncate(world: World, source: pathlib.Path) -> None:
  world.zip.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


def _garbage(world: World, source: pathlib.Path) -> None:
  world.zip.write_bytes(b"PK\x03\x04 not really a zip")


DAMAGE_CASES = [
    FaultCase("truncated", errors.SourceError,
              [r"demo\.zip is not a zip archive, or is truncated", RECOPY]).param(_truncate, "stored", False),
    FaultCase("not_a_zip", errors.SourceError,
              [r"demo\.zip is not a zip archive", "BadZipFile", RECOPY]).param(_garbage, "stored", False),
    FaultCase("payload_byte_flipped", errors.SourceError,
              [rf"demo\.zip: member {SHARD} is corrupt or truncated", "Bad CRC-32", RECOPY])
    .param(_damage(SHARD, "flip"), "stored", False),
    FaultCase("deflate_stream_broken", errors.SourceError,
              [rf"demo\.zip: member {SHARD} is corrupt or truncated", r"zlib\.error|error:", RECOPY])
    .param(_damage(SHARD, "block"), "deflate", False),
    FaultCase("manifest_stream_broken", errors.SourceError,
              [r"demo\.zip: member tfds_builders_archive\.json is corrupt or truncated", RECOPY])
    .param(_damage(archive.MANIFEST_NAME, "block"), "stored", False),
    FaultCase("unknown_compression", errors.SourceError,
              [rf"demo\.zip: member {SHARD} is corrupt or truncated", "NotImplementedError", RECOPY])
    .param(_damage(SHARD, "method"), "stored", False),
    FaultCase("encrypted_member", errors.SourceError, [rf"demo\.zip: member '{SHARD}' is encrypted", NOT_OURS])
    .param(_damage(SHARD, "encrypt"), "stored", False),
    FaultCase("cli_payload_byte_flipped", faults.CommandFailed,
              [ONE_LINE, rf"demo\.zip: member {SHARD} is corrupt", RECOPY])
    .param(_damage(SHARD, "flip"), "stored", True),
]


@pytest.mark.parametrize("case, craft, compression, via_cli", DAMAGE_CASES)
def test_damaged_archive_names_archive_and_member(case, craft, compression, via_cli, world, good_zip, deflated_zip):
  source = deflated_zip if compression == "deflate" else good_zip
  world.zip.parent.mkdir(exist_ok=True)
  craft(world, source)
  check(case, lambda: run_import(world, False, via_cli), lambda: shutil.copyfile(source, world.zip), world, world.data)
  assert (world.data / PREFIX / "dataset_info.json").is_file()


def test_read_manifest_of_a_directory_is_a_source_error(tmp_path):
  with pytest.raises(errors.SourceError, match=rf"{tmp_path} is not a zip archive.*IsADirectoryError"):
    archive.read_manifest(tmp_path)


# ------------------------------------------------------------ publish (class 4) --


def _info_field(field: str, value: str):
  def plant(world: World) -> None:
    info_path = world.dataset / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info[field] = value
    info_path.write_text(json.dumps(info))
  return plant


def _symlinked_shard(world: World) -> None:
  shard = next(world.dataset.glob("*train.tfrecord*"))
  (world.outside / shard.name).write_bytes(b"not the dataset's records")
  shard.unlink()
  shard.symlink_to(world.outside / shard.name)


def _symlinked_dir(world: World) -> None:
  (world.dataset / "extra").symlink_to(world.outside, target_is_directory=True)


def _fifo(world: World) -> None:
  os.mkfifo(world.dataset / "pipe")


PUBLISH_CASES = [
    FaultCase("name_dotdot", errors.SourceError,
              [r"in/demo/1\.0\.0/dataset_info\.json field 'name': dataset name '\.\./\.\./x' is not a valid TFDS dataset name", "Fix dataset_info.json or rebuild the dataset"])
    .param(_info_field("name", "../../x"), False, False),
    FaultCase("config_name_slash", errors.SourceError,
              [r"dataset_info\.json field 'configName': config name 'demo/\.\./\.\./x' is not a valid TFDS config name"])
    .param(_info_field("configName", "demo/../../x"), False, False),
    FaultCase("version_dotdot", errors.SourceError,
              [r"dataset_info\.json field 'version': version '1\.0\.0/\.\./\.\.' is not a valid TFDS version \(MAJOR\.MINOR\.PATCH"])
    .param(_info_field("version", "1.0.0/../.."), False, False),
    FaultCase("symlinked_shard", errors.SourceError,
              [r"in/demo/1\.0\.0/faults_demo-train\.tfrecord-00000-of-00001 is a symlink \(to '.*/outside/", "regular files only"])
    .param(_symlinked_shard, False, False),
    FaultCase("symlink_to_a_dir", errors.SourceError,
              [r"in/demo/1\.0\.0/extra is a symlink \(to '.*/outside'\)", "regular files only"])
    .param(_symlinked_dir, False, False),
    FaultCase("fifo", errors.SourceError, [r"in/demo/1\.0\.0/pipe is a FIFO, not a regular file"])
    .param(_fifo, False, False),
    FaultCase("symlink_in_the_registry", errors.SourceError,
              [r"publish of faults_demo/demo:1\.0\.0 to .*/data: .*/data/faults_demo is a symlink", "Remove the symlink"])
    .param(_symlinked_parent, False, False),
    FaultCase("overwrite_a_non_dataset_dir", errors.SourceError,
              [rf"Cannot overwrite .*/data/{PREFIX}: .*dataset_info\.json not found", "--overwrite only replaces a published faults_demo/demo:1.0.0"])
    .param(_plain_dir, True, False),
    FaultCase("config_name_like_a_version", errors.SourceError,
              [r"dataset_info\.json field 'configName': config name '1\.0\.0' looks like a version"])
    .param(_info_field("configName", "1.0.0"), False, False),
    FaultCase("overwrite_a_version_holding_another", errors.SourceError,
              [rf"Cannot overwrite .*/data/{PREFIX}: it holds another prepared dataset, .*/{PREFIX}/1\.0\.0",
               "--overwrite only replaces a published faults_demo/demo:1.0.0"])
    .param(_nested_dataset, True, False),
    FaultCase("cli_name_dotdot", faults.CommandFailed,
              [ONE_LINE, r"tfds-builders publish: error: .*dataset name '\.\./\.\./x' is not a valid TFDS dataset name"])
    .param(_info_field("name", "../../x"), False, True),
]


@pytest.mark.parametrize("case, plant, overwrite, via_cli", PUBLISH_CASES)
def test_hostile_dataset_dir_is_not_published(case, plant, overwrite, via_cli, world, demo_dir):
  plant(world)

  def repair():
    shutil.rmtree(world.dataset)
    shutil.copytree(demo_dir, world.dataset)
    _undo_destination(world)

  def run():
    if via_cli:
      return faults.tfds_builders_cli("publish", str(world.dataset), str(world.data), *(["--overwrite"] * overwrite))
    return registry.publish(world.dataset, world.data, overwrite=overwrite)

  check(case, run, repair, world, _written(world, plant))
  assert registry.verify(world.data) == (1, [])
  assert sorted(p.name for p in (world.data / "faults_demo/demo").iterdir()) == ["1.0.0"]  # no .incoming- left
  assert sorted(p.name for p in (world.root / "a").iterdir()) == ["b"]  # nothing escaped to a/x


# ------------------------------------------------------------- loading (class 7) --


def _rewrite_a_record(version_dir: pathlib.Path) -> None:
  """Changes one record's `score` and rewrites the shard: every CRC is valid, the bytes are not the published ones."""
  shard = next(version_dir.glob("*train.tfrecord*"))
  records = [bytes(r) for r in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator()]
  example = tf.train.Example.FromString(records[0])
  example.features.feature["score"].float_list.value[0] += 1000
  records[0] = example.SerializeToString()
  with tf.io.TFRecordWriter(str(shard)) as writer:
    for record in records:
      writer.write(record)


def _edit_labels(version_dir: pathlib.Path) -> None:
  labels = version_dir / "source.labels.txt"
  labels.write_text(labels.read_text().replace("site_a", "site_z"))


def _edit_info(version_dir: pathlib.Path) -> None:
  (version_dir / "dataset_info.json").write_text("{ not json")


def _symlink_shard(version_dir: pathlib.Path) -> None:
  shard = next(version_dir.glob("*train.tfrecord*"))
  twin = version_dir.parent / "twin.tfrecord"
  shutil.copyfile(shard, twin)
  shard.unlink()
  shard.symlink_to(twin)


def _drop_checksums(version_dir: pathlib.Path) -> None:
  (version_dir / registry.CHECKSUMS_FILENAME).unlink()


def _stray_file(version_dir: pathlib.Path) -> None:
  (version_dir / "stray.txt").write_text("x")


REPUBLISH = r"Re-publish it \(tfds-builders publish --overwrite\) or re-fetch it"
LOAD_CASES = [
    FaultCase("record_rewritten_with_valid_crc", errors.SourceError,
              [r"1\.0\.0/faults_demo-train\.tfrecord-00000-of-00001: checksum mismatch", REPUBLISH, "TFDS_BUILDERS_REGISTRY_VERIFY=0"])
    .param(_rewrite_a_record),
    FaultCase("labels_edited", errors.SourceError,
              [r"1\.0\.0/source\.labels\.txt: checksum mismatch", REPUBLISH]).param(_edit_labels),
    FaultCase("dataset_info_edited", errors.SourceError,
              [r"1\.0\.0/dataset_info\.json: checksum mismatch", REPUBLISH]).param(_edit_info),
    FaultCase("shard_is_a_symlink", errors.SourceError,
              [r"faults_demo-train\.tfrecord-00000-of-00001: a symlink \(to '.*twin\.tfrecord'\)", REPUBLISH]).param(_symlink_shard),
    FaultCase("checksums_deleted", errors.SourceError,
              [r"registry_checksums\.json: no checksums recorded", REPUBLISH]).param(_drop_checksums),
    FaultCase("stray_file", errors.SourceError,
              [r"1\.0\.0/stray\.txt: unexpected file", REPUBLISH]).param(_stray_file),
]


def _published(world: World, demo_dir: pathlib.Path) -> tuple[str, pathlib.Path]:
  """Publishes the demo into world.data under a fresh namespace; returns (namespace, version dir)."""
  version_dir = pathlib.Path(registry.publish(demo_dir, world.data))
  namespace = f"faults{uuid.uuid4().hex[:8]}"
  registry.register(namespace, world.data)
  return namespace, version_dir


def _train_scores(namespace: str) -> list[float]:
  return [float(e["score"]) for e in tfds.as_numpy(tfds.load(f"{namespace}:faults_demo/demo:1.0.0", split="train"))]


@pytest.mark.parametrize("case, tamper", LOAD_CASES)
def test_tampered_registry_is_not_loaded(case, tamper, world, demo_dir):
  namespace, version_dir = _published(world, demo_dir)
  original = tfds.builder_from_directory(str(demo_dir)).as_dataset(split="train")
  expected = [float(example["score"]) for example in tfds.as_numpy(original)]
  tamper(version_dir)

  def repair():
    registry.publish(demo_dir, world.data, overwrite=True)

  scores = faults.check_fault(case, lambda: _train_scores(namespace), repair, [world.data, world.outside], None)
  assert scores == expected


def test_a_change_after_a_verified_load_is_still_caught(world, demo_dir):
  namespace, version_dir = _published(world, demo_dir)
  assert len(_train_scores(namespace)) == TRAIN_EXAMPLES
  verified = registry._VERIFIED  # pylint: disable=protected-access
  cached = {key[0] for key in verified if key[0].startswith(str(version_dir))}
  recorded = json.loads((version_dir / registry.CHECKSUMS_FILENAME).read_text())["sha256"]
  assert cached == {str(version_dir / name) for name in recorded} and len(cached) == 6  # each file hashed once
  _rewrite_a_record(version_dir)
  with pytest.raises(errors.SourceError, match="faults_demo-train.tfrecord-00000-of-00001: checksum mismatch"):
    _train_scores(namespace)


def test_loading_unverified_is_an_explicit_opt_out(world, demo_dir, monkeypatch):
  namespace, version_dir = _published(world, demo_dir)
  expected = _train_scores(namespace)
  _rewrite_a_record(version_dir)
  monkeypatch.setenv(registry.VERIFY_ENV, "0")
  assert _train_scores(namespace)[0] == pytest.approx(expected[0] + 1000)  # the tampering was real
  monkeypatch.setenv(registry.VERIFY_ENV, "maybe")
  with pytest.raises(errors.ConfigError, match="TFDS_BUILDERS_REGISTRY_VERIFY='maybe'; use 1"):
    _train_scores(namespace)
  monkeypatch.delenv(registry.VERIFY_ENV)
  registry.register(namespace, world.data, verify=False)
  assert _train_scores(namespace)[0] == pytest.approx(expected[0] + 1000)


_FRESH_LOAD = """
import tensorflow_datasets as tfds
import tfds_builders  # registers the namespaces of $TFDS_BUILDERS_REGISTRY_CONFIG
print(len(list(tfds.load("team:faults_demo/demo:1.0.0", split="train"))))
"""


@pytest.mark.slow
def test_a_fresh_process_refuses_a_tampered_version(world, demo_dir):
  version_dir = pathlib.Path(registry.publish(demo_dir, world.data))
  config = world.root / "registry.toml"
  config.write_text(f'[namespaces]\nteam = "{world.data}"\n')
  _edit_labels(version_dir)
  case = FaultCase("fresh_process_labels_edited", faults.CommandFailed,
                   [r"SourceError: .*1\.0\.0/source\.labels\.txt: checksum mismatch", REPUBLISH])

  def run():
    return faults.run_command([sys.executable, "-c", _FRESH_LOAD], **{registry.CONFIG_ENV: str(config)})

  result = faults.check_fault(case, run, lambda: registry.publish(demo_dir, world.data, overwrite=True),
                              [world.data, world.outside], None)
  assert result.stdout.split()[-1] == str(TRAIN_EXAMPLES)


# ------------------------------------------------------- verify: symlinked folders --


def _link_away(relative: str):
  """Moves a published folder out of the registry and leaves a symlink to it in its place."""
  def plant(world: World) -> None:
    folder = world.data / relative
    elsewhere = world.root / "elsewhere" / folder.name
    elsewhere.parent.mkdir(exist_ok=True)
    folder.rename(elsewhere)
    folder.symlink_to(elsewhere, target_is_directory=True)
  return plant


def _link_beside(world: World) -> None:
  """A second, intact copy of the version, reached through a symlink beside the real one."""
  shutil.copytree(world.data / PREFIX, world.root / "elsewhere")
  (world.data / "faults_demo/demo/2.0.0").symlink_to(world.root / "elsewhere", target_is_directory=True)


def _folder_in_version(world: World) -> None:
  (world.data / PREFIX / "extra").mkdir()
  (world.data / PREFIX / "extra" / "link").symlink_to(world.outside, target_is_directory=True)


SYMLINKED = r"a symlink \(to '.*/elsewhere.*'\), not a dataset, config or version folder"
VERIFY_CASES = [
    FaultCase("version_folder_is_a_symlink", faults.CommandFailed,
              [rf"DAMAGED .*/data/{PREFIX}: {SYMLINKED}", r"checked 0 version\(s\): 1 problem\(s\)"])
    .param(_link_away(PREFIX)),
    FaultCase("config_folder_is_a_symlink", faults.CommandFailed,
              [rf"DAMAGED .*/data/faults_demo/demo: {SYMLINKED}", r"checked 0 version\(s\): 1 problem\(s\)"])
    .param(_link_away("faults_demo/demo")),
    FaultCase("dataset_folder_is_a_symlink", faults.CommandFailed,
              [rf"DAMAGED .*/data/faults_demo: {SYMLINKED}", r"checked 0 version\(s\): 1 problem\(s\)"])
    .param(_link_away("faults_demo")),
    FaultCase("symlinked_version_beside_a_real_one", faults.CommandFailed,
              [rf"DAMAGED .*/data/faults_demo/demo/2\.0\.0: {SYMLINKED}", r"checked 1 version\(s\): 1 problem\(s\)"])
    .param(_link_beside),
    FaultCase("symlink_in_a_folder_in_a_version", faults.CommandFailed,
              [rf"DAMAGED .*/data/{PREFIX}/extra: unexpected folder", r"checked 1 version\(s\): 1 problem\(s\)"])
    .param(_folder_in_version),
]


@pytest.mark.parametrize("case, plant", VERIFY_CASES)
def test_verify_reports_symlinked_folders(case, plant, world, demo_dir, capsys):
  registry.publish(demo_dir, world.data)
  plant(world)

  def run() -> str:
    """`tfds-builders verify DATA`, in this process: exit code and report as CommandFailed."""
    code = cli.main(["verify", str(world.data)])
    report = capsys.readouterr().out
    if code != cli.EXIT_OK:
      raise faults.CommandFailed(code, report)
    return report

  def repair() -> None:
    _undo_destination(world)
    registry.publish(demo_dir, world.data)

  report = faults.check_fault(case, run, repair, [world.data, world.outside], None)
  assert report.splitlines()[-1] == "checked 1 version(s): 0 problem(s)"


def test_a_symlinked_version_folder_is_not_loaded(world, demo_dir):
  namespace, version_dir = _published(world, demo_dir)
  expected = _train_scores(namespace)
  _link_away(PREFIX)(world)  # the files behind the link are intact: only the folder is not the published one
  case = FaultCase("version_folder_is_a_symlink", errors.SourceError,
                   [rf"{PREFIX}: a symlink \(to '.*/elsewhere/1\.0\.0'\), not a published version folder", REPUBLISH])

  def repair() -> None:
    version_dir.unlink()
    (world.root / "elsewhere" / "1.0.0").rename(version_dir)

  scores = faults.check_fault(case, lambda: _train_scores(namespace), repair, [world.data, world.outside], None)
  assert scores == expected


# ----------------------------------------------------- export: names it writes --


def _dataset_with_feature(name: str):
  """Replaces the dataset to export by one whose feature is called `name`."""
  def plant(world: World) -> None:
    built = tfds.dataset_builders.store_as_tfds_dataset(
        name="faults_names", version="1.0.0", data_dir=str(world.root / "built"),
        features=tfds.features.FeaturesDict({name: tfds.features.Tensor(shape=(2,), dtype=np.float32)}),
        split_datasets={"train": [(i, {name: np.full(2, i, np.float32)}) for i in range(3)]},
        disable_shuffling=True,
    )
    shutil.rmtree(world.dataset)
    shutil.copytree(built.data_path, world.dataset)
  return plant


def _split_named(split: str):
  def plant(world: World) -> None:
    info_path = world.dataset / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["splits"][0]["name"] = split
    info_path.write_text(json.dumps(info))
  return plant


def _file_named(name: str):
  def plant(world: World) -> None:
    (world.dataset / name).write_text("notes")
  return plant


NPZ_NAMES = r"npz members are named <split>/<feature>\.npy; .*or export with --format tfrecord"
EXPORT_CASES = [
    FaultCase("npz_feature_name_dotdot", errors.SchemaError,
              [r"split 'train', feature 'a/\.\./\.\./b': npz member: path 'train/a/\.\./\.\./b_length\.npy' has a "
               r"'\.\.' component", NPZ_NAMES])
    .param(_dataset_with_feature("a/../../b"), "npz"),
    FaultCase("npz_feature_name_control_chars", errors.SchemaError,
              [r"split 'train', feature 'c d\\n': npz member: path 'train/c d\\n_length\.npy' has the component",
               NPZ_NAMES])
    .param(_dataset_with_feature("c d\n"), "npz"),
    FaultCase("npz_split_name_dotdot", errors.SchemaError,
              [r"split '\.\./x': npz members would not be in a folder of their own", "holds a '/'", NPZ_NAMES])
    .param(_split_named("../x"), "npz"),
    FaultCase("tfrecord_file_name", errors.SourceError,
              [r"in/demo/1\.0\.0/notes\n\.txt: member: path 'faults_demo/demo/1\.0\.0/notes\\n\.txt' has the component",
               "Rename the file"])
    .param(_file_named("notes\n.txt"), "tfrecord"),
]


@pytest.mark.parametrize("case, plant, export_format", EXPORT_CASES)
def test_export_writes_only_members_import_accepts(case, plant, export_format, world, demo_dir):
  plant(world)
  out = world.root / "out" / "demo.zip"
  out.parent.mkdir()

  def repair() -> None:
    assert not list(out.parent.iterdir()), "a failed export left a file"
    shutil.rmtree(world.dataset)
    shutil.copytree(demo_dir, world.dataset)

  exported = faults.check_fault(case, lambda: archive.export(world.dataset, out, export_format), repair,
                                [world.dataset, world.outside], None)
  with zipfile.ZipFile(exported) as zf:
    for name in zf.namelist():  # what import_ checks, on every member written
      safe_paths.relative_parts(name, str(exported), "")
    assert any(name.startswith("train/") or name.startswith(PREFIX) for name in zf.namelist())


# ------------------------------------ crafted shards: export npz, import --


def craft_length(shard: pathlib.Path, length: int) -> None:
  """Gives the shard's second record a crafted length with a valid header CRC."""

  data = bytearray(shard.read_bytes())
  first = struct.unpack("<Q", data[:8])[0]
  at = 8 + 4 + first + 4
  header = struct.pack("<Q", length)
  data[at:at + 12] = header + struct.pack("<I", crc32c.masked_crc32c(np.frombuffer(header, np.uint8), 0, 8))
  shard.write_bytes(bytes(data))


def with_member(zip_path: pathlib.Path, name: str, content: bytes, out: pathlib.Path) -> pathlib.Path:
  """A copy of an archive with one member replaced and its manifest entry recomputed: it checks out."""
  entries, manifest = members_of(zip_path)
  for entry in manifest["files"]:
    if entry["name"] == name:
      entry.update(size=len(content), crc32=zlib.crc32(content))
  with zipfile.ZipFile(out, "w") as zf:
    for member, data in entries:
      zf.writestr(member, content if member == name else data)
    zf.writestr(archive.MANIFEST_NAME, json.dumps(manifest))
  return out


@pytest.mark.slow
@pytest.mark.parametrize("format, length", [
    pytest.param("tfrecord", 2**64 - 1, id="tfrecord-2^64-1"), pytest.param("npz", 30_000_000_000, id="npz-3e10")])
def test_export_of_a_crafted_shard_is_a_source_error(world, length, format):  # pylint: disable=redefined-builtin
  shard = world.dataset / SHARD.rsplit("/", 1)[1]
  good = shard.read_bytes()
  craft_length(shard, length)
  out = world.root / "out" / "x.zip"
  case = FaultCase(f"export-{format}-{length}", faults.CommandFailed, [
      LAST_LINE, re.escape(str(shard)), r"record 1", r"at byte \d+", str(length)])
  faults.check_fault(
      case, lambda: faults.tfds_builders_cli("export", str(world.dataset), str(out), "--format", format),
      lambda: shard.write_bytes(good), [world.outside], None)
  assert sorted(path.name for path in out.parent.iterdir()) == ["x.zip"]  # no partial archive left


@pytest.mark.slow
@pytest.mark.parametrize("length", [pytest.param(2**63, id="2^63")])
def test_import_of_a_crafted_shard_leaves_nothing_loadable(world, good_zip, length):
  shard = world.dataset / SHARD.rsplit("/", 1)[1]
  craft_length(shard, length)
  crafted = with_member(good_zip, SHARD, shard.read_bytes(), world.root / "crafted.zip")
  case = FaultCase(f"import-{length}", faults.CommandFailed, [
      LAST_LINE, re.escape(str(crafted)), r"split 'train'", r"record 1", str(length)])
  zip_path = {"path": crafted}
  faults.check_fault(
      case, lambda: faults.tfds_builders_cli("import", str(zip_path["path"]), str(world.data)),
      lambda: zip_path.update(path=good_zip), [crafted, world.outside], world.data)
  assert tfds.builder_from_directory(str(world.data / PREFIX)).info.splits["train"].num_examples == TRAIN_EXAMPLES
