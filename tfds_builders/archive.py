"""One-file archives of prepared datasets: `export` to a .zip, `import_` it back.

Two formats:

- `tfrecord`: the prepared dataset directory itself (shards, dataset_info.json,
  features.json, ...) under `<name>/<config>/<version>/`. `import_` restores it
  byte for byte into a data_dir, where `tfds.load` / `builder_from_directory`
  read it as before.
- `npz`: one `.npy` per split and feature (`<split>/<feature>.npy`), readable
  with `np.load(archive)["train/image"]`. Variable-length features are padded
  here, and only here, with an explicit pad value; `<split>/<feature>_length.npy`
  keeps their true lengths. Export only: rebuilding a dataset from arrays would
  re-encode features (e.g. images), so it could not be byte-identical.

Both are written streaming: memory does not grow with the dataset. Every
archive holds `tfds_builders_archive.json`, a manifest with the format version
and each member's size and CRC-32, by which `import_` recognises our archives
and detects truncated or altered ones.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from etils import epath
import numpy as np

from tfds_builders.core import errors

MANIFEST_NAME = "tfds_builders_archive.json"
ARCHIVE_KIND = "tfds_builders dataset archive"
FORMAT_VERSION = 1
FORMATS = ("tfrecord", "npz")
COMPRESSIONS = {"stored": zipfile.ZIP_STORED, "deflate": zipfile.ZIP_DEFLATED}
DEFLATE_LEVEL = 1  # most of zlib's size gain at a fraction of level 6's time
_CHUNK = 8 * 1024 * 1024
_BATCH = 256  # examples decoded per step of an npz export


# ------------------------------------------------------------------ export --


def export(
    dataset_dir: epath.PathLike,
    out_zip: epath.PathLike,
    format: str = "tfrecord",  # pylint: disable=redefined-builtin
    *,
    compression: str = "stored",
    pad_value: float = 0,
    splits: Sequence[str] | None = None,
) -> epath.Path:
  """Writes one archive of a prepared dataset, streaming.

  The archive is written under a temporary name and renamed when complete,
  so a failed export leaves no archive behind.

  Args:
    dataset_dir: A prepared dataset version directory (holding
      dataset_info.json), e.g. `DATA_DIR/concatenated/demo/1.0.0`.
    out_zip: The archive to write.
    format: `tfrecord` (the dataset directory, importable) or `npz` (arrays).
    compression: Zip member compression, `stored` or `deflate`.
    pad_value: npz only: the value variable-length numeric features are padded
      with (strings are padded with NUL bytes).
    splits: npz only: the splits to export (default: all).

  Returns:
    The archive path.

  Raises:
    SourceError: if `dataset_dir` is not a prepared dataset.
    ConfigError: for an unknown format or compression, or a pad value the
      dtype of a padded feature cannot hold.
    SchemaError: for features npz cannot hold (string tensors of rank >= 1).
  """
  errors.check_choice(format, FORMATS, "format")
  if compression not in COMPRESSIONS:
    raise errors.ConfigError(f"compression={compression!r}; use one of {sorted(COMPRESSIONS)}.")
  dataset_dir = epath.Path(dataset_dir)
  builder = _prepared(dataset_dir)
  out_zip = epath.Path(out_zip)
  partial = out_zip.parent / f".{out_zip.name}.{uuid.uuid4().hex[:8]}.partial"
  manifest: dict[str, Any] = {
      "archive": ARCHIVE_KIND,
      "format_version": FORMAT_VERSION,
      "format": format,
      "dataset": {
          "name": builder.info.name,
          "config": builder.info.config_name,
          "version": str(builder.info.version),
      },
      "created_by": _created_by(),
  }
  try:
    with partial.open("wb") as raw, zipfile.ZipFile(
        raw, "w", compression=COMPRESSIONS[compression], compresslevel=DEFLATE_LEVEL,
        allowZip64=True,
    ) as archive:
      if format == "tfrecord":
        _write_directory(archive, dataset_dir, _member_prefix(builder))
        manifest["path"] = _member_prefix(builder)
      else:
        manifest["npz"] = _write_npz(archive, builder, pad_value, splits, out_zip.parent)
      manifest["files"] = [
          {"name": info.filename, "size": info.file_size, "crc32": info.CRC}
          for info in archive.infolist()
      ]
      archive.writestr(MANIFEST_NAME, json.dumps(manifest, indent=1), zipfile.ZIP_DEFLATED)
    partial.replace(out_zip)  # an existing archive is replaced whole, never half
  finally:
    if partial.exists():
      partial.unlink()
  return out_zip


def _prepared(dataset_dir: epath.Path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if not (dataset_dir / "dataset_info.json").exists():
    raise errors.SourceError(
        errors.with_hint(
            f"{dataset_dir} holds no dataset_info.json",
            "Pass a prepared dataset version directory such as DATA_DIR/concatenated/demo/1.0.0",
        )
    )
  return tfds.builder_from_directory(str(dataset_dir))


def _member_prefix(builder) -> str:
  info = builder.info
  parts = [info.name] + ([info.config_name] if info.config_name else []) + [str(info.version)]
  return "/".join(parts)


def _created_by() -> dict[str, str]:
  from tfds_builders import __version__  # pylint: disable=g-import-not-at-top

  return {"package": "tfds_builders", "package_version": __version__}


def _files(directory: epath.Path) -> Iterator[epath.Path]:
  for path in sorted(directory.iterdir()):
    if path.is_dir():
      yield from _files(path)
    else:
      yield path


def _write_directory(archive: zipfile.ZipFile, directory: epath.Path, prefix: str) -> None:
  for path in _files(directory):
    member = f"{prefix}/{path.relative_to(directory).as_posix()}"
    with path.open("rb") as source, archive.open(member, "w", force_zip64=True) as target:
      shutil.copyfileobj(source, target, _CHUNK)


# ------------------------------------------------------------- npz export --


@dataclasses.dataclass
class _Column:
  """One feature of one split while it is spooled to disk, then zipped."""

  name: str
  dtype: np.dtype  # stored dtype (strings: uint8 while spooled)
  shape: tuple[int | None, ...]  # declared per-example shape
  is_string: bool
  values_path: epath.Path
  shapes_path: epath.Path | None  # per-example shapes, when some dim varies
  max_shape: list[int] = dataclasses.field(default_factory=list)
  count: int = 0

  @property
  def variable(self) -> bool:
    return self.shapes_path is not None

  def padded_shape(self) -> tuple[int, ...]:
    return tuple(self.max_shape) if self.variable else tuple(self.shape)

  def npy_dtype(self) -> np.dtype:
    if self.is_string:
      return np.dtype(f"S{max(1, self.max_shape[0])}")
    return self.dtype


def _write_npz(archive, builder, pad_value: float, splits: Sequence[str] | None, work_root: epath.Path) -> dict[str, Any]:
  """Writes `<split>/<feature>.npy` (+ `_length.npy`) members; returns their description."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = builder.info.features
  infos = tfds.core.utils.flatten_nest_dict(features.get_tensor_info())
  for name, info in infos.items():
    if np.dtype(info.np_dtype).kind in "OSU" and tuple(info.shape):
      raise errors.SchemaError(
          f"Feature {name!r} is a string tensor of shape {tuple(info.shape)}; npz export "
          "holds numeric tensors and single strings only. Use --format tfrecord."
      )
  chosen = list(splits) if splits else list(builder.info.splits)
  unknown = [split for split in chosen if split not in builder.info.splits]
  if unknown:
    raise errors.ConfigError(f"splits {unknown} are not in the dataset ({list(builder.info.splits)}).")
  description: dict[str, Any] = {"pad_value": pad_value, "splits": {}, "class_names": {}}
  for name, feature in tfds.core.utils.flatten_nest_dict(dict(_leaf_items(features))).items():
    if isinstance(feature, tfds.features.ClassLabel):
      description["class_names"][name] = feature.names
  work_dir = epath.Path(tempfile.mkdtemp(prefix=".npz-export-", dir=str(work_root)))
  try:
    for split in chosen:
      columns = _spool_split(builder, split, infos, work_dir / split)
      description["splits"][split] = {
          "num_examples": builder.info.splits[split].num_examples,
          "features": {
              column.name: _zip_column(archive, column, split, pad_value)
              for column in columns.values()
          },
      }
      shutil.rmtree(work_dir / split)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  return description


