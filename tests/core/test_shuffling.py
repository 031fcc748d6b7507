"""core.shuffling: TFDS's hashed-key order, in bounded memory, with its spill files cleaned up."""

from __future__ import annotations

import collections
import json
import logging
import re
import sys

import numpy as np
import pytest
from tensorflow_datasets.core import hashing
from tensorflow_datasets.core import shuffle as tfds_shuffle

from tests import faults
from tfds_builders.core import errors
from tfds_builders.core import shuffling
from tfds_builders.core.fast import record_blocks


def _mixed_stream(count: int) -> list:
  """str, int and bytes keys (apart from one another in text), and a block with numpy keys."""
  items = []
  for i in range(count):
    key = (f"file-{i}.jpg", 10**20 + i, b"row\x00%d" % i)[i % 3]
    items.append((key, b"example %d " % i * (i % 7 + 1)))
  block_keys = np.arange(count, count + 50, dtype=np.int64)
  items.append((block_keys, record_blocks.framed([b"block record %d" % k for k in block_keys])))
  return items


def _expected(items: list, salt: str) -> list[tuple[object, bytes]]:
  pairs = [(int(k) if isinstance(k, np.integer) else k, v)
           for key, value in items
           for k, v in (zip(key, value.records()) if not isinstance(value, bytes) else [(key, value)])]
  hasher = hashing.Hasher(salt)
  return sorted(pairs, key=lambda pair: hasher.hash_key(pair[0]))


@pytest.mark.parametrize("memory_bytes", [
    pytest.param(1 << 30, id="in-memory"),
    pytest.param(6_000, id="spilled-runs"),  # ~23 examples a run: 130 runs, merged in two passes
])
def test_the_order_is_tfds_hashed_key_order_and_spills_are_removed(tmp_path, caplog, memory_bytes):
  items = _mixed_stream(3000)
  expected = _expected(items, "train")

  stream = shuffling.shuffled(items, tmp_path, "train", memory_bytes=memory_bytes)
  with caplog.at_level(logging.INFO):
    first = next(stream)
  merges = [int(m[1]) for r in caplog.records if (m := re.search(r"train: merging (\d+) sorted runs", r.getMessage()))]
  spilled = [p for p in tmp_path.rglob("run-*")]
  rest = list(stream)
  again = list(shuffling.shuffled(items, tmp_path, "train", memory_bytes=memory_bytes))

  assert [first, *rest] == expected == again
  assert len(expected) == 3050
  assert {type(key) for key, _ in rest} == {str, int, bytes}  # keys come back as given (numpy ones as int)
  if memory_bytes < 1 << 20:
    # Runs are numbered as written: more than one merge takes, so a first pass merged some.
    assert max(int(path.name[4:]) for path in spilled) > shuffling.MAX_MERGE_RUNS, spilled
    assert len(merges) == 1 and merges[0] > shuffling.MAX_MERGE_RUNS
  else:
    assert spilled == [] and merges == []
  assert list(tmp_path.iterdir()) == []
  # Another salt (split) gives another order of the same examples.
  other = list(shuffling.shuffled(items, tmp_path, "test", memory_bytes=memory_bytes))
  assert other != expected and collections.Counter(other) == collections.Counter(expected)


def test_the_order_equals_tfds_shuffler_output(tmp_path):
  items = [(f"key-{i}", b"value-%d" % i) for i in range(500)]
  shuffler = tfds_shuffle.Shuffler(tmp_path / "tfds", hash_salt="validation")
  for key, value in items:
    shuffler.add(key, value)
  tfds_values = [value for _, value in shuffler]

  ours = [value for _, value in shuffling.shuffled(items, tmp_path / "ours", "validation", memory_bytes=4096)]

  assert ours == tfds_values


