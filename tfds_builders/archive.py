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

import contextlib
import dataclasses
import json
import lzma
import os
import shutil
import stat
import struct
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from etils import epath
import numpy as np

from tfds_builders import tfds_internals
from tfds_builders.version import __version__
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import remote
from tfds_builders.core import safe_paths

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
    format: `tfrecord` (the dataset directory, importable), `npz` (arrays) or
      `parquet` (a folder of Parquet files, one column per feature; see
      `tfds_builders.parquet_export.export`, which writes it).
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
  errors.check_choice(format, (*FORMATS, "parquet"), "format")
  if format == "parquet":  # a folder, not a zip: its own module
    from tfds_builders import parquet_export  # pylint: disable=g-import-not-at-top

    return parquet_export.export(dataset_dir, out_zip, splits=splits)
  if compression not in COMPRESSIONS:
    raise errors.ConfigError(f"compression={compression!r}; use one of {sorted(COMPRESSIONS)}.")
  dataset_dir = epath.Path(dataset_dir)
  if format == "npz":  # npz decodes examples with tf.data; tfrecord copies files through fsspec
    remote.require_tensorflow_reads(
        dataset_dir, "npz export of", "Export it with --format tfrecord, or import or fetch it into a local "
        "DATA_DIR first and export that")
  builder = _prepared(dataset_dir)
  out_zip = epath.Path(out_zip)
  if format == "tfrecord":  # damage is refused, never carried into an archive (npz: as each split is read)
    for split in builder.info.splits:
      _check_shards(builder, split)
  try:
    out_zip.parent.mkdir(parents=True, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise errors.ConfigError(
        f"Cannot write {out_zip}: a file is in the way of its folder. Give another path.") from None
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
        # Spooled beside the archive (same disk, same space); locally when the archive is remote.
        work_root = epath.Path(tempfile.gettempdir()) if remote.is_remote(out_zip) else out_zip.parent
        manifest["npz"] = _write_npz(archive, builder, pad_value, splits, work_root)
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
  where = f"{builder.data_path}/dataset_info.json"
  hint = "Rebuild the dataset under a valid name, config and version"
  parts = [safe_paths.check_name("dataset name", info.name, where, hint)]
  if info.config_name:
    parts.append(safe_paths.check_name("config name", info.config_name, where, hint))
  parts.append(safe_paths.check_name("version", str(info.version), where, hint))
  return "/".join(parts)


def _created_by() -> dict[str, str]:
  return {"package": "tfds_builders", "package_version": __version__}


_REGULAR_ONLY = "A prepared dataset holds regular files only; replace it by the file itself, or rebuild the dataset"


def _files(directory: epath.Path) -> Iterator[epath.Path]:
  """Regular files at or below `directory`; a symlink or special file is refused, never followed."""
  yield from safe_paths.regular_files(directory, _REGULAR_ONLY)
  for path in sorted(directory.iterdir()):
    if path.is_dir() and not safe_paths.is_symlink(path):
      yield from _files(path)


def _new_member(
    archive: zipfile.ZipFile, member: str, where: str, hint: str, fail: safe_paths.Fail = errors.SourceError,
) -> BinaryIO:
  """Opens a member for writing, after the check `import_` applies to it (so never a zip slip)."""
  safe_paths.relative_parts(member, where, hint, fail)
  return archive.open(member, "w", force_zip64=True)


def _write_directory(archive: zipfile.ZipFile, directory: epath.Path, prefix: str) -> None:
  for path in _files(directory):
    member = f"{prefix}/{path.relative_to(directory).as_posix()}"
    with safe_paths.open_regular(path, _REGULAR_ONLY) as source, \
        _new_member(archive, member, f"{path}: member", _RENAME_FILE) as target:
      shutil.copyfileobj(source, target, _CHUNK)


_RENAME_FILE = "Rename the file (a prepared dataset's file names are portable), or rebuild the dataset"


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
  infos = tfds_internals.flatten_nest_dict(features.get_tensor_info())
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
  for split in chosen:  # before anything is spooled under work_dir/<split>
    _check_npz_members(split, list(infos))
  description: dict[str, Any] = {"pad_value": pad_value, "splits": {}, "class_names": {}}
  for name, feature in tfds_internals.flatten_nest_dict(dict(_leaf_items(features))).items():
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


def _check_npz_members(split: str, features: Sequence[str]) -> None:
  """`<split>/<feature>.npy` (and `_length.npy`) must be members `import_` would accept.

  Raises:
    SchemaError: naming the split (and feature), if either would make an
      unsafe or unportable member name (`..`, `/` in a split, control characters).
  """
  if "/" in split or split in ("", ".", ".."):
    raise errors.SchemaError(errors.with_hint(
        f"split {safe_paths.shown(split)}: npz members would not be in a folder of their own: the "
        "split name is empty, '.', '..' or holds a '/'", _NPZ_NAMES))
  for feature in features:
    where = f"split {safe_paths.shown(split)}, feature {safe_paths.shown(feature)}: npz member"
    safe_paths.relative_parts(f"{split}/{feature}_length.npy", where, _NPZ_NAMES, errors.SchemaError)


_NPZ_NAMES = ("npz members are named <split>/<feature>.npy; rebuild the dataset with split and feature "
              "names of letters, digits and _.-, or export with --format tfrecord")


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

  _check_shards(builder, split)
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

  for leaf in tfds_internals.flatten_nest_dict(dict(_leaf_items(features))).values():
    plain = type(leaf) in (tfds.features.Tensor, tfds.features.ClassLabel, tfds.features.Text)
    if not plain or tfds_internals.tensor_encoding(leaf) != tfds.features.Encoding.NONE or tuple(leaf.shape).count(None) > 1:
      return False
  return True


def _check_shards(builder, split: str) -> None:
  """Walks every shard of a split, checking frames, CRCs and counts, before TensorFlow reads it.

  TF's record reader crashes the process on a crafted frame length and names
  no file on a bad CRC; a tampered or damaged dataset must be a SourceError.
  """
  from tfds_builders.core import tfrecord_io  # pylint: disable=g-import-not-at-top

  info = builder.info.splits[split]
  for name, expected in zip(info.filenames, info.shard_lengths):
    path = builder.data_path / name
    blocks = fast.record_index.scan(tfrecord_io.RecordFile(path, ""), check_data=True, as_reader=True)
    records = (None for block in blocks for _ in range(len(block.offsets)))
    for _ in tfrecord_io.counted(records, expected, str(path), "its dataset_info.json (shard_lengths)"):
      pass


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
    for name, value in tfds_internals.flatten_nest_dict(example).items():
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

  # Unordered splits are read 16 shards interleaved even without shuffle_files: one at a time keeps stored order.
  dataset = builder.as_dataset(
      split=split, shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1))
  dataset = dataset.map(flatten, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.ragged_batch(_BATCH).map(split_ragged).prefetch(2)
  for decoded in tfds.as_numpy(dataset):
    yield {
        name: (decoded[name], decoded[f"{name}\0shape"]) for name in columns
    }


def _zip_column(archive: zipfile.ZipFile, column: _Column, split: str, pad_value: float) -> dict[str, Any]:
  """Second pass: streams one spooled feature into `<split>/<name>.npy` (+ `_length`)."""
  member = f"{split}/{column.name}"
  where = f"split {safe_paths.shown(split)}, feature {safe_paths.shown(column.name)}: npz member"
  padded = column.padded_shape()
  npy_dtype = column.npy_dtype()
  with _new_member(archive, f"{member}.npy", where, _NPZ_NAMES, errors.SchemaError) as target:
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
    with _new_member(archive, f"{member}_length.npy", where, _NPZ_NAMES, errors.SchemaError) as target:
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

_NOT_OURS = "Only archives written by `tfds-builders export` can be imported; export the dataset again"
_RECOPY = "Copy the archive again, completely, or export it again"
# What zipfile raises on a damaged archive or member, beyond BadZipFile: a bad
# deflate stream (zlib.error), an unknown compression method
# (NotImplementedError), an encrypted member (RuntimeError), a cut file.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError,
               RuntimeError, ValueError, struct.error)