def _leaf_items(features) -> Iterator[tuple[str, Any]]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  for name, child in features.items():
    yield name, dict(_leaf_items(child)) if isinstance(child, tfds.features.FeaturesDict) else child


def _spool_split(builder, split: str, infos, work_dir: epath.Path) -> dict[str, _Column]:
  """First pass: decodes the split in batches and appends each feature's values to a file."""
  work_dir.mkdir(parents=True)
  columns = {}
  for name, info in infos.items():
    is_string = np.dtype(info.np_dtype).kind in "OSU"
    shape = tuple(info.shape)
    variable = is_string or None in shape
    safe = name.replace("/", "__")
    columns[name] = _Column(
        name=name, dtype=np.dtype(np.uint8) if is_string else np.dtype(info.np_dtype),
        shape=shape, is_string=is_string, values_path=work_dir / f"{safe}.values",
        shapes_path=work_dir / f"{safe}.shapes" if variable else None,
    )

  batches = _wire_batches if _wire_decodable(builder.info.features) else _decoded_batches
  files = {name: column.values_path.open("wb") for name, column in columns.items()}
  shape_files = {name: column.shapes_path.open("wb") for name, column in columns.items() if column.variable}
  try:
    for batch in batches(builder, split, columns):
      for name, column in columns.items():
        flat_values, shapes = batch[name]
        files[name].write(np.ascontiguousarray(flat_values, column.dtype).tobytes())
        column.count += len(shapes)
        if column.variable:
          shape_files[name].write(np.ascontiguousarray(shapes, np.int64).tobytes())
          batch_max = shapes.max(axis=0).tolist() if len(shapes) else []
          column.max_shape = [max(a, b) for a, b in zip(column.max_shape, batch_max)] or batch_max
  finally:
    for file in [*files.values(), *shape_files.values()]:
      file.close()
  return columns


