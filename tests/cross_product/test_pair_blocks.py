"""The compiled pair path (core.fast.pair_blocks) writes the bytes the per-pair Python path wrote, and checks its input."""

from __future__ import annotations

import functools
import itertools
import json
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders.core import shard_writer
from tfds_builders.core.fast import pair_blocks
from tfds_builders.core.fast import record_blocks
from tfds_builders.cross_product import Builder
from tfds_builders.cross_product import PairSpace
from tfds_builders.cross_product import pairs
from tfds_builders.cross_product import spill

from tests import helpers
from tests.cross_product import test_cross_product as cases

# ------------------------------------------------------------- reference --


def per_pair_generate(
    space: PairSpace, left: spill.SpillFile, right: spill.SpillFile, left_start: int, left_stop: int
) -> Iterator[tuple[int, bytes]]:
  """The per-pair path this change replaced (pairs.py before issue #17): `(key, left + right)` for every kept pair."""
  with left.open() as left_reader, right.open() as right_reader:
    rights = right_reader.load(0, right.num_records)
    rows = itertools.chain.from_iterable(left_reader.chunks(left_start, left_stop))
    for i, left_record in enumerate(rows, start=left_start):
      for j in space.kept(i, space.first_right(i), space.num_right).tolist():
        yield space.key(i, j), left_record + rights[j]


def tf_framed(records: Sequence[bytes], tmp_path: pathlib.Path) -> bytes:
  """The bytes TensorFlow's TFRecordWriter writes for `records`."""
  path = tmp_path / "reference.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  return path.read_bytes()


def shard_bytes(builder: tfds.core.DatasetBuilder) -> dict[str, object]:
  """The shards' and features.json's bytes, and the provenance but for its build time."""
  root = pathlib.Path(builder.data_dir)
  files: dict[str, object] = {
      path.name: path.read_bytes() for path in sorted(root.iterdir())
      if path.is_file() and path.name not in ("dataset_info.json", "croissant.json", "metadata.json")
  }
  metadata = json.loads((root / "metadata.json").read_text())
  del metadata["provenance"]["built_at"]
  files["metadata.json"] = metadata
  return files


def column(items: Sequence[bytes]) -> record_blocks.ByteColumn:
  return record_blocks.ByteColumn.from_items(list(items))


def all_blocks(left: Sequence[bytes], right: Sequence[bytes], **options) -> list:
  options = {"left_base": 0, "right_base": 0, "num_right": len(right), "diagonal": False, **options}
  return list(pair_blocks.framed_pairs(column(left), (0, len(left)), column(right), **options))


# ------------------------------------------------------ the kernel alone --


_SIZES = [0, 1, 7, 8, 9, 127, 128, 300, 16383, 16384, 70000]  # up to > 64 KiB, across varint widths


@pytest.mark.parametrize("block_bytes, block_pairs", [(pair_blocks.BLOCK_BYTES, pair_blocks.BLOCK_PAIRS),
                                                      (1, 1), (200, 5), (70_000, 4)])
def test_frames_equal_tensorflow_for_every_size_and_block_cut(tmp_path, block_bytes, block_pairs):
  rng = np.random.default_rng(0)
  left = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in _SIZES[::2]]
  right = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in _SIZES]
  blocks = all_blocks(left, right, block_bytes=block_bytes, block_pairs=block_pairs, num_right=20)
  assert all(0 < len(keys) <= block_pairs for keys, _ in blocks)
  assert all(frames.ends[-1] <= max(block_bytes, 140_000 + 16) for _, frames in blocks)
  expected = [a + b for a in left for b in right]
  assert b"".join(frames.data.tobytes() for _, frames in blocks) == tf_framed(expected, tmp_path)
  assert [k for keys, _ in blocks for k in keys.tolist()] == [i * 20 + j for i in range(len(left)) for j in range(11)]
  if block_pairs == 4:  # 66 pairs, not a multiple of the block: the last block holds the rest
    assert [len(keys) for keys, _ in blocks][-1] <= 4 and len(blocks) >= 17