_LOCAL_HEADER_SIZE = 30  # bytes before a member's name in its local header
_S_IFMT_SHIFT = 16  # a zip member's Unix mode is the high half of external_attr
_DOS_DIRECTORY = 0x10
_MAX_MANIFEST_BYTES = 256 * 1024 * 1024  # ~2M files' entries


def read_manifest(archive_path: epath.PathLike) -> dict[str, Any]:
  """The manifest of one of our archives, after checking it is ours, whole and safe to extract.

  Raises:
    SourceError: if the file is missing, not a zip, truncated, not made by
      `export`, of a newer format version, or if a member is missing, resized,
      unlisted, duplicated, a symlink or special file, shares another
      member's data, or has a name that could leave the dataset folder.
  """
  archive_path = epath.Path(archive_path)
  with _open_zip(archive_path) as archive:
    return _checked_manifest(archive, archive_path)


@contextlib.contextmanager
def _open_zip(archive_path: epath.Path) -> Iterator[zipfile.ZipFile]:
  """The archive, opened by name locally, else on the path layer's handle (zipfile seeks: ranged reads)."""
  if not archive_path.exists():
    raise errors.SourceError(f"{archive_path} does not exist; pass the .zip written by `tfds-builders export`.")
  with contextlib.ExitStack() as stack:
    source = str(archive_path) if safe_paths.is_local(archive_path) else stack.enter_context(
        remote.open_stream(archive_path))
    with _opened_zip(archive_path, source) as archive:
      yield archive