Batch = dict[str, tuple[np.ndarray, np.ndarray]]  # feature -> (flat values, per-example shapes)


def _wire_decodable(features) -> bool:
  """Whether every feature decodes from its Example list alone (no image codec, no bytes encoding)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  for leaf in tfds.core.utils.flatten_nest_dict(dict(_leaf_items(features))).values():
    plain = type(leaf) in (tfds.features.Tensor, tfds.features.ClassLabel, tfds.features.Text)
    if not plain or leaf._encoding != tfds.features.Encoding.NONE or tuple(leaf.shape).count(None) > 1:  # pylint: disable=protected-access
      return False
  return True


def _wire_batches(builder, split: str, columns: dict[str, _Column]) -> Iterator[Batch]:
  """Fast path: records parsed a batch at a time, each feature's values as they are on the wire."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  kinds = {"O": tf.string, "S": tf.string, "U": tf.string, "f": tf.float32}
  specs = {
      name: tf.io.RaggedFeature(kinds.get("O" if column.is_string else column.dtype.kind, tf.int64))
      for name, column in columns.items()
  }
  files = [str(builder.data_path / name) for name in builder.info.splits[split].filenames]

  def parse(records):
    parsed = tf.io.parse_example(records, specs)
    return {name: (value.flat_values, value.row_lengths()) for name, value in parsed.items()}

  dataset = tf.data.TFRecordDataset(files, buffer_size=_CHUNK).batch(_BATCH).map(parse).prefetch(2)
  for parsed in dataset.as_numpy_iterator():
    batch = {}
    for name, (values, lengths) in parsed.items():
      column = columns[name]
      if column.is_string:
        sizes = np.fromiter(map(len, values), np.int64, len(values))
        batch[name] = (np.frombuffer(b"".join(values), np.uint8), sizes[:, None])
        continue
      flat = values.astype(column.dtype)  # as TFDS casts: int64 -> int32/uint8/bool, float32 -> float64
      if not column.variable:
        batch[name] = (flat, np.empty((len(lengths), 0), np.int64))
        continue
      known = int(np.prod([d for d in column.shape if d is not None], dtype=np.int64))
      shapes = np.tile(np.array([d or 0 for d in column.shape], np.int64), (len(lengths), 1))
      shapes[:, column.shape.index(None)] = lengths // max(known, 1)
      batch[name] = (flat, shapes)
    yield batch


