"""Remote storage against a real S3 server (moto, from scripts/start_s3.sh): builds, registries, archives."""

from __future__ import annotations

import json
import os
import pathlib
import tracemalloc
import uuid
import zipfile

import numpy as np
from etils import epath
import pytest
import tensorflow as tf

from tests import faults
from tfds_builders import archive
from tfds_builders import registry
from tfds_builders.core import errors
from tfds_builders.core import remote
from tfds_builders.core import tfrecord_io
from tfds_builders.core.fast import record_index

REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY = REPO / "dummy_data"
VERSION = "concatenated/s3/1.0.0"


def _s3():
  """A fresh s3fs client: no listing cached before a subprocess wrote."""
  import s3fs  # pylint: disable=import-outside-toplevel

  return s3fs.S3FileSystem(skip_instance_cache=True)


def _credentials() -> list[str]:
  return [os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]]


def _assert_no_credentials(*texts: str) -> None:
  for secret in _credentials():
    for text in texts:
      assert secret not in text, f"a credential reached the output: {text[:500]}"


def _assert_no_credentials_in(folder: pathlib.Path) -> None:
  files = [path for path in folder.rglob("*") if path.is_file()]
  assert files
  for path in files:
    content = path.read_bytes()
    for secret in _credentials():
      assert secret.encode() not in content, f"a credential was written to {path}"


def _cli(*args: str):
  result = faults.run_command([faults.CLI, *args])
  _assert_no_credentials(result.stdout, result.stderr)
  return result