def _opened_zip(archive_path: epath.Path, source: str | BinaryIO) -> zipfile.ZipFile:
  try:
    return zipfile.ZipFile(source)
  except _ZIP_ERRORS as error:
    raise errors.SourceError(
        errors.with_hint(
            f"{archive_path} is not a zip archive, or is truncated (its zip directory, "
            f"at the end of the file, is missing or damaged: {type(error).__name__}: {error})",
            _RECOPY,
        )
    ) from error


@contextlib.contextmanager
def _reading(archive_path: epath.Path, member: str) -> Iterator[None]:
  """Turns zipfile's errors while reading `member` into a SourceError naming the archive and member."""
  try:
    yield
  except _ZIP_ERRORS as error:
    raise errors.SourceError(
        errors.with_hint(
            f"{archive_path}: member {member} is corrupt or truncated ({type(error).__name__}: {error})",
            _RECOPY,
        )
    ) from error


def _checked_members(archive: zipfile.ZipFile, archive_path: epath.Path) -> dict[str, zipfile.ZipInfo]:
  """Every member by name, refusing anything but uniquely named, plain, unencrypted, disjoint files."""
  def refuse(info: zipfile.ZipInfo, problem: str) -> errors.SourceError:
    return errors.SourceError(errors.with_hint(
        f"{archive_path}: member {safe_paths.shown(info.filename)} {problem}", _NOT_OURS))

  members: dict[str, zipfile.ZipInfo] = {}
  folded: dict[str, str] = {}
  for info in archive.infolist():
    if not info.filename:  # before is_dir(), which indexes the name's last character
      raise refuse(info, "has an empty name")
    if info.filename in members:
      raise refuse(info, "occurs twice (duplicate member name)")
    if info.filename.casefold() in folded:
      raise refuse(info, f"differs from member {folded[info.filename.casefold()]!r} only by case")
    mode = info.external_attr >> _S_IFMT_SHIFT
    if info.is_dir() or info.external_attr & _DOS_DIRECTORY or stat.S_IFMT(mode) not in (0, stat.S_IFREG):
      kind = "directory" if info.is_dir() or info.external_attr & _DOS_DIRECTORY else safe_paths.file_kind(mode)
      raise refuse(info, f"is a {kind} entry; archives hold regular files only")
    if info.flag_bits & 0x1:
      raise refuse(info, "is encrypted")
    if info.filename != MANIFEST_NAME:
      safe_paths.relative_parts(info.filename, f"{archive_path}: member {safe_paths.shown(info.filename)}", _NOT_OURS)
    members[info.filename] = info
    folded[info.filename.casefold()] = info.filename
  for name in members:  # `a` and `a/b` cannot both be extracted
    for end in range(len(name)):
      if name[end] == "/" and name[:end] in members:
        raise refuse(members[name[:end]], f"is both a file and the folder of member {name!r}")
  _check_disjoint(members.values(), archive, archive_path)
  return members


