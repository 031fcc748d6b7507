"""A source file cut short while it is walked is a SourceError, never a SIGBUS from a mapped page past its end."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.faults import ENV, REPO

_WALK_THEN_CUT = textwrap.dedent("""
    import os, sys
    from etils import epath
    from tfds_builders.core import errors, fast, shard_writer, tfrecord_io

    path = sys.argv[1]
    record = bytes(range(256)) * 256                      # 64 KiB records: 48 MiB, three windows
    with open(path, "wb") as out:
      out.write(shard_writer.python_framed([record] * 768))
    blocks = fast.record_index.scan(tfrecord_io.RecordFile(epath.Path(path), ""), with_window=True, block_records=64)
    first = next(blocks)
    # Cut to 20 MiB while the first 16 MiB window is walked: the next window would map pages past the end.
    # (A cut inside the window being walked is still a SIGBUS: docs/reliability.md.)
    os.truncate(path, 20 << 20)
    try:
      for block in blocks:
        pass
    except errors.SourceError as error:
      print("SourceError:", error)
      sys.exit(0)
    print("no error")
    sys.exit(3)
""")


def test_a_file_cut_short_mid_walk_is_a_source_error_not_a_crash(tmp_path):
  path = tmp_path / "cut.tfrecord"
  run = subprocess.run([sys.executable, "-c", _WALK_THEN_CUT, str(path)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])  # -7 would be SIGBUS
  assert "cut.tfrecord changed while it was read" in run.stdout
  assert "is 20971520 bytes now (truncated)" in run.stdout
