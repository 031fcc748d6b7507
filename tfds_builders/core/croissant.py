"""Croissant 1.1 metadata (croissant.json) for a prepared dataset version directory."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from absl import logging
from etils import epath
import numpy as np

from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.core import provenance
from tfds_builders.core import safe_paths

FILENAME = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
_READ_BYTES = 8 * 1024 * 1024
# Files hashed ahead and not yet asked for, at most: a build that failed leaves its entries behind.
_MAX_EARLY_HASHES = 256  # each holds its file open until hashed
_REGULAR_ONLY = ("croissant.json describes the shards' own bytes; replace the link or special file "
                 "by the real file (or rebuild the dataset), then run it again")

# The JSON-LD @context of Croissant 1.1 as mlcroissant writes it (a reader
# warns on any other), plus the PROV-O namespace the provenance uses.
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "prov": "http://www.w3.org/ns/prov#",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

# Croissant registers no media type for TFDS's record formats; as it
# recommends for niche formats, those name the page that defines them.
ENCODING_FORMATS = {
    "tfrecord": "https://www.tensorflow.org/tutorials/load_data/tfrecord",
    "array_record": "https://github.com/google/array_record",
    "riegeli": "https://github.com/google/riegeli",
    "parquet": "application/x-parquet",
}

# numpy dtype name -> Croissant dataType (mlcroissant's DataType vocabulary).
_DATA_TYPES = {
    "bool": "sc:Boolean",
    **{f"int{bits}": f"cr:Int{bits}" for bits in (8, 16, 32, 64)},
    **{f"uint{bits}": f"cr:UInt{bits}" for bits in (8, 16, 32, 64)},
    **{f"float{bits}": f"cr:Float{bits}" for bits in (16, 32, 64)},
    "bfloat16": "sc:Float",
    "object": "sc:Text",  # tf.string: text or bytes
    # Croissant has no complex type: described by their parts' type, and so named.
    "complex64": "cr:Float32",
    "complex128": "cr:Float64",
}


@dataclasses.dataclass(frozen=True)
class Checksum:
  """A file's sha256 and size, and how fast it was read."""

  sha256: str
  size: int
  seconds: float


def sha256_of(path: epath.Path) -> Checksum:
  """Streams `path` through sha256 (8 MiB at a time: flat memory for any size).

  Raises:
    SourceError: if `path` is a symlink or not a regular file (a device never ends).
  """
  digest, size, started = hashlib.sha256(), 0, time.perf_counter()
  with safe_paths.open_regular(epath.Path(path), _REGULAR_ONLY) as stream:
    while chunk := stream.read(_READ_BYTES):
      digest.update(chunk)
      size += len(chunk)
  return Checksum(digest.hexdigest(), size, time.perf_counter() - started)


class EarlyHashes:
  """sha256 of finished files, computed in a background thread while the rest of a build runs.

  A writer hands over each file once it is complete (`hash_soon`), so the
  hashing overlaps the writing of the next one. The file is opened at once
  and hashed through that handle, so a rename meanwhile (a piece becoming a
  shard) does not matter. `croissant_document` takes a result only if the
  file is still the one hashed: the same device, inode, size and
  modification time, which a rename keeps and a write changes. Otherwise the
  file is hashed again.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    self._pool_pid = 0  # a forked child (a Beam worker) inherits the pool, not its thread: it starts its own
    self._pending: dict[tuple[int, int], tuple[concurrent.futures.Future, BinaryIO]] = {}

  def submit(self, path: epath.PathLike) -> None:
    """Starts hashing a complete local file (remote files are hashed when asked for)."""
    path = epath.Path(path)
    if not safe_paths.is_local(path):
      return
    try:
      stream = safe_paths.open_regular(path, _REGULAR_ONLY)
    except (OSError, errors.SourceError):
      return  # hashed when asked for, failing there as documented
    identity = _identity(stream)
    with self._lock:
      if self._pool is None or self._pool_pid != os.getpid():  # one thread: the build's writing keeps the rest busy
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="croissant-sha256")
        self._pool_pid, self._pending = os.getpid(), {}
      self._forget(self._pending.pop(identity[:2], None))
      self._pending[identity[:2]] = self._pool.submit(_stamped_sha256, stream), stream
      while len(self._pending) > _MAX_EARLY_HASHES:
        self._forget(self._pending.pop(next(iter(self._pending))))

  def take(self, path: epath.Path) -> Checksum | None:
    """The file's checksum if it was hashed ahead and has not changed since; else None."""
    if not self._pending or self._pool_pid != os.getpid() or not safe_paths.is_local(path):
      return None
    try:
      status = os.stat(os.fspath(path))
    except OSError:
      return None
    identity = status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns
    with self._lock:
      pending = self._pending.pop(identity[:2], None)
    if pending is None:
      return None
    try:
      checksum, hashed = pending[0].result()
    except (OSError, ValueError):  # a read failed: hashed again, failing as documented
      return None
    return checksum if hashed == identity else None

  @staticmethod
  def _forget(pending: tuple[concurrent.futures.Future, BinaryIO] | None) -> None:
    if pending is not None and pending[0].cancel():
      pending[1].close()  # a cancelled hash never runs, so never closes its file