def _check_disjoint(infos, archive: zipfile.ZipFile, archive_path: epath.Path) -> None:
  """Refuses members whose data overlaps another's: zip's form of a hard link (or of a zip bomb)."""
  ordered = sorted(infos, key=lambda info: info.header_offset)
  for previous, info in zip(ordered, ordered[1:]):
    if info.header_offset < previous.header_offset + _LOCAL_HEADER_SIZE + previous.compress_size:
      raise errors.SourceError(
          errors.with_hint(
              f"{archive_path}: member {info.filename!r} shares its data with member "
              f"{previous.filename!r} (a hard link, or overlapping entries)",
              _NOT_OURS,
          )
      )
  if ordered and ordered[-1].header_offset + _LOCAL_HEADER_SIZE + ordered[-1].compress_size > archive.start_dir:
    raise errors.SourceError(
        errors.with_hint(
            f"{archive_path}: member {ordered[-1].filename!r} runs past the end of the member data "
            f"(into the zip directory at byte {archive.start_dir})",
            _RECOPY,
        )
    )


def _checked_manifest(archive: zipfile.ZipFile, archive_path: epath.Path) -> dict[str, Any]:
  members = _checked_members(archive, archive_path)
  if MANIFEST_NAME not in members:
    raise errors.SourceError(
        f"{archive_path} is a zip archive but not one written by `tfds-builders export` "
        f"(it has no {MANIFEST_NAME}). Only our archives can be imported."
    )
  if members[MANIFEST_NAME].file_size > _MAX_MANIFEST_BYTES:  # it is read whole
    raise _bad_manifest(archive_path, f"it claims {members[MANIFEST_NAME].file_size} bytes, over "
                        f"{_MAX_MANIFEST_BYTES}")
  with _reading(archive_path, MANIFEST_NAME):
    text = archive.read(MANIFEST_NAME)
  try:
    manifest = json.loads(text)
  except (ValueError, RecursionError) as error:  # RecursionError: arrays nested thousands deep
    raise errors.SourceError(
        errors.with_hint(f"{archive_path}: member {MANIFEST_NAME} is not valid JSON ({error})", _RECOPY)
    ) from error
  if not isinstance(manifest, dict) or manifest.get("archive") != ARCHIVE_KIND:
    raise errors.SourceError(f"{archive_path}: {MANIFEST_NAME} does not describe a tfds_builders archive.")
  format_version = manifest.get("format_version", 0)
  if not isinstance(format_version, int):
    raise _bad_manifest(archive_path, f"format_version {format_version!r} is not an integer")
  if format_version > FORMAT_VERSION:
    raise errors.SourceError(
        f"{archive_path} has archive format version {format_version}; this "
        f"tfds_builders reads up to {FORMAT_VERSION}. Upgrade tfds_builders."
    )
  if manifest.get("format") not in FORMATS:
    raise _bad_manifest(archive_path, f"format {manifest.get('format')!r} is not one of {FORMATS}")
  entries = _manifest_entries(manifest, archive_path)
  problems = []
  for name, (size, crc) in entries.items():
    info = members.get(name)
    if info is None:
      problems.append(f"{name} is missing")
    elif (info.file_size, info.CRC) != (size, crc):
      problems.append(f"{name} has size {info.file_size}, CRC {info.CRC:08x}; "
                      f"the manifest says {size}, {crc:08x}")
  problems += [f"{name} is not in the manifest" for name in sorted(set(members) - set(entries) - {MANIFEST_NAME})]
  if problems:
    raise errors.SourceError(
        f"{archive_path} does not match its manifest: {'; '.join(problems[:5])}"
        f"{'; ...' if len(problems) > 5 else ''}. The archive was altered or is incomplete; export it again."
    )
  if manifest["format"] == "tfrecord":
    prefix = "/".join(_dataset_parts(manifest, archive_path))
    if manifest.get("path") != prefix:
      raise _bad_manifest(archive_path, f"path {manifest.get('path')!r} is not {prefix!r}, the dataset's own folder")
    for name in entries:
      if not name.startswith(prefix + "/"):
        raise _bad_manifest(archive_path, f"member {name!r} is outside {prefix}/")
  return manifest


