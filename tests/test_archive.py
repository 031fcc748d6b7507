"""Tests of export/import archives: identical round trips, npz padding with lengths, bad archives, CLI."""

from __future__ import annotations

import hashlib
import json
import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import archive
from tfds_builders import cli
from tfds_builders.concatenated import Builder
from tfds_builders.core import errors


def file_digests(root: pathlib.Path) -> dict[str, str]:
  return {
      str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
      for path in sorted(root.rglob("*")) if path.is_file()
  }


def all_examples(builder) -> dict[str, list[dict]]:
  return {split: list(tfds.as_numpy(builder.as_dataset(split=split))) for split in builder.info.splits}


def assert_same_examples(got: dict, expected: dict) -> None:
  assert got.keys() == expected.keys()
  for split in expected:
    assert len(got[split]) == len(expected[split])
    for a, b in zip(got[split], expected[split]):
      assert a.keys() == b.keys()
      for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert np.asarray(a[name]).dtype == np.asarray(b[name]).dtype


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> pathlib.Path:
  builder = Builder(config="demo", data_dir=str(tmp_path_factory.mktemp("data")))
  builder.download_and_prepare()
  return pathlib.Path(builder.data_path)


@pytest.fixture(scope="module")
def demo_zip(demo_dir, tmp_path_factory) -> pathlib.Path:
  return pathlib.Path(archive.export(demo_dir, tmp_path_factory.mktemp("zip") / "demo.zip"))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> pathlib.Path:
  """A TFDS dataset with images of varying size, a string list-free schema, a fixed matrix."""
  rng = np.random.default_rng(0)
  rows = [
      {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "matrix": rng.random((2, 3)).astype(np.float32),
       "points": rng.random((n, 2)).astype(np.float64), "text": "é" * n, "count": np.uint8(n)}
      for h, w, n in [(2, 5, 0), (4, 1, 3), (3, 3, 1)]
  ]
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name="pictures", version="1.0.0", data_dir=str(tmp_path_factory.mktemp("pictures")),
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "matrix": tfds.features.Tensor(shape=(2, 3), dtype=np.float32),
          "points": tfds.features.Tensor(shape=(None, 2), dtype=np.float64),
          "text": tfds.features.Text(),
          "count": tfds.features.Tensor(shape=(), dtype=np.uint8),
      }),
      split_datasets={"train": list(enumerate(rows))}, disable_shuffling=True,
  )
  return pathlib.Path(builder.data_path)


# --------------------------------------------------------------- tfrecord --


@pytest.mark.parametrize("compression", ["stored", "deflate"])
def test_tfrecord_round_trip_is_identical(demo_dir, tmp_path, compression):
  out = archive.export(demo_dir, tmp_path / "demo.zip", "tfrecord", compression=compression)
  restored = archive.import_(out, tmp_path / "data")
  assert restored == tmp_path / "data/concatenated/demo/1.0.0"
  assert file_digests(pathlib.Path(restored)) == file_digests(demo_dir)  # records, keys' order, features
  original = tfds.builder_from_directory(str(demo_dir))
  again = tfds.builder_from_directory(str(restored))
  assert again.info.features.to_json() == original.info.features.to_json()
  assert again.info.features["source"].names == ["site_a", "site_b"]
  assert_same_examples(all_examples(again), all_examples(original))
  loaded = tfds.load("concatenated/demo", data_dir=str(tmp_path / "data"), split="test", download=False)
  assert len(list(loaded)) == 3
  manifest = archive.read_manifest(out)
  assert manifest["format_version"] == archive.FORMAT_VERSION
  assert manifest["dataset"] == {"name": "concatenated", "config": "demo", "version": "1.0.0"}
  with zipfile.ZipFile(out) as zf:
    expected_type = zipfile.ZIP_DEFLATED if compression == "deflate" else zipfile.ZIP_STORED
    assert {i.compress_type for i in zf.infolist() if i.filename != archive.MANIFEST_NAME} == {expected_type}


def test_failed_import_leaves_nothing_and_existing_needs_overwrite(demo_zip, tmp_path):
  target = archive.import_(demo_zip, tmp_path)
  with pytest.raises(errors.SourceError, match="already exists; remove it or import with --overwrite"):
    archive.import_(demo_zip, tmp_path)
  (pathlib.Path(target) / "extra.txt").write_text("stale")
  archive.import_(demo_zip, tmp_path, overwrite=True)
  assert not (pathlib.Path(target) / "extra.txt").exists()
  assert sorted(p.name for p in pathlib.Path(target).parent.iterdir()) == ["1.0.0"]


