"""DatasetInfo metadata: supervised keys, homepage, citation, license, and the data_source_accesses of all five builders."""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.faults import CommandFailed, tfds_build
from tfds_builders.core import dataset_card
from tfds_builders.core import errors
from tfds_builders.core import provenance


REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY = REPO / "dummy_data"
CITATION = "@misc{demo2026, title={Demo arrays}, year={2026}}"
LICENSE = "https://spdx.org/licenses/CC-BY-4.0.html"
PG_PASSWORD = "tfds_builders_pw"  # scripts/start_postgres.sh's role


def _all_bytes(folder: pathlib.Path) -> bytes:
  return b"\n".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


def _accesses(dataset_dir: pathlib.Path) -> list[dict]:
  """data_source_accesses as `tfds.builder_from_directory` restores them, timestamps aside."""
  from google.protobuf import json_format  # pylint: disable=import-outside-toplevel

  info = tfds.builder_from_directory(str(dataset_dir)).info
  found = [json_format.MessageToDict(access) for access in info.as_proto.data_source_accesses]
  for access in found:
    assert access.pop("accessTimestampMs")
  return found


# ------------------------------------------------ the real `tfds build` CLI --


@pytest.mark.slow
def test_cli_builds_carry_card_fields_and_load_as_supervised(tmp_path):
  data_dir = tmp_path / "data"
  # The bundled config: image/label arrays, so supervised keys by default.
  tfds_build("numpy_arrays", "demo", data_dir)
  # A JSON config gives a list (JSON has no tuple) and every card field.
  custom = {
      "name": "carded", "data_root": str(DUMMY / "numpy_arrays"), "splits": {"train": ["train"]},
      "supervised_keys": ["label", "image"], "homepage": "https://example.org/arrays",
      "citation": CITATION, "license": LICENSE,
  }
  tfds_build("numpy_arrays", custom, data_dir)
  with pytest.raises(CommandFailed) as failed:
    tfds_build("numpy_arrays", {**custom, "name": "bad", "supervised_keys": ["image", "target"]}, data_dir)
  assert "supervised_keys names 'target', which is not a feature" in failed.value.stderr
  assert "the features are ['image', 'label']" in failed.value.stderr
  assert not list((data_dir / "numpy_arrays").glob("bad/*/dataset_info.json"))

  demo_dir = data_dir / "numpy_arrays" / "demo" / "1.0.0"
  stored = json.loads((demo_dir / "dataset_info.json").read_text())
  assert stored["location"]["urls"] == [dataset_card.card_url("numpy_arrays")]
  assert [item["featureKey"] for item in stored["supervisedKeys"]["tuple"]["items"]] == ["image", "label"]

  # By name through the builder code, and from the directory without it.
  images, labels = tfds.load("numpy_arrays/demo", split="train", data_dir=str(data_dir),
                             as_supervised=True, batch_size=-1)
  from_dir = tfds.builder_from_directory(str(demo_dir))
  assert from_dir.info.supervised_keys == ("image", "label")
  assert from_dir.info.homepage == dataset_card.card_url("numpy_arrays")
  dir_images, dir_labels = from_dir.as_dataset(split="train", as_supervised=True, batch_size=-1)
  assert images.shape == dir_images.shape == (from_dir.info.splits["train"].num_examples, 4, 4, 3)
  assert images.dtype.name == "uint8" and labels.dtype.name == "int64"
  np.testing.assert_array_equal(labels.numpy(), dir_labels.numpy())

  carded = tfds.builder_from_directory(str(data_dir / "numpy_arrays" / "carded" / "1.0.0"))
  assert carded.info.supervised_keys == ("label", "image")
  assert carded.info.homepage == "https://example.org/arrays"
  assert carded.info.citation == CITATION
  assert carded.info.redistribution_info.license == LICENSE
  label, image = next(iter(carded.as_dataset(split="train", as_supervised=True)))
  assert label.shape == () and image.shape == (4, 4, 3)


# ------------------------------------------- construction-time validation --


@pytest.mark.parametrize("keys, fragments", [
    (["image", "nope"], ["'nope', which is not a feature", r"\['image', 'label'\]"]),
    (["image"], ["give two feature names"]),
    ("image", ["give two feature names"]),
])
def test_bad_supervised_keys_refused_at_construction(tmp_path, keys, fragments):
  from tfds_builders.numpy_arrays import BuilderConfig  # pylint: disable=import-outside-toplevel

  config = BuilderConfig(name="keys", data_root=str(DUMMY / "numpy_arrays"),
                         splits={"train": ["train"]}, supervised_keys=keys)
  with pytest.raises(errors.ConfigError) as raised:  # raised by tfds.builder() itself
    tfds.builder("numpy_arrays", config=config, data_dir=str(tmp_path)).download_and_prepare()
  for fragment in fragments:
    assert re.search(fragment, str(raised.value)), str(raised.value)
  assert not list(tmp_path.rglob("dataset_info.json"))


