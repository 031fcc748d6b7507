"""croissant.json: written by every build, valid for mlcroissant, real checksums, fields from features, no secrets."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import pathlib

import mlcroissant as mlc
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.faults import CommandFailed, tfds_builders_cli
from tfds_builders.core import croissant
from tfds_builders.core import provenance


REPO = pathlib.Path(__file__).resolve().parents[1]
DUMMY = REPO / "dummy_data"
DEFAULTS = {
    "numpy_arrays": "demo", "concatenated": "demo", "cross_product": "product",
    "database": "demo", "augmented": "demo",
}
_VERSIONS = {"cross_product": "1.1.0"}  # the others are at 1.0.0
# Croissant recommends these; a dataset has them only when its config sets them
# (we never invent a license or a citation) or once it is published.
RECOMMENDED_ONLY = {"citeAs", "datePublished", "license"}
# What each numpy dtype must be described as.
EXPECTED_TYPES = {
    "uint8": "cr:UInt8", "int64": "cr:Int64", "float32": "cr:Float32", "float64": "cr:Float64",
    "object": "sc:Text", "bool": "sc:Boolean", "int32": "cr:Int32",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, pathlib.Path]:
  """The five builders' bundled default configs, built once: name -> version dir."""
  data_dir = tmp_path_factory.mktemp("five")
  for name in DEFAULTS:
    tfds.builder(name, data_dir=str(data_dir)).download_and_prepare()
  return {name: data_dir / name / config / _VERSIONS.get(name, "1.0.0") for name, config in DEFAULTS.items()}


def _validated(path: pathlib.Path) -> set[str]:
  """Loads with mlcroissant (which raises on any error); returns the names its warnings are about."""
  dataset = mlc.Dataset(jsonld=str(path))
  issues = dataset.metadata.ctx.issues
  assert not issues.errors
  return {warning.split('"')[1].rsplit("/", 1)[-1] for warning in issues.warnings}


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_each_build_writes_a_valid_croissant(built, name):
  version_dir = built[name]
  path = version_dir / croissant.FILENAME
  assert _validated(path) <= RECOMMENDED_ONLY
  document = json.loads(path.read_text())
  info = tfds.builder_from_directory(str(version_dir)).info
  assert document["conformsTo"] == "http://mlcommons.org/croissant/1.1"
  assert document["name"] == f"{name}/{DEFAULTS[name]}" and document["version"] == _VERSIONS.get(name, "1.0.0")
  assert document["url"] == info.homepage

  # One FileObject per shard with its real bytes' sha256 and size.
  objects = {item["@id"]: item for item in document["distribution"] if item["@type"] == "cr:FileObject"}
  shards = sorted(path.name for split in info.splits.values() for path in split.filepaths)
  assert sorted(objects) == shards
  for shard in shards:
    data = (version_dir / shard).read_bytes()
    assert objects[shard]["sha256"] == hashlib.sha256(data).hexdigest()
    assert objects[shard]["contentSize"] == f"{len(data)} B"
    assert objects[shard]["encodingFormat"] == croissant.ENCODING_FORMATS["tfrecord"]
  filesets = {item["@id"]: item for item in document["distribution"] if item["@type"] == "cr:FileSet"}
  for split in info.splits.values():
    matched = fnmatch.filter(shards, filesets[f"{split.name}-shards"]["includes"])
    assert matched == sorted(path.name for path in split.filepaths)

  # A RecordSet per split; its fields are the features, flattened as stored.
  flat = tfds.core.utils.flatten_nest_dict(info.features.get_tensor_info())
  assert sorted(record["@id"] for record in document["recordSet"]) == sorted(info.splits)
  for record in document["recordSet"]:
    fields = {field["name"]: field for field in record["field"]}
    assert sorted(fields) == sorted(flat)
    for feature_name, tensor in flat.items():
      field = fields[feature_name]
      types = field["dataType"] if isinstance(field["dataType"], list) else [field["dataType"]]
      if not isinstance(info.features[feature_name.split("/")[0]], tfds.features.Text):
        assert types[0] == EXPECTED_TYPES[np.dtype(tensor.np_dtype).name], feature_name
      assert field["source"] == {"fileSet": {"@id": f"{record['@id']}-shards"},
                                 "extract": {"column": feature_name}}
      shape = ",".join(str(-1 if dim is None else dim) for dim in tensor.shape)
      assert field.get("arrayShape", "") == shape
      assert ("cr:Label" in types) == (feature_name == (info.supervised_keys or ("", ""))[1]
                                       or isinstance(info.features[feature_name.split("/")[0]],
                                                     tfds.features.ClassLabel))

  # Provenance as PROV-O: what was read, and the build that made it.
  generated = document["prov:wasGeneratedBy"]
  assert generated["@type"] == "prov:Activity" and generated["prov:label"] == f"tfds_builders {name} build"
  assert generated["prov:endedAtTime"] == provenance.read_provenance(version_dir)["built_at"]
  sources = provenance.sources_read(provenance.read_provenance(version_dir))
  assert len(document["prov:wasDerivedFrom"]) == len(sources) > 0


