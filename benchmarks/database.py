"""database: generated tables read by the builder, beside physical floors (the raw read, a copy of the output) and peers."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import io
import os
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import arrow_tfrecord
from benchmarks import harness
from benchmarks import postgres
from benchmarks.seeds import database as seed

HELP = ("rows of a generated table, 6 columns or 20 (--db-table wide), on PostgreSQL or SQLite; "
        "floors: raw COPY (FORMAT binary) or SQLite fetch, and a copy of the output; peers: "
        "ADBC/ConnectorX -> Arrow -> block encoders -> TFRecord, Hugging Face from_sql")
# The smoke size runs on SQLite unless TFDS_BUILDERS_PG_DSN names a server; the wide table needs one.
SMOKE = {"db_rows": 500, "db_rows_sweep": None, "db_wide_rows": 500, "db_table": "both"}
# The peers' modules (setup.py extra `bench`): a top-level one missing skips the peer's
# phase, saying so; all are imported before the timed runs.
_PEER_MODULES = {
    "adbc": ("adbc_driver_postgresql", "adbc_driver_postgresql.dbapi"),
    "connectorx": ("connectorx",),
    "hf_from_sql": ("datasets", "pandas", "sqlalchemy"),
}
_FETCH_ROWS = 10_000  # the SQLite floor's fetchmany, the builder's default fetch_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "database options (sizes are row counts of a generated table; PostgreSQL needs "
      "TFDS_BUILDERS_PG_DSN: `source scripts/start_postgres.sh`)")
  harness.add_count_arguments(
      group, "db-rows", 10**6, "rows of the 6-column table, e.g. 1M (default)",
      "comma-separated row counts, e.g. 100k,1M,10M: RSS sweep",
  )
  group.add_argument(
      "--db-table", choices=("six", "wide", "both"), default="six",
      help="the 6-column table (default), the 20-column one with NULLs (PostgreSQL), or both",
  )
  group.add_argument(
      "--db-wide-rows", type=harness.parse_count, default=postgres.WIDE_ROWS, metavar="COUNT",
      help=f"rows of the wide table (default {postgres.WIDE_ROWS:,}, the issue's held-out table)",
  )
  group.add_argument(
      "--db-driver", choices=("postgresql", "sqlite"), default="postgresql",
      help="where the 6-column table lives (default postgresql; sqlite: a file in the work dir)",
  )
  group.add_argument(
      "--db-keep-tables", action="store_true",
      help="keep the generated tables (schema tfds_bench) for the next run",
  )


def name_labels(args: argparse.Namespace) -> list[str]:
  """The result file's name parts: `[sqlite-]ROWS` for the 6-column table, `wideROWS` for the wide one."""
  labels = []
  if args.db_table in ("six", "both"):
    counts = [harness.format_count(count) for count in args.db_rows_sweep or [args.db_rows]]
    labels += ["sqlite", *counts] if args.db_driver == "sqlite" else counts
  if args.db_table in ("wide", "both"):
    labels.append(f"wide{harness.format_count(args.db_wide_rows)}")
  return labels


# ------------------------------------------------------- historical floors --


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
  """The turn-1 floor: COPY (query) TO STDOUT, parse each line, tf.train.Example, TFRecordWriter.

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


# --------------------------------------------------------- physical floors --


def copy_binary(table: postgres.Table) -> None:
  """The SQL floor: `COPY (query) TO STDOUT (FORMAT binary)` through psycopg2 into /dev/null."""
  with table.connect() as connection, connection, connection.cursor() as cursor:
    with open(os.devnull, "wb") as sink:
      cursor.copy_expert(f"COPY ({table.query}) TO STDOUT (FORMAT binary)", sink, size=1 << 16)


def sqlite_fetch(table: postgres.Table) -> None:
  """The SQLite floor: every row of the query fetched by sqlite3 and dropped."""
  with table.connect() as connection:
    cursor = connection.execute(table.query)
    while cursor.fetchmany(_FETCH_ROWS):
      pass


# ------------------------------------------------------------------- peers --


def adbc_write(table: postgres.Table, out_path: pathlib.Path, masked: tuple[str, ...]) -> None:
  """ADBC's libpq driver (binary COPY into Arrow) -> our block encoders -> TFRecord."""
  from adbc_driver_postgresql import dbapi  # pylint: disable=g-import-not-at-top

  with dbapi.connect(table.uri) as connection, connection.cursor() as cursor:
    cursor.execute(table.query)
    arrow_tfrecord.write_batches(cursor.fetch_record_batch(), out_path, masked)


def connectorx_write(table: postgres.Table, out_path: pathlib.Path, masked: tuple[str, ...]) -> None:
  """ConnectorX (an Arrow record batch stream) -> our block encoders -> TFRecord."""
  import connectorx  # pylint: disable=g-import-not-at-top

  reader = connectorx.read_sql(table.uri, table.query, return_type="arrow_stream", batch_size=65_536)
  arrow_tfrecord.write_batches(reader, out_path, masked)


