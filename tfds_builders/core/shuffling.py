"""Reorders a split by hashed key, as TFDS's writer does, in bounded memory (an external merge sort)."""

from __future__ import annotations

import heapq
import operator
import struct
import uuid
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from etils import epath
import numpy as np

from tfds_builders import tfds_internals
from tfds_builders.core import errors
from tfds_builders.core import progress
from tfds_builders.core import shard_writer

# Examples held in memory before a sorted run is spilled to the work dir.
# TFDS's Shuffler holds 1 GiB of payload (and more in Python objects) and
# then keeps 1000 bucket files open; a run is written in one pass instead.
DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
# Python's cost of one buffered example beyond its bytes: the tuple, the
# 128-bit hash and key objects and the list slot (measured: ~190 bytes).
_OVERHEAD_BYTES = 200
# Runs merged at once; more runs are first merged into bigger ones, so open
# files and read buffers stay bounded however large the split is.
MAX_MERGE_RUNS = 64
_WRITE_CHUNK_BYTES = 1024 * 1024
# A run record: hashed key, key type, key length, example length.
_HEADER = struct.Struct("<16sBIQ")
_BYTES_KEY, _STR_KEY, _INT_KEY = 0, 1, 2

Entry = tuple[int, object, bytes]  # (TFDS's 128-bit hashed key, key, serialized example)


def _encode_key(key: object) -> tuple[int, bytes]:
  if isinstance(key, bytes):
    return _BYTES_KEY, key
  if isinstance(key, str):
    return _STR_KEY, key.encode("utf-8")
  return _INT_KEY, str(int(key)).encode("ascii")  # int() so a bool key reads back


def _decode_key(kind: int, data: bytes) -> str | int | bytes:
  if kind == _BYTES_KEY:
    return data
  if kind == _STR_KEY:
    return data.decode("utf-8")
  return int(data)


class _Runs:
  """Sorted runs spilled to one private folder of the work dir, removed on `close()`."""

  def __init__(self, work_dir: epath.Path):
    self.folder = epath.Path(work_dir) / f"shuffle-{uuid.uuid4().hex}"
    self._count = 0
    self.paths: list[epath.Path] = []

  def write(self, entries: Iterable[Entry]) -> None:
    """Spills sorted entries as the next run."""
    self.folder.mkdir(parents=True, exist_ok=True)
    path = self.folder / f"run-{self._count:05d}"
    self._count += 1
    with path.open("wb") as run:
      chunk: list[bytes] = []
      chunk_bytes = 0
      for hashed, key, data in entries:
        kind, key_bytes = _encode_key(key)
        chunk += (_HEADER.pack(hashed.to_bytes(16, "big"), kind, len(key_bytes), len(data)), key_bytes, data)
        chunk_bytes += _HEADER.size + len(key_bytes) + len(data)
        if chunk_bytes >= _WRITE_CHUNK_BYTES:
          run.write(b"".join(chunk))
          chunk, chunk_bytes = [], 0
      run.write(b"".join(chunk))
    self.paths.append(path)

  def read(self, path: epath.Path) -> Iterator[Entry]:
    """A run's entries; the run's file is deleted once read to the end."""
    with path.open("rb") as run:
      yield from _read_entries(run)
    path.unlink()

  def close(self) -> None:
    """Deletes the folder and every run in it (also after a failure or an early stop)."""
    self.folder.rmtree(missing_ok=True)
    self.paths = []


def _read_entries(run: BinaryIO) -> Iterator[Entry]:
  read = run.read
  header_size = _HEADER.size
  unpack = _HEADER.unpack
  while header := read(header_size):
    hashed, kind, key_size, data_size = unpack(header)
    key = _decode_key(kind, read(key_size))
    yield int.from_bytes(hashed, "big"), key, read(data_size)


def _merged(runs: _Runs, memory: list[Entry], salt: str) -> Iterator[Entry]:
  """Every run and the sorted in-memory entries, merged by hashed key."""
  if runs.paths:
    progress.phase("Shuffling %s: merging %d sorted runs spilled to %s.", salt, len(runs.paths), runs.folder)
  while len(runs.paths) > MAX_MERGE_RUNS:
    first, runs.paths = runs.paths[:MAX_MERGE_RUNS], runs.paths[MAX_MERGE_RUNS:]
    runs.write(heapq.merge(*map(runs.read, first), key=operator.itemgetter(0)))
  sources = [*map(runs.read, runs.paths), iter(memory)]
  return heapq.merge(*sources, key=operator.itemgetter(0))


def _without_duplicates(entries: Iterable[Entry], salt: str) -> Iterator[tuple[object, bytes]]:
  previous_hash, previous_key = None, None
  for hashed, key, data in entries:
    if hashed == previous_hash:
      same = "" if key == previous_key else f" (and {previous_key!r}, which hashes the same)"
      raise errors.SourceError(errors.with_hint(
          f"Split {salt!r} has two examples with the key {key!r}{same}",
          "Keys must be unique within a split: remove the duplicate record from the source "
          "or choose a key (column) whose values are unique.",
      ))
    previous_hash, previous_key = hashed, key
    yield key, data


def shuffled(
    examples: Iterable[shard_writer.StreamItem],
    work_dir: epath.PathLike,
    salt: str,
    *,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> Iterator[tuple[object, bytes]]:
  """Every example, in the order of TFDS's salted key hash (`tfds_internals.key_hasher`), as TFDS writes them.

  Examples are buffered up to `memory_bytes`, then sorted and spilled to a
  run file under `work_dir`; the runs are merged at the end. The order is
  the one TFDS's `Shuffler` gives the same keys and salt (the split's name),
  so it is the same on every run and machine.

  Args:
    examples: `(key, serialized)` pairs and `(keys, FramedRecords)` blocks;
      keys are str, int or bytes (numpy scalars are taken as their value).
    work_dir: Where the runs are spilled; they are deleted when the iterator
      finishes, fails or is closed.
    salt: The hash salt, TFDS uses the split's name.
    memory_bytes: Roughly how much memory the buffered examples may use.

  Yields:
    `(key, serialized)` pairs in hashed-key order.

  Raises:
    SourceError: if two examples have the same key (naming it).
  """
  hash_key = tfds_internals.key_hasher(salt)
  runs = _Runs(epath.Path(work_dir))
  memory: list[Entry] = []
  memory_used = 0
  by_hash = operator.itemgetter(0)
  try:
    for key, data in shard_writer.unblocked(examples):
      if isinstance(key, (np.generic, np.ndarray)):  # a block's numpy keys: hashed and kept as their value
        key = key.item()
      memory.append((hash_key(key), key, data))
      memory_used += len(data) + _OVERHEAD_BYTES + (0 if isinstance(key, int) else len(key))
      if memory_used >= memory_bytes:
        memory.sort(key=by_hash)
        runs.write(memory)
        memory, memory_used = [], 0
    memory.sort(key=by_hash)
    yield from _without_duplicates(_merged(runs, memory, salt), salt)
  finally:
    runs.close()