def test_paired_supervised_keys():
  assert dataset_card.paired_supervised_keys(["label", "image", "id"]) == ("image", "label")
  assert dataset_card.paired_supervised_keys(["X", "y"]) == ("X", "y")
  assert dataset_card.paired_supervised_keys(["features", "target"]) == ("features", "target")
  assert dataset_card.paired_supervised_keys(["points"]) is None
  assert dataset_card.paired_supervised_keys(["image", "caption"]) is None


# ------------------------------------------------- data_source_accesses --


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> pathlib.Path:
  """The five builders' bundled default configs, built once."""
  data_dir = tmp_path_factory.mktemp("five")
  for name in ("numpy_arrays", "concatenated", "cross_product", "database", "augmented"):
    tfds.builder(name, data_dir=str(data_dir)).download_and_prepare()
  return data_dir


def test_accesses_of_the_five_builders(built):
  numpy_arrays = _accesses(built / "numpy_arrays/demo/1.0.0")
  assert numpy_arrays == [
      {"fileSystem": {"path": str(DUMMY / f"numpy_arrays/{split}/{site}.npz")}, "url": {}}
      for split, site in [("train", "site_a"), ("train", "site_b"), ("test", "site_c")]
  ]
  concatenated = [access["fileSystem"]["path"] for access in _accesses(built / "concatenated/demo/1.0.0")]
  assert concatenated == [str(DUMMY / "concatenated" / name) for name in (
      "site_a/train.tfrecord", "site_a/test.tfrecord", "site_b/train-00000-of-00002.tfrecord",
      "site_b/train-00001-of-00002.tfrecord", "site_b/test.tfrecord")]
  cross_product = [access["fileSystem"]["path"] for access in _accesses(built / "cross_product/product/1.1.0")]
  assert cross_product == [str(DUMMY / "cross_product/genotypes.tfrecord"),
                           str(DUMMY / "cross_product/environments.tfrecord.gz")]
  (database,) = _accesses(built / "database/demo/1.0.0")
  assert database["url"] == {"url": f"sqlite://{DUMMY / 'database/demo.sqlite'}"}
  assert "FROM penguins" in database["sqlQuery"]["sqlQuery"]
  augmented = [access["fileSystem"]["path"] for access in _accesses(built / "augmented/demo/1.0.0")]
  # The base's globs, expanded as TFDS does; then the side table.
  assert sorted(augmented[:3]) == [str(DUMMY / "augmented/base" / name) for name in (
      "test-00000.tfrecord", "train-00000.tfrecord", "train-00001.tfrecord")]
  assert augmented[3:] == [str(DUMMY / "augmented/labels.csv")]


def test_tfds_sources_are_recorded_as_tfds_datasets(built, tmp_path):
  """concatenated and augmented reading prepared TFDS datasets record name/config/version/data_dir."""
  from tfds_builders.concatenated import BuilderConfig  # pylint: disable=import-outside-toplevel

  copy = tmp_path / "copy"
  shutil.copytree(built / "numpy_arrays/demo/1.0.0", copy / "numpy_arrays/demo/1.0.0")
  config = BuilderConfig(name="of_tfds", sources=[
      {"name": "by_name", "dataset": "numpy_arrays/demo:1.0.0", "data_dir": str(built)},
      {"name": "by_dir", "dataset_dir": str(copy / "numpy_arrays/demo/1.0.0")},
  ])
  tfds.builder("concatenated", config=config, data_dir=str(tmp_path / "out")).download_and_prepare()
  assert _accesses(tmp_path / "out/concatenated/of_tfds/1.0.0") == [
      {"tfdsDataset": {"name": "numpy_arrays", "config": "demo", "version": "1.0.0", "dataDir": str(data_dir)},
       "url": {}}
      for data_dir in (built, copy)
  ]


@pytest.fixture
def pg_table(postgres_dsn):
  """A small table in its own schema of the test database."""
  import psycopg2  # pylint: disable=import-outside-toplevel

  connection = psycopg2.connect(postgres_dsn)
  connection.autocommit = True
  schema = "tfds_metadata_test"
  with connection.cursor() as cursor:
    cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; "
                   f"CREATE TABLE {schema}.labels (id int8 PRIMARY KEY, label int8, weight float8); "
                   f"INSERT INTO {schema}.labels SELECT i, i % 3, i / 4.0 FROM generate_series(100, 113) i")
  try:
    yield f"{schema}.labels"
  finally:
    with connection.cursor() as cursor:
      cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    connection.close()