def _decoded_batches(builder, split: str, columns: dict[str, _Column]) -> Iterator[Batch]:
  """General path: TFDS decodes each example (images, encoded tensors, ...)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def flatten(example):
    out = {}
    for name, value in tfds.core.utils.flatten_nest_dict(example).items():
      column = columns[name]
      if column.is_string:
        out[name] = tf.io.decode_raw(value, tf.uint8)
        out[f"{name}\0shape"] = tf.reshape(tf.strings.length(value, unit="BYTE"), [1])
      else:
        out[name] = tf.reshape(value, [-1])
        out[f"{name}\0shape"] = tf.shape(value, out_type=tf.int64)
    return out

  def split_ragged(batch):
    return {
        name: value.flat_values if isinstance(value, tf.RaggedTensor)
        else value if name.endswith("\0shape") else tf.reshape(value, [-1])
        for name, value in batch.items()
    }

  dataset = builder.as_dataset(split=split, shuffle_files=False)
  dataset = dataset.map(flatten, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.ragged_batch(_BATCH).map(split_ragged).prefetch(2)
  for decoded in tfds.as_numpy(dataset):
    yield {
        name: (decoded[name], decoded[f"{name}\0shape"]) for name in columns
    }


def _zip_column(archive: zipfile.ZipFile, column: _Column, split: str, pad_value: float) -> dict[str, Any]:
  """Second pass: streams one spooled feature into `<split>/<name>.npy` (+ `_length`)."""
  member = f"{split}/{column.name}"
  padded = column.padded_shape()
  npy_dtype = column.npy_dtype()
  with archive.open(f"{member}.npy", "w", force_zip64=True) as target:
    # A string column is spooled as uint8 rows; S<max> rows have the same bytes.
    rows_shape = () if column.is_string else padded
    _write_npy_header(target, npy_dtype, (column.count, *rows_shape))
    if not column.variable:
      with column.values_path.open("rb") as source:
        shutil.copyfileobj(source, target, _CHUNK)
    else:
      pad = 0 if column.is_string else _pad_for(pad_value, column)
      for block in _padded_blocks(column, padded, pad):
        target.write(block.tobytes())
  entry: dict[str, Any] = {
      "member": f"{member}.npy", "dtype": npy_dtype.str, "shape": list(rows_shape),
      "declared_shape": [d if d is not None else None for d in column.shape],
  }
  if column.variable:
    varying = [0] if column.is_string else [axis for axis, dim in enumerate(column.shape) if dim is None]
    with archive.open(f"{member}_length.npy", "w", force_zip64=True) as target:
      length_shape = (column.count,) if len(varying) == 1 else (column.count, len(varying))
      _write_npy_header(target, np.dtype("<i8"), length_shape)
      for shapes in _shape_blocks(column):
        target.write(np.ascontiguousarray(shapes[:, varying], "<i8").tobytes())
    entry.update(length_member=f"{member}_length.npy", varying_axes=varying,
                 pad_value="NUL" if column.is_string else pad_value)
  return entry


def _pad_for(pad_value: float, column: _Column) -> np.generic:
  converted = np.asarray(pad_value).astype(column.dtype)
  if not (np.isnan(pad_value) and converted.dtype.kind in "fc") and converted != pad_value:
    raise errors.ConfigError(
        f"pad value {pad_value!r} does not fit feature {column.name!r} ({column.dtype.name}); "
        "choose a pad value the dtype can hold, e.g. 0."
    )
  return converted


def _write_npy_header(target: BinaryIO, dtype: np.dtype, shape: tuple[int, ...]) -> None:
  header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
  np.lib.format.write_array_header_2_0(target, header)


def _shape_blocks(column: _Column, rows: int = 65536) -> Iterator[np.ndarray]:
  rank = 1 if column.is_string else len(column.shape)
  with column.shapes_path.open("rb") as file:
    while block := file.read(rows * rank * 8):
      yield np.frombuffer(block, "<i8").reshape(-1, rank)


def _padded_blocks(column: _Column, padded: tuple[int, ...], pad: Any) -> Iterator[np.ndarray]:
  """Rows padded to `padded`, a block of examples at a time."""
  item = column.dtype.itemsize
  row_size = int(np.prod(padded, dtype=np.int64))
  block_rows = max(1, min(65536, _CHUNK // max(1, row_size * item)))
  with column.values_path.open("rb") as values:
    for shapes in _shape_blocks(column, block_rows):
      sizes = shapes.prod(axis=1)
      flat = np.frombuffer(values.read(int(sizes.sum()) * item), column.dtype)
      out = np.full((len(shapes), *padded), pad, dtype=column.dtype)
      if len(padded) == 1:  # one varying axis: a mask places all values at once
        out[np.arange(padded[0]) < shapes[:, :1]] = flat
      else:
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for row, shape in enumerate(shapes):
          out[(row, *map(slice, shape))] = flat[offsets[row]:offsets[row + 1]].reshape(shape)
      yield out


# ------------------------------------------------------------------ import --


def read_manifest(archive_path: epath.PathLike) -> dict[str, Any]:
  """The manifest of one of our archives, after checking it is ours and whole.

  Raises:
    SourceError: if the file is missing, not a zip, truncated, not made by
      `export`, of a newer format version, or missing or resizing members.
  """
  archive_path = epath.Path(archive_path)
  if not archive_path.exists():
    raise errors.SourceError(f"{archive_path} does not exist; pass the .zip written by `tfds-builders export`.")
  with _open_zip(archive_path) as archive:
    return _checked_manifest(archive, archive_path)


def _open_zip(archive_path: epath.Path) -> zipfile.ZipFile:
  try:
    return zipfile.ZipFile(str(archive_path))
  except zipfile.BadZipFile as error:
    raise errors.SourceError(
        errors.with_hint(
            f"{archive_path} is not a zip archive, or is truncated (its zip directory, "
            f"at the end of the file, is missing or damaged: {error})",
            "Copy the archive again, completely",
        )
    ) from error


def _checked_manifest(archive: zipfile.ZipFile, archive_path: epath.Path) -> dict[str, Any]:
  try:
    manifest = json.loads(archive.read(MANIFEST_NAME))
  except KeyError:
    raise errors.SourceError(
        f"{archive_path} is a zip archive but not one written by `tfds-builders export` "
        f"(it has no {MANIFEST_NAME}). Only our archives can be imported."
    ) from None
  except (ValueError, zipfile.BadZipFile) as error:
    raise errors.SourceError(f"{archive_path}: {MANIFEST_NAME} is unreadable ({error}).") from error
  if not isinstance(manifest, dict) or manifest.get("archive") != ARCHIVE_KIND:
    raise errors.SourceError(f"{archive_path}: {MANIFEST_NAME} does not describe a tfds_builders archive.")
  if manifest.get("format_version", 0) > FORMAT_VERSION:
    raise errors.SourceError(
        f"{archive_path} has archive format version {manifest['format_version']}; this "
        f"tfds_builders reads up to {FORMAT_VERSION}. Upgrade tfds_builders."
    )
  members = {info.filename: info for info in archive.infolist()}
  listed = {entry["name"] for entry in manifest.get("files", [])}
  problems = []
  for entry in manifest.get("files", []):
    info = members.get(entry["name"])
    if info is None:
      problems.append(f"{entry['name']} is missing")
    elif (info.file_size, info.CRC) != (entry["size"], entry["crc32"]):
      problems.append(f"{entry['name']} has size {info.file_size}, CRC {info.CRC:08x}; "
                      f"the manifest says {entry['size']}, {entry['crc32']:08x}")
  problems += [f"{name} is not in the manifest" for name in sorted(set(members) - listed - {MANIFEST_NAME})]
  if problems:
    raise errors.SourceError(
        f"{archive_path} does not match its manifest: {'; '.join(problems[:5])}"
        f"{'; ...' if len(problems) > 5 else ''}. The archive was altered or is incomplete; export it again."
    )
  return manifest


def import_(archive_path: epath.PathLike, data_dir: epath.PathLike, *, overwrite: bool = False) -> epath.Path:
  """Restores a `tfrecord` archive into `data_dir`; returns the dataset directory.

  The files are extracted (each checked against its CRC-32) into a temporary
  directory beside the destination and moved into place only when all are
  intact, so a failed import leaves nothing `tfds.load` would accept.

  Raises:
    SourceError: for an archive that is not ours, truncated, altered, or in
      the export-only npz format; or a destination that exists without
      `overwrite`.
  """
  archive_path = epath.Path(archive_path)
  manifest = read_manifest(archive_path)
  if manifest["format"] != "tfrecord":
    raise errors.SourceError(
        f"{archive_path} is an {manifest['format']} archive, which is export-only (its "
        "arrays are padded copies, not the dataset). Read it with np.load, or export "
        "with --format tfrecord to import."
    )
  prefix = manifest["path"]
  target = epath.Path(data_dir) / prefix
  if target.exists() and not overwrite:
    raise errors.SourceError(
        f"{target} already exists; remove it or import with --overwrite."
    )
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = target.parent / f"incomplete.{uuid.uuid4().hex[:8]}.{target.name}"
  try:
    with _open_zip(archive_path) as archive:
      for entry in manifest["files"]:
        relative = entry["name"][len(prefix) + 1:]
        if not entry["name"].startswith(prefix + "/") or ".." in relative.split("/"):
          raise errors.SourceError(f"{archive_path}: member {entry['name']} is outside {prefix}/.")
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
          with archive.open(entry["name"]) as source, destination.open("wb") as copy:
            shutil.copyfileobj(source, copy, _CHUNK)
        except (zipfile.BadZipFile, EOFError, OSError) as error:
          raise errors.SourceError(
              f"{archive_path}: member {entry['name']} is corrupt or truncated ({error}). "
              "Copy the archive again, completely."
          ) from error
    if not (staging / "dataset_info.json").exists():
      raise errors.SourceError(f"{archive_path} holds no dataset_info.json under {prefix}/.")
    if target.exists():
      replaced = target.parent / f"incomplete.replaced.{uuid.uuid4().hex[:8]}.{target.name}"
      target.rename(replaced)
      staging.rename(target)
      shutil.rmtree(replaced)
    else:
      staging.rename(target)
  finally:
    if staging.exists():
      shutil.rmtree(staging)
  return target
