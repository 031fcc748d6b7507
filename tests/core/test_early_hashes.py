"""Shards hashed ahead (`croissant.hash_soon`) give croissant.json the checksums of the files as they are."""

from __future__ import annotations

import hashlib
import os

from etils import epath

from tfds_builders.core import croissant


def _file(path: epath.Path, size: int) -> epath.Path:
  path.write_bytes(os.urandom(size))
  return path


def test_a_file_hashed_ahead_is_taken_after_a_rename(tmp_path):
  early = croissant.EarlyHashes()
  piece = _file(epath.Path(tmp_path) / "piece.tmp", 3_000_000)
  expected = hashlib.sha256(piece.read_bytes()).hexdigest()
  early.submit(piece)
  shard = piece.rename(epath.Path(tmp_path) / "shard-00000-of-00001")
  taken = early.take(shard)
  assert taken is not None and (taken.sha256, taken.size) == (expected, 3_000_000)
  assert early.take(shard) is None  # taken once


def test_a_file_changed_after_it_was_hashed_is_hashed_again(tmp_path):
  early = croissant.EarlyHashes()
  shard = _file(epath.Path(tmp_path) / "shard", 100_000)
  early.submit(shard)
  for hashing, _ in early._pending.values():  # pylint: disable=protected-access  # hashed before the change
    hashing.result()
  with open(shard, "ab") as out:  # noqa: PTH123
    out.write(b"more")
  assert early.take(shard) is None
  assert early.take(_file(epath.Path(tmp_path) / "other", 10)) is None  # never submitted


def test_checksums_take_early_hashes_and_compute_the_rest(tmp_path):
  paths = [_file(epath.Path(tmp_path) / f"shard-{i}", 200_000 + i) for i in range(3)]
  croissant.hash_soon(paths[0])
  croissant.hash_soon(paths[1])
  with open(paths[1], "ab") as out:  # noqa: PTH123  # changed after it was handed over
    out.write(b"x")
  checksums = croissant._checksums(paths)  # pylint: disable=protected-access
  assert {path: (c.sha256, c.size) for path, c in checksums.items()} == {
      path: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().length) for path in paths}