def test_sql_accesses_redact_the_password(postgres_dsn, pg_table, tmp_path):
  from tfds_builders.augmented import BuilderConfig as AugmentedConfig  # pylint: disable=import-outside-toplevel
  from tfds_builders.database import BuilderConfig as DatabaseConfig  # pylint: disable=import-outside-toplevel

  assert f"password={PG_PASSWORD}" in postgres_dsn
  uri = "postgresql://tfds_builders@127.0.0.1:5432/tfds_builders_test"
  database = DatabaseConfig(name="pg", driver="postgresql", dsn=postgres_dsn,
                            query=f"SELECT id, label, weight FROM {pg_table}", order_by=["id"],
                            supervised_keys=["weight", "label"])
  tfds.builder("database", config=database, data_dir=str(tmp_path)).download_and_prepare()
  (access,) = _accesses(tmp_path / "database/pg/1.0.0")
  assert access["url"] == {"url": uri}
  assert f"FROM {pg_table}" in access["sqlQuery"]["sqlQuery"]

  augmented = AugmentedConfig(
      name="pg_side", base_records={"train": ["base/train-*.tfrecord"]},
      data_root=str(DUMMY / "augmented"), side_table_sql=f"SELECT id, label FROM {pg_table}",
      side_table_connection={"driver": "postgresql", "dsn": postgres_dsn}, join_key="id",
  )
  tfds.builder("augmented", config=augmented, data_dir=str(tmp_path)).download_and_prepare()
  side = _accesses(tmp_path / "augmented/pg_side/1.0.0")[-1]
  assert side["sqlQuery"] == {"sqlQuery": f"SELECT id, label FROM {pg_table}"}
  assert PG_PASSWORD not in side["url"]["url"] and provenance.REDACTED in side["url"]["url"]
  # Nowhere in either dataset dir: dataset_info.json, metadata.json, croissant.json, shards.
  assert PG_PASSWORD.encode() not in _all_bytes(tmp_path)


# ------------------------------------------------------------- redaction --


@pytest.mark.parametrize("value, expected", [
    # User data named like a secret stays: split, column and feature names, SQL text.
    ({"sources": {"passages": ["a.npy"], "token": ["b.npy"]}},) * 2,
    ({"columns": {"tokens": {"dtype": "int64"}, "password_hash": {"dtype": "string"},
                  "password": {"dtype": "string"}}},) * 2,
    ({"missing_defaults": {"password": "unset", "secret": ""}},) * 2,
    ({"split_queries": {"train": "SELECT id FROM users WHERE password = crypt('x', password)"}},) * 2,
    ({"side_table_sql": "SELECT * FROM t WHERE token = 'abc'"},) * 2,
    # Credentials go, wherever they are.
    ({"queries": {"train": {"sql": "SELECT * FROM dblink('host=db password=hunter2', 'SELECT 1')"}}},
     {"queries": {"train": {"sql": "SELECT * FROM dblink('host=db password=***', 'SELECT 1')"}}}),
    ({"side_table_connection": {"driver": "postgresql", "dsn": "host=db password='hun ter2' user=me"}},
     {"side_table_connection": {"driver": "postgresql", "dsn": "host=db password=*** user=me"}}),
    ({"connection": {"password": "hunter2", "host": "db"}}, {"connection": {"password": "***", "host": "db"}}),
    ({"storage_options": {"key": "AKIA", "secret": "hunter2", "token": "t"}},
     {"storage_options": {"key": "AKIA", "secret": "***", "token": "***"}}),
    ({"driver": "x", "db_password": "hunter2", "api_key": "k", "aws_secret_access_key": "s"},
     {"driver": "x", "db_password": "***", "api_key": "***", "aws_secret_access_key": "***"}),
    ("postgresql://me:hunter2@db:5432/x?sslmode=require", "postgresql://me:***@db:5432/x?sslmode=require"),
    ("postgresql://db/x?user=me&password=hunter2&sslmode=require",
     "postgresql://db/x?user=me&password=***&sslmode=require"),
    ("PostgreSQL DSN host=db password=hunter2", "PostgreSQL DSN host=db password=***"),
    ("host=db sslpassword=hunter2 password='x y'", "host=db sslpassword=*** password=***"),
])
def test_redaction_removes_credentials_and_keeps_user_data(value, expected):
  assert provenance.redact(value) == expected