def test_a_run_longer_than_a_block_resumes_mid_row_and_across_rows():
  left, right = [b"L%d" % i for i in range(3)], [b"r%03d" % j for j in range(50)]
  blocks = all_blocks(left, right, block_pairs=7, left_base=10, right_base=100, num_right=1000)
  assert [len(keys) for keys, _ in blocks] == [7] * 21 + [3]  # 150 pairs
  keys = np.concatenate([keys for keys, _ in blocks])
  assert keys.tolist() == [(10 + i) * 1000 + 100 + j for i in range(3) for j in range(50)]
  records = [r for _, frames in blocks for r in frames.records()]
  assert records == [a + b for a in left for b in right]


def test_diagonal_pairs_only_j_after_i():
  items = [b"%d" % k for k in range(6)]
  blocks = all_blocks(items, items[2:], diagonal=True, right_base=2, num_right=6, block_pairs=2)
  keys = [k for keys, _ in blocks for k in keys.tolist()]
  assert keys == [i * 6 + j for i in range(6) for j in range(max(i + 1, 2), 6)]
  assert [r for _, frames in blocks for r in frames.records()] == [
      items[i] + items[j] for i in range(6) for j in range(max(i + 1, 2), 6)]


def test_empty_and_single_inputs():
  assert all_blocks([], [b"x"]) == [] and all_blocks([b"x"], []) == []
  ((keys, frames),) = all_blocks([b""], [b""])
  assert keys.tolist() == [0] and frames.records() == [b""]
  assert all_blocks([b"a"], [b"b"], diagonal=True) == []  # combinations of one record: none


@pytest.mark.parametrize("rate, kept", [(1.0, 12000), (0.3, 3600), (1e-12, 0)])
def test_sampling_keeps_exactly_the_pairs_of_the_permutation(rate, kept):
  space = PairSpace("product", num_left=40, num_right=300, sample_rate=rate, sample_seed=7)
  left, right = [b"%d" % i for i in range(40)], [b"-%d" % j for j in range(300)]
  blocks = all_blocks(left, right, row_bases=space.row_bases(0, 40), sample=space.sample_arguments(), block_pairs=999)
  keys = [k for keys, _ in blocks for k in keys.tolist()]
  assert len(keys) == space.sample_count == kept
  assert keys == [space.key(i, j) for i in range(40) for j in space.kept(i, 0, 300).tolist()]
  if 0 < kept < 12000:  # the sample is {perm(t) : t < K}
    assert keys == sorted(space.permutation(np.arange(kept)).tolist())


@pytest.mark.parametrize("num_left", [2, 3, 9])
def test_combinations_sampling_in_the_kernel_matches_the_permutation(num_left):
  space = PairSpace("combinations", num_left, num_left, 0.5, 11)
  items = [b"%d" % i for i in range(num_left)]
  blocks = all_blocks(items, items, diagonal=True, row_bases=space.row_bases(0, num_left),
                      sample=space.sample_arguments())
  keys = [k for keys, _ in blocks for k in keys.tolist()]
  expected = sorted(space.pair(p) for p in space.permutation(np.arange(space.sample_count)).tolist())
  assert keys == [space.key(i, j) for i, j in expected]


# -------------------------------------------------- the wrapper's checks --


def _broken(offsets: Sequence[int], data: bytes = b"abcdef") -> record_blocks.ByteColumn:
  return record_blocks.ByteColumn(np.frombuffer(data, np.uint8), np.asarray(offsets, np.int64))


@pytest.mark.parametrize("bad, fragment", [
    (_broken([0, 4, 2, 6]), "offsets must rise"),
    (_broken([0, 3, 7]), "offsets must rise"),
    (_broken([-1, 3]), "offsets must rise"),
    (_broken([]), "non-empty 1-D int64"),
    (record_blocks.ByteColumn(np.frombuffer(b"abcd", np.uint8), np.array([0, 4], np.int32)), "int64"),
    (record_blocks.ByteColumn(np.zeros(4, np.int16), np.array([0, 4], np.int64)), "uint8"),
    (record_blocks.ByteColumn(np.zeros(8, np.uint8)[::2], np.array([0, 4], np.int64)), "contiguous"),
])
@pytest.mark.parametrize("side", ["left", "right"])
def test_inconsistent_columns_are_refused_before_the_kernel(bad, fragment, side):
  good = column([b"ab", b"cd"])
  left, right = (bad, good) if side == "left" else (good, bad)
  rows = (0, 0) if side == "left" else (0, 2)
  with pytest.raises(ValueError, match=fragment) as excinfo:
    next(pair_blocks.framed_pairs(left, rows, right, left_base=0, right_base=0, num_right=2, diagonal=False))
  assert f"the {side} column" in str(excinfo.value)