def _identity(stream: BinaryIO) -> tuple[int, int, int, int]:
  """(device, inode, size, modification time in ns) of an open file."""
  status = os.fstat(stream.fileno())
  return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _stamped_sha256(stream: BinaryIO) -> tuple[Checksum, tuple[int, int, int, int] | None]:
  """The open file's checksum, and its identity if it did not change while hashed (else None); closes it."""
  with stream:
    before = _identity(stream)
    digest, size, started = hashlib.sha256(), 0, time.perf_counter()
    while chunk := stream.read(_READ_BYTES):
      digest.update(chunk)
      size += len(chunk)
    after = _identity(stream)
  return Checksum(digest.hexdigest(), size, time.perf_counter() - started), before if after == before else None


_EARLY = EarlyHashes()


def hash_soon(path: epath.PathLike) -> None:
  """Starts hashing a finished shard now, for the croissant.json written at the end of its build."""
  _EARLY.submit(path)


def _checksums(paths: Sequence[epath.Path]) -> dict[epath.Path, Checksum]:
  """Each file's sha256: from `hash_soon` if hashed ahead, the rest several at once.

  hashlib and reads release the GIL, so cores add up.
  """
  found = {path: _EARLY.take(path) for path in paths}
  left = [path for path, checksum in found.items() if checksum is None]
  workers = min(len(left), os.cpu_count() or 1)
  if workers < 2:
    found.update({path: sha256_of(path) for path in left})
  else:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      found.update(zip(left, pool.map(sha256_of, left)))
  return found