def _bad_manifest(archive_path: epath.Path, problem: str) -> errors.SourceError:
  return errors.SourceError(errors.with_hint(f"{archive_path}: {MANIFEST_NAME}: {problem}", _NOT_OURS))


def _manifest_entries(manifest: dict[str, Any], archive_path: epath.Path) -> dict[str, tuple[int, int]]:
  """The manifest's `files` as {name: (size, crc32)}, refusing malformed or repeated entries."""
  files = manifest.get("files")
  if not isinstance(files, list):
    raise _bad_manifest(archive_path, "'files' is not a list")
  entries: dict[str, tuple[int, int]] = {}
  for index, entry in enumerate(files):
    fields = entry if isinstance(entry, dict) else {}
    name, size, crc = fields.get("name"), fields.get("size"), fields.get("crc32")
    if not (isinstance(name, str) and isinstance(size, int) and isinstance(crc, int)):
      raise _bad_manifest(archive_path, f"files[{index}] is not {{name, size, crc32}}: {entry!r:.200}")
    if name in entries:
      raise _bad_manifest(archive_path, f"files[{index}] lists {name!r} twice")
    safe_paths.relative_parts(name, f"{archive_path}: {MANIFEST_NAME} files[{index}]", _NOT_OURS)
    entries[name] = (size, crc)
  return entries


def _dataset_parts(manifest: dict[str, Any], archive_path: epath.Path) -> tuple[str, ...]:
  """`(name, [config,] version)` of the manifest's dataset, each a valid TFDS name."""
  dataset = manifest.get("dataset")
  if not isinstance(dataset, dict):
    raise _bad_manifest(archive_path, "'dataset' is not an object")
  where = f"{archive_path}: {MANIFEST_NAME} dataset"
  name = safe_paths.check_name("dataset name", dataset.get("name"), where, _NOT_OURS)
  config = dataset.get("config")
  version = safe_paths.check_name("version", dataset.get("version"), where, _NOT_OURS)
  if config is None or config == "":
    return (name, version)
  return (name, safe_paths.check_name("config name", config, where, _NOT_OURS), version)


