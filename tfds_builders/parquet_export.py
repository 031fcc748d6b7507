"""Columnar Parquet export of a prepared dataset (one column per feature), and its import back to TFDS.

`export` writes `OUT/<split>-SSSSS-of-NNNNN.parquet`, one Parquet file per
TFDS shard, so that file sizes stay bounded like the shards, DuckDB and
pandas read `OUT/*.parquet`, Hugging Face `datasets` infers the splits from
the names, and `import_` restores the same shard layout. Each feature is one
column named by its path (`left/name`): scalars as native columns, tensors as
fixed-size lists (lists along a variable dimension), `Text` as UTF-8 strings,
other strings as binary. The TFDS dtype and shape of each column are in its
field metadata; the schema metadata holds the dataset's own small files
(dataset_info.json, features.json, ...) and each original shard's SHA-256,
under a SHA-256 of its own by which `import_` refuses a tampered export.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from etils import epath
import numpy as np

from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import safe_paths

KIND = "tfds_builders parquet export"
FORMAT_VERSION = 1
METADATA_KEY = b"tfds_builders"
DIGEST_KEY = b"tfds_builders.sha256"
# Examples decoded and written as one row group: bounded bytes, so memory is flat in dataset size.
BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_ROWS = 16384
# Fixed, not AUTOTUNE: AUTOTUNE grows its buffers as a run goes on, so peak memory would creep with dataset size.
_DECODE_THREADS = min(4, os.cpu_count() or 1)
_NOT_OURS = "Only folders written by `tfds-builders export --format parquet` can be imported; export the dataset again"


@dataclasses.dataclass(frozen=True)
class Column:
  """One feature as one Parquet column.

  Attributes:
    name: The feature's path, `a/b` for nested FeaturesDicts.
    dtype: The decoded NumPy dtype (`object` for strings).
    shape: The per-example shape, `None` where it varies.
    text: Whether it is a `Text` feature (a UTF-8 string column, not binary).
  """

  name: str
  dtype: np.dtype
  shape: tuple[int | None, ...]
  text: bool = False

  @property
  def is_string(self) -> bool:
    return self.dtype.kind in "OSU"

  def arrow_type(self) -> Any:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top

    arrow = pa.string() if self.text else pa.binary() if self.is_string else pa.from_numpy_dtype(self.dtype)
    for dim in reversed(self.shape):
      arrow = pa.list_(arrow) if dim is None else pa.list_(arrow, dim)
    return arrow

  def field(self) -> Any:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top

    dtype = "string" if self.is_string else self.dtype.name
    return pa.field(self.name, self.arrow_type(), nullable=False, metadata={
        "tfds.dtype": dtype, "tfds.shape": json.dumps(list(self.shape)),
        "tfds.feature": "Text" if self.text else "Tensor",
    })


def columns_of(features) -> list[Column]:
  """The Parquet columns of a TFDS FeaturesDict, in its flattened order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  infos = tfds_internals.flatten_nest_dict(features.get_tensor_info())
  leaves = tfds_internals.flatten_nest_dict(dict(_leaf_features(features)))
  return [
      Column(name, np.dtype(info.np_dtype), tuple(info.shape), isinstance(leaves.get(name), tfds.features.Text))
      for name, info in infos.items()
  ]


def _leaf_features(features) -> Iterator[tuple[str, Any]]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  for name, child in features.items():
    yield name, dict(_leaf_features(child)) if isinstance(child, tfds.features.FeaturesDict) else child


def arrow_schema(columns: Sequence[Column], metadata: dict[bytes, bytes] | None = None) -> Any:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  return pa.schema([column.field() for column in columns], metadata=metadata)


# ------------------------------------------------------------------ export --


