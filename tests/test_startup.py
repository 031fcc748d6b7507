"""A build imports only what it needs: no TensorFlow, Beam or Numba for a small build; frames written without them."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers
from tfds_builders.core import remote
from tfds_builders.core import shard_writer
from tfds_builders.core import tfrecord_io
from tfds_builders.core.fast import record_blocks

_HEAVY = ("tensorflow", "apache_beam", "numba")

# Run in a fresh interpreter: prints the heavy modules imported, and who imported TensorFlow first.
_PROBE = """
import json, sys, traceback
first = []
class Probe:
  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow" and not first:
      stack = traceback.extract_stack()[:-1]
      if not any(frame.name == "find_spec" and "importlib" in frame.filename for frame in stack):
        first.extend(f"{frame.filename}:{frame.lineno}" for frame in stack if "tfds_builders" in frame.filename)
sys.meta_path.insert(0, Probe())
exec(sys.argv[1])
print(json.dumps({"imported": [name for name in %r if name in sys.modules], "tensorflow_by": first}))
""" % (_HEAVY,)

_BUILD_NUMPY_ARRAYS = """
import numpy as np, tempfile, os
from tfds_builders.numpy_arrays import Builder, BuilderConfig
work = tempfile.mkdtemp()
np.save(os.path.join(work, "a.npy"), np.arange(40, dtype=np.float32).reshape(10, 4))
config = BuilderConfig(name="small", splits={"train": [work]})
Builder(config=config, data_dir=os.path.join(work, "out")).download_and_prepare()
"""

_BUILD_DATABASE = """
import tempfile, os
from tfds_builders.database import Builder, BuilderConfig
config = BuilderConfig(name="ten", sqlite_path=%r, query="SELECT * FROM penguins WHERE id <= 10",
                       order_by=["id"], nulls="mask")
Builder(config=config, data_dir=tempfile.mkdtemp()).download_and_prepare()
""" % str(helpers.REPO / "dummy_data" / "database" / "demo.sqlite")


def _probe(code: str) -> dict[str, list[str]]:
  env = {**os.environ, "NO_GCE_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(helpers.REPO)}
  done = subprocess.run([sys.executable, "-c", _PROBE, code], capture_output=True, text=True, env=env,
                        cwd=helpers.REPO, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_every_builder_imports_neither_tensorflow_nor_beam_nor_numba():
  code = "".join(f"import tfds_builders.{name}\n" for name in (
      "numpy_arrays", "database", "cross_product", "concatenated", "augmented", "archive", "parquet_export",
      "registry", "cli"))
  assert _probe(code) == {"imported": [], "tensorflow_by": []}


@pytest.mark.parametrize("build", [_BUILD_NUMPY_ARRAYS, _BUILD_DATABASE], ids=["numpy_arrays", "database"])
def test_a_small_build_imports_neither_beam_nor_numba(build):
  imported = _probe(build)["imported"]
  assert "apache_beam" not in imported and "numba" not in imported


@pytest.mark.parametrize("build", [_BUILD_NUMPY_ARRAYS, _BUILD_DATABASE], ids=["numpy_arrays", "database"])
def test_a_small_build_does_not_import_tensorflow(build):
  assert _probe(build) == {"imported": [], "tensorflow_by": []}


_RECORDS = [b"", b"x", bytes(range(256)) * 3, b"\x00" * 70_000, os.urandom(1000)]


def test_python_framing_equals_the_compiled_framing_and_tensorflows():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  # the reference writer

  framed = shard_writer.python_framed(_RECORDS)
  assert framed == record_blocks.framed(_RECORDS).data.tobytes()
  path = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"tf-{os.getpid()}.tfrecord"
  try:
    with tf.io.TFRecordWriter(str(path)) as writer:
      for record in _RECORDS:
        writer.write(record)
    assert framed == path.read_bytes()
  finally:
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("record_bytes", [10, 20_000, 3_000_000], ids=["python-framed", "compiled", "big"])
def test_a_shard_of_records_and_blocks_holds_their_frames_in_order(tmp_path, record_bytes):
  from etils import epath  # pylint: disable=import-outside-toplevel

  records = [os.urandom(record_bytes + i) for i in range(7)]
  shard = shard_writer._TFRecordShard(epath.Path(tmp_path / "s.tfrecord"))  # pylint: disable=protected-access
  shard.write(records[0])
  shard.write(records[1])
  shard.write_block(record_blocks.framed(records[2:4]))
  for record in records[4:]:
    shard.write(record)
  shard.close()
  assert (tmp_path / "s.tfrecord").read_bytes() == shard_writer.python_framed(records)


def test_local_glob_and_walk_match_tensorflows(tmp_path, monkeypatch):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  # the reference

  for name in ("a/1.npy", "a/.h.npy", "a/.hid/2.npy", "b/3.npy", "c [x]/4.npy", "top.npy"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  (tmp_path / "a" / "linked").symlink_to("../b")
  (tmp_path / "a" / "broken").symlink_to("nothing")
  monkeypatch.chdir(tmp_path)
  for pattern in ("*", "*/*", "a/*", "*/*.npy", "a/.*", "?/[0-9].npy", "**/*.npy", "c [[]x]/*", "none/*",
                  f"{tmp_path}/*/*", "a/linked/*"):
    assert sorted(remote.glob(pattern)) == sorted(tf.io.gfile.glob(pattern)), pattern
  for top in (str(tmp_path), f"{tmp_path}/", "a", str(tmp_path / "none")):
    ours = sorted((folder, sorted(dirs), sorted(files)) for folder, dirs, files in remote.walk(top))
    tfs = sorted((folder, sorted(dirs), sorted(files)) for folder, dirs, files in tf.io.gfile.walk(top))
    assert ours == tfs, top


def test_framed_records_block_type_is_the_one_the_writer_takes():
  # The writer tells blocks from records by this class; the compiled framing must return it.
  assert isinstance(record_blocks.framed([b"a"]), tfrecord_io.FramedRecords)
  assert np.asarray(record_blocks.framed([b"a"]).ends).tolist() == [17]