def import_(archive_path: epath.PathLike, data_dir: epath.PathLike, *, overwrite: bool = False) -> epath.Path:
  """Restores a `tfrecord` archive into `data_dir`; returns the dataset directory.

  Every member name, the manifest's dataset name, config and version are
  validated before anything is joined to `data_dir`. The files are extracted
  (each checked against its CRC-32) into an `incomplete.*` folder beside the
  destination and renamed into place only when all are intact, so a failed
  import leaves nothing `tfds.load` would accept, and nothing outside
  `data_dir/<name>/<config>/`.

  Args:
    archive_path: An archive written by `export(..., "tfrecord")`.
    data_dir: The TFDS data_dir to restore into (it may itself be a symlink;
      no folder below it that the archive names may be).
    overwrite: Replace an existing prepared dataset of the same name, config
      and version (never any other folder).

  Raises:
    SourceError: for an archive that is not ours, truncated, altered, unsafe
      or in the export-only npz format; a destination that exists without
      `overwrite`, that is not the same dataset or holds another one; a
      symlink or file in the way; a path too long or a failed write.
    ConfigError: if DATA_DIR is a file (or cannot be created).
  """
  archive_path = epath.Path(archive_path)
  data_dir = epath.Path(data_dir)
  with _open_zip(archive_path) as archive:
    manifest = _checked_manifest(archive, archive_path)
    if manifest["format"] != "tfrecord":
      raise errors.SourceError(
          f"{archive_path} is an {manifest['format']} archive, which is export-only (its "
          "arrays are padded copies, not the dataset). Read it with np.load, or export "
          "with --format tfrecord to import."
      )
    parts = _dataset_parts(manifest, archive_path)
    target = data_dir.joinpath(*parts)
    staging = target.parent / f"incomplete.{uuid.uuid4().hex[:8]}.{target.name}"
    destinations = {
        entry["name"]: staging.joinpath(*entry["name"].split("/")[len(parts):]) for entry in manifest["files"]
    }
    _check_data_dir(archive_path, data_dir, parts, destinations)
    _check_destination(archive_path, data_dir, parts, overwrite)
    created: list[epath.Path] = []
    member = None
    try:
      _make_folders(data_dir, parts[:-1], created)
      staging.mkdir()
      for member, destination in destinations.items():
        _extract(archive, archive_path, member, destination)
      member = None
      _check_staged(archive_path, staging, parts)
      _check_staged_shards(archive_path, staging)
      _check_destination(archive_path, data_dir, parts, overwrite)  # again: the target may have changed
      _move_into_place(staging, target)
    except OSError as error:  # the disk, not the archive: full, read-only, a name the filesystem refuses
      raise _write_failed(archive_path, data_dir, member, error) from error
    finally:
      if staging.exists():
        safe_paths.rmtree(staging)
      if not target.exists():
        for folder in reversed(created):  # only folders this import made, and only if left empty
          with contextlib.suppress(OSError):
            folder.rmdir()
  return target


_OTHER_DATA_DIR = "Move it away, or import into another DATA_DIR"


def _check_data_dir(
    archive_path: epath.Path, data_dir: epath.Path, parts: tuple[str, ...], destinations: dict[str, epath.Path],
) -> None:
  """Refuses a DATA_DIR that is a file, a file where a dataset folder must go, and over-long paths."""
  if safe_paths.is_local(data_dir):
    existing = epath.Path(os.path.abspath(data_dir))
    while not os.path.lexists(existing) and existing != existing.parent:
      existing = existing.parent  # the first folder that exists on the way to DATA_DIR
    if not existing.is_dir():
      kind = safe_paths.file_kind(os.lstat(existing).st_mode)
      problem = (f"is a {kind}, not a folder" if existing == epath.Path(os.path.abspath(data_dir))
                 else f"cannot be created: {existing} is a {kind}, not a folder")
      raise errors.ConfigError(errors.with_hint(
          f"{archive_path}: DATA_DIR {data_dir} {problem}", "Pass a folder as DATA_DIR (it is created if missing)"))
  # The target itself is _check_destination's: it may exist, as a folder, with --overwrite.
  safe_paths.refuse_non_folders(data_dir, parts[:-1], f"{archive_path}: DATA_DIR {data_dir}", _OTHER_DATA_DIR)
  for member, destination in destinations.items():
    size = len(os.fsencode(os.fspath(destination)))
    if size > safe_paths.MAX_PATH_BYTES:
      raise errors.SourceError(errors.with_hint(
          f"{archive_path}: member {safe_paths.shown(member)} would be extracted to a path of {size} "
          f"bytes in DATA_DIR {data_dir}, over the {safe_paths.MAX_PATH_BYTES} a path may have",
          "Import into a DATA_DIR with a shorter path"))


def _write_failed(
    archive_path: epath.Path, data_dir: epath.Path, member: str | None, error: OSError,
) -> errors.SourceError:
  what = f"member {safe_paths.shown(member)}" if member else "the dataset"
  where = f" ({error.filename})" if error.filename else ""
  return errors.SourceError(errors.with_hint(
      f"{archive_path}: cannot write {what} into DATA_DIR {data_dir}: {error.strerror or error}{where}",
      "Check that DATA_DIR is a folder you may write to, on a disk with free space, or import into "
      "another DATA_DIR; nothing was imported"))