def corrupt_member(source: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
  """A copy of `source` with one payload byte of its first shard flipped."""
  data = bytearray(source.read_bytes())
  with zipfile.ZipFile(source) as zf:
    info = next(i for i in zf.infolist() if "tfrecord" in i.filename)
  name_length, extra_length = np.frombuffer(bytes(data[info.header_offset + 26:info.header_offset + 30]), "<u2")
  offset = info.header_offset + 30 + int(name_length) + int(extra_length) + 10  # inside the payload
  data[offset] ^= 0xFF
  out.write_bytes(bytes(data))
  return out


def test_import_rejects_archives_that_are_not_ours_or_damaged(demo_zip, tmp_path):
  not_zip = tmp_path / "plain.zip"
  not_zip.write_bytes(b"hello")
  truncated = tmp_path / "cut.zip"
  truncated.write_bytes(demo_zip.read_bytes()[: demo_zip.stat().st_size // 2])
  foreign = tmp_path / "foreign.zip"
  with zipfile.ZipFile(foreign, "w") as zf:
    zf.writestr("x/dataset_info.json", "{}")
  newer = tmp_path / "newer.zip"
  with zipfile.ZipFile(demo_zip) as src, zipfile.ZipFile(newer, "w") as dst:
    for info in src.infolist():
      data = src.read(info)
      if info.filename == archive.MANIFEST_NAME:
        data = json.dumps({**json.loads(data), "format_version": 99}).encode()
      dst.writestr(info, data)
  missing_member = tmp_path / "missing.zip"
  with zipfile.ZipFile(demo_zip) as src, zipfile.ZipFile(missing_member, "w") as dst:
    for info in src.infolist():
      if "dataset_info" not in info.filename:
        dst.writestr(info, src.read(info))
  cases = {
      not_zip: "is not a zip archive, or is truncated",
      truncated: "is not a zip archive, or is truncated",
      foreign: "not one written by `tfds-builders export`",
      newer: "archive format version 99",
      missing_member: "dataset_info.json is missing",
      corrupt_member(demo_zip, tmp_path / "flipped.zip"): "is corrupt or truncated",
      tmp_path / "absent.zip": "does not exist",
  }
  for path, fragment in cases.items():
    with pytest.raises(errors.SourceError, match=None) as raised:
      archive.import_(path, tmp_path / "data")
    assert fragment in str(raised.value), (path.name, str(raised.value))
    assert not list((tmp_path / "data").rglob("dataset_info.json")) if (tmp_path / "data").exists() else True
  assert not any(p.name.startswith("incomplete.") for p in (tmp_path / "data").rglob("*")) if (
      tmp_path / "data").exists() else True


# -------------------------------------------------------------------- npz --


def test_npz_pads_only_in_the_archive_and_keeps_lengths(demo_dir, tmp_path):
  out = archive.export(demo_dir, tmp_path / "demo_npz.zip", "npz", pad_value=-7, compression="deflate")
  expected = all_examples(tfds.builder_from_directory(str(demo_dir)))
  arrays = np.load(out)
  for split, rows in expected.items():
    tokens, lengths = arrays[f"{split}/tokens"], arrays[f"{split}/tokens_length"]
    assert tokens.dtype == np.int64 and lengths.dtype == np.int64
    assert tokens.shape == (len(rows), max(len(r["tokens"]) for r in rows))
    for row, length, example in zip(tokens, lengths, rows, strict=True):
      assert length == len(example["tokens"])
      np.testing.assert_array_equal(row[:length], example["tokens"])
      assert (row[length:] == -7).all()
    assert arrays[f"{split}/source"].tolist() == [r["source"] for r in rows]
    np.testing.assert_array_equal(arrays[f"{split}/score"], [r["score"] for r in rows])
    keys, key_lengths = arrays[f"{split}/source_key"], arrays[f"{split}/source_key_length"]
    assert [k.tobytes()[:n] for k, n in zip(keys, key_lengths)] == [r["source_key"] for r in rows]
    images, image_lengths = arrays[f"{split}/image"], arrays[f"{split}/image_length"]
    assert [i.tobytes()[:n] for i, n in zip(images, image_lengths)] == [r["image"] for r in rows]
  description = archive.read_manifest(out)["npz"]
  assert description["class_names"] == {"source": ["site_a", "site_b"]}
  assert description["splits"]["train"]["features"]["tokens"]["pad_value"] == -7
  with pytest.raises(errors.SourceError, match="export-only"):
    archive.import_(out, tmp_path / "data")


def test_npz_multi_dim_varying_shapes_and_dtypes(image_dir, tmp_path):
  out = archive.export(image_dir, tmp_path / "pictures.zip", "npz", pad_value=255)
  arrays = np.load(out)
  rows = all_examples(tfds.builder_from_directory(str(image_dir)))["train"]
  images, shapes = arrays["train/image"], arrays["train/image_length"]
  assert images.shape == (3, 4, 5, 3) and shapes.tolist() == [[2, 5], [4, 1], [3, 3]]
  points, point_lengths = arrays["train/points"], arrays["train/points_length"]
  assert points.dtype == np.float64 and point_lengths.tolist() == [0, 3, 1]
  for i, row in enumerate(rows):
    h, w = shapes[i]
    np.testing.assert_array_equal(images[i, :h, :w], row["image"])
    assert (images[i, h:] == 255).all() and (images[i, :, w:] == 255).all()
    np.testing.assert_array_equal(points[i, : point_lengths[i]], row["points"])
    assert (points[i, point_lengths[i]:] == 255).all()
    assert arrays["train/text"][i].tobytes()[: arrays["train/text_length"][i]] == row["text"]
  np.testing.assert_array_equal(arrays["train/matrix"], np.stack([r["matrix"] for r in rows]))
  assert arrays["train/count"].dtype == np.uint8 and "train/matrix_length" not in arrays.files
  with pytest.raises(errors.ConfigError, match="pad value -1 does not fit feature 'image' \\(uint8\\)"):
    archive.export(image_dir, tmp_path / "bad.zip", "npz", pad_value=-1)
  assert not (tmp_path / "bad.zip").exists()
  assert [p.name for p in tmp_path.iterdir()] == ["pictures.zip"]  # no partial file or spool left


def test_npz_fast_path_casts_and_shapes_like_tfds(tmp_path):
  rows = [{"points": np.arange(2 * n, dtype=np.float64).reshape(n, 2) / 3, "matrix": np.full((2, 3), n, np.int32),
           "flag": bool(n % 2), "big": np.uint64(2**64 - 1 - n), "text": "x" * n} for n in (2, 0, 5)]
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name="plain", version="1.0.0", data_dir=str(tmp_path / "data"), disable_shuffling=True,
      features=tfds.features.FeaturesDict({
          "points": tfds.features.Tensor(shape=(None, 2), dtype=np.float64),
          "matrix": tfds.features.Tensor(shape=(2, 3), dtype=np.int32),
          "flag": tfds.features.Tensor(shape=(), dtype=np.bool_),
          "big": tfds.features.Tensor(shape=(), dtype=np.uint64),
          "text": tfds.features.Text(),
      }),
      split_datasets={"train": list(enumerate(rows))},
  )
  assert archive._wire_decodable(builder.info.features)  # pylint: disable=protected-access
  arrays = np.load(archive.export(builder.data_path, tmp_path / "plain.zip", "npz", pad_value=-1))
  expected = all_examples(builder)["train"]
  assert arrays["train/points_length"].tolist() == [2, 0, 5]
  for i, row in enumerate(expected):
    np.testing.assert_array_equal(arrays["train/points"][i, : len(row["points"])], row["points"])
    assert (arrays["train/points"][i, len(row["points"]):] == -1).all()
  np.testing.assert_array_equal(arrays["train/matrix"], np.stack([r["matrix"] for r in expected]))
  assert arrays["train/matrix"].dtype == np.int32
  assert arrays["train/flag"].tolist() == [False, False, True]
  assert arrays["train/big"].tolist() == [2**64 - 1 - n for n in (2, 0, 5)]
  assert arrays["train/text"].tolist() == [b"xx", b"", b"xxxxx"]


def test_export_refuses_a_directory_that_is_no_dataset(tmp_path):
  with pytest.raises(errors.SourceError, match="holds no dataset_info.json"):
    archive.export(tmp_path, tmp_path / "x.zip")


# -------------------------------------------------------------------- CLI --


def test_cli_export_and_import(demo_dir, tmp_path, capsys):
  out = tmp_path / "demo.zip"
  assert cli.main(["export", str(demo_dir), str(out), "--format", "tfrecord"]) == cli.EXIT_OK
  assert cli.main(["import", str(out), str(tmp_path / "data")]) == cli.EXIT_OK
  printed = capsys.readouterr().out
  assert f"exported {demo_dir} to {out} (tfrecord)" in printed
  assert f"imported {tmp_path / 'data/concatenated/demo/1.0.0'}" in printed
  assert cli.main(["export", str(demo_dir), str(tmp_path / "a.zip"), "--format", "npz",
                   "--pad-value", "-1", "--split", "test"]) == cli.EXIT_OK
  assert sorted(f for f in np.load(tmp_path / "a.zip").files if f.startswith("train/")) == []
  assert cli.main(["import", str(tmp_path / "a.zip"), str(tmp_path / "data2")]) == cli.EXIT_ERROR
  err = capsys.readouterr().err
  assert err.startswith("tfds-builders import: error: ") and err.count("\n") == 1
  assert "export-only" in err


def test_cli_help_and_usage_errors(capsys):
  for command in ("export", "import"):
    with pytest.raises(SystemExit) as exited:
      cli.main([command, "--help"])
    assert exited.value.code == cli.EXIT_OK
  assert "--pad-value" in capsys.readouterr().out
  with pytest.raises(SystemExit) as exited:
    cli.main(["export", "x", "y", "--format", "csv"])
  assert exited.value.code == cli.EXIT_USAGE
