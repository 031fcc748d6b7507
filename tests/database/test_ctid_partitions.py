"""partition_key: "ctid": heap-block ranges of one table give the serial build's bytes, on Beam too."""

from __future__ import annotations

import functools
import pickle

import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from tests.database.common import assert_build_fails, build, make_builder, records, sqlite_file, POLICY_TABLE
from tfds_builders.core import errors
from tfds_builders.core import shard_writer
from tfds_builders.database import reading
from tfds_builders.database import session as session_lib

# Holes and dead tuples: every 5th row deleted, every 7th updated (its new
# version lands at the end), autovacuum off so nothing tidies up mid-test.
TABLES = """
CREATE TABLE {s}.events (id int, name text, score float8, note text) WITH (autovacuum_enabled = false);
INSERT INTO {s}.events SELECT g, md5(g::text), g * 0.25, CASE WHEN g % 4 = 0 THEN NULL ELSE 'n' || g END
  FROM generate_series(1, 3000) AS g;
DELETE FROM {s}.events WHERE id % 5 = 0;
UPDATE {s}.events SET score = -score WHERE id % 7 = 0;
CREATE TABLE {s}.empty (id int, name text);
CREATE TABLE {s}.gone (id int, name text) WITH (autovacuum_enabled = false);
INSERT INTO {s}.gone SELECT g, 'x' FROM generate_series(1, 2000) AS g;
DELETE FROM {s}.gone;
CREATE VIEW {s}.events_view AS SELECT * FROM {s}.events;
CREATE TABLE {s}.parted (id int, name text) PARTITION BY RANGE (id);
CREATE TABLE {s}.parted_low PARTITION OF {s}.parted FOR VALUES FROM (0) TO (100);
INSERT INTO {s}.parted VALUES (1, 'a'), (2, 'b');
"""


@pytest.fixture(scope="module")
def db(pg):
  """The module's schema with the tables above: (dsn, schema)."""
  pg.admin.cursor().execute(TABLES.format(s=pg.schema))
  return pg


def _config(db, **config):
  config.setdefault("query", f"SELECT id, name, score, note FROM {db.schema}.events WHERE id % 3 <> 1")
  return dict(dsn=db.dsn, partition_key="ctid", nulls="mask", **config)


def _partitions(builder, split: str = "train"):
  """The split's Beam jobs, each run as a worker would (pickled, own connection): [(job, [(key, bytes)])]."""
  plan = builder._plan  # pylint: disable=protected-access
  with session_lib.open_session(plan.spec) as coordinator:
    prepared = plan.prepare(coordinator, on_beam=True)
    jobs = prepared.jobs[split]
    runs = [pickle.loads(pickle.dumps(functools.partial(reading.read_partition, job))) for job in jobs]
    return prepared, [(job, list(shard_writer.unblocked(run()))) for job, run in zip(jobs, runs)]


# Bound parameters of the user's come before the builder's; a trailing comment swallows nothing.
_WITH_PARAMETERS = dict(
    query="SELECT id, name, score, note FROM {s}.events AS \"E\" WHERE \"E\".id %% 3 <> %s -- one third",
    params=[1])


@pytest.mark.parametrize("num_partitions, read_path, query", [
    (2, "auto", {}), (3, "cursor", {}), (7, "auto", {}),
    (500, "auto", {}),  # more partitions than blocks
    (4, "cursor", _WITH_PARAMETERS), (4, "auto", _WITH_PARAMETERS),
])
def test_partitions_concatenate_to_the_serial_build(tmp_path, db, num_partitions, read_path, query):
  query = {field: value.format(s=db.schema) if field == "query" else value for field, value in query.items()}
  config = _config(db, num_partitions=num_partitions, read_path=read_path, **query)
  serial = build(tmp_path, **config)
  prepared, partitions = _partitions(make_builder(tmp_path / "beam", **config))
  blocks = db.run(f"SELECT pg_relation_size('{db.schema}.events') / 8192")[0][0]
  assert len(partitions) == min(num_partitions, blocks) > 1
  assert [serialized for _, rows in partitions for _, serialized in rows] == records(serial)
  # Each partition's row numbers start after the rows of the partitions before it.
  sizes = [len(rows) for _, rows in partitions]
  assert [job.first_row for job, _ in partitions] == [sum(sizes[:i]) for i in range(len(sizes))]
  recorded = prepared.provenance["queries"]["train"]["partitions"]
  assert [p["first_row"] for p in recorded] == [job.first_row for job, _ in partitions]
  assert recorded[0]["blocks"][0] == 0 and recorded[-1]["blocks"][1] is None
  assert all(a["blocks"][1] == b["blocks"][0] for a, b in zip(recorded, recorded[1:]))


def test_serial_build_reads_in_ctid_order(tmp_path, db):
  serial = build(tmp_path, **_config(db, num_partitions=4))
  in_ctid_order = db.run(f"SELECT id FROM {db.schema}.events WHERE id % 3 <> 1 ORDER BY ctid")
  assert [int(e["id"]) for e in tfds.as_numpy(serial.as_dataset(split="train"))] == [
      row[0] for row in in_ctid_order]
  record = serial.info.metadata["provenance"]["queries"]["train"]
  assert record["sql"].rstrip().endswith("ORDER BY events.ctid\n) AS tfds_source")
  assert record["partitions"] == [{"blocks": [0, None], "first_row": 0}]