def export(dataset_dir: epath.PathLike, out_dir: epath.PathLike, *, splits: Sequence[str] | None = None) -> epath.Path:
  """Writes a prepared dataset as Parquet files, one per shard, streaming.

  The files are written into a temporary folder beside `out_dir`, renamed
  into place when complete: a failed export leaves no `out_dir` behind.

  Args:
    dataset_dir: A prepared dataset version directory (holding dataset_info.json).
    out_dir: The folder to write; an earlier Parquet export there is replaced.
    splits: The splits to export (default all).

  Returns:
    `out_dir`.

  Raises:
    SourceError: if `dataset_dir` is not a prepared dataset.
    ConfigError: for an unknown split, or an `out_dir` that is something else.
    SchemaError: for a `Text` value that is not UTF-8.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  dataset_dir = epath.Path(dataset_dir)
  out_dir = epath.Path(out_dir)
  if not (dataset_dir / "dataset_info.json").exists():
    raise errors.SourceError(errors.with_hint(
        f"{dataset_dir} holds no dataset_info.json",
        "Pass a prepared dataset version directory such as DATA_DIR/numpy_arrays/demo/1.0.0"))
  builder = tfds.builder_from_directory(str(dataset_dir))
  chosen = list(splits) if splits else list(builder.info.splits)
  unknown = [split for split in chosen if split not in builder.info.splits]
  if unknown:
    raise errors.ConfigError(f"splits {unknown} are not in the dataset ({list(builder.info.splits)}).")
  if out_dir.exists() and not (out_dir.is_dir() and (not list(out_dir.iterdir()) or is_parquet_export(out_dir))):
    raise errors.ConfigError(errors.with_hint(
        f"{out_dir} exists and is not a Parquet export", "Give a new folder, or remove it first"))
  columns = columns_of(builder.info.features)
  shard_names = {name for split in builder.info.splits.values() for name in split.filenames}
  header = {
      "kind": KIND, "format_version": FORMAT_VERSION,
      "dataset": {"name": builder.info.name, "config": builder.info.config_name or "",
                  "version": str(builder.info.version)},
      "files": _dataset_files(dataset_dir, shard_names),
  }
  staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.partial"
  with safe_paths.staged_replacement(out_dir, staging):
    for split in chosen:
      _write_split(builder, split, staging, columns, header)
  return out_dir


def _dataset_files(dataset_dir: epath.Path, shard_names: set[str]) -> dict[str, dict[str, str]]:
  """The dataset's own files beside its shards (dataset_info.json, features.json, labels, ...)."""
  files = {}
  for path in safe_paths.regular_files(dataset_dir, "A prepared dataset holds regular files only"):
    if path.name in shard_names:
      continue
    data = path.read_bytes()
    try:
      files[path.name] = {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
      files[path.name] = {"base64": base64.b64encode(data).decode("ascii")}
  return files


def _sha256(path: epath.Path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as file:
    while chunk := file.read(8 * 1024 * 1024):
      digest.update(chunk)
  return digest.hexdigest()


def _metadata(header: dict[str, Any]) -> dict[bytes, bytes]:
  text = json.dumps(header, sort_keys=True).encode()
  return {METADATA_KEY: text, DIGEST_KEY: hashlib.sha256(text).hexdigest().encode()}


def _batch_rows(split_info) -> int:
  average = max(1, int(split_info.num_bytes) // max(1, split_info.num_examples))
  return int(np.clip(BATCH_BYTES // average, 1, MAX_BATCH_ROWS))


def _write_split(builder, split: str, staging: epath.Path, columns: list[Column], header: dict[str, Any]) -> None:
  """Writes `<split>-SSSSS-of-NNNNN.parquet` per shard, each batch of examples one row group."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  info = builder.info.splits[split]
  shards = [builder.data_path / filename for filename in info.filenames]
  batches = _decoded_batches(builder, shards, columns, _batch_rows(info))
  for index, (shard, expected) in enumerate(zip(shards, info.shard_lengths)):
    metadata = {**header, "split": split, "shard": shard.name, "shard_index": index,
                "num_shards": info.num_shards, "num_examples": expected, "shard_sha256": _sha256(shard)}
    schema = arrow_schema(columns, _metadata(metadata))
    target = staging / f"{split}-{index:05d}-of-{info.num_shards:05d}.parquet"
    written = 0
    with pq.ParquetWriter(str(target), schema) as writer:
      while written < expected and (batch := next(batches, None)) is not None:
        arrays = [_arrow_array(column, *batch[column.name], shard) for column in columns]
        writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
        written += len(batch[_ROWS])
    if written != expected:
      raise _miscounted(shard, expected)
  if next(batches, None) is not None:
    raise _miscounted(shards[-1], info.shard_lengths[-1])


def _miscounted(shard: epath.Path, expected: int) -> errors.SourceError:
  return errors.SourceError(errors.with_hint(
      f"{shard} does not hold the {expected} examples its dataset_info.json (shard_lengths) says", "Rebuild the dataset"))


_ROWS = "\0rows"


def _decoded_batches(builder, shards: list[epath.Path], columns: list[Column], batch_rows: int) -> Iterator[dict[str, Any]]:
  """Each feature's (flat values, per-example shapes), at most `batch_rows` examples of one shard at a time.

  TFDS's features decode every example (images, encoded tensors, ...) inside
  tf.data; flattening there too leaves one contiguous array per feature. One
  pipeline serves every shard (its functions are traced once), batched per
  shard so that no batch straddles two Parquet files.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = builder.info.features
  if not tfds_internals.streams_with_tf_data(builder.info.file_format):
    raise errors.ConfigError(errors.with_hint(
        f"{builder.data_path} is stored as {builder.info.file_format.value}, which TFDS cannot stream",
        "Export a --file_format tfrecord or parquet build of the dataset"))
  if builder.info.file_format == tfds.core.FileFormat.TFRECORD:
    for shard in shards:
      _check_tfrecord(shard)

  def flatten(serialized):
    out = {_ROWS: tf.ones([1], tf.int8)}
    for name, value in tfds_internals.flatten_nest_dict(features.deserialize_example(serialized)).items():
      out[name] = tf.reshape(value, [-1])
      out[f"{name}\0shape"] = tf.shape(value, out_type=tf.int64)
    return out

  wire = _wire_readable(features)
  raw = _raw_bytes_features(features) if wire else set()
  specs = {column.name: tf.io.RaggedFeature(
      tf.string if column.is_string or column.name in raw else tf.float32 if column.dtype.kind == "f" else tf.int64)
      for column in columns}

  def parse(records):  # a whole batch at once: ~10x faster than TFDS's example by example
    parsed = tf.io.parse_example(records, specs)
    out = {_ROWS: tf.ones_like(records, tf.int8)}
    for name, value in parsed.items():
      out[name] = value.flat_values
      out[f"{name}\0lengths"] = value.row_lengths()
    return out

  def shard_batches(filename):
    records = tfds_internals.records_dataset(builder.info.file_format, filename)
    if wire:
      return records.batch(batch_rows).map(parse)
    return records.map(flatten, num_parallel_calls=_DECODE_THREADS).ragged_batch(batch_rows)

  def flat_values(batch):
    return {name: value.flat_values if isinstance(value, tf.RaggedTensor)
            else value if name.endswith(("\0shape", "\0lengths")) else tf.reshape(value, [-1])
            for name, value in batch.items()}

  files = tf.data.Dataset.from_tensor_slices([os.fspath(shard) for shard in shards])
  dataset = files.flat_map(shard_batches).map(flat_values).prefetch(1)
  for decoded in dataset.as_numpy_iterator():
    if wire:
      batch = {column.name: _wire_column(column, decoded[column.name], decoded[f"{column.name}\0lengths"],
                                         column.name in raw) for column in columns}
    else:
      batch = {column.name: (decoded[column.name], decoded[f"{column.name}\0shape"]) for column in columns}
    batch[_ROWS] = decoded[_ROWS]
    yield batch


def _wire_readable(features) -> bool:
  """Whether every feature decodes from its Example value list alone (no codec, at most one `None` dimension)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  plain = (tfds.features.Tensor, tfds.features.Scalar, tfds.features.ClassLabel, tfds.features.Text)
  leaves = tfds_internals.flatten_nest_dict(dict(_leaf_features(features)))
  raw = _raw_bytes_features(features)
  for name, leaf in leaves.items():
    if type(leaf) not in plain or tuple(leaf.shape).count(None) > 1:
      return False
    if tfds_internals.tensor_encoding(leaf) != tfds.features.Encoding.NONE and name not in raw:
      return False
  return True


def _raw_bytes_features(features) -> set[str]:
  """Numeric tensors stored as their raw bytes, one bytes value per example (numpy_arrays' bit-exact encoding)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return {
      name for name, leaf in tfds_internals.flatten_nest_dict(dict(_leaf_features(features))).items()
      if getattr(leaf, "_encoding", None) == tfds.features.Encoding.BYTES and np.dtype(leaf.np_dtype).kind not in "OSU"
  }


def _wire_column(column: Column, values: np.ndarray, lengths: np.ndarray, raw: bool) -> tuple[np.ndarray, np.ndarray]:
  """(flat values, per-example shapes) of one feature parsed off the wire, cast as TFDS casts it."""
  if raw:  # as TFDS's tf.io.decode_raw: little-endian bytes of the array, one value per example
    lengths = np.fromiter(map(len, values), np.int64, len(values)) // column.dtype.itemsize
    flat = np.frombuffer(b"".join(values), column.dtype.newbyteorder("<")).astype(column.dtype)
  else:
    flat = values if column.is_string else values.astype(column.dtype)  # int64 -> uint8/bool/..., float32 -> float64
  known = int(np.prod([dim for dim in column.shape if dim is not None], dtype=np.int64))
  shapes = np.tile(np.array([dim or 0 for dim in column.shape], np.int64), (len(lengths), 1))
  if None in column.shape:
    shapes[:, column.shape.index(None)] = lengths // max(known, 1)
  if np.any(shapes.prod(axis=1) != lengths):
    raise errors.SourceError(errors.with_hint(
        f"feature {column.name!r} has a value list whose length does not fit its shape {column.shape}",
        "Rebuild the dataset"))
  return flat, shapes


def _check_tfrecord(shard: epath.Path) -> None:
  """Walks the frames and CRCs first: TF's reader crashes on a crafted frame length."""
  from tfds_builders.core import tfrecord_io  # pylint: disable=g-import-not-at-top

  for _ in fast.record_index.scan(tfrecord_io.RecordFile(shard, ""), check_data=True, as_reader=True):
    pass


def _arrow_array(column: Column, flat: np.ndarray, shapes: np.ndarray, shard: epath.Path) -> Any:
  """One column of a batch: the flat values wrapped in one list level per dimension, innermost first."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  if column.is_string:
    values = pa.array(flat, pa.binary())
    if column.text:
      try:
        values = values.cast(pa.string())
      except pa.ArrowInvalid:
        raise errors.SchemaError(errors.with_hint(
            f"{shard}: feature {column.name!r} holds a Text value that is not UTF-8",
            "Declare the feature as a string Tensor, or fix the source")) from None
  else:
    values = pa.array(np.ascontiguousarray(flat, column.dtype))
  shapes = np.asarray(shapes, np.int64).reshape(len(shapes), len(column.shape))
  for axis in reversed(range(len(column.shape))):
    dim = column.shape[axis]
    if dim is not None:
      values = pa.FixedSizeListArray.from_arrays(values, dim)
      continue
    # Every item at this level (one per index of the outer axes) holds shape[axis] children.
    parents = np.prod(shapes[:, :axis], axis=1, dtype=np.int64)
    counts = np.repeat(shapes[:, axis], parents)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    values = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
  return values


# ------------------------------------------------------------------ import --


def is_parquet_export(path: epath.PathLike) -> bool:
  """Whether `path` is a folder of Parquet files (as `export` writes), not an archive."""
  path = epath.Path(path)
  return path.is_dir() and any(child.name.endswith(".parquet") for child in path.iterdir())


@dataclasses.dataclass(frozen=True)
class _Part:
  path: epath.Path
  header: dict[str, Any]
  num_rows: int


def read_export(export_dir: epath.PathLike) -> list[_Part]:
  """The export's files with their checked metadata, by split and shard.

  Raises:
    SourceError: naming the file, if one holds no or altered tfds_builders
      metadata, the files disagree, or a shard is missing or miscounted.
  """
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  export_dir = epath.Path(export_dir)
  paths = sorted(path for path in export_dir.iterdir() if path.name.endswith(".parquet"))
  if not paths:
    raise errors.SourceError(errors.with_hint(f"{export_dir} holds no .parquet files", _NOT_OURS))
  parts = []
  for path in paths:
    try:
      parquet = pq.ParquetFile(str(path))
    except Exception as error:  # pylint: disable=broad-except  # pyarrow's errors for a damaged file vary
      raise errors.SourceError(errors.with_hint(f"{path} is not a readable Parquet file ({error})", _NOT_OURS)) from None
    parts.append(_Part(path, _checked_header(path, parquet.schema_arrow.metadata or {}), parquet.metadata.num_rows))
  first = parts[0].header
  for part in parts[1:]:
    if {key: part.header[key] for key in ("dataset", "files")} != {key: first[key] for key in ("dataset", "files")}:
      raise errors.SourceError(errors.with_hint(
          f"{part.path} belongs to another dataset or export than {parts[0].path}", "Keep one export per folder"))
  for part in parts:
    header = part.header
    expected_name = f"{header['split']}-{header['shard_index']:05d}-of-{header['num_shards']:05d}.parquet"
    if part.path.name != expected_name or part.num_rows != header["num_examples"]:
      raise errors.SourceError(errors.with_hint(
          f"{part.path} holds {part.num_rows} rows of shard {expected_name} "
          f"({header['num_examples']} examples)", "Copy the export again, completely"))
  splits: dict[str, list[_Part]] = {}
  for part in parts:
    splits.setdefault(part.header["split"], []).append(part)
  for split, split_parts in splits.items():
    count = split_parts[0].header["num_shards"]
    if sorted(part.header["shard_index"] for part in split_parts) != list(range(count)):
      raise errors.SourceError(errors.with_hint(
          f"{export_dir}: split {split!r} has {len(split_parts)} of its {count} files", "Copy the export again, completely"))
  return parts


def _checked_header(path: epath.Path, metadata: dict[bytes, bytes]) -> dict[str, Any]:
  if METADATA_KEY not in metadata or DIGEST_KEY not in metadata:
    raise errors.SourceError(errors.with_hint(f"{path} has no tfds_builders schema metadata", _NOT_OURS))
  text = metadata[METADATA_KEY]
  if hashlib.sha256(text).hexdigest().encode() != metadata[DIGEST_KEY]:
    raise errors.SourceError(errors.with_hint(
        f"{path}: its tfds_builders schema metadata does not match its SHA-256 (it was altered)", _NOT_OURS))
  header = json.loads(text)
  if header.get("kind") != KIND or not isinstance(header.get("format_version"), int):
    raise errors.SourceError(errors.with_hint(f"{path}: its schema metadata is not a {KIND}'s", _NOT_OURS))
  if header["format_version"] > FORMAT_VERSION:
    raise errors.SourceError(errors.with_hint(
        f"{path} has export format version {header['format_version']}; this tfds_builders reads up to "
        f"{FORMAT_VERSION}", "Upgrade tfds_builders"))
  return header


def import_(export_dir: epath.PathLike, data_dir: epath.PathLike, *, overwrite: bool = False) -> tuple[epath.Path, bool]:
  """Restores a Parquet export into `data_dir/<name>/<config>/<version>/`.

  Each example is re-encoded with the dataset's features and written to a
  shard of the original format and length; the dataset's other files are
  restored byte for byte. The dataset is assembled in an `incomplete.*`
  folder and renamed into place when whole.

  Args:
    export_dir: A folder written by `export`.
    data_dir: The TFDS data_dir to restore into.
    overwrite: Replace an existing prepared dataset of the same name, config and version.

  Returns:
    The dataset directory, and whether every shard is byte-identical to the
    exported one (it is not when a feature's encoding is not canonical, e.g.
    a re-encoded PNG image; the decoded examples are equal either way).

  Raises:
    SourceError: for an export that is not ours, altered, incomplete, or whose
      columns do not match its features; an existing destination without `overwrite`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  export_dir = epath.Path(export_dir)
  data_dir = epath.Path(data_dir)
  parts = read_export(export_dir)
  header = parts[0].header
  where = f"{parts[0].path}: schema metadata"
  dataset = header["dataset"]
  identity = [safe_paths.check_name("dataset name", dataset.get("name"), where, _NOT_OURS)]
  if dataset.get("config"):
    identity.append(safe_paths.check_name("config name", dataset["config"], where, _NOT_OURS))
  identity.append(safe_paths.check_name("version", dataset.get("version"), where, _NOT_OURS))
  target = data_dir.joinpath(*identity)
  safe_paths.refuse_symlinks(data_dir, identity, str(export_dir), "Remove the symlink, or import into another DATA_DIR")
  if target.exists():
    if not overwrite:
      raise errors.SourceError(f"{target} already exists; remove it or import with --overwrite.")
    hint = f"--overwrite only replaces a prepared dataset; move {target} away or import into another DATA_DIR"
    safe_paths.check_replaceable(target, hint, lambda message: errors.SourceError(f"cannot overwrite {target}: {message}"))
  created = [folder for folder in (data_dir.joinpath(*identity[:depth]) for depth in range(len(identity)))
             if not folder.exists()]  # removed again, if left empty, when the import fails
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = target.parent / f"incomplete.{uuid.uuid4().hex[:8]}.{target.name}"
  identical = True
  try:
    with safe_paths.staged_replacement(target, staging):
      for name, content in header["files"].items():
        safe_paths.relative_parts(name, where, _NOT_OURS)
        data = content["text"].encode("utf-8") if "text" in content else base64.b64decode(content["base64"])
        (staging / name).write_bytes(data)
      if tuple(part for part in safe_paths.dataset_identity(staging, _NOT_OURS) if part) != tuple(identity):
        raise errors.SourceError(errors.with_hint(f"{where}: dataset_info.json names another dataset", _NOT_OURS))
      builder = tfds.builder_from_directory(str(staging))
      columns = columns_of(builder.info.features)
      exported = set()
      for part in parts:
        split = part.header["split"]
        info = builder.info.splits[split] if split in builder.info.splits else None
        index = part.header["shard_index"]
        if info is None or info.num_shards != part.header["num_shards"] or info.shard_lengths[index] != part.num_rows:
          raise errors.SourceError(errors.with_hint(
              f"{part.path} does not match the splits of its dataset_info.json", _NOT_OURS))
        shard = staging / info.filenames[index]
        _write_examples(builder, shard, _serialized(builder, part, columns))
        identical &= _sha256(shard) == part.header["shard_sha256"]
        exported.add(split)
      _drop_missing_splits(staging, exported)
  finally:
    if not target.exists():
      for folder in reversed(created):
        with contextlib.suppress(OSError):
          folder.rmdir()
  return target, identical


def _drop_missing_splits(staging: epath.Path, exported: set[str]) -> None:
  """An export of some splits imports as a dataset of those splits only."""
  info_path = staging / "dataset_info.json"
  info = json.loads(info_path.read_text())
  kept = [split for split in info.get("splits", []) if split.get("name") in exported]
  if len(kept) != len(info.get("splits", [])):
    info["splits"] = kept
    info_path.write_text(json.dumps(info, indent=4))


def _serialized(builder, part: _Part, columns: list[Column]) -> Iterator[bytes]:
  """The file's rows re-encoded as Examples by the dataset's features, in order."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  parquet = pq.ParquetFile(str(part.path))
  expected = arrow_schema(columns)
  actual = parquet.schema_arrow
  for column in expected:
    index = actual.get_field_index(column.name)
    if index < 0 or not actual.field(index).type.equals(column.type):
      found = actual.field(index).type if index >= 0 else "missing"
      raise errors.SourceError(errors.with_hint(
          f"{part.path}: column {column.name!r} is {found}, its features.json makes it {column.type}", _NOT_OURS))
  features = builder.info.features
  for batch in parquet.iter_batches(batch_size=1024, columns=[column.name for column in columns]):
    rows = {}
    for column in columns:
      array = batch.column(column.name)
      if array.null_count:
        raise errors.SourceError(errors.with_hint(f"{part.path}: column {column.name!r} holds nulls", _NOT_OURS))
      rows[column.name] = _numpy_rows(column, array)
    for row in range(batch.num_rows):
      yield features.serialize_example(_unflatten({name: values[row] for name, values in rows.items()}))


def _numpy_rows(column: Column, array: Any) -> list[Any]:
  """One value per row: the list levels of the column undone into arrays of each row's shape."""
  count = len(array)
  rank = len(column.shape)
  shapes = np.zeros((count, rank), np.int64)
  parents = np.ones(count, np.int64)  # items at the current level, per row
  for axis in range(rank):
    if column.shape[axis] is not None:
      lengths = np.full(int(parents.sum()), column.shape[axis], np.int64)
    else:
      offsets = array.offsets.to_numpy()
      lengths = np.diff(offsets)
    starts = np.cumsum(parents) - parents
    first = np.where(parents > 0, lengths[np.minimum(starts, max(len(lengths) - 1, 0))] if len(lengths) else 0, 0)
    if np.any(lengths != np.repeat(first, parents)):
      raise errors.SourceError(f"column {column.name!r} holds a ragged value; its rows must be rectangular")
    shapes[:, axis] = np.where(parents > 0, first, column.shape[axis] or 0)
    parents = parents * shapes[:, axis]
    array = array.flatten()
  flat = array.to_numpy(zero_copy_only=False)
  if not column.is_string:
    flat = flat.astype(column.dtype, copy=False)
  if not rank:
    return list(flat)
  ends = np.cumsum(parents)
  return [flat[end - size:end].reshape(shape) for end, size, shape in zip(ends, parents, shapes)]


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  nested: dict[str, Any] = {}
  for name, value in flat.items():
    *outer, leaf = name.split("/")
    node = nested
    for key in outer:
      node = node.setdefault(key, {})
    node[leaf] = value
  return nested


def _write_examples(builder, shard: epath.Path, serialized: Iterator[bytes]) -> None:
  """Writes a shard in the dataset's own file format."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_builders.core import parquet_format  # pylint: disable=g-import-not-at-top

  file_format = builder.info.file_format
  if file_format == tfds.core.FileFormat.TFRECORD:
    with tf.io.TFRecordWriter(os.fspath(shard)) as writer:
      for record in serialized:
        writer.write(record)
  elif file_format == tfds.core.FileFormat.PARQUET:
    parquet_format.write_examples(shard, ((None, record) for record in serialized))
  else:
    tfds_internals.example_writer_for(file_format)(shard, ((None, record) for record in serialized))
