"""Reading `.npy` files and `.npz` members header-first, in bounded-memory row chunks."""

from __future__ import annotations

import ast
import collections
import contextlib
import dataclasses
import math
import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from etils import epath
import numpy as np

from tfds_builders.core import errors

# Rows are read in chunks of about this many bytes: large enough to amortize
# per-call overhead, small enough that memory stays flat in file size.
CHUNK_BYTES = 8 * 1024 * 1024
_PAGE = mmap.PAGESIZE

MAGIC = b"\x93NUMPY"
# Format version -> (struct format of the header length, header text encoding).
_HEADER_FORMATS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}
# NumPy's own limit (`max_header_size`): longer headers are refused unparsed.
MAX_HEADER_BYTES = 10_000
MAX_DIMS = 64  # NumPy 2's limit
# Under layout='rows' each row is an example. Rows of data are backed by the
# file's bytes (checked exactly), rows of zero bytes by nothing: past these
# counts a header asks for more examples than any build should write.
MAX_ROWS = 2**40
MAX_EMPTY_ROWS = 2**31
_INT64_MAX = 2**63 - 1
_HEADER_KEYS = {"descr", "fortran_order", "shape"}
_RESAVE = "Save the array again with np.save / np.savez."
# What zipfile and zlib raise on a damaged archive: a bad CRC or header, a cut
# or undecodable member, an encrypted or unknown compression method.
_ZIP_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError,
    NotImplementedError, RuntimeError, ValueError, OSError,
)


@dataclasses.dataclass(frozen=True)
class ArrayHeader:
  """What an `.npy` header says: enough to infer a schema without reading data.

  Attributes:
    dtype: The array's dtype (object and structured dtypes included: the
      builder refuses them, never this parser).
    shape: Non-negative dimensions whose byte count fits in int64.
    fortran_order: Whether the data is stored column-major.
    data_offset: Where the data starts, from the start of the `.npy` bytes.
  """

  dtype: np.dtype
  shape: tuple[int, ...]
  fortran_order: bool
  data_offset: int

  @property
  def nbytes(self) -> int:
    """The data's size in bytes (a Python int: never overflows)."""
    return self.dtype.itemsize * math.prod(self.shape)

  @property
  def row_bytes(self) -> int:
    return self.dtype.itemsize * math.prod(self.shape[1:])


def _unreadable(source: str, reason: str, hint: str = _RESAVE) -> errors.SourceError:
  return errors.SourceError(errors.with_hint(f"{source}: {reason}", hint))


def read_header(stream: BinaryIO, source: str) -> ArrayHeader:
  """Parses the `.npy` header at the stream's start, without unpickling.

  Every field is checked before it is used: the header length against NumPy's
  limit and the bytes present, the dict's keys and value types, and the shape's
  byte count in Python ints, so no later read or allocation can overflow.

  Args:
    stream: A binary stream positioned at the `.npy` magic.
    source: The file (and `.npz` member) named in errors.

  Raises:
    SourceError: if the stream is not a well-formed `.npy` array header.
  """
  prefix = stream.read(len(MAGIC) + 2)
  if len(prefix) < len(MAGIC) + 2 or not prefix.startswith(MAGIC):
    raise _unreadable(
        source, f"not a valid .npy array (it does not start with the NumPy magic {MAGIC!r})",
        "Save it with np.save / np.savez from a numeric or bool array.",
    )
  version = (prefix[-2], prefix[-1])
  if version not in _HEADER_FORMATS:
    raise _unreadable(
        source,
        f"unsupported .npy format version {version[0]}.{version[1]} (readable: 1.0, 2.0, 3.0)",
    )
  length_format, encoding = _HEADER_FORMATS[version]
  length_field = stream.read(struct.calcsize(length_format))
  if len(length_field) < struct.calcsize(length_format):
    raise _unreadable(source, "truncated inside the .npy header length field")
  (header_len,) = struct.unpack(length_format, length_field)
  if header_len > MAX_HEADER_BYTES:
    raise _unreadable(
        source,
        f"not a valid .npy array (header_len {header_len} is over the "
        f"{MAX_HEADER_BYTES}-byte limit NumPy also enforces)",
    )
  text = stream.read(header_len)
  if len(text) < header_len:
    raise _unreadable(
        source,
        f"not a valid .npy array (header_len {header_len} runs past the end: "
        f"only {len(text)} header bytes follow)",
    )
  fields = _header_fields(text, encoding, source)
  header = ArrayHeader(
      dtype=_header_dtype(fields["descr"], source),
      shape=_header_shape(fields["shape"], source),
      fortran_order=_header_order(fields["fortran_order"], source),
      data_offset=len(prefix) + len(length_field) + header_len,
  )
  _check_addressable(header, source)
  return header