@pytest.mark.parametrize("options, fragment", [
    ({"rows": (0, 3)}, "left_rows"),
    ({"rows": (2, 1)}, "left_rows"),
    ({"row_bases": np.zeros(1, np.int64), "sample": (1, 4, 2, 2, np.zeros(4, np.uint64))}, "1 row bases for 2"),
    ({"row_bases": np.zeros(2, np.int64)}, "got no `sample`"),
    ({"left_base": -1}, "must not be negative"),
    ({"block_pairs": 0}, "block sizes"),
    ({"num_right": 2**62}, "overflow int64"),
])
def test_rows_keys_and_sizes_are_checked(options, fragment):
  options = {"rows": (0, 2), "left_base": 0, "right_base": 0, "num_right": 2, "diagonal": False, **options}
  rows = options.pop("rows")
  with pytest.raises(ValueError, match=fragment):
    next(pair_blocks.framed_pairs(column([b"a", b"b"]), rows, column([b"c", b"d"]), **options))


# ----------------------------------------- builds: new path vs per-pair --


def _inputs(tmp_path: pathlib.Path, num_left: int, num_right: int) -> dict:
  left, right = cases.make_inputs(tmp_path, cases.left_rows(num_left), cases.right_rows(num_right))
  return {"left": left, "right": right}


_BUILDS = {
    "product-prefix": ({}, {}),
    "product-left-wins-sampled": ({"collision_policy": "left_wins", "sample_rate": 0.3, "sample_seed": 5}, {}),
    "product-right-wins-blocked": ({"collision_policy": "right_wins", "memory_budget_bytes": 150,
                                    "left_rows_per_partition": 3}, {}),
    "product-sampled-blocked": ({"sample_rate": 0.3, "sample_seed": 1, "memory_budget_bytes": 120}, {}),
    "combinations": ({"mode": "combinations"}, {}),
    "combinations-sampled-blocked": ({"mode": "combinations", "sample_rate": 0.3, "sample_seed": 3,
                                      "memory_budget_bytes": 200, "left_rows_per_partition": 2}, {}),
    "shuffled": ({"shuffle": True}, {}),
    "num-shards-3": ({}, {"num_shards": 3}),
    "array-record": ({}, {"file_format": "array_record"}),
    "parquet": ({"sample_rate": 0.3}, {"file_format": "parquet"}),
}


@pytest.mark.parametrize("case", sorted(_BUILDS))
def test_builds_are_byte_identical_to_the_per_pair_path(tmp_path, monkeypatch, case):
  config, options = _BUILDS[case]
  sides = _inputs(tmp_path, 9, 11)
  if config.get("mode") == "combinations":
    del sides["right"]
  file_format = {"file_format": options["file_format"]} if "file_format" in options else {}
  download_config = tfds.download.DownloadConfig(num_shards=options.get("num_shards"))

  def build(folder: str) -> tfds.core.DatasetBuilder:
    builder = helpers.make_builder(Builder, tmp_path / folder, **sides, **config)
    if file_format:
      builder = Builder(config=builder.builder_config, data_dir=str(tmp_path / folder / "tfds"), **file_format)
    builder.download_and_prepare(download_config=download_config)
    return builder

  new = build("new")
  monkeypatch.setattr(pairs, "generate", per_pair_generate)
  old = build("old")
  assert new.info.splits["train"].shard_lengths == old.info.splits["train"].shard_lengths
  assert sum(new.info.splits["train"].shard_lengths) > 0
  assert shard_bytes(new) == shard_bytes(old)


