"""The compiled walk that finds where a shard cut falls in a piece: window by window, in bounds."""

from __future__ import annotations

import pytest

from tfds_builders.core import errors
from tfds_builders.core import shard_writer
from tfds_builders.core import wire

from tests import helpers


def _piece(tmp_path, sizes: list[int]):
  path = tmp_path / "piece.tfrecord"
  helpers.write_records(path, [bytes([index % 251]) * size for index, size in enumerate(sizes)])
  return path


def _ends(sizes: list[int]) -> list[int]:
  """Frame ends from the record sizes alone: the oracle."""
  ends, position = [], 0
  for size in sizes:
    position += size + wire.FRAME_BYTES
    ends.append(position)
  return ends


@pytest.mark.parametrize("window", [4096, 1 << 20, 16 << 20], ids=["4KiB", "1MiB", "default"])
@pytest.mark.parametrize("skip, count", [(0, 4097), (100, 9000), (0, 12000), (5000, 7000)])
def test_the_windowed_walk_ends_where_the_frames_end(tmp_path, monkeypatch, window, skip, count):
  sizes = [(index * 37) % 300 for index in range(12000)] + [9000, 0, 9000]  # frames larger than a window too
  path = _piece(tmp_path, sizes)
  monkeypatch.setattr(shard_writer, "_WALK_WINDOW_BYTES", window)
  ends = _ends(sizes)
  with path.open("rb") as handle:
    handle.seek(ends[skip - 1] if skip else 0)
    skipped = shard_writer._skip_frames(handle, count)  # pylint: disable=protected-access
    assert handle.tell() == ends[skip + count - 1]
    assert skipped == ends[skip + count - 1] - (ends[skip - 1] if skip else 0)


def test_a_piece_cut_short_is_a_source_error_not_a_read_past_its_end(tmp_path, monkeypatch):
  sizes = [50] * 6000
  path = _piece(tmp_path, sizes)
  monkeypatch.setattr(shard_writer, "_WALK_WINDOW_BYTES", 4096)
  with path.open("r+b") as handle:
    handle.truncate(_ends(sizes)[4999] + 3)  # 5000 whole frames and 3 bytes of the next header
  with path.open("rb") as handle, pytest.raises(errors.SourceError, match="the piece ended early"):
    shard_writer._skip_frames(handle, 5500)  # pylint: disable=protected-access