def _header_fields(text: bytes, encoding: str, source: str) -> dict[str, Any]:
  try:
    # literal_eval builds only literals: no names, calls or unpickling.
    fields = ast.literal_eval(text.decode(encoding))
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
    raise _unreadable(
        source, f"not a valid .npy array (header is not a Python literal: {type(error).__name__})"
    ) from error
  if not isinstance(fields, dict):
    raise _unreadable(
        source, f"not a valid .npy array (header is a {type(fields).__name__}, not a dict)"
    )
  if set(fields) != _HEADER_KEYS:
    keys = sorted(map(repr, fields))
    raise _unreadable(
        source,
        f"not a valid .npy array (header keys are [{', '.join(keys)}], "
        "expected 'descr', 'fortran_order' and 'shape')",
    )
  return fields


def _header_dtype(descr: Any, source: str) -> np.dtype:
  try:
    dtype = np.lib.format.descr_to_dtype(descr)
  # A descr can fail in many ways (bad strings, nested lists, huge subarray
  # shapes); each means the same thing here: not a NumPy dtype.
  except Exception as error:  # pylint: disable=broad-except
    raise _unreadable(
        source,
        f"not a valid .npy array (header descr {_shorten(descr)} is not a NumPy dtype: {error})",
    ) from error
  if dtype.hasobject:  # as numpy with allow_pickle=False: refused at the header, never unpickled
    raise errors.SchemaError(
        f"{source}: dtype {_shorten(descr)} holds Python objects; object arrays may hold pickled "
        "code and have no fixed layout, so they are never read: convert them to a numeric dtype"
    )
  if dtype.subdtype is not None:  # ('<i4', (2,)): numpy folds it into the shape, inconsistently
    raise errors.SchemaError(
        f"{source}: dtype {_shorten(descr)} is a subarray dtype; save the array with a plain dtype "
        "and the extra axes in its shape (np.save(path, np.ascontiguousarray(array)))"
    )
  return dtype


def _header_shape(shape: Any, source: str) -> tuple[int, ...]:
  # bool is an int subclass that NumPy accepts; no writer produces it.
  if not isinstance(shape, tuple) or any(type(dim) is not int for dim in shape):
    raise _unreadable(
        source, f"not a valid .npy array (header shape {_shorten(shape)} is not a tuple of ints)"
    )
  if any(dim < 0 for dim in shape):
    raise _unreadable(source, f"header shape {shape} has a negative dimension")
  if len(shape) > MAX_DIMS:
    raise _unreadable(
        source, f"header shape has {len(shape)} dimensions, more than NumPy's {MAX_DIMS}"
    )
  return shape


def _header_order(fortran_order: Any, source: str) -> bool:
  if type(fortran_order) is not bool:
    raise _unreadable(
        source,
        f"not a valid .npy array (header fortran_order {_shorten(fortran_order)} is not True or False)",
    )
  return fortran_order


def _check_addressable(header: ArrayHeader, source: str) -> None:
  # NumPy sizes arrays by the product of their non-zero dimensions in int64;
  # past that no array (and no memory map) can have this shape.
  span = header.dtype.itemsize * math.prod(dim for dim in header.shape if dim)
  if span > _INT64_MAX:
    raise _unreadable(
        source,
        f"header shape {header.shape} of {header.dtype.str} spans {span} bytes, "
        "more than any array can address (int64); the header is corrupt",
    )


def _row_count(header: ArrayHeader, source: str) -> int:
  """The header's first dimension, if it is a number of examples a build may write."""
  rows = header.shape[0]
  if header.row_bytes == 0 and rows > MAX_EMPTY_ROWS:
    raise _unreadable(
        source,
        f"header shape {header.shape} of {header.dtype.str} declares {rows} rows of 0 bytes "
        f"each, more than the {MAX_EMPTY_ROWS} empty examples one array may give: no data in "
        "the file backs them, so the header is corrupt or forged",
        "Save the array again with np.save (a zero-width array gives one empty example per "
        "row), or use layout='files' to store it as one example.",
    )
  if rows > MAX_ROWS:
    raise _unreadable(
        source,
        f"header shape {header.shape} declares {rows} rows, more than the {MAX_ROWS} "
        "examples one array may give",
        "Split the array into several .npy files.",
    )
  return rows


def _shorten(value: Any, limit: int = 80) -> str:
  text = repr(value)
  return text if len(text) <= limit else f"{text[:limit]}..."


@contextlib.contextmanager
def _zip_errors(archive: epath.Path, member: str | None) -> Iterator[None]:
  """Turns zipfile/zlib failures into a SourceError naming the archive and member."""
  try:
    yield
  except errors.TfdsBuildersError:
    raise
  except _ZIP_ERRORS as error:
    where = f"{archive}[{member}]" if member else str(archive)
    raise errors.SourceError(
        errors.with_hint(
            f"{where}: the .npz archive is damaged ({type(error).__name__}: {error})",
            f"Test it with `python -m zipfile -t {archive}` and copy or write it "
            "again (np.savez); np.load cannot read it either.",
        )
    ) from error


