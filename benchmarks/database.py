"""database: rows of a generated table, beside a COPY floor and the seed's pandas path."""

from __future__ import annotations

import argparse
import io
import pathlib
from collections.abc import Callable

import numpy as np

from benchmarks import harness
from benchmarks import postgres
from benchmarks.seeds import database as seed

HELP = ("rows of a generated PostgreSQL table (sizes: --db-rows; floor: COPY TO "
        "STDOUT + tf.train.Example + TFRecordWriter; seed: pandas read_sql + from_tensor_slices)")
# The smoke size runs on SQLite unless TFDS_BUILDERS_PG_DSN names a server.
SMOKE = {"db_rows": 500, "db_rows_sweep": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "database options (sizes are row counts of a generated PostgreSQL table; needs "
      "TFDS_BUILDERS_PG_DSN: `source scripts/start_postgres.sh`)")
  harness.add_count_arguments(
      group, "db-rows", 10**6, "rows of the table, e.g. 1M (default)",
      "comma-separated row counts, e.g. 100k,1M,10M: RSS sweep",
  )
  group.add_argument(
      "--db-keep-tables", action="store_true",
      help="keep the generated tables (schema tfds_bench) for the next run",
  )


class _CopyToTFRecord(io.RawIOBase):
  """A file object for `copy_expert`: parses COPY text lines, writes Examples."""

  def __init__(self, writer, encode):
    super().__init__()
    self._writer = writer
    self._encode = encode
    self._rest = b""

  def writable(self) -> bool:
    return True

  def write(self, data) -> int:
    lines = (self._rest + bytes(data)).split(b"\n")
    self._rest = lines.pop()
    for line in lines:
      id_, label, score, ratio, name, flag = line.split(b"\t")
      self._writer.write(self._encode(
          int(id_), int(label), float(score), float(ratio), name, int(flag == b"t")))
    return len(data)


def _wire_encoder() -> Callable[..., bytes]:
  """Builds the seed's Example with core.serialization (the builder's encoder).

  The one place the benchmarks reach below the builders' public API.
  """
  from tfds_builders.core import serialization as wire  # pylint: disable=g-import-not-at-top

  keys = [wire.FeatureKey(name) for name in postgres.COLUMNS]

  def encode(id_, label, score, ratio, name, flag) -> bytes:
    return wire.example([
        wire.int64_feature(keys[0], (id_,)), wire.int64_feature(keys[1], (label,)),
        wire.float_feature(keys[2], np.array([score], np.float32)),
        wire.float_feature(keys[3], np.array([ratio], np.float32)),
        wire.bytes_feature(keys[4], name), wire.int64_feature(keys[5], (flag,)),
    ])

  return encode


def floor_write(table: postgres.Table, out_path: pathlib.Path, wire: bool = False) -> None:
  """The floor: COPY (query) TO STDOUT, parse each line, tf.train.Example, TFRecordWriter.

  With `wire`, examples are built with core.serialization instead of protobuf
  objects: the floor with the builder's encoder. On SQLite (no COPY) the
  cursor's typed rows are encoded instead.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  encode = _wire_encoder() if wire else seed.row_example
  with table.connect() as connection, tf.io.TFRecordWriter(str(out_path)) as writer:
    if table.sqlite_path:
      for id_, label, score, ratio, name, flag in connection.execute(table.query):
        writer.write(encode(id_, label, score, ratio, name.encode(), flag))
      return
    with connection, connection.cursor() as cursor:
      cursor.copy_expert(f"COPY ({table.query}) TO STDOUT", _CopyToTFRecord(writer, encode), size=1 << 16)


def builder_write(table: postgres.Table, data_dir: pathlib.Path, **options) -> None:
  """The database builder on the table's query, into a fresh data_dir."""
  from tfds_builders.database import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.database import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", query=table.query, **table.builder_options(), **options)
  with harness.quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """builder vs floor (COPY) vs seed (pandas) on generated tables."""
  # Only the smoke size may fall back to SQLite: a full run measures the server.
  dsn = postgres.dsn_from_env(required=not args.smoke)
  rows: list[harness.Row] = []
  counts = sorted(args.db_rows_sweep or [args.db_rows])
  for count in counts:
    if dsn:
      table, table_bytes = postgres.postgres_table(dsn, count)
    else:
      table, table_bytes = postgres.sqlite_table(work_dir, count)
    phases = [
        harness.Phase("builder", lambda out: builder_write(table, out)),
        harness.Phase("floor", lambda out: floor_write(table, out / "floor.tfrecord")),
        harness.Phase("floor_wire", lambda out: floor_write(table, out / "floor.tfrecord", wire=True)),
        harness.Phase("builder_ordered", lambda out: builder_write(table, out, order_by="id")),
    ]
    if not args.skip_seed:
      phases += [
          harness.Phase("seed", lambda out: seed.read_sql_to_tfrecord(
              table.connect, table.query, out / "seed.tfrecord")),
          harness.Phase("seed_batched", lambda out: seed.read_sql_to_tfrecord(
              table.connect, table.query, out / "seed.tfrecord", 1024)),
      ]
    rows += harness.measure(
        "database", phases, input_bytes=table_bytes, examples=count,
        repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
    )
    if args.profile:
      harness.print_profile(f"builder run on {count} rows", lambda out: builder_write(table, out), work_dir,
                            args.profile_top)
    if dsn and not args.db_keep_tables:
      postgres.drop_postgres_table(dsn, count)
  labels = tuple(f"{harness.format_count(count)} rows" for count in (counts[0], counts[-1]))
  return harness.Result(rows, rss_labels=labels)