def hf_from_sql(table: postgres.Table, cache_dir: pathlib.Path) -> None:
  """What a Hugging Face user writes to get the query into a dataset: `Dataset.from_sql`, cache in the work dir."""
  import datasets  # pylint: disable=g-import-not-at-top

  datasets.disable_progress_bars()
  datasets.Dataset.from_sql(table.query, con=table.sqlalchemy_uri, cache_dir=str(cache_dir))


def hf_read(table: postgres.Table) -> None:
  """The read inside `from_sql`: pandas `read_sql` in chunks of 10,000 rows over SQLAlchemy, then dropped."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  import sqlalchemy  # pylint: disable=g-import-not-at-top

  engine = sqlalchemy.create_engine(table.sqlalchemy_uri)
  try:
    for _ in pd.read_sql(table.query, engine, chunksize=10_000):
      pass
  finally:
    engine.dispose()


def _missing_peers(sqlite: bool) -> dict[str, str]:
  """Peer -> why it does not run here (package not installed, or no driver for SQLite)."""
  missing = {}
  for peer, modules in _PEER_MODULES.items():
    absent = [module for module in modules if "." not in module and importlib.util.find_spec(module) is None]
    if absent:
      missing[peer] = f"{', '.join(absent)} not installed (pip install -e '.[bench]')"
  if sqlite:
    missing.setdefault("adbc", "the benchmark installs ADBC's PostgreSQL driver only")
  return missing


def peer_phases(table: postgres.Table, masked: tuple[str, ...] = ()) -> list[harness.Phase]:
  """The peers available here; each missing one is named with the reason."""
  missing = _missing_peers(bool(table.sqlite_path))
  for peer, reason in missing.items():
    print(f"database: peer {peer} skipped: {reason}", flush=True)
  # Imports and kernel loads happen here, not in a peer's first timed run (the reference build warms the builder).
  for module in (module for peer, modules in _PEER_MODULES.items() if peer not in missing for module in modules):
    importlib.import_module(module)
  if {"adbc", "connectorx"} - set(missing):
    arrow_tfrecord.warm()
  phases = []
  if "adbc" not in missing:
    phases.append(harness.Phase("adbc", lambda out: adbc_write(table, out / "adbc.tfrecord", masked), role="peer"))
  if "connectorx" not in missing:
    phases.append(harness.Phase(
        "connectorx", lambda out: connectorx_write(table, out / "connectorx.tfrecord", masked), role="peer"))
  if "hf_from_sql" not in missing:
    phases += [
        harness.Phase("hf_from_sql", lambda out: hf_from_sql(table, out / "hf_cache"), role="peer"),
        harness.Phase("hf_read", lambda out: hf_read(table)),
    ]
  return phases


# ----------------------------------------------------------------- builds --


@dataclasses.dataclass(frozen=True)
class Build:
  """One builder phase: its name and the BuilderConfig fields beyond the table's."""

  name: str
  options: dict[str, Any]
  examples: int | None = None


def config_fields(table: postgres.Table, options: dict[str, Any]) -> dict[str, Any]:
  """The BuilderConfig fields (JSON values) of a build of the table's query."""
  return {"query": table.query, **table.builder_options(), **options}


def builder_write(table: postgres.Table, data_dir: pathlib.Path, **options) -> None:
  """The database builder on the table's query, into a fresh data_dir."""
  from tfds_builders.database import Builder  # pylint: disable=g-import-not-at-top
  from tfds_builders.database import BuilderConfig  # pylint: disable=g-import-not-at-top

  config = BuilderConfig(name="bench", **config_fields(table, options))
  with harness.quiet_stdout():
    Builder(config=config, data_dir=str(data_dir)).download_and_prepare()


def read_paths() -> tuple[str, ...]:
  """The builder's explicit read paths (`read_path`: copy, cursor), when this checkout has the field."""
  from tfds_builders.database import BuilderConfig  # pylint: disable=g-import-not-at-top

  if "read_path" not in {field.name for field in dataclasses.fields(BuilderConfig)}:
    return ()
  return ("cursor", "copy")


def build_phases(table: postgres.Table, builds: list[Build], baseline: harness.Baseline | None,
                 baseline_names: tuple[str, ...], work_dir: pathlib.Path) -> list[harness.Phase]:
  """Each build as a builder phase, and those in `baseline_names` also built by the baseline checkout."""
  phases = []
  for build in builds:
    phases.append(harness.Phase(
        build.name, lambda out, options=build.options: builder_write(table, out, **options),
        role="builder", examples=build.examples))
    if baseline and build.name in baseline_names:
      phases.append(baseline.phase(build.name, "database", config_fields(table, build.options), work_dir,
                                   examples=build.examples))
  return phases


def _physical_floors(table: postgres.Table, reference: Build, work_dir: pathlib.Path) -> list[harness.Phase]:
  """The raw read (binary COPY, or SQLite fetch) and a copy of the reference build's shards."""
  reference_dir = work_dir / f"reference-{table.name}"
  builder_write(table, reference_dir, **reference.options)  # also compiles and warms what the phases use
  read = (harness.Phase("sqlite_fetch", lambda out: sqlite_fetch(table), role="physical") if table.sqlite_path
          else harness.Phase("copy_binary", lambda out: copy_binary(table), role="physical"))
  return [read, harness.copy_floor(harness.built_shards(reference_dir))]