def test_described_fields(built):
  """Spot checks of the mapping: arrays, nested features, class labels, supervised targets."""
  def fields(name: str) -> dict[str, dict]:
    document = json.loads((built[name] / croissant.FILENAME).read_text())
    return {field["name"]: field for field in document["recordSet"][0]["field"]}

  image, label = fields("numpy_arrays")["image"], fields("numpy_arrays")["label"]
  assert (image["dataType"], image["isArray"], image["arrayShape"]) == ("cr:UInt8", True, "4,4,3")
  assert label["dataType"] == ["cr:Int64", "cr:Label"] and "isArray" not in label
  cross = fields("cross_product")
  assert (cross["left/markers"]["dataType"], cross["left/markers"]["arrayShape"]) == ("cr:Float32", "4")
  assert (cross["left/traits"]["dataType"], cross["left/traits"]["arrayShape"]) == ("sc:Text", "-1")
  species = fields("database")["species"]
  assert species["dataType"] == ["cr:Int64", "cr:Label"] and "classes" in species["description"]


@pytest.mark.slow
def test_build_time_croissant_equals_the_cli_and_tfds_still_loads(built, tmp_path):
  version_dir = built["database"]
  stored = json.loads((version_dir / croissant.FILENAME).read_text())
  printed = json.loads(tfds_builders_cli("croissant", str(version_dir)).stdout)
  assert printed == stored  # in-memory DatasetInfo at build time == the prepared dir afterwards
  out = tmp_path / "out.json"
  assert tfds_builders_cli("croissant", str(version_dir), "--out", str(out)).stdout.strip() == f"wrote {out}"
  assert json.loads(out.read_text()) == stored
  with pytest.raises(CommandFailed) as failed:
    tfds_builders_cli("croissant", str(tmp_path))
  assert failed.value.returncode == 1 and "dataset_info.json not found" in failed.value.stderr
  # croissant.json beside the shards does not disturb TFDS.
  builder = tfds.builder_from_directory(str(version_dir))
  assert len(list(builder.as_dataset(split="train"))) == builder.info.splits["train"].num_examples


def test_card_fields_and_publication_leave_no_warning(tmp_path):
  from tfds_builders.numpy_arrays import BuilderConfig  # pylint: disable=import-outside-toplevel

  config = BuilderConfig(name="carded", data_root=str(DUMMY / "numpy_arrays"), splits={"train": ["train"]},
                         license="https://spdx.org/licenses/MIT.html", citation="@misc{x, title={X}}")
  tfds.builder("numpy_arrays", config=config, data_dir=str(tmp_path)).download_and_prepare()
  version_dir = tmp_path / "numpy_arrays/carded/1.0.0"
  path = version_dir / croissant.FILENAME
  assert _validated(path) == {"datePublished"}
  digest = croissant.stamp_published(version_dir, "2026-11-30T12:00:00+00:00")
  assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
  assert _validated(path) == set()
  document = json.loads(path.read_text())
  assert (document["license"], document["citeAs"]) == ("https://spdx.org/licenses/MIT.html", "@misc{x, title={X}}")