def _label(parts: Sequence[str]) -> str:
  return f"{'/'.join(parts[:-1])}:{parts[-1]}"


def _check_destination(archive_path: epath.Path, data_dir: epath.Path, parts: tuple[str, ...], overwrite: bool) -> None:
  """Refuses symlinks on the way to the target, and replacing anything but the same prepared dataset."""
  safe_paths.refuse_symlinks(data_dir, parts, str(archive_path), "Remove the symlink, or import into another DATA_DIR")
  target = data_dir.joinpath(*parts)
  if not target.exists():
    return
  if not overwrite:
    raise errors.SourceError(f"{target} already exists; remove it or import with --overwrite.")
  hint = (f"--overwrite only replaces a prepared {_label(parts)} dataset; move {target} away "
          "or import into another DATA_DIR")

  def fail(message: str) -> errors.SourceError:
    return errors.SourceError(f"{archive_path}: cannot overwrite {target}: {message}")

  safe_paths.check_replaceable(target, hint, fail)
  existing = tuple(part for part in safe_paths.dataset_identity(target, hint, fail) if part)
  if existing != parts:
    raise fail(errors.with_hint(f"it holds the dataset {_label(existing)}, not {_label(parts)}", hint))


def _make_folders(data_dir: epath.Path, parts: Sequence[str], created: list[epath.Path]) -> None:
  """Creates data_dir/parts[0]/...; appends each folder it created to `created`, outermost first."""
  for depth in range(len(parts) + 1):
    folder = data_dir.joinpath(*parts[:depth])
    if not folder.exists():
      folder.mkdir(parents=True)
      created.append(folder)


def _extract(archive: zipfile.ZipFile, archive_path: epath.Path, member: str, destination: epath.Path) -> None:
  """Streams one member to a new file, its CRC-32 checked by zipfile at the end."""
  destination.parent.mkdir(parents=True, exist_ok=True)
  with _reading(archive_path, member):
    source = archive.open(member)
  with source, safe_paths.create_new(destination) as copy:
    while True:
      with _reading(archive_path, member):
        chunk = source.read(_CHUNK)
      if not chunk:
        break
      copy.write(chunk)


def _check_staged(archive_path: epath.Path, staging: epath.Path, parts: tuple[str, ...]) -> None:
  """The extracted dataset_info.json must name the dataset the manifest names."""
  member = f"{'/'.join(parts)}/dataset_info.json"

  def fail(message: str) -> errors.SourceError:
    return errors.SourceError(f"{archive_path}: member {member}: {message}")

  staged = tuple(part for part in safe_paths.dataset_identity(staging, _NOT_OURS, fail) if part)
  if staged != parts:
    raise fail(errors.with_hint(
        f"names the dataset {_label(staged)}, but the manifest says {_label(parts)}", _NOT_OURS))


def _check_staged_shards(archive_path: epath.Path, staging: epath.Path) -> None:
  """Every TFRecord shard is walked (frames, CRCs, counts) before TFDS may load it.

  A manifest's checksums prove only that the archive is what its author
  wrote; a crafted frame length in a shard would crash TF's reader later.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder_from_directory(str(staging))
  except Exception as error:  # pylint: disable=broad-except  # any unreadable dataset_info.json
    raise errors.SourceError(errors.with_hint(
        f"{archive_path}: its dataset_info.json cannot be read by TFDS ({error})", _NOT_OURS)) from None
  if builder.info.file_format.value != "tfrecord":
    return
  for split in builder.info.splits:
    try:
      _check_shards(builder, split)
    except errors.SourceError as error:
      raise errors.SourceError(f"{archive_path}: split {split!r}: {error}") from None


def _move_into_place(staging: epath.Path, target: epath.Path) -> None:
  if remote.is_remote(target):
    remote.move_tree(staging, target, "dataset_info.json")  # an object store renames no folder
  elif target.exists():
    replaced = target.parent / f"incomplete.replaced.{uuid.uuid4().hex[:8]}.{target.name}"
    target.rename(replaced)
    staging.rename(target)
    safe_paths.rmtree(replaced)
  else:
    staging.rename(target)

