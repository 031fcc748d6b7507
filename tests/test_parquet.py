"""Parquet: shards TFDS's reader reads back whole, and the columnar export DuckDB, pandas and HF datasets read."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest

from tests import helpers
from tests.faults import CLI, REPO, TFDS, assert_message, assert_nothing_loadable, run_command, run_python, tfds_build

BIG_ROWS = 2600  # x is 32 KiB a row: ~85 MB, over 10 row-group batches (parquet_export.BATCH_BYTES)
TEST_ROWS = 300  # the test split alone: just over one batch
BATCH_MIB = 8  # parquet_export.BATCH_BYTES


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, object]:
  """The defaults of numpy_arrays, database and cross_product, and a float64 numpy_arrays config of ~85 MB."""
  root = tmp_path_factory.mktemp("parquet")
  folders = [str(REPO / "tfds_builders" / name) for name in ("numpy_arrays", "database", "cross_product")]
  run_command([TFDS, "build", *folders, "--config_idx", "0", "--data_dir", str(root / "data")], timeout=600)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((BIG_ROWS, 64, 64))
  x[0, 0, :6] = [np.nan, -0.0, np.inf, -np.inf, 5e-324, np.finfo(np.float64).max]  # bit patterns a cast would lose
  image = rng.integers(0, 256, (BIG_ROWS, 4, 4, 3), dtype=np.uint8)
  label = np.arange(BIG_ROWS, dtype=np.int64)
  np.savez(root / "train.npz", x=x[:-TEST_ROWS], image=image[:-TEST_ROWS], label=label[:-TEST_ROWS])
  np.savez(root / "test.npz", x=x[-TEST_ROWS:], image=image[-TEST_ROWS:], label=label[-TEST_ROWS:])
  tfds_build("numpy_arrays", {"name": "f64", "splits": {"train": [str(root / "train.npz")],
                                                        "test": [str(root / "test.npz")]}}, root / "data")
  return {"root": root, "data": root / "data", "x": x, "image": image, "label": label}


def _dataset_dir(built, name: str, config: str):
  return helpers.version_dir(built["data"], name, config)


def _load(dataset_dir, split: str) -> list[dict]:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  dataset = tfds.builder_from_directory(str(dataset_dir)).as_dataset(split=split, shuffle_files=False)
  return [tfds.core.utils.flatten_nest_dict(example) for example in tfds.as_numpy(dataset)]


def _dense(cell: np.ndarray) -> np.ndarray:
  """pandas gives a rank-k list column as object arrays nested k deep: stack them back into one array."""
  return np.stack([_dense(item) for item in cell]) if cell.dtype == object else cell


# ------------------------------------------------------ --file_format parquet --


@pytest.mark.slow  # about 15 s
def test_write_examples_keeps_every_example_readable_by_tfds(tmp_path):
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import file_adapters  # pylint: disable=import-outside-toplevel
  from tfds_builders.core import parquet_format  # pylint: disable=import-outside-toplevel

  features = tfds.features.FeaturesDict({"id": np.int64, "payload": tfds.features.Tensor(shape=(None,), dtype=np.uint8)})
  records = [features.serialize_example({"id": i, "payload": np.full(i % 300, i % 256, np.uint8)})
             for i in range(10_000)]
  dataset_dir = tmp_path / "ids" / "1.0.0"
  dataset_dir.mkdir(parents=True)
  lengths = [9_000, 1_000]  # the first shard needs two row groups (ROW_GROUP_ROWS 8192)
  starts = [0, 9_000]
  for index, (start, length) in enumerate(zip(starts, lengths)):
    path = epath.Path(dataset_dir / f"ids-train.parquet-{index:05d}-of-00002")
    written = parquet_format.write_examples(path, ((key, records[key]) for key in range(start, start + length)))
    assert written == length
  first = pq.ParquetFile(dataset_dir / "ids-train.parquet-00000-of-00002")
  assert [first.metadata.row_group(i).num_rows for i in range(first.num_row_groups)] == [8192, 808]
  raw = [bytes(record) for index in range(2) for record in tfds.as_numpy(
      file_adapters.ParquetFileAdapter.make_tf_data(str(dataset_dir / f"ids-train.parquet-{index:05d}-of-00002")))]
  assert raw == records  # every example, in order, byte for byte

  split = tfds.core.SplitInfo(name="train", shard_lengths=lengths, num_bytes=sum(map(len, records)))
  tfds.folder_dataset.write_metadata(data_dir=dataset_dir, features=features, split_infos=[split], check_data=False)
  builder = tfds.builder_from_directory(str(dataset_dir))
  assert builder.info.file_format == file_adapters.FileFormat.PARQUET
  # Every example once (as_dataset interleaves the two shards: this dataset does not disable shuffling).
  assert sorted(example["id"] for example in tfds.as_numpy(builder.as_dataset(split="train"))) == list(range(10_000))
  source = builder.as_data_source(split="train")
  assert len(source) == 10_000
  for index in (9_999, 8_192, 8_191, 299, 0):
    assert source[index]["id"] == index
    assert source[index]["payload"].tolist() == [index % 256] * (index % 300)


# ------------------------------------------------------------ columnar export --


@pytest.mark.slow
def test_export_streams_and_reads_in_duckdb_pandas_and_hf(built, tmp_path):
  import datasets  # pylint: disable=import-outside-toplevel
  import duckdb  # pylint: disable=import-outside-toplevel
  import pandas as pd  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

  big_dir = _dataset_dir(built, "numpy_arrays", "f64")
  out = tmp_path / "f64_parquet"
  result = run_command([CLI, "export", str(big_dir), str(out), "--format", "parquet"])
  assert f"to {out} (parquet)" in result.stdout
  # Peak memory is flat in dataset size: once a first export reached its working set (a few
  # batches), a second export of ~10 batches (~85 MB) may not raise the peak by more than ~4 batches.
  peaks = run_python(f"""
      import resource
      from tfds_builders import parquet_export
      for index, splits in enumerate([["train"], ["train", "test"]]):
        parquet_export.export("{big_dir}", "{tmp_path}/rss" + str(index), splits=splits)
        print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
      """, timeout=300).stdout
  warm, whole = (int(kb) for kb in re.findall(r"peak_kb (\d+)", peaks))
  assert (whole - warm) / 1024 < 4 * BATCH_MIB, (warm, whole)
  assert sorted(path.name for path in out.iterdir()) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
  assert pq.ParquetFile(out / "train-00000-of-00001.parquet").num_row_groups >= 10

  x, image, label = built["x"], built["image"], built["label"]
  glob = f"{out}/*.parquet"
  assert duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall()[0][0] == BIG_ROWS
  assert duckdb.sql(f"select sum(label) from read_parquet('{out}/train-*.parquet')").fetchall()[0][0] == sum(range(BIG_ROWS - TEST_ROWS))
  types = dict(duckdb.sql(f"select column_name, column_type from (describe select * from read_parquet('{glob}'))").fetchall())
  assert types["label"] == "BIGINT" and types["x"].startswith("DOUBLE") and types["image"].startswith("UTINYINT")
  row = duckdb.sql(f"select x, image from read_parquet('{out}/train-*.parquet') where label = 7").fetchall()[0]
  assert np.array(row[0]).tobytes() == x[7].tobytes() and np.array(row[1], np.uint8).tobytes() == image[7].tobytes()

  frame = pd.read_parquet(out / "train-00000-of-00001.parquet")
  assert len(frame) == BIG_ROWS - TEST_ROWS and frame["label"].dtype == np.int64
  for index in (0, 1, BIG_ROWS - TEST_ROWS - 1):
    assert _dense(frame["x"][index]).tobytes() == x[index].tobytes()  # NaN, -0.0, denormals bit-exact
    assert _dense(frame["image"][index]).dtype == np.uint8
    assert _dense(frame["image"][index]).tobytes() == image[index].tobytes()

  hf = datasets.load_dataset("parquet", data_files={"train": f"{out}/train-*.parquet", "test": f"{out}/test-*.parquet"},
                             cache_dir=str(tmp_path / "hf"))
  assert hf.num_rows == {"train": BIG_ROWS - TEST_ROWS, "test": TEST_ROWS}
  # HF's numpy format casts floats to float32: read Python values, typed by the features HF inferred.
  assert str(hf["train"].features["x"]) == "List(List(Value('float64'), length=64), length=64)"
  assert str(hf["train"].features["image"]).startswith("List(List(List(Value('uint8'), length=3)")
  assert np.array(hf["test"][-1]["x"], np.float64).tobytes() == x[-1].tobytes()
  assert np.array(hf["train"][0]["x"], np.float64).tobytes() == x[0].tobytes()
  assert np.array(hf["train"][5]["image"], np.uint8).tobytes() == image[5].tobytes()

  schema = pq.read_schema(out / "train-00000-of-00001.parquet")
  assert schema.field("x").metadata == {b"tfds.dtype": b"float64", b"tfds.shape": b"[64, 64]", b"tfds.feature": b"Tensor"}
  header = json.loads(schema.metadata[b"tfds_builders"])
  assert header["files"]["features.json"]["text"] == (big_dir / "features.json").read_text()
  assert header["num_examples"] == BIG_ROWS - TEST_ROWS and header["split"] == "train"

  data_dir = tmp_path / "restored"
  result = run_command([CLI, "import", str(out), str(data_dir)])
  restored = data_dir / "numpy_arrays" / "f64" / "1.0.0"
  for split in ("train", "test"):
    originals, copies = _load(big_dir, split), _load(restored, split)
    assert len(copies) == len(originals)
    for original, copy in zip(originals, copies):
      assert all(copy[name].tobytes() == original[name].tobytes() and copy[name].dtype == original[name].dtype
                 for name in original)
  shard = "numpy_arrays-train.tfrecord-00000-of-00001"
  identical = hashlib.sha256((restored / shard).read_bytes()).digest() == hashlib.sha256((big_dir / shard).read_bytes()).digest()
  assert ("byte-identical" in result.stdout) == identical
  assert (restored / "dataset_info.json").read_bytes() == (big_dir / "dataset_info.json").read_bytes()


@pytest.mark.slow
def test_export_of_database_strings_and_null_masks(built, tmp_path):
  import duckdb  # pylint: disable=import-outside-toplevel
  from tfds_builders import parquet_export  # pylint: disable=import-outside-toplevel

  from tfds_builders import archive  # pylint: disable=import-outside-toplevel

  dataset_dir = _dataset_dir(built, "database", "demo")
  # archive.export, the Python twin of `tfds-builders export`, routes parquet here.
  out = archive.export(dataset_dir, tmp_path / "database", format="parquet")
  assert sorted(path.name for path in out.iterdir()) == [
      "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
  expected = {split: _load(dataset_dir, split) for split in ("train", "test")}
  for split, examples in expected.items():
    rows = duckdb.sql(f"select id, sex, sex_is_null, comment, island, bill_length_mm, is_adult, typeof(sex), "
                      f"typeof(sex_is_null), typeof(bill_length_mm) from read_parquet('{out}/{split}-*.parquet')").fetchall()
    assert len(rows) == len(examples) > 0
    for row, example in zip(rows, examples):
      assert row[:7] == (example["id"], example["sex"].decode(), bool(example["sex_is_null"]), example["comment"].decode(),
                         example["island"], float(example["bill_length_mm"]), bool(example["is_adult"]))
      assert row[7:] == ("VARCHAR", "BOOLEAN", "FLOAT")
  assert any(example["sex_is_null"] for examples in expected.values() for example in examples)  # the mask is exercised

  data_dir = tmp_path / "restored"
  target, _ = parquet_export.import_(out, data_dir)
  for split, examples in expected.items():
    copies = _load(target, split)
    assert [{name: np.asarray(value).tolist() for name, value in copy.items()} for copy in copies] == [
        {name: np.asarray(value).tolist() for name, value in example.items()} for example in examples]


@pytest.mark.slow
def test_export_of_nested_features_and_refused_exports(built, tmp_path):
  import pandas as pd  # pylint: disable=import-outside-toplevel
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  from tfds_builders import parquet_export  # pylint: disable=import-outside-toplevel
  from tfds_builders.core import errors  # pylint: disable=import-outside-toplevel

  dataset_dir = _dataset_dir(built, "cross_product", "product")
  out = parquet_export.export(dataset_dir, tmp_path / "pairs")
  frame = pd.read_parquet(out)
  expected = _load(dataset_dir, "train")
  assert len(frame) == len(expected) == 20
  assert sorted(frame.columns) == sorted(expected[0])  # one column per leaf: left/name, right/soil, ...
  for index, example in enumerate(expected):
    assert frame["left/name"][index] == example["left/name"] and frame["right/soil"][index] == example["right/soil"]
    assert frame["left/markers"][index].dtype == np.float32
    assert frame["left/markers"][index].tobytes() == example["left/markers"].tobytes()
    assert list(frame["left/traits"][index]) == list(example["left/traits"])
  field = pq.read_schema(out / "train-00000-of-00001.parquet").field("left/traits")
  assert field.type == pa.list_(pa.binary()) and field.metadata[b"tfds.shape"] == b"[null]"

  shard = out / "train-00000-of-00001.parquet"
  table = pq.read_table(shard)
  header = json.loads(table.schema.metadata[b"tfds_builders"])
  cases = {
      "no tfds_builders schema metadata": table.replace_schema_metadata(None),
      "altered": table.replace_schema_metadata({**table.schema.metadata, b"tfds_builders": json.dumps(
          {**header, "num_examples": 21}, sort_keys=True).encode()}),
      "column 'left/genotype_id' is int32": table.set_column(
          table.schema.get_field_index("left/genotype_id"), table.schema.field("left/genotype_id").with_type(pa.int32()),
          table.column("left/genotype_id").cast(pa.int32())).replace_schema_metadata(table.schema.metadata),
  }
  for fragment, tampered in cases.items():
    damaged = tmp_path / "damaged"
    shutil.rmtree(damaged, ignore_errors=True)
    shutil.copytree(out, damaged)
    pq.write_table(tampered, damaged / shard.name)
    with pytest.raises(errors.SourceError) as raised:
      parquet_export.import_(damaged, tmp_path / "refused")
    assert_message(raised.value, [re.escape(str(damaged / shard.name)), re.escape(fragment), "export"])
    assert_nothing_loadable(tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # not even the empty folders on the way
  target, _ = parquet_export.import_(out, tmp_path / "restored")
  assert [{name: np.asarray(value).tolist() for name, value in copy.items()} for copy in _load(target, "train")] == [
      {name: np.asarray(value).tolist() for name, value in example.items()} for example in expected]


def test_export_decodes_through_tfds_features_when_the_wire_is_not_enough(tmp_path):
  """Images and zlib-encoded tensors of two varying dimensions decode through TFDS; import re-encodes them."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from tfds_builders import parquet_export  # pylint: disable=import-outside-toplevel

  features = tfds.features.FeaturesDict({
      "photo": tfds.features.Image(shape=(5, 4, 3)),
      "meta": {"grid": tfds.features.Tensor(shape=(None, None), dtype=np.int32, encoding="zlib"),
               "caption": tfds.features.Text()},
  })
  rng = np.random.default_rng(1)
  examples = [{"photo": rng.integers(0, 256, (5, 4, 3), dtype=np.uint8),
               "meta": {"grid": np.arange(index * (index % 3), dtype=np.int32).reshape(index, index % 3),
                        "caption": f"photo {index} é"}} for index in range(7)]
  dataset_dir = tmp_path / "photos" / "1.0.0"
  dataset_dir.mkdir(parents=True)
  with tf.io.TFRecordWriter(str(dataset_dir / "photos-train.tfrecord-00000-of-00001")) as writer:
    for example in examples:
      writer.write(features.serialize_example(example))
  split = tfds.core.SplitInfo(name="train", shard_lengths=[7], num_bytes=1)
  tfds.folder_dataset.write_metadata(data_dir=dataset_dir, features=features, split_infos=[split], check_data=False)

  out = parquet_export.export(dataset_dir, tmp_path / "photos_parquet")
  table = pq.read_table(out / "train-00000-of-00001.parquet")
  assert table.schema.field("photo").type == pa.list_(pa.list_(pa.list_(pa.uint8(), 3), 4), 5)
  assert table.schema.field("meta/grid").type == pa.list_(pa.list_(pa.int32()))
  assert table.schema.field("meta/caption").type == pa.string()
  assert table.column("meta/caption").to_pylist() == [example["meta"]["caption"] for example in examples]
  for index, example in enumerate(examples):
    assert np.array(table.column("photo")[index].as_py(), np.uint8).tobytes() == example["photo"].tobytes()
    grid = table.column("meta/grid")[index].as_py()
    assert len(grid) == index and all(len(row) == index % 3 for row in grid)
    assert np.array(grid, np.int32).reshape(example["meta"]["grid"].shape).tolist() == example["meta"]["grid"].tolist()

  target, identical = parquet_export.import_(out, tmp_path / "restored")
  restored = _load(target, "train")
  assert len(restored) == 7
  for copy, example in zip(restored, examples):
    assert copy["photo"].tobytes() == example["photo"].tobytes()
    assert copy["meta/grid"].shape == example["meta"]["grid"].shape and copy["meta/grid"].dtype == np.int32
    assert copy["meta/caption"].decode() == example["meta"]["caption"]
  original = (dataset_dir / "photos-train.tfrecord-00000-of-00001").read_bytes()
  assert identical == ((target / "photos-train.tfrecord-00000-of-00001").read_bytes() == original)