def test_array_record_shards_and_what_mlcroissant_reads(built, tmp_path):
  """mlcroissant 1.1.1 reads CSV/JSON/Parquet/... but neither TFRecord nor ArrayRecord records."""
  tfds.builder("numpy_arrays", data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  version_dir = tmp_path / "numpy_arrays/demo/1.0.0"
  document = json.loads((version_dir / croissant.FILENAME).read_text())
  shards = [item for item in document["distribution"] if item["@type"] == "cr:FileObject"]
  assert {item["encodingFormat"] for item in shards} == {croissant.ENCODING_FORMATS["array_record"]}
  assert all(item["sha256"] == hashlib.sha256((version_dir / item["contentUrl"]).read_bytes()).hexdigest()
             for item in shards)
  assert _validated(version_dir / croissant.FILENAME) <= RECOMMENDED_ONLY
  for path in (built["numpy_arrays"] / croissant.FILENAME, version_dir / croissant.FILENAME):
    with pytest.raises(mlc.GenerationError) as raised:
      next(iter(mlc.Dataset(jsonld=str(path)).records("train")))
    cause = raised.value.__cause__ or raised.value.__context__
    assert "None of the provided encoding formats" in str(cause)  # found the shard, cannot decode it


def test_secrets_are_redacted(built):
  info = tfds.builder_from_directory(str(built["augmented"])).info
  record = provenance.read_provenance(built["augmented"])
  hostile = {
      **record,
      "config": {**record["config"], "side_table_sql": "SELECT id, label FROM t",
                 "side_table_connection": {"driver": "postgresql", "dsn": "host=db password=hunter2"}},
      "side_table": {"source": "SQL query on PostgreSQL DSN host=db password=hunter2"},
  }
  text = json.dumps(croissant.croissant_document(info, built["augmented"], hostile))
  assert "hunter2" not in text
  assert "SQL query on PostgreSQL DSN host=db password=***" in text


@pytest.mark.slow
def test_links_and_special_files_among_the_shards_are_refused(built, tmp_path):
  """A shard swapped for a link to /dev/zero or /etc/passwd, or for a FIFO, is refused, never hashed."""
  import os  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel

  from tests.faults import CLI, run_command  # pylint: disable=import-outside-toplevel
  from tfds_builders.core import errors  # pylint: disable=import-outside-toplevel

  version_dir = tmp_path / "numpy_arrays/demo/1.0.0"
  shutil.copytree(built["numpy_arrays"], version_dir)
  shard = sorted(version_dir.glob("*.tfrecord*"))[0]
  shard.unlink()
  shard.symlink_to("/dev/zero")
  with pytest.raises(CommandFailed) as failed:  # before: read /dev/zero for ever
    run_command([CLI, "croissant", str(version_dir)], timeout=60)
  assert failed.value.returncode == 1
  assert f"{shard} is a symlink (to '/dev/zero'), not a regular file" in failed.value.stderr
  assert "replace the link or special file by the real file" in failed.value.stderr

  shard.unlink()
  shard.symlink_to("/etc/passwd")  # before: its sha256 and size, recorded as the shard's
  with pytest.raises(errors.SourceError, match=r"is a symlink \(to '/etc/passwd'\), not a regular file"):
    croissant.croissant_for(version_dir)
  shard.unlink()
  os.mkfifo(shard)
  with pytest.raises(errors.SourceError, match=f"{shard.name} is a FIFO, not a regular file"):
    croissant.croissant_for(version_dir)
  # A version dir as built is described, as before.
  shard.unlink()
  shutil.copy(built["numpy_arrays"] / shard.name, shard)
  assert croissant.croissant_for(version_dir) == json.loads((built["numpy_arrays"] / croissant.FILENAME).read_text())


@pytest.mark.slow
def test_odd_source_paths_are_uris_and_split_names_are_no_secrets(tmp_path):
  """A source path with space, `#`, `,`, `%20` and `é`, in a split named `passages`, via `tfds build`."""
  import urllib.parse  # pylint: disable=import-outside-toplevel

  from tests.faults import tfds_build  # pylint: disable=import-outside-toplevel

  root = tmp_path / "odd dir#,%é"
  root.mkdir()
  source = root / "x y,z#é%20.npy"
  np.save(source, np.arange(12, dtype=np.int64).reshape(6, 2))
  tfds_build("numpy_arrays", {"name": "odd", "data_root": str(root), "splits": {"passages": [source.name]}},
             tmp_path / "data")
  version_dir = tmp_path / "data/numpy_arrays/odd/1.0.0"
  # Before: {"passages": "***"}, the split name taken for a password.
  assert provenance.read_provenance(version_dir)["sources"] == {"passages": [str(source)]}
  info = json.loads((version_dir / "dataset_info.json").read_text())
  assert [access["fileSystem"]["path"] for access in info["dataSourceAccesses"]] == [str(source)]
  document = json.loads((version_dir / croissant.FILENAME).read_text())
  (entity,) = document["prov:wasDerivedFrom"]  # before: one entity per character of "***"
  assert entity["prov:label"] == str(source)
  assert entity["@id"] == "file://" + urllib.parse.quote(str(source), safe="/")
  assert urllib.parse.unquote(entity["@id"].removeprefix("file://")) == str(source)
  assert "%2520" in entity["@id"] and "%23" in entity["@id"] and " " not in entity["@id"]
  assert _validated(version_dir / croissant.FILENAME) <= RECOMMENDED_ONLY  # before: a wrong @id error
  loaded = mlc.Dataset(jsonld=str(version_dir / croissant.FILENAME)).metadata.to_json()
  assert loaded["prov:wasDerivedFrom"]["prov:label"] == str(source)
  assert loaded["prov:wasDerivedFrom"]["@id"] == entity["@id"]
  # A URI that holds whitespace cannot be an @id: it stays a label.
  spaced = croissant._entity(provenance.SourceRead("file", "s3://bucket/a b.npy"))  # pylint: disable=protected-access
  assert spaced == {"@type": "prov:Entity", "prov:label": "s3://bucket/a b.npy"}