def croissant_for(dataset_dir: epath.PathLike) -> dict[str, Any]:
  """The Croissant 1.1 JSON-LD of a prepared `<data_dir>/<name>/<config>/<version>/`.

  Raises:
    FileNotFoundError: if the directory holds no dataset_info.json.
    SourceError: if it holds a symlink or a special file (FIFO, device, ...).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  dataset_dir = epath.Path(dataset_dir)
  if not (dataset_dir / "dataset_info.json").exists():
    raise FileNotFoundError(
        f"{dataset_dir}/dataset_info.json not found: pass a prepared dataset "
        "version directory, <data_dir>/<name>/<config>/<version>/."
    )
  # As publish checks: a link's target (or a device) is not the dataset's content.
  safe_paths.regular_files(dataset_dir, _REGULAR_ONLY)
  info = tfds.builder_from_directory(str(dataset_dir)).info
  try:
    record = provenance.read_provenance(dataset_dir)
  except FileNotFoundError:
    record = {}  # a dataset not built by us: described without provenance
  return croissant_document(info, dataset_dir, record)


def write(dataset_dir: epath.PathLike, out: epath.PathLike | None = None) -> epath.Path:
  """Writes `croissant_for(dataset_dir)` to `out` (default: the dir's croissant.json)."""
  dataset_dir = epath.Path(dataset_dir)
  return _write_json(croissant_for(dataset_dir), epath.Path(out) if out else dataset_dir / FILENAME)


def write_for_build(builder: Any) -> epath.Path:
  """Writes croissant.json into a build's dir once its shards exist.

  Called before TFDS writes dataset_info.json, so it reads the builder's
  in-memory `DatasetInfo` rather than the directory.
  """
  dataset_dir = epath.Path(builder.data_dir)
  record = dict(builder.info.metadata.get(provenance.PROVENANCE_KEY) or {})
  return _write_json(croissant_document(builder.info, dataset_dir, record), dataset_dir / FILENAME)


def stamp_published(version_dir: epath.PathLike, published_at: str) -> str:
  """Sets `datePublished` in a published copy's croissant.json; returns its new sha256.

  The shards of a published copy are the built ones byte for byte, so their
  checksums stand; a dir without croissant.json (built before it existed) gets
  one computed in full.
  """
  path = epath.Path(version_dir) / FILENAME
  document = json.loads(path.read_text()) if path.exists() else croissant_for(version_dir)
  document["datePublished"] = published_at
  return sha256_of(_write_json(document, path)).sha256


def _write_json(document: Mapping[str, Any], path: epath.Path) -> epath.Path:
  partial = path.parent / f"{path.name}.partial"
  partial.write_text(json.dumps(document, indent=2) + "\n")
  partial.replace(path)
  return path


def croissant_document(info: Any, dataset_dir: epath.Path, record: Mapping[str, Any]) -> dict[str, Any]:
  """The Croissant document of a dataset from its DatasetInfo, files and provenance.

  Args:
    info: The dataset's `tfds.core.DatasetInfo` (splits and features known).
    dataset_dir: The directory holding the shards.
    record: Its provenance record (`{}` if none).

  Returns:
    JSON-LD, with any secret redacted.
  """
  file_format = info.file_format.value if info.file_format else "tfrecord"
  encoding = ENCODING_FORMATS.get(file_format, file_format)
  files, filesets, record_sets = [], [], []
  started = time.perf_counter()
  split_shards = {name: [dataset_dir / path.name for path in split.filepaths]
                  for name, split in sorted(info.splits.items())}
  checksums = _checksums([shard for shards in split_shards.values() for shard in shards])
  for split_name, split in sorted(info.splits.items()):
    shards = split_shards[split_name]
    for shard in shards:
      files.append(_file_object(shard.name, split_name, checksums[shard], encoding))
    fileset_id = f"{split_name}-shards"
    filesets.append({
        "@type": "cr:FileSet",
        "@id": fileset_id,
        "name": fileset_id,
        "description": f"The {len(shards)} {file_format} shard(s) of split {split_name!r}.",
        "encodingFormat": encoding,
        # The split's shards and nothing else: their names' common prefix.
        "includes": os.path.commonprefix([shard.name for shard in shards]) + "*",
    })
    record_sets.append(_record_set(split_name, split.num_examples, fileset_id, info))
  seconds = time.perf_counter() - started
  if seconds > 0:
    size = sum(checksum.size for checksum in checksums.values())
    logging.info("croissant: sha256 of %d bytes at %.0f MB/s", size, size / seconds / 1e6)
  document = {
      "@context": CONTEXT,
      "@type": "sc:Dataset",
      "conformsTo": CONFORMS_TO,
      "name": "/".join(filter(None, [info.name, info.config_name])),
      "description": _description(info),
      "version": str(info.version),
      "url": info.homepage,
      "license": info.as_proto.redistribution_info.license or None,
      "citeAs": info.citation or None,
      "dateCreated": record.get("built_at"),
      "distribution": files + filesets,
      "recordSet": record_sets,
      **_provenance(record),
  }
  return provenance.redact({key: value for key, value in document.items() if value})


def _description(info: Any) -> str:
  description = (info.description or "").strip()
  if info.config_description:
    description = f"{description}\n\n{info.config_description}".strip()
  return description or f"The {info.name} dataset."


def _file_object(name: str, split_name: str, checksum: Checksum, encoding: str) -> dict[str, Any]:
  return {
      "@type": "cr:FileObject",
      "@id": name,
      "name": name,
      "description": f"Shard of split {split_name!r}.",
      "contentUrl": name,  # relative: valid wherever the version dir is copied
      "contentSize": f"{checksum.size} B",
      "encodingFormat": encoding,
      "sha256": checksum.sha256,
  }


def _record_set(split_name: str, num_examples: int, fileset_id: str, info: Any) -> dict[str, Any]:
  target = (info.supervised_keys or (None, None))[1]
  return {
      "@type": "cr:RecordSet",
      "@id": split_name,
      "name": split_name,
      "description": f"The {num_examples} examples of split {split_name!r}, one tf.train.Example each.",
      "field": [
          _field(split_name, path, feature, fileset_id, is_label=path == target)
          for path, feature in _leaf_features(info.features)
      ],
  }


def _leaf_features(features: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(serialized name, feature) of every leaf, by name; nested dicts are stored as `a/b`.

  By name, as features.json restores them: the croissant of a build and of
  its prepared directory are then the same.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  for name, feature in sorted(features.items()):
    path = f"{prefix}{name}"
    if isinstance(feature, tfds.features.FeaturesDict):
      yield from _leaf_features(feature, f"{path}/")
    else:
      yield path, feature


def _field(split_name: str, path: str, feature: Any, fileset_id: str, *, is_label: bool) -> dict[str, Any]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tensor_info = feature.get_tensor_info()
  dtype_name = tfds_internals.tf_dtype_name(tensor_info.np_dtype)  # TF's names, without importing TF
  if isinstance(feature, tfds.features.Image):
    data_type = ["sc:ImageObject"]
  elif isinstance(feature, tfds.features.Text):
    data_type = ["sc:Text"]
  else:
    data_type = [_DATA_TYPES.get(np.dtype(tensor_info.np_dtype).name, "sc:Text")]
  description = f"{type(feature).__name__}, dtype {dtype_name}, shape {_shape_text(tensor_info.shape)}."
  if dtype_name.startswith("complex"):
    description += " Complex values: (real, imaginary) pairs of the dataType."
  if isinstance(feature, tfds.features.ClassLabel) or is_label:
    data_type.append("cr:Label")
    if isinstance(feature, tfds.features.ClassLabel):
      description += f" {feature.num_classes} classes."
  field = {
      "@type": "cr:Field",
      "@id": f"{split_name}/{path}",
      "name": path,
      "description": description,
      "dataType": data_type[0] if len(data_type) == 1 else data_type,
      "source": {"fileSet": {"@id": fileset_id}, "extract": {"column": path}},
  }
  shape = tuple(tensor_info.shape)
  if shape and not isinstance(feature, tfds.features.Image):
    field["isArray"] = True
    field["arrayShape"] = ",".join(str(-1 if dim is None else dim) for dim in shape)
  return field


def _shape_text(shape: Any) -> str:
  return "(" + ", ".join("None" if dim is None else str(dim) for dim in shape) + ("," if len(shape) == 1 else "") + ")"


def _provenance(record: Mapping[str, Any]) -> dict[str, Any]:
  """prov:wasDerivedFrom (the sources read) and prov:wasGeneratedBy (the build)."""
  if not record:
    return {}
  derived_from = [_entity(source) for source in provenance.sources_read(record)]
  agent = " ".join(filter(None, [
      f"tfds_builders {record.get('package_version', '')}".strip(),
      f"tensorflow_datasets {record.get('tfds_version', '')}".strip(),
  ]))
  activity = {
      "@type": "prov:Activity",
      "prov:label": f"tfds_builders {record.get('builder', '')} build".replace("  ", " "),
      "prov:endedAtTime": record.get("built_at"),
      "prov:wasAssociatedWith": {"@type": "prov:SoftwareAgent", "prov:label": agent},
  }
  return {
      "prov:wasDerivedFrom": derived_from,
      "prov:wasGeneratedBy": {key: value for key, value in activity.items() if value},
  }


def _entity(source: provenance.SourceRead) -> dict[str, Any]:
  if source.kind == "file":
    entity = {"prov:label": source.location}
    if not source.is_pattern:
      entity["@id"] = _file_uri(source.location)
  elif source.kind == "tfds":
    name = "/".join(filter(None, [source.name, source.config, source.version]))
    entity = {"prov:label": f"TFDS dataset {name}", "prov:atLocation": source.location or None}
  else:
    entity = {"prov:label": f"SQL query on {source.location}", "prov:value": source.query}
  return {"@type": "prov:Entity", **{key: value for key, value in entity.items() if value}}


def _file_uri(location: str) -> str | None:
  """`location` as a URI (a path percent-encoded: space, `#`, `%`), or None if it cannot be one.

  A URI the user gave keeps its text; mlcroissant refuses an @id holding
  whitespace, so such a source keeps its location as `prov:label` only.
  """
  uri = location if "://" in location else pathlib.PurePosixPath(location).as_uri()
  return None if any(char.isspace() for char in uri) else uri