def test_error_policy_without_collisions_is_byte_identical(tmp_path, monkeypatch):
  left = helpers.write_records(tmp_path / "in" / "l.tfrecord", [cases.to_example({"a": i}) for i in range(5)])
  right = helpers.write_records(tmp_path / "in" / "r.tfrecord", [cases.to_example({"b": b"x" * i}) for i in range(4)])
  build = functools.partial(helpers.build, Builder, left=left, right=right, collision_policy="error")
  new = build(tmp_path / "new")
  monkeypatch.setattr(pairs, "generate", per_pair_generate)
  assert shard_bytes(new) == shard_bytes(build(tmp_path / "old"))


def test_generate_streams_blocks_equal_to_the_per_pair_stream(tmp_path, monkeypatch):
  """Large records (> 64 KiB with the index) and a block budget far below a left row's pairs."""
  big = [{"blob": bytes([k]) * (70_000 if k % 3 == 0 else k)} for k in range(5)]
  left, right = cases.make_inputs(tmp_path, big, [{"n": j} for j in range(13)])
  builder = helpers.make_builder(Builder, tmp_path, left=left, right=right, sample_rate=0.5, sample_seed=2,
                                 memory_budget_bytes=100_000)
  builder._data_dir = str(tmp_path / "work")  # pylint: disable=protected-access
  monkeypatch.setattr(pair_blocks, "BLOCK_BYTES", 100_000)
  with builder._build_context(tfds.download.DownloadConfig()) as spilled:  # pylint: disable=protected-access
    assert len(spilled.right.blocks) == 1
    space = builder._plan.space  # pylint: disable=protected-access
    for start, stop in [(0, 5), (1, 4), (4, 5), (2, 2)]:
      blocks = list(pairs.generate(space, spilled.left, spilled.right, start, stop))
      assert all(isinstance(frames, shard_writer.tfrecord_io.FramedRecords) for _, frames in blocks)
      expected = list(per_pair_generate(space, spilled.left, spilled.right, start, stop))
      assert [(int(key), record) for key, record in shard_writer.unblocked(blocks)] == expected
      if stop - start == 5:
        assert len(blocks) > 5  # pairs of 70 KB: several blocks per left row


@pytest.mark.slow  # Beam's DirectRunner: about 10 s
def test_beam_build_is_byte_identical_to_the_local_per_pair_path(tmp_path, monkeypatch):
  config = dict(_inputs(tmp_path, 7, 8), sample_rate=0.5, sample_seed=4, memory_budget_bytes=150,
                left_rows_per_partition=2)
  on_beam = helpers.make_builder(Builder, tmp_path / "beam", **config)
  on_beam.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_runner="DirectRunner"))
  monkeypatch.setattr(pairs, "generate", per_pair_generate)
  local = helpers.build(Builder, tmp_path / "local", **config)
  assert on_beam.info.metadata["provenance"]["layout"]["partitions"] == 4
  assert shard_bytes(on_beam) == shard_bytes(local) | {"metadata.json": shard_bytes(on_beam)["metadata.json"]}


def test_right_rows_beyond_num_right_are_refused_before_keys_repeat():
  blocks = pair_blocks.PairBlocks(num_right=2, diagonal=False)
  with pytest.raises(ValueError, match="exceed num_right 2"):
    list(blocks.add(column([b"L"]), (0, 1), column([b"a", b"b"]), left_base=0, right_base=1))


def test_short_runs_added_one_after_another_fill_whole_blocks():
  blocks = pair_blocks.PairBlocks(num_right=100, diagonal=False, block_pairs=10)
  out = []
  for i in range(7):  # a left row with a right block of 3 at a time, as a blocked right side is walked
    out += blocks.add(column([b"L%d" % i]), (0, 1), column([b"a", b"bb", b""]), left_base=i, right_base=40)
  out += blocks.flush()
  assert [len(keys) for keys, _ in out] == [10, 10, 1]
  assert [k for keys, _ in out for k in keys.tolist()] == [i * 100 + 40 + j for i in range(7) for j in range(3)]
  assert [r for _, frames in out for r in frames.records()] == [
      b"L%d" % i + r for i in range(7) for r in (b"a", b"bb", b"")]
  assert list(blocks.flush()) == []