def _whole_read_limit() -> int:
  """Bytes one streamed array may take in memory: half the machine's RAM."""
  try:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
  except (ValueError, OSError, AttributeError):
    return 8 * 1024**3


class ArraySource:
  """One array on disk: an `.npy` file or a member of an `.npz` archive."""

  def __init__(
      self,
      path: epath.Path,
      member: str | None = None,
      header: ArrayHeader | None = None,
      member_size: int | None = None,
  ):
    """Reads the header (unless given, as `npz_sources` does for a whole archive).

    Args:
      path: The `.npy` file, or the `.npz` archive holding `member`.
      member: The archive member's name, or None for an `.npy` file.
      header: The already parsed header.
      member_size: The member's uncompressed size declared by the archive.
    """
    self.path = path
    self.member = member
    self.name = f"{path}" + (f"[{member}]" if member else "")
    self.member_size = member_size
    if header is None:
      with self._open() as stream:
        header = read_header(stream, self.name)
    self.header = header

  @property
  def num_rows(self) -> int:
    """How many examples the array gives under layout='rows'.

    Raises:
      SchemaError: for a 0-d array.
      SourceError: if the header declares more rows than `MAX_ROWS`, or more
        than `MAX_EMPTY_ROWS` rows of zero bytes, which no data backs.
    """
    header = self.header
    if not header.shape:
      raise errors.SchemaError(
          errors.with_hint(
              f"{self.name} is a 0-d array and has no rows",
              "Use layout='files' to store it as one example.",
          )
      )
    return _row_count(header, self.name)

  @contextlib.contextmanager
  def _open(self) -> Iterator[BinaryIO]:
    with self.path.open("rb") as file:
      if self.member is None:
        yield file
        return
      with _zip_errors(self.path, self.member):
        with zipfile.ZipFile(file) as archive:
          info = archive.getinfo(self.member)
          if self.member_size is None:
            self.member_size = info.file_size
          with archive.open(info) as stream:
            yield stream

  def _is_mappable(self) -> bool:
    return self.member is None and "://" not in str(self.path)

  def read_all(self) -> np.ndarray:
    """The whole array (memory-mapped for local `.npy` files)."""
    return next(self.iter_chunks(rows_per_chunk=None))

  @property
  def cuts_by_rows(self) -> bool:
    """Whether rows `[start, stop)` can be read alone: a local C-ordered `.npy`, memory-mapped."""
    header = self.header
    return self._is_mappable() and not header.fortran_order and bool(header.shape) and header.nbytes > 0

  def iter_chunks(self, rows_per_chunk: int | None, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yields consecutive row blocks; `None` yields the whole array once.

    `start` and `stop` read only rows `[start, stop)`, of a source that
    `cuts_by_rows` (a Beam partition of part of a file).

    The header's byte count is checked against the bytes present before any
    data is mapped or read. Local `.npy` files are memory-mapped and the pages
    of consumed blocks are released, so resident memory stays near one block
    whatever the file size. Archive members and remote files are streamed block
    by block, never reading past the size the header declares.

    Raises:
      SourceError: if the data is shorter or longer than the header says, or
        the archive is damaged.
    """
    if rows_per_chunk is not None and self.header.shape:
      _row_count(self.header, self.name)  # bounds the rows the loops below yield
    if (start, stop) != (0, None):
      if rows_per_chunk is None or not self.cuts_by_rows or not 0 <= start <= (stop or 0) <= self.header.shape[0]:
        raise ValueError(f"{self.name}: rows [{start}, {stop}) cannot be read alone.")
      yield from self._iter_mapped(rows_per_chunk, start, stop)
      return
    if self._is_mappable():
      yield from self._iter_mapped(rows_per_chunk)
    else:
      yield from self._iter_streamed(rows_per_chunk)

  def _check_size(self, available: int) -> None:
    """Compares the data bytes present with the header's count, exactly."""
    header = self.header
    if available < header.nbytes:
      found = (
          f"{header.data_offset + available} bytes on disk, header needs "
          f"{header.data_offset + header.nbytes}"
          if self.member is None
          else f"expected {header.nbytes} data bytes, found {available}"
      )
      raise _unreadable(
          self.name, f"truncated: {found}",
          "The file was cut short (an interrupted copy or write); copy or save it again.",
      )
    if available > header.nbytes:
      found = (
          f"{available - header.nbytes} trailing bytes: the header's shape "
          f"{header.shape} of {header.dtype.str} accounts for {header.nbytes} data "
          f"bytes but {available} follow it"
          if self.member is None
          else f"the archive declares {available} data bytes for this member but its "
          f"header's shape {header.shape} of {header.dtype.str} accounts for {header.nbytes}"
      )
      raise _unreadable(
          self.name, found,
          "The header does not describe the data (edited, appended to, or a forged "
          "archive); save the array again with np.save / np.savez.",
      )

  def _iter_mapped(self, rows_per_chunk: int | None, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    header = self.header
    with open(self.path, "rb") as file:  # noqa: PTH123 - mmap needs an OS file
      size = file.seek(0, 2)
      self._check_size(size - header.data_offset)
      if header.nbytes == 0:  # no data bytes: nothing to map
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
    stop = len(array) if stop is None else stop
    released = (header.data_offset + start * row_bytes) // _PAGE * _PAGE
    for first in range(start, stop, rows_per_chunk):
      yield array[first : min(first + rows_per_chunk, stop)]
      done = header.data_offset + min(first + rows_per_chunk, stop) * row_bytes
      release_to = (done // _PAGE) * _PAGE
      if release_to > released:
        # Consumed pages are dropped from this process; reading them again
        # would fault them back in from the file, so nothing is lost.
        mapped.madvise(mmap.MADV_DONTNEED, released, release_to - released)
        released = release_to

  def _iter_streamed(self, rows_per_chunk: int | None) -> Iterator[np.ndarray]:
    header = self.header
    zip_errors = _zip_errors(self.path, self.member) if self.member else contextlib.nullcontext()
    with self._open() as stream, zip_errors:
      if self.member is None:
        size = stream.seek(0, 2)
        stream.seek(0)
      else:
        size = self.member_size
      self._check_size(size - header.data_offset)
      stream.read(header.data_offset)  # skip the header again
      whole = rows_per_chunk is None or header.fortran_order or not header.shape
      if whole and header.nbytes > _whole_read_limit():
        raise errors.SourceError(
            errors.with_hint(
                f"{self.name}: the array has {header.nbytes} bytes and is read "
                f"whole (layout='files' or Fortran order), more than half this "
                "machine's memory",
                "Save it as a C-ordered .npy file (memory-mapped, read in row "
                "blocks) and use layout='rows'.",
            )
        )
      if whole:
        yield self._from_bytes(stream.read(header.nbytes), header.shape)
      else:
        row_shape = header.shape[1:]
        for start in range(0, header.shape[0], rows_per_chunk):
          rows = min(rows_per_chunk, header.shape[0] - start)
          yield self._from_bytes(stream.read(rows * header.row_bytes), (rows, *row_shape))
      # Reading to the end is also what makes zipfile check the member's CRC.
      if stream.read(1):
        raise _unreadable(self.name, "trailing bytes after the data the header declares")

  def _from_bytes(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    expected = self.header.dtype.itemsize * math.prod(shape)
    if len(data) != expected:
      raise _unreadable(
          self.name,
          f"truncated: expected {expected} data bytes, found {len(data)}",
          "The file was cut short (an interrupted copy or write); copy or save it again.",
      )
    order = "F" if self.header.fortran_order else "C"
    return np.ndarray(shape, self.header.dtype, buffer=data, order=order)


def rows_per_chunk(header: ArrayHeader) -> int:
  """How many rows of this array make about `CHUNK_BYTES`."""
  return max(1, CHUNK_BYTES // max(1, header.row_bytes))


def npz_sources(path: epath.Path) -> list[ArraySource]:
  """The `.npy` members of an `.npz` archive, in archive order, headers read.

  The archive is opened once for all members, so an archive of many members
  costs one directory read.

  Raises:
    SourceError: if the file is not an intact zip archive of `.npy` arrays.
  """
  with path.open("rb") as file, _zip_errors(path, None):
    try:
      archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as error:
      raise _unreadable(
          str(path), f"not a valid .npz (zip) archive ({error})",
          "Save it with np.savez, or copy it again if the copy was cut short.",
      ) from error
    with archive:
      infos = archive.infolist()
      _check_npz_names(path, [info.filename for info in infos])
      sources = []
      for info in infos:
        name = f"{path}[{info.filename}]"
        with _zip_errors(path, info.filename), archive.open(info) as stream:
          header = read_header(stream, name)
        sources.append(ArraySource(path, info.filename, header, info.file_size))
  return sources


def _check_npz_names(path: epath.Path, names: list[str]) -> None:
  not_arrays = [name for name in names if not name.endswith(".npy")]
  if not_arrays or not names:
    found = f"members that are not .npy arrays: {not_arrays[:10]}" if not_arrays else "no members"
    raise _unreadable(
        str(path), f"archive holds {found}", "Save it with np.savez / np.savez_compressed.",
    )
  repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
  if repeated:
    raise _unreadable(
        str(path), f"archive holds members {repeated} more than once (np.load would "
        "read only the last)", "Write the archive again with np.savez.",
    )