@pytest.mark.parametrize("read_path", ["cursor", "copy"])
def test_partition_keys_continue_the_serial_numbering(tmp_path, db, read_path):
  _, partitions = _partitions(make_builder(tmp_path, **_config(db, num_partitions=3, read_path=read_path)))
  keys = [key for _, rows in partitions for key, _ in rows]
  assert keys == [f"train:{number}" for number in range(len(keys))]


@pytest.mark.parametrize("table, blocks", [("empty", 0), ("gone", 1)])
def test_tables_without_rows(tmp_path, db, table, blocks):
  builder = make_builder(tmp_path, **_config(db, query=f"SELECT id, name FROM {db.schema}.{table}",
                                            num_partitions=4))
  # The schema pass plans without reading rows; the empty split is refused at writing, as serially.
  _, partitions = _partitions(builder)
  assert all(rows == [] and job.first_row == 0 for job, rows in partitions)
  assert (len(partitions) > 1) == bool(blocks)
  assert_build_fails(tmp_path / "serial", errors.SourceError, "'train' has no examples",
                     **_config(db, query=f"SELECT id, name FROM {db.schema}.{table}"))


def _beam_build(tmp_path, config, options):
  builder = make_builder(tmp_path, data_dir="beam", **config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      beam_options=PipelineOptions(options)))
  return builder


def _stored_files(builder) -> dict[str, bytes]:
  """Shards and features.json: what a reader of the dataset gets."""
  return {path.name: path.read_bytes() for path in sorted(builder.data_path.iterdir())
          if path.name == "features.json" or "tfrecord" in path.name}


@pytest.mark.slow
@pytest.mark.parametrize("config, options", [
    pytest.param(dict(num_partitions=4, split_percent={"train": 70, "test": 30}, split_key="id"),
                 ["--direct_running_mode=multi_processing", "--direct_num_workers=2"], id="hash-split-2-workers"),
    pytest.param(dict(num_partitions=50, query="", split_queries={
        "train": "SELECT id, name, score, note FROM {s}.events AS e WHERE e.id < 2000",
        "test": "TABLE {s}.events"}), [], id="split-queries-more-partitions-than-blocks"),
])
def test_beam_build_equals_the_serial_build(tmp_path, db, config, options):
  if "split_queries" in config:
    config["split_queries"] = {k: q.format(s=db.schema) for k, q in config["split_queries"].items()}
  config = _config(db, **config)
  if not config["query"]:
    del config["query"]
  serial = build(tmp_path, **config)
  on_beam = _beam_build(tmp_path, config, options)
  assert set(on_beam.info.splits) == set(serial.info.splits)
  for split in serial.info.splits:
    assert on_beam.info.splits[split].num_examples == serial.info.splits[split].num_examples > 0
  stored = _stored_files(serial)
  assert "features.json" in stored and len(stored) > 2
  assert _stored_files(on_beam) == stored
  partitions = on_beam.info.metadata["provenance"]["queries"]["train"]["partitions"]
  assert len(partitions) > 1


@pytest.mark.parametrize("config, fragments", [
    pytest.param(dict(order_by="id"), ["drop order_by"], id="order_by"),
    pytest.param(dict(query="SELECT e.id, f.name FROM {s}.events e JOIN {s}.events f ON f.id = e.id"),
                 ["must read one table", "'JOIN {s}.events f"], id="join"),
    pytest.param(dict(query="SELECT e.id FROM {s}.events e, {s}.empty"), ["', {s}.empty'"], id="two-tables"),
    pytest.param(dict(query="SELECT name, count(*) AS n FROM {s}.events GROUP BY name"),
                 ["'GROUP BY name'"], id="group-by"),
    pytest.param(dict(query="SELECT count(*) AS n FROM {s}.events"),
                 ["planned by the server as Aggregate"], id="aggregate"),
    pytest.param(dict(query="SELECT id, row_number() OVER () AS r FROM {s}.events"),
                 ["planned by the server as WindowAgg"], id="window"),
    pytest.param(dict(query="SELECT id FROM {s}.events WHERE id > 1 ORDER BY id"),
                 ["'ORDER' after its WHERE condition"], id="order-in-query"),
    pytest.param(dict(query="WITH w AS (SELECT id FROM {s}.events) SELECT id FROM w"),
                 ["starts with 'WITH w"], id="with"),
    pytest.param(dict(query="SELECT id FROM {s}.events_view"), ["{s}.events_view, a view"], id="view"),
    pytest.param(dict(query="SELECT id FROM {s}.parted"), ["a partitioned table"], id="partitioned"),
])
def test_queries_the_rule_cannot_serve_are_refused(tmp_path, db, config, fragments):
  config = {k: v.format(s=db.schema) if k == "query" else v for k, v in config.items()}
  fragments = [fragment.format(s=db.schema) for fragment in fragments]
  message = assert_build_fails(tmp_path, errors.ConfigError, "partition_key='ctid'", *fragments,
                               **_config(db, **config))
  assert "Use a column as partition_key" in message or "drop order_by" in message


def test_sqlite_is_refused(tmp_path):
  assert_build_fails(tmp_path, errors.ConfigError, "partition_key='ctid'", "SQLite has no ctid",
                     sqlite_path=sqlite_file(tmp_path, POLICY_TABLE), query="SELECT * FROM p",
                     partition_key="ctid", num_partitions=2)