def _tree(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _images(files: list[str], compression: str = "") -> list[bytes]:
  records = tf.data.TFRecordDataset(files, compression_type=compression)
  return sorted(tf.train.Example.FromString(r.numpy()).features.feature["image"].bytes_list.value[0] for r in records)


@pytest.fixture(scope="module")
def s3_build(s3_endpoint, tmp_path_factory):
  """The concatenated demo inputs uploaded to a bucket, and `tfds build` run on their s3:// URLs."""
  del s3_endpoint  # checked: the server answers
  bucket = f"tfds-builders-{uuid.uuid4().hex[:12]}"
  s3 = _s3()
  s3.mkdir(bucket)
  s3.put(str(DUMMY / "concatenated" / "site_a"), f"{bucket}/inputs/site_a", recursive=True)
  s3.put(str(DUMMY / "concatenated" / "site_b"), f"{bucket}/inputs/site_b", recursive=True)
  data_dir = tmp_path_factory.mktemp("data")
  config = {"name": "s3", "sources": [
      {"name": "site_a", "tfrecords": f"s3://{bucket}/inputs/site_a/*.tfrecord"},
      {"name": "site_b", "tfrecords": f"s3://{bucket}/inputs/site_b"},
  ]}
  result = faults.tfds_build("concatenated", config, data_dir)
  yield f"s3://{bucket}", data_dir / VERSION, result
  s3.rm(bucket, recursive=True)


@pytest.mark.slow
def test_a_concatenated_build_reads_its_inputs_from_s3(s3_build) -> None:
  bucket, version_dir, result = s3_build
  _assert_no_credentials(result.stdout, result.stderr)
  info = json.loads((version_dir / "dataset_info.json").read_text())
  assert [(s["name"], [int(n) for n in s["shardLengths"]]) for s in info["splits"]] == [("train", [12])]
  sources = json.loads((version_dir / "metadata.json").read_text())["provenance"]["sources"]
  assert [s["location"]["train"] for s in sources] == [
      [f"{bucket}/inputs/site_a/*.tfrecord"], [f"{bucket}/inputs/site_b"]]
  assert sources[1]["files"]["train"] == ["test.tfrecord", "train-00000-of-00002.tfrecord",
                                          "train-00001-of-00002.tfrecord"]
  # Every record read through the streamed (non-mmap) scanner, copied byte for byte.
  local_inputs = sorted(str(p) for p in (DUMMY / "concatenated").rglob("*.tfrecord"))
  assert _images([str(p) for p in version_dir.glob("*.tfrecord-*")]) == _images(local_inputs)
  _assert_no_credentials_in(version_dir)


@pytest.mark.slow
def test_registry_on_s3_publish_verify_list_and_load_by_namespace(s3_build, s3_bucket, tmp_path) -> None:
  _, version_dir, _ = s3_build
  root = f"{s3_bucket}/registry"
  published = _cli("publish", str(version_dir), root)
  assert published.stdout.strip() == f"published {root}/{VERSION}"
  listed = sorted(p.rsplit("/", 1)[1] for p in _s3().find(f"{root}/{VERSION}"))
  assert listed == sorted([*(p.name for p in version_dir.iterdir()), registry.CHECKSUMS_FILENAME])
  assert _cli("verify", root).stdout.strip() == "checked 1 version(s): 0 problem(s)"

  config = tmp_path / "namespaces.toml"
  config.write_text(f'[namespaces]\nteam = "{root}"\n')
  shard = next(p.name for p in version_dir.glob("*.tfrecord-*"))
  loaded = faults.run_python(f"""
      import json, os
      import s3fs
      import tensorflow_datasets as tfds
      from tfds_builders import registry
      from tfds_builders.core import errors

      def images(name):
        return sorted(e["image"] for e in tfds.as_numpy(tfds.load(name, split="train")))

      good = images("team:concatenated/s3:1.0.0")
      # Damage the published shard on S3 (same size), then load it again through a new mirror.
      shard = "{root}/{VERSION}/{shard}"
      fs = s3fs.S3FileSystem(skip_instance_cache=True)
      data = bytearray(fs.cat(shard)); data[-100] ^= 1; fs.pipe(shard, bytes(data))
      os.environ["TFDS_BUILDERS_CACHE_DIR"] = {str(tmp_path / "cache2")!r}
      registry.register("damaged", "{root}")
      try:
        images("damaged:concatenated/s3:1.0.0")
        refused = ""
      except errors.SourceError as error:
        refused = str(error)
      print(json.dumps({{"count": len(good), "digest": hash(tuple(good)), "refused": refused}}))
      """, TFDS_BUILDERS_REGISTRY_CONFIG=str(config), TFDS_BUILDERS_CACHE_DIR=str(tmp_path / "cache"))
  _assert_no_credentials(loaded.stdout, loaded.stderr)
  result = json.loads(loaded.stdout.strip().splitlines()[-1])
  assert result["count"] == 12
  assert "checksum mismatch" in result["refused"] and shard in result["refused"]
  mirrored = next((tmp_path / "cache").glob(f"remote/s3-*/{VERSION}"))
  published = {name: _s3().cat(f"{root}/{VERSION}/{name}") for name in ("croissant.json", registry.CHECKSUMS_FILENAME)}
  assert _tree(mirrored) == {**_tree(version_dir), **published}  # publish stamps its Croissant: the rest is the build's
  _assert_no_credentials_in(tmp_path / "cache")
  remote.invalidate_listings(root)
  assert registry.verify(root) == (1, [registry.Damage(f"{root}/{VERSION}/{shard}", "checksum mismatch (damaged or modified)")])


@pytest.mark.slow
def test_a_publish_cut_short_on_s3_is_refused_then_completed(s3_build, s3_bucket) -> None:
  _, version_dir, _ = s3_build
  root = f"{s3_bucket}/registry"
  target = registry.publish(version_dir, root)
  # What a publish killed before its last file leaves: S3 renames no folder, the checksums file lands last.
  (target / registry.CHECKSUMS_FILENAME).unlink()
  checked, damages = registry.verify(root)
  assert checked == 1 and [d.problem for d in damages] == [
      "no checksums recorded (not published with tfds-builders publish)"]
  registry.publish(version_dir, root)  # no --overwrite needed to complete it
  assert registry.verify(root) == (1, [])
  with pytest.raises(FileExistsError, match="already published"):
    registry.publish(version_dir, root)
  registry.publish(version_dir, root, overwrite=True)
  assert registry.verify(root) == (1, [])
  assert [(e.dataset, e.config, e.version, e.num_examples) for e in registry.list_versions(root)] == [
      ("concatenated", "s3", "1.0.0", {"train": 12})]


@pytest.mark.slow
def test_export_to_and_import_from_s3(s3_build, s3_bucket, tmp_path) -> None:
  _, version_dir, _ = s3_build
  archive_url = f"{s3_bucket}/archives/demo.zip"
  assert _cli("export", str(version_dir), archive_url).stdout.strip() == (
      f"exported {version_dir} to {archive_url} (tfrecord)")
  assert _cli("import", archive_url, str(tmp_path / "data")).stdout.strip().startswith("imported")
  assert _tree(tmp_path / "data" / VERSION) == _tree(version_dir)

  remote.invalidate_listings(s3_bucket)
  imported = archive.import_(archive_url, f"{s3_bucket}/data")  # into an S3 DATA_DIR: file by file
  assert imported == remote.FsspecPath(f"{s3_bucket}/data/{VERSION}")
  s3 = _s3()
  assert {p.rsplit("/", 1)[1]: s3.cat(p) for p in s3.find(str(imported))} == _tree(version_dir)
  # And back out of S3: the archive lists the same files.
  again = archive.export(imported, tmp_path / "again.zip")
  with zipfile.ZipFile(again) as again_zip:
    members = {n.rsplit("/", 1)[1]: again_zip.read(n) for n in again_zip.namelist() if n.startswith("concatenated/")}
  assert members == _tree(version_dir)
  with pytest.raises(errors.ConfigError, match=r"npz export of s3://.*has no s3:// filesystem.*--format tfrecord"):
    archive.export(imported, tmp_path / "arrays.zip", "npz")
  arrays_url = f"{s3_bucket}/archives/arrays.zip"  # local dataset, remote npz archive: spooled locally
  archive.export(version_dir, arrays_url, "npz")
  with s3.open(arrays_url, "rb") as handle, np.load(handle) as arrays:
    assert arrays["train/label"].shape == (12,)


def test_tfrecord_globs_and_gzip_on_s3_read_as_locally(s3_bucket) -> None:
  s3 = _s3()
  for path in (DUMMY / "cross_product").iterdir():
    s3.put(str(path), f"{s3_bucket}/cp/{path.name}")
  remote.invalidate_listings(s3_bucket)
  files = tfrecord_io.expand(f"{s3_bucket}/cp/*")
  assert [(f.path.name, f.compression) for f in files] == [
      ("environments.tfrecord.gz", "GZIP"), ("genotypes.tfrecord", "")]
  for file in files:
    local = tfrecord_io.RecordFile(epath.Path(DUMMY / "cross_product" / file.path.name), file.compression)
    assert list(record_index.read_records(file)) == list(record_index.read_records(local))
  with pytest.raises(errors.SourceError, match=r"No TFRecord file found at 's3://.*/cp/missing-\*'"):
    tfrecord_io.expand(f"{s3_bucket}/cp/missing-*")


def _write_records(path: pathlib.Path, sizes: list[int]) -> int:
  rng = np.random.default_rng(0)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for size in sizes:
      writer.write(rng.bytes(size))
  return path.stat().st_size


def _peak_bytes(file: tfrecord_io.RecordFile) -> tuple[int, int]:
  """(records read, peak bytes Python allocated) of reading every record of `file` as builders do."""
  tracemalloc.start()
  try:
    count = sum(1 for _ in record_index.read_records(file))
    return count, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_the_scanner_streams_s3_files_in_bounded_memory(s3_bucket, tmp_path) -> None:
  mib = 1024 * 1024
  _write_records(tmp_path / "small.tfrecord", [256 * 1024] * 128)  # 32 MiB: two 16 MiB windows
  large = _write_records(tmp_path / "large.tfrecord", [256 * 1024] * 384)  # 96 MiB
  s3 = _s3()
  s3.put(str(tmp_path / "small.tfrecord"), f"{s3_bucket}/small.tfrecord")
  s3.put(str(tmp_path / "large.tfrecord"), f"{s3_bucket}/large.tfrecord")
  files = [tfrecord_io.RecordFile(remote.FsspecPath(f"{s3_bucket}/{n}.tfrecord"), "") for n in ("small", "large")]
  windows = record_index._Windows(files[1])  # pylint: disable=protected-access
  try:
    assert windows.streamed  # no descriptor to map: the streamed reader
  finally:
    windows.close()
  _peak_bytes(tfrecord_io.RecordFile(epath.Path(tmp_path / "small.tfrecord"), ""))  # compiled before measuring
  (small_count, small_peak), (large_count, large_peak) = map(_peak_bytes, files)
  assert (small_count, large_count) == (128, 384)
  # Flat in the file's size (64 MiB more): a window and its copies are held, never the file.
  assert large_peak - small_peak < 2 * mib, (small_peak, large_peak)
  assert large_peak < 0.75 * large, (large_peak, large)


@pytest.mark.slow
def test_errors_about_s3_paths_name_them_without_credentials(s3_endpoint) -> None:
  del s3_endpoint
  missing = f"s3://tfds-builders-missing-{uuid.uuid4().hex[:8]}/registry"
  with pytest.raises(faults.CommandFailed) as failed:
    _cli("list", missing)
  assert f"Registry root {missing} does not exist" in failed.value.stderr
  _assert_no_credentials(failed.value.stderr)


@pytest.mark.slow
def test_an_s3_registry_skips_a_version_it_cannot_mirror_and_loads_the_others(
    s3_build, s3_bucket, tmp_path, monkeypatch, caplog) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  _, version_dir, _ = s3_build
  root = f"{s3_bucket}/registry"
  registry.publish(version_dir, root)
  s3 = _s3()
  for name in ("dataset_info.json", registry.CHECKSUMS_FILENAME):  # a folder name no local path may hold
    s3.pipe(f"{root}/evil:x/cfg/1.0.0/{name}", b"{}")
  monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / "cache"))
  namespace = f"skip{uuid.uuid4().hex[:8]}"
  with caplog.at_level("WARNING", logger=registry.__name__):
    registry.register(namespace, root)
  (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
  assert f"Registry {root}: version evil:x/cfg/1.0.0 skipped" in warning and "'evil:x'" in warning
  examples = list(tfds.load(f"{namespace}:concatenated/s3:1.0.0", split="train"))
  assert len(examples) == 12
  assert sorted(p.name for p in next((tmp_path / "cache" / "remote").iterdir()).iterdir()) == ["concatenated"]


@pytest.mark.slow
def test_a_warm_s3_mirror_is_kept_until_the_published_checksums_change(s3_build, s3_bucket, tmp_path, monkeypatch) -> None:
  _, version_dir, _ = s3_build
  root = f"{s3_bucket}/registry"
  registry.publish(version_dir, root)
  monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / "cache"))
  registry.register(f"warm{uuid.uuid4().hex[:8]}", root)
  mirrored = remote.cache_dir(root) / VERSION
  names = sorted(p.name for p in mirrored.iterdir())
  assert names == sorted([*(p.name for p in version_dir.iterdir() if "tfrecord-" not in p.name),
                          registry.CHECKSUMS_FILENAME])  # metadata only: shards come on first load
  inode = os.stat(mirrored / "dataset_info.json").st_ino
  registry.register(f"warm{uuid.uuid4().hex[:8]}", root)
  assert os.stat(mirrored / "dataset_info.json").st_ino == inode  # unchanged: not copied again
  changed = json.loads(_s3().cat(f"{root}/{VERSION}/{registry.CHECKSUMS_FILENAME}"))
  changed["published_at"] = "2000-01-01T00:00:00+00:00"
  _s3().pipe(f"{root}/{VERSION}/{registry.CHECKSUMS_FILENAME}", json.dumps(changed).encode())
  registry.register(f"warm{uuid.uuid4().hex[:8]}", root)
  assert json.loads((mirrored / registry.CHECKSUMS_FILENAME).read_text())["published_at"] == "2000-01-01T00:00:00+00:00"


def test_an_s3_registry_root_that_cannot_be_listed_is_an_error(s3_bucket) -> None:
  missing = f"s3://tfds-builders-missing-{uuid.uuid4().hex[:8]}/root"
  with pytest.raises(errors.SourceError) as failed:
    registry.register(f"missing{uuid.uuid4().hex[:8]}", missing)
  faults.assert_message(failed.value, [f"{missing} cannot be listed", "does the bucket exist"])
  _assert_no_credentials(str(failed.value))
  registry.register(f"empty{uuid.uuid4().hex[:8]}", f"{s3_bucket}/nothing-yet")  # an empty prefix: nothing published