@pytest.mark.parametrize("memory_bytes", [pytest.param(1 << 30, id="in-memory"), pytest.param(2000, id="spilled")])
def test_a_duplicate_key_is_refused_by_name_and_spills_are_removed(tmp_path, memory_bytes):
  items = [(f"img-{i}", b"x" * 50) for i in range(200)] + [("img-117", b"again")]
  with pytest.raises(errors.SourceError) as raised:
    list(shuffling.shuffled(items, tmp_path, "train", memory_bytes=memory_bytes))
  faults.assert_message(raised.value, ["Split 'train'", "two examples with the key 'img-117'", "unique"])
  assert list(tmp_path.iterdir()) == []

  # "7" and 7 hash alike in TFDS: both keys are named.
  with pytest.raises(errors.SourceError, match=r"key 7 \(and '7', which hashes the same\)"):
    list(shuffling.shuffled([("7", b"a"), (7, b"b")], tmp_path, "train"))


def test_closing_early_removes_the_spills(tmp_path):
  items = ((i, b"y" * 100) for i in range(5000))
  stream = shuffling.shuffled(items, tmp_path, "train", memory_bytes=20_000)
  next(stream)
  assert len(list(tmp_path.rglob("run-*"))) > 10
  stream.close()
  assert list(tmp_path.iterdir()) == []


_MEMORY_SCRIPT = """
import json, sys
from tfds_builders.core import shuffling

def peak_mib():
  # getrusage's ru_maxrss survives exec: a child of pytest starts at pytest's own peak. VmHWM does not.
  status = open("/proc/self/status").read()
  return int(status.split("VmHWM:")[1].split()[0]) / 1024

def stream(total_mib, record_bytes=4096):
  payload = bytes(record_bytes - 8)
  for i in range(total_mib * 1024 * 1024 // record_bytes):
    yield i, i.to_bytes(8, "little") + payload

def run(memory_bytes):
  before = peak_mib()
  count = size = 0
  for key, data in shuffling.shuffled(stream(100), sys.argv[1], "train", memory_bytes=memory_bytes):
    count, size = count + 1, size + len(data)
  return {"count": count, "bytes": size, "growth_mib": peak_mib() - before}

list(shuffling.shuffled(stream(1), sys.argv[1], "warm", memory_bytes=1 << 20))  # imports and allocator warm
bounded = run(8 * 1024 * 1024)
unbounded = run(1 << 30)
print(json.dumps({"bounded": bounded, "unbounded": unbounded}))
"""


@pytest.mark.slow
def test_memory_stays_bounded_on_a_stream_larger_than_the_bound(tmp_path):
  script = tmp_path / "measure.py"
  script.write_text(_MEMORY_SCRIPT)
  spill = tmp_path / "spill"
  spill.mkdir()
  result = faults.run_command([sys.executable, str(script), str(spill)], PYTHONPATH=str(faults.REPO))
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  print(figures)

  for run in ("bounded", "unbounded"):
    assert figures[run]["count"] == 25600 and figures[run]["bytes"] == 100 * 1024 * 1024
  # 100 MiB went through an 8 MiB bound; held all at once it costs ~100 MiB.
  assert figures["bounded"]["growth_mib"] < 20, figures
  assert figures["unbounded"]["growth_mib"] > 90, figures
  assert list(spill.iterdir()) == []


@pytest.mark.slow
def test_tfds_build_with_shuffle_stores_tfds_hashed_key_order(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  np.save(tmp_path / "rows.npy", np.arange(1000, dtype=np.int64))
  config = {"name": "shuffled", "shuffle": True, "splits": {"train": [str(tmp_path / "rows.npy")]}}
  faults.tfds_build("numpy_arrays", config, tmp_path / "data")

  (version_dir,) = (tmp_path / "data" / "numpy_arrays" / "shuffled").iterdir()
  builder = tfds.builder_from_directory(str(version_dir))
  stored = [int(example["array"]) for example in tfds.as_numpy(builder.as_dataset(split="train"))]
  hasher = hashing.Hasher("train")  # numpy_arrays keys a row as `<file>:<row, 9 digits>`
  assert stored == sorted(range(1000), key=lambda row: hasher.hash_key(f"rows.npy:{row:09d}"))
  assert not [path for path in (tmp_path / "data").rglob("*") if "shuffle-" in path.name]