def _six_column_phases(args: argparse.Namespace, table: postgres.Table,
                       work_dir: pathlib.Path) -> list[harness.Phase]:
  builds = [Build("builder", {}), Build("builder_ordered", {"order_by": "id"})]
  if not table.sqlite_path:
    builds += [Build(f"builder_{path}", {"read_path": path}) for path in read_paths()]
  phases = build_phases(table, builds, args.baseline_builds, ("builder", "builder_ordered"), work_dir)
  phases += _physical_floors(table, builds[0], work_dir)
  phases += peer_phases(table)
  phases += [
      harness.Phase("floor", lambda out: floor_write(table, out / "floor.tfrecord")),
      harness.Phase("floor_wire", lambda out: floor_write(table, out / "floor.tfrecord", wire=True)),
  ]
  if not args.skip_seed:
    phases += [
        harness.Phase("seed", lambda out: seed.read_sql_to_tfrecord(
            table.connect, table.query, out / "seed.tfrecord"), role="seed"),
        harness.Phase("seed_batched", lambda out: seed.read_sql_to_tfrecord(
            table.connect, table.query, out / "seed.tfrecord", 1024), role="seed"),
    ]
  return phases


def wide_builds(complete_rows: int) -> list[Build]:
  """Each NULL policy that applies to the wide table, without and with order_by on the key."""
  policies = {
      "mask": ({"nulls": "mask"}, None),
      "default": ({"columns": {name: {"default": value} for name, value in postgres.WIDE_DEFAULTS.items()}}, None),
      "skip_row": ({"nulls": "skip_row"}, complete_rows),
  }
  builds = []
  for policy, (options, examples) in policies.items():
    builds.append(Build(f"builder_{policy}", options, examples))
    builds.append(Build(f"builder_{policy}_ordered", {**options, "order_by": "id"}, examples))
  builds += [Build(f"builder_mask_{path}", {"nulls": "mask", "read_path": path}) for path in read_paths()]
  return builds


def _wide_phases(args: argparse.Namespace, table: postgres.Table, work_dir: pathlib.Path) -> list[harness.Phase]:
  builds = wide_builds(postgres.count_complete_rows(table))
  phases = build_phases(table, builds, args.baseline_builds, ("builder_mask", "builder_mask_ordered"), work_dir)
  phases += _physical_floors(table, builds[0], work_dir)
  return phases + peer_phases(table, masked=postgres.WIDE_NULLABLE)


def run(args: argparse.Namespace, work_dir: pathlib.Path) -> harness.Result:
  """The 6-column table at each --db-rows, then (--db-table wide|both) the wide one."""
  sqlite = args.db_driver == "sqlite"
  # Only the smoke size may fall back to SQLite on its own: a full run measures the server it names.
  dsn = "" if sqlite else postgres.dsn_from_env(required=not args.smoke)
  rows: list[harness.Row] = []
  counts = sorted(args.db_rows_sweep or [args.db_rows])
  if args.db_table in ("six", "both"):
    for count in counts:
      table, table_bytes = postgres.postgres_table(dsn, count) if dsn else postgres.sqlite_table(work_dir, count)
      phases = _six_column_phases(args, table, work_dir)
      rows += harness.measure(
          "database", phases, input_bytes=table_bytes, examples=count,
          repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
      )
      if args.profile:
        harness.print_profile(f"builder run on {count} rows", lambda out: builder_write(table, out), work_dir,
                              args.profile_top)
      shutil.rmtree(work_dir / f"reference-{table.name}")
      if dsn and not args.db_keep_tables:
        postgres.drop_postgres_table(dsn, count)
      if table.sqlite_path:
        table.sqlite_path.unlink()
  if args.db_table in ("wide", "both"):
    if not dsn:
      print("database: the wide table skipped: it needs PostgreSQL (TFDS_BUILDERS_PG_DSN)", flush=True)
    else:
      table, table_bytes = postgres.wide_postgres_table(dsn, args.db_wide_rows)
      rows += harness.measure(
          "database-wide", _wide_phases(args, table, work_dir), input_bytes=table_bytes, examples=args.db_wide_rows,
          repeat=args.repeat, work_dir=work_dir, rss_method=args.rss_method,
      )
      shutil.rmtree(work_dir / f"reference-{table.name}")
      if not args.db_keep_tables:
        postgres.drop_postgres_table(dsn, args.db_wide_rows, wide=True)
  labels = tuple(f"{harness.format_count(count)} rows" for count in (counts[0], counts[-1]))
  # The RSS sweep spans the 6-column tables only: the wide one is another input, not a larger one.
  six_sizes = tuple(row.input_bytes for row in rows if row.case == "database")
  return harness.Result(rows, rss_labels=labels, sweep_sizes=six_sizes)