def test_provenance_readers_take_lists_only():
  """A record whose split maps to a string (as redaction once made it) names no file `<cwd>/*`."""
  for builder in ("numpy_arrays", "cross_product"):
    assert provenance.sources_read({"builder": builder, "sources": {"passages": "***"}}) == []
  assert provenance.sources_read({"builder": "numpy_arrays", "sources": {"train": ["/d/a.npz[x.npy]", 3]}}) == [
      provenance.SourceRead("file", "/d/a.npz")]


# ----------------------------------------------- as_supervised defaults --

# Every bundled config: the (input, target) it defaults to, or None when its
# features hold no such pair or more than one (never guessed).
SUPERVISED_DEFAULTS = {
    "numpy_arrays/demo": ("image", "label"),
    "numpy_arrays/variable_shapes": None,  # one feature, `points`
    "concatenated/demo": ("image", "label"),
    "concatenated/interleaved": ("image", "label"),
    "cross_product/product": None,  # pairs of records, no target
    "cross_product/combinations": None,
    "database/demo": None,  # two ClassLabels (species, island): ambiguous; set supervised_keys
    "database/split_queries": None,
    "augmented/demo": ("text", "label"),
    "augmented/demo_overlay": None,  # the side table's fields only, no input
    "augmented/demo_function": None,  # text, but no target
}


def test_every_bundled_config_has_its_supervised_default(tmp_path):
  bundled = {f"{name}/{config.name}" for name in ("numpy_arrays", "concatenated", "cross_product",
                                                 "database", "augmented")
             for config in tfds.builder_cls(name).BUILDER_CONFIGS}
  assert bundled == set(SUPERVISED_DEFAULTS)
  for full_name, keys in SUPERVISED_DEFAULTS.items():
    assert tfds.builder(full_name, data_dir=str(tmp_path)).info.supervised_keys == keys, full_name


def test_as_supervised_on_the_built_defaults(built, tmp_path):
  expected = {  # (input dtype, input shape, target dtype)
      "numpy_arrays/demo": ("uint8", (4, 4, 3), "int64"),
      "concatenated/demo": ("string", (), "int64"),
      "augmented/demo": ("string", (), "int64"),
  }
  for full_name, (input_dtype, input_shape, target_dtype) in expected.items():
    builder = tfds.builder(full_name, data_dir=str(built))
    inputs, targets = tfds.load(full_name, split="train", data_dir=str(built), download=False,
                                as_supervised=True, batch_size=-1)
    count = builder.info.splits["train"].num_examples
    assert count > 0
    assert (inputs.dtype.name, tuple(inputs.shape[1:]), targets.dtype.name) == (
        input_dtype, input_shape, target_dtype), full_name
    assert inputs.shape[0] == targets.shape[0] == count, full_name
    full = tfds.load(full_name, split="train", data_dir=str(built), download=False, batch_size=-1)
    np.testing.assert_array_equal(targets.numpy(), full["label"].numpy())
  # Built as `tfds build` would, the interleaved config too.
  inputs, targets = tfds.load("concatenated/interleaved", split="train", data_dir=str(tmp_path),
                              as_supervised=True, batch_size=-1)
  assert inputs.shape[0] == targets.shape[0] > 0
  for full_name in ("cross_product/product", "database/demo"):
    with pytest.raises(ValueError, match="does not support a supervised structure"):
      tfds.load(full_name, split="train", data_dir=str(built), download=False, as_supervised=True)


@pytest.mark.slow
def test_tfds_build_never_shows_the_side_table_password(postgres_dsn, pg_table, tmp_path):
  """TFDS logs the BuilderConfig it uses: its DSN must not show the password, nor any file hold it."""
  assert f"password={PG_PASSWORD}" in postgres_dsn
  config = {
      "name": "pg_side_cli", "base_records": {"train": ["base/train-*.tfrecord"]},
      "data_root": str(DUMMY / "augmented"), "side_table_sql": f"SELECT id, label FROM {pg_table}",
      "side_table_connection": {"driver": "postgresql", "dsn": postgres_dsn}, "join_key": "id",
  }
  result = tfds_build("augmented", config, tmp_path)
  assert "Using custom data configuration" in result.stdout + result.stderr
  assert PG_PASSWORD not in result.stdout + result.stderr
  version_dir = tmp_path / "augmented/pg_side_cli/1.0.0"
  assert (version_dir / "dataset_info.json").exists()
  assert PG_PASSWORD.encode() not in _all_bytes(tmp_path)
  assert len(list(tfds.builder_from_directory(str(version_dir)).as_dataset(split="train"))) > 0
