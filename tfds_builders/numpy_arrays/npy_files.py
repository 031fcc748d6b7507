"""Reading `.npy` files and `.npz` members header-first, in bounded-memory row chunks."""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from etils import epath
import numpy as np

from tfds_builders.core import errors

# Rows are read in chunks of about this many bytes: large enough to amortize
# per-call overhead, small enough that memory stays flat in file size.
CHUNK_BYTES = 8 * 1024 * 1024
_PAGE = mmap.PAGESIZE


@dataclasses.dataclass(frozen=True)
class ArrayHeader:
  """What an `.npy` header says: enough to infer a schema without reading data."""

  dtype: np.dtype
  shape: tuple[int, ...]
  fortran_order: bool
  data_offset: int


def _unreadable(source: str, reason: str) -> errors.SourceError:
  return errors.SourceError(
      errors.with_hint(
          f"{source}: {reason}",
          "Save it with np.save / np.savez from a numeric or bool array.",
      )
  )


def read_header(stream: BinaryIO, source: str) -> ArrayHeader:
  """Parses the `.npy` header at the stream's position, without unpickling.

  Raises:
    SourceError: if the stream is not an `.npy` array.
  """
  try:
    major, _ = np.lib.format.read_magic(stream)
    read = {
        1: np.lib.format.read_array_header_1_0,
        2: np.lib.format.read_array_header_2_0,
    }.get(major)
    if read is None:
      raise ValueError(f"unsupported .npy format version {major}")
    shape, fortran_order, dtype = read(stream)
  except ValueError as error:
    raise _unreadable(source, f"not a valid .npy array ({error})") from error
  return ArrayHeader(dtype, tuple(shape), fortran_order, stream.tell())


class ArraySource:
  """One array on disk: an `.npy` file or a member of an `.npz` archive."""

  def __init__(self, path: epath.Path, member: str | None = None):
    self.path = path
    self.member = member
    self.name = f"{path}" + (f"[{member}]" if member else "")
    with self._open() as stream:
      self.header = read_header(stream, self.name)

  @property
  def num_rows(self) -> int:
    if not self.header.shape:
      raise errors.SchemaError(
          errors.with_hint(
              f"{self.name} is a 0-d array and has no rows",
              "Use layout='files' to store it as one example.",
          )
      )
    return self.header.shape[0]

  @contextlib.contextmanager
  def _open(self) -> Iterator[BinaryIO]:
    with self.path.open("rb") as file:
      if self.member is None:
        yield file
        return
      with zipfile.ZipFile(file) as archive, archive.open(self.member) as stream:
        yield stream

  def _is_mappable(self) -> bool:
    return self.member is None and "://" not in str(self.path)

  def read_all(self) -> np.ndarray:
    """The whole array (memory-mapped for local `.npy` files)."""
    return next(self.iter_chunks(rows_per_chunk=None))

  def iter_chunks(self, rows_per_chunk: int | None) -> Iterator[np.ndarray]:
    """Yields consecutive row blocks; `None` yields the whole array once.

    Local `.npy` files are memory-mapped and the pages of consumed blocks are
    released, so resident memory stays near one block whatever the file size.
    Archive members and remote files are streamed block by block.
    """
    if self._is_mappable():
      yield from self._iter_mapped(rows_per_chunk)
    else:
      yield from self._iter_streamed(rows_per_chunk)

  def _iter_mapped(self, rows_per_chunk: int | None) -> Iterator[np.ndarray]:
    header = self.header
    with open(self.path, "rb") as file:  # noqa: PTH123 - mmap needs an OS file
      size = file.seek(0, 2)
      expected = header.data_offset + _nbytes(header.dtype, header.shape)
      if size < expected:
        raise _unreadable(
            self.name, f"truncated: {size} bytes on disk, header needs {expected}"
        )
      if expected == header.data_offset:  # no data bytes: nothing to map
        yield np.empty(header.shape, header.dtype)
        return
      mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    # No explicit close: numpy does not pin the mmap's buffer, so closing it
    # while a yielded view is alive would unmap live pages. Views keep the
    # mmap referenced (`.base`) and it closes when the last one is gone.
    array = np.ndarray(
        header.shape,
        header.dtype,
        buffer=mapped,
        offset=header.data_offset,
        order="F" if header.fortran_order else "C",
    )
    if rows_per_chunk is None or header.fortran_order:
      yield array
      return
    row_bytes = array.strides[0] if array.ndim else array.nbytes
    released = 0
    for start in range(0, len(array), rows_per_chunk):
      yield array[start : start + rows_per_chunk]
      done = header.data_offset + (start + rows_per_chunk) * row_bytes
      release_to = (done // _PAGE) * _PAGE
      if release_to > released:
        # Consumed pages are dropped from this process; reading them again
        # would fault them back in from the file, so nothing is lost.
        mapped.madvise(mmap.MADV_DONTNEED, released, release_to - released)
        released = release_to

  def _iter_streamed(self, rows_per_chunk: int | None) -> Iterator[np.ndarray]:
    header = self.header
    with self._open() as stream:
      stream.read(header.data_offset)  # skip the header again
      if rows_per_chunk is None or header.fortran_order or not header.shape:
        yield self._from_bytes(stream.read(), header.shape)
        return
      row_shape = header.shape[1:]
      row_bytes = _nbytes(header.dtype, row_shape)
      for start in range(0, header.shape[0], rows_per_chunk):
        rows = min(rows_per_chunk, header.shape[0] - start)
        yield self._from_bytes(stream.read(rows * row_bytes), (rows, *row_shape))

  def _from_bytes(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    expected = _nbytes(self.header.dtype, shape)
    if len(data) != expected:
      raise _unreadable(
          self.name, f"truncated: expected {expected} data bytes, found {len(data)}"
      )
    order = "F" if self.header.fortran_order else "C"
    return np.ndarray(shape, self.header.dtype, buffer=data, order=order)


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
  return dtype.itemsize * int(np.prod(shape, dtype=np.int64))


def rows_per_chunk(header: ArrayHeader) -> int:
  """How many rows of this array make about `CHUNK_BYTES`."""
  return max(1, CHUNK_BYTES // max(1, _nbytes(header.dtype, header.shape[1:])))


def npz_members(path: epath.Path) -> list[str]:
  """The `.npy` member names of an `.npz` archive, in archive order.

  Raises:
    SourceError: if the file is not a zip archive of `.npy` arrays.
  """
  try:
    with path.open("rb") as file, zipfile.ZipFile(file) as archive:
      names = archive.namelist()
  except zipfile.BadZipFile as error:
    raise _unreadable(str(path), "not a valid .npz (zip) archive") from error
  not_arrays = [name for name in names if not name.endswith(".npy")]
  if not_arrays or not names:
    raise _unreadable(
        str(path), f"archive holds no .npy arrays or other files: {not_arrays}"
    )
  return names
