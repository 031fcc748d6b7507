"""Fault suite: user SQL that tries to leave the read-only transaction, on SQLite and PostgreSQL.

Every escape is refused with a ConfigError naming the config field (`query`
of the database builder, `side_table_sql` of the augmented builder) and saying
what to do; the table checksum and the SQLite file stay identical, nothing
loadable is left, and a clean query then builds. Below the fault table, each
defence layer is tested on its own: the tokenizer, PostgreSQL's Parse check,
the session-level READ ONLY default, SQLite's authorizer, the timeouts and
the role warning. A SQLite file in WAL mode is read without creating a file
beside it, or refused while a program has it open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import pathlib
import sqlite3
from typing import Any

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import faults
from tests.database.common import Postgres
from tfds_builders import augmented
from tfds_builders import database
from tfds_builders.core import errors
from tfds_builders.core.sql import connection
from tfds_builders.core.sql import drivers
from tfds_builders.core.sql import postgres
from tfds_builders.core.sql import statements

PASSWORD_MARK = "tfds_builders_pw"  # the test role's password (scripts/start_postgres.sh)
NO_PASSWORD = rf"(?s)\A(?!.*{PASSWORD_MARK})"  # a regex that fails if the password shows
ROWS = [(1, b"a"), (2, b"b"), (3, b"c")]
CLEAN = "SELECT id, v FROM {t}"
REFUSED_UNSENT = [r"must be exactly one read-only query", "Nothing was sent to run",
                  r"Give one query \(SELECT, WITH \.\.\. SELECT, VALUES or TABLE\)"]
SQLITE, POSTGRES = ("sqlite",), ("postgresql",)


def _marks(engine: str) -> list[pytest.MarkDecorator]:
  """A PostgreSQL row's mark: it reaches the server through `request.getfixturevalue`, which conftest's hook misses."""
  return [pytest.mark.postgres] if engine == "postgresql" else []
BOTH = SQLITE + POSTGRES


# ---------------------------------------------------------------- sources --


@dataclasses.dataclass
class Source:
  """The table `t(id, v)` = ROWS on one engine, and how builders reach it."""

  engine: str
  table: str  # as written in SQL
  scratch: pathlib.Path  # where an escape would drop files; guarded like a source
  sqlite_path: pathlib.Path | None = None
  pg: Any = None

  @property
  def database_connection(self) -> dict[str, Any]:
    if self.sqlite_path:
      return {"sqlite_path": str(self.sqlite_path)}
    return {"dsn": self.pg.dsn}

  @property
  def side_table_connection(self) -> dict[str, Any]:
    if self.sqlite_path:
      return {"driver": "sqlite", "sqlite_path": str(self.sqlite_path)}
    return {"driver": "postgresql", "dsn_env": "TFDS_FAULTS_SQL_DSN"}

  @property
  def sources(self) -> list[pathlib.Path]:
    return [self.scratch]  # holds the SQLite file too

  def sql(self, template: str) -> str:
    return template.format(t=self.table, dir=self.scratch, schema=self.pg.schema if self.pg else "")

  def digest(self) -> str:
    """The table's rows and the schema's tables, as one checksum."""
    if self.sqlite_path:
      uri = f"{self.sqlite_path.as_uri()}?mode=ro&immutable=1"  # no -wal/-shm of its own beside a WAL file
      with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        state = [connection.execute(sql).fetchall() for sql in (
            "SELECT * FROM t ORDER BY id", "SELECT type, name, sql FROM sqlite_master ORDER BY name")]
      return hashlib.sha256(repr(state).encode()).hexdigest()
    return repr(self.pg.run(
        f"SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {self.table} t), "
        "(SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_catalog.pg_class "
        f"WHERE relnamespace = '{self.pg.schema}'::regnamespace)"))


@pytest.fixture(scope="module")
def pg(postgres_dsn):
  """A schema of this module's own: table t = ROWS and a procedure that would empty it."""
  import psycopg2  # pylint: disable=import-outside-toplevel

  schema = f"tfds_faults_sql_{os.getpid()}"
  admin = psycopg2.connect(postgres_dsn)
  admin.autocommit = True
  postgres = Postgres(postgres_dsn, schema, admin)
  postgres.run(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; "
               f"CREATE TABLE {schema}.t (id int PRIMARY KEY, v text); "
               f"INSERT INTO {schema}.t VALUES (1, 'a'), (2, 'b'), (3, 'c'); "
               f"CREATE PROCEDURE {schema}.wipe() LANGUAGE SQL AS $$ DELETE FROM {schema}.t $$")
  try:
    yield postgres
  finally:
    postgres.run(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.close()


def sqlite_source(tmp_path: pathlib.Path) -> Source:
  scratch = tmp_path / "src"
  scratch.mkdir()
  path = scratch / "t.db"
  with contextlib.closing(sqlite3.connect(path)) as connection, connection:
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    connection.executemany("INSERT INTO t VALUES (?, ?)", [(i, v.decode()) for i, v in ROWS])
  return Source("sqlite", "t", scratch, sqlite_path=path)


# --------------------------------------------------------------- builders --


def base_records(folder: pathlib.Path) -> str:
  """A raw base of three examples with ids 1..3 (the augmented builder's join key)."""
  path = folder / "base.tfrecord"
  folder.mkdir(exist_ok=True)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for key, _ in ROWS:
      feature = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[key]))}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return str(path)


def build_database(source: Source, query: str, data_dir: pathlib.Path, **config) -> list[tuple]:
  builder = database.Builder(
      config=database.BuilderConfig(name="escape", query=query, order_by="id",
                                    **source.database_connection, **config),
      data_dir=str(data_dir),
  )
  builder.download_and_prepare()
  return [(int(e["id"]), bytes(e["v"])) for e in tfds.as_numpy(builder.as_dataset(split="train"))]


def build_augmented(source: Source, query: str, data_dir: pathlib.Path, **connection) -> list[tuple]:
  builder = augmented.Builder(
      config=augmented.BuilderConfig(
          name="escape", base_records={"train": [base_records(data_dir.parent / "base")]},
          join_key="id", side_table_sql=query,
          side_table_connection={**source.side_table_connection, **connection}),
      data_dir=str(data_dir),
  )
  builder.download_and_prepare()
  return sorted((int(e["id"]), bytes(e["v"])) for e in tfds.as_numpy(builder.as_dataset(split="train")))


BUILDERS = {"database": ("query", build_database), "augmented": ("side_table_sql", build_augmented)}


# ------------------------------------------------------------ fault table --


@dataclasses.dataclass(frozen=True)
class Escape:
  """One way out of the read-only statement; `{t}` is the table, `{dir}` a guarded folder."""

  case: faults.FaultCase
  sql: str
  engines: tuple[str, ...] = BOTH
  side_table: bool = False  # also run as the augmented builder's side_table_sql


def second(statement: str) -> list[str]:
  return [*REFUSED_UNSENT, rf"holds a second statement after the `;` at character \d+: ['\"]{statement}"]


def leading(keyword: str) -> list[str]:
  return [*REFUSED_UNSENT, rf"starts with '{keyword}', not SELECT, WITH, VALUES, TABLE"]


ESCAPES = [
    # The probe's attack: the user query ends the transaction and deletes.
    Escape(faults.FaultCase("commit_then_delete", errors.ConfigError, second("COMMIT; DELETE FROM")),
           "SELECT id, v FROM {t}; COMMIT; DELETE FROM {t} WHERE id = 1; SELECT id, v FROM {t}",
           side_table=True),
    # Closing the builder's own wrapping parenthesis first.
    Escape(faults.FaultCase("wrap_breakout", errors.ConfigError,
                            [*REFUSED_UNSENT, r"closes a parenthesis at character \d+ that it "
                                              r"never opened: '\) AS q; COMMIT"]),
           "SELECT id, v FROM {t}) AS q; COMMIT; DELETE FROM {t}; SELECT * FROM ({t}"),
    Escape(faults.FaultCase("rollback", errors.ConfigError, second("ROLLBACK; DELETE")),
           "SELECT id, v FROM {t}; ROLLBACK; DELETE FROM {t}"),
    Escape(faults.FaultCase("end", errors.ConfigError, second("END; DELETE")),
           "SELECT id, v FROM {t}; END; DELETE FROM {t}"),
    Escape(faults.FaultCase("begin", errors.ConfigError, second("DELETE FROM")),
           "BEGIN; DELETE FROM {t}; COMMIT"),
    Escape(faults.FaultCase("begin_read_write", errors.ConfigError, leading("BEGIN")),
           "BEGIN READ WRITE"),
    Escape(faults.FaultCase("set_read_write", errors.ConfigError, leading("SET")),
           "SET default_transaction_read_only = off"),
    Escape(faults.FaultCase("set_session_characteristics", errors.ConfigError,
                            second("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")),
           "SELECT id, v FROM {t}; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; "
           "DELETE FROM {t}", side_table=True),
    Escape(faults.FaultCase("reset", errors.ConfigError, leading("RESET")), "RESET ALL"),
    Escape(faults.FaultCase("do_block", errors.ConfigError, leading("DO")),
           "DO $$ BEGIN DELETE FROM {t}; END $$", POSTGRES, side_table=True),
    Escape(faults.FaultCase("copy_to_program", errors.ConfigError,
                            [*REFUSED_UNSENT, "tries to modify the database: it starts with 'COPY'"]),
           "COPY (SELECT 1) TO PROGRAM 'touch {dir}/pwned'", POSTGRES),
    Escape(faults.FaultCase("copy_after_select", errors.ConfigError, second("COPY")),
           "SELECT id, v FROM {t}; COPY (SELECT 1) TO PROGRAM 'touch {dir}/pwned'", POSTGRES),
    Escape(faults.FaultCase("call", errors.ConfigError, leading("CALL")),
           "CALL {schema}.wipe()", POSTGRES),
    Escape(faults.FaultCase("behind_comments", errors.ConfigError, second("DELETE FROM")),
           "SELECT id, v FROM {t} /* ; */ -- ;\n; DELETE FROM {t} -- ;", side_table=True),
    # PostgreSQL ends a -- comment at a carriage return (SQLite does not: see LEGIT).
    Escape(faults.FaultCase("comment_ends_at_cr", errors.ConfigError, second("DELETE FROM")),
           "SELECT id, v FROM {t} -- note\r; DELETE FROM {t}", POSTGRES, side_table=True),
    # SQLite comments do not nest (PostgreSQL's do: see LEGIT).
    Escape(faults.FaultCase("unnested_comment", errors.ConfigError, second(r"DELETE FROM t \*/")),
           "SELECT id, v FROM {t} /* outer /* inner */ ; DELETE FROM {t} */", SQLITE, side_table=True),
    Escape(faults.FaultCase("after_a_string", errors.ConfigError, second("DELETE FROM")),
           "SELECT id, v FROM {t} WHERE v <> ';'; DELETE FROM {t} WHERE v <> ';'"),
    # A backslash does not escape a quote in a standard string: the `;` is outside.
    Escape(faults.FaultCase("backslash_in_string", errors.ConfigError, second("DELETE FROM")),
           r"SELECT id, '\' AS v FROM {t}; DELETE FROM {t}; SELECT 1, '\'", side_table=True),
    Escape(faults.FaultCase("dollar_quote_closed", errors.ConfigError, second("DELETE FROM")),
           "SELECT id, $a$ $a$ AS v FROM {t}; DELETE FROM {t}", POSTGRES),
    # U+00A0 is part of a word for the server: `AS\u00a0$a$` is an alias, not a dollar quote.
    Escape(faults.FaultCase("dollar_after_nbsp", errors.ConfigError, second("DELETE FROM")),
           "SELECT id, v AS\u00a0$a$ FROM {t}; DELETE FROM {t}; SELECT 1 AS\u00a0$a$", side_table=True),
    Escape(faults.FaultCase("insert", errors.ConfigError,
                            [*REFUSED_UNSENT, "tries to modify the database: it starts with 'INSERT'"]),
           "INSERT INTO {t} VALUES (9, 'z') RETURNING id, v"),
    Escape(faults.FaultCase("attach", errors.ConfigError, leading("ATTACH")),
           "ATTACH '{dir}/evil.db' AS evil", SQLITE),
    Escape(faults.FaultCase("attach_after_select", errors.ConfigError, second("ATTACH")),
           "SELECT id, v FROM {t}; ATTACH '{dir}/evil.db' AS evil", SQLITE, side_table=True),
    Escape(faults.FaultCase("vacuum_into", errors.ConfigError,
                            [*REFUSED_UNSENT, "tries to modify the database: it starts with 'VACUUM'"]),
           "VACUUM INTO '{dir}/copy.db'", SQLITE, side_table=True),
    Escape(faults.FaultCase("pragma_write", errors.ConfigError, leading("PRAGMA")),
           "PRAGMA user_version = 7", SQLITE),
    # Refused while the statement is prepared, and named: it would run a library's code.
    Escape(faults.FaultCase("load_extension", errors.ConfigError,
                            ["calls a function the build refuses", "not authorized to use function: load_extension",
                             "Nothing was run", "Remove the call"]),
           "SELECT load_extension('{dir}/x.so') AS a, id, v FROM {t}", SQLITE, side_table=True),
    # Starts as a query; SQLite's authorizer refuses the DELETE while preparing it.
    Escape(faults.FaultCase("with_delete_sqlite", errors.ConfigError,
                            ["tries to modify the database", "DELETE",
                             "refused and nothing was changed", "allows reading only",
                             "Give one query"]),
           "WITH doomed AS (SELECT 1) DELETE FROM {t}", SQLITE, side_table=True),
    # Starts as a query; PostgreSQL's READ ONLY transaction refuses the DELETE.
    Escape(faults.FaultCase("with_delete_postgres", errors.ConfigError,
                            ["tries to modify the database", "refused and nothing was changed",
                             "READ ONLY transaction", "Give one query"]),
           "WITH doomed AS (DELETE FROM {t} RETURNING *) SELECT id, v FROM doomed", POSTGRES,
           side_table=True),
]


# Every escape through the database builder; the side table (its SQL sent as
# is, not wrapped) takes the ones whose tokens differ by engine, and the writes.
ESCAPE_PARAMS = [
    pytest.param(escape, engine, builder, id=f"{escape.case.id}-{engine}-{builder}", marks=_marks(engine))
    for escape in ESCAPES for engine in escape.engines for builder in BUILDERS
    if builder == "database" or escape.side_table
]


@pytest.mark.parametrize("escape, engine, builder", ESCAPE_PARAMS)
def test_escape_is_refused(escape, engine, builder, request, tmp_path):
  source = _source(request, engine, tmp_path)
  field, build = BUILDERS[builder]
  case = dataclasses.replace(escape.case, fragments=[
      *escape.case.fragments, rf"`{field}`", NO_PASSWORD])
  query = {"sql": source.sql(escape.sql)}

  def repair():
    query["sql"] = source.sql(CLEAN)

  rows = faults.check_fault(
      case, lambda: build(source, query["sql"], tmp_path / "tfds"), repair,
      source.sources, tmp_path / "tfds", source_digest=source.digest,
  )
  assert rows == ROWS


def _source(request, engine: str, tmp_path: pathlib.Path) -> Source:
  if engine == "sqlite":
    return sqlite_source(tmp_path)
  pg = request.getfixturevalue("pg")
  request.getfixturevalue("monkeypatch").setenv("TFDS_FAULTS_SQL_DSN", pg.dsn)
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  return Source("postgresql", f"{pg.schema}.t", scratch, pg=pg)


# ---------------------------------------- the command line users type (SQLite) --


def test_escape_through_tfds_build_command_line(tmp_path):
  source = sqlite_source(tmp_path)
  config = {"name": "cli", "sqlite_path": str(source.sqlite_path), "order_by": "id",
            "query": "SELECT id, v FROM t; COMMIT; DELETE FROM t WHERE id = 1; SELECT id, v FROM t"}
  case = faults.FaultCase("tfds_build_commit", faults.CommandFailed, [
      "ConfigError", "`query` must be exactly one read-only query",
      r"second statement after the `;` at character 20: 'COMMIT; DELETE FROM t", "Give one query"])

  def repair():
    config["query"] = "SELECT id, v FROM t"

  faults.check_fault(case, lambda: faults.tfds_build("database", config, tmp_path / "tfds"),
                     repair, source.sources, tmp_path / "tfds", source_digest=source.digest)
  built = tfds.builder_from_directory(str(tmp_path / "tfds" / "database" / "cli" / "1.0.0"))
  assert [(int(e["id"]), bytes(e["v"])) for e in tfds.as_numpy(built.as_dataset(split="train"))] == ROWS


# ---------------------------------- SQLite in WAL mode: nothing beside the file --


def wal_source(tmp_path: pathlib.Path) -> Source:
  """The table t in a WAL-mode file, with no -wal or -shm beside it (closed cleanly)."""
  source = sqlite_source(tmp_path)
  with contextlib.closing(sqlite3.connect(source.sqlite_path)) as connection:
    connection.execute("PRAGMA journal_mode=WAL")
  assert source.sqlite_path.read_bytes()[18:20] == b"\x02\x02"
  assert sorted(os.listdir(source.scratch)) == ["t.db"]
  return source


def _checkpoint(path: pathlib.Path) -> None:
  """What the message says to run: the WAL goes into the file, and the side files away as it closes."""
  with contextlib.closing(sqlite3.connect(path)) as connection:
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _leftover_side_files(source: Source):
  """-wal and -shm left by a read-only reader (what the build itself did before it opened WAL files immutable)."""
  with contextlib.closing(sqlite3.connect(f"{source.sqlite_path.as_uri()}?mode=ro", uri=True)) as reader:
    reader.execute("SELECT count(*) FROM t").fetchall()
  return lambda: _checkpoint(source.sqlite_path)


def _open_in_another_program(source: Source):
  writer = sqlite3.connect(source.sqlite_path)
  writer.execute("SELECT count(*) FROM t").fetchall()
  return writer.close  # the last connection to close removes the side files


SIDE_FILES = [r"is in WAL mode and .*/src/t\.db-shm, .*/src/t\.db-wal exist beside it",
              "a program has it open", r'PRAGMA wal_checkpoint\(TRUNCATE\)', r"\.backup copy\.sqlite"]
WAL_CASES = [
    faults.FaultCase("wal_side_files_left_over", errors.SourceError, SIDE_FILES).param(_leftover_side_files),
    faults.FaultCase("wal_open_in_another_program", errors.SourceError, SIDE_FILES).param(_open_in_another_program),
]
WAL_PARAMS = [
    pytest.param(*param.values, builder, id=f"{param.id}-{builder}") for param in WAL_CASES for builder in BUILDERS
]


@pytest.mark.parametrize("case, plant, builder", WAL_PARAMS)
def test_sqlite_wal_file_gets_nothing_beside_it(case, plant, builder, tmp_path):
  source = wal_source(tmp_path)
  release = plant(source)
  repaired: dict[str, str] = {}

  def repair() -> None:
    release()
    repaired.update(faults.tree_hashes(source.sources))

  try:
    rows = faults.check_fault(case, lambda: BUILDERS[builder][1](source, CLEAN.format(t="t"), tmp_path / "tfds"),
                              repair, source.sources, tmp_path / "tfds", source_digest=source.digest)
    listing, hashes = sorted(os.listdir(source.scratch)), faults.tree_hashes(source.sources)
  finally:
    release()  # never leave the other program's connection open
  assert rows == ROWS
  # The rerun read the WAL file (immutable) and left the folder as it found it: no -wal, no -shm.
  assert listing == ["t.db"]
  assert hashes == repaired


def test_sqlite_wal_file_through_tfds_build_command_line(tmp_path):
  source = wal_source(tmp_path)
  release = _leftover_side_files(source)
  config = {"name": "wal", "sqlite_path": str(source.sqlite_path), "order_by": "id", "query": CLEAN.format(t="t")}
  case = faults.FaultCase("tfds_build_wal_side_files", faults.CommandFailed, ["SourceError", *SIDE_FILES])
  faults.check_fault(case, lambda: faults.tfds_build("database", config, tmp_path / "tfds"),
                     release, source.sources, tmp_path / "tfds", source_digest=source.digest)
  assert sorted(os.listdir(source.scratch)) == ["t.db"]
  built = tfds.builder_from_directory(str(tmp_path / "tfds" / "database" / "wal" / "1.0.0"))
  assert built.info.splits["train"].num_examples == len(ROWS)


def test_sqlite_wal_file_changed_during_the_read_fails_it(tmp_path):
  """immutable=1 takes no lock: a change to the file while rows stream is detected, not read half."""
  source = wal_source(tmp_path)
  spec = connection.ConnectionSpec("sqlite", sqlite_path=str(source.sqlite_path))
  with drivers.open_session(spec) as session:
    assert "immutable=1" in session.uri and session.facts()["journal_mode"] == "wal"
    rows = session.rows(statements.Statement("SELECT id, v FROM t ORDER BY id"), fetch_size=1)
    assert next(rows) == (1, "a")
    with contextlib.closing(sqlite3.connect(source.sqlite_path)) as writer, writer:
      writer.execute("INSERT INTO t VALUES (4, 'd')")
    # The writer's close checkpointed the row into t.db.
    with pytest.raises(errors.SourceError, match=r"changed while the build was reading the query: the file is "
                                                 r"in WAL mode and was read without locks"):
      list(rows)


# ------------------------------------------- single statements that must build --


def same(value: bytes) -> list[tuple[int, bytes]]:
  return [(key, value) for key, _ in ROWS]


@dataclasses.dataclass(frozen=True)
class Legit:
  """A single statement with `;`, quotes or comments inside, and the rows it must give."""

  id: str
  sql: str
  rows: list[tuple[int, bytes]]
  engines: tuple[str, ...] = BOTH
  side_table: bool = False  # also run as side_table_sql


LEGIT = [
    Legit("semicolon_in_string", "SELECT id, 'a;COMMIT' AS v FROM {t}", same(b"a;COMMIT"),
          side_table=True),
    Legit("terminator_then_comment", "SELECT id, v || ';' AS v FROM {t};  -- the end; DELETE FROM t",
          [(key, text + b";") for key, text in ROWS], side_table=True),
    Legit("semicolon_in_identifier",
          'SELECT id, "v;x" AS v FROM (SELECT id, v AS "v;x" FROM {t}) AS s', ROWS),
    Legit("dollar_quote", "SELECT id, $$;COMMIT;$$ AS v FROM {t}", same(b";COMMIT;"), POSTGRES,
          side_table=True),
    Legit("dollar_tags_nested", "SELECT id, $a$ $b$; DELETE FROM t; SELECT $b$ $a$ AS v FROM {t}",
          same(b" $b$; DELETE FROM t; SELECT $b$ "), POSTGRES),
    Legit("e_string", r"SELECT id, E'it\'s; fine' AS v FROM {t}", same(b"it's; fine"), POSTGRES),
    Legit("nested_comment", "SELECT id, v FROM {t} /* outer /* inner */ ; DELETE FROM t */", ROWS,
          POSTGRES, side_table=True),
    Legit("comment_runs_past_cr", "SELECT id, v FROM {t} -- note\r; DELETE FROM t", ROWS, SQLITE,
          side_table=True),
    Legit("bracket_identifier", "SELECT id, [v;x] AS v FROM (SELECT id, v AS [v;x] FROM {t})", ROWS,
          SQLITE),
    Legit("pragma_table_function",
          "SELECT id, v FROM {t} WHERE (SELECT count(*) FROM pragma_table_info('t')) = 2", ROWS,
          SQLITE),
]
LEGIT_PARAMS = [
    pytest.param(legit, engine, builder, id=f"{legit.id}-{engine}-{builder}", marks=_marks(engine))
    for legit in LEGIT for engine in legit.engines for builder in BUILDERS
    if builder == "database" or legit.side_table
]


@pytest.mark.parametrize("legit, engine, builder", LEGIT_PARAMS)
def test_single_statements_with_semicolons_inside_build(legit, engine, builder, request, tmp_path):
  source = _source(request, engine, tmp_path)
  before = source.digest()
  assert BUILDERS[builder][1](source, source.sql(legit.sql), tmp_path / "tfds") == legit.rows
  assert source.digest() == before


# ------------------------------------------------- layer 1: the tokenizer --

TOKENIZER = [
    ("postgresql", "SELECT 1", 8),
    ("postgresql", "SELECT 1;  -- done; DROP TABLE t", 8),
    ("postgresql", "SELECT 1; /* a */ ;", "second statement after the `;` at character 9: ';'"),
    ("postgresql", "  (SELECT 1) UNION (SELECT 2)", 29),
    ("postgresql", "WITH w AS (SELECT 1) SELECT * FROM w", 36),
    ("postgresql", "VALUES (1), (2)", 15),
    ("postgresql", "TABLE t", 7),
    ("postgresql", "SELECT 'it''s;' ; ", 16),
    ("postgresql", "SELECT E'\\';' ;", 14),
    ("postgresql", "SELECT '\\';' ;", "second statement after the `;` at character 11"),
    ("postgresql", "SELECT U&'\\0041;' ;", 18),
    ("postgresql", "SELECT b'01', x'ff', n';'", 25),
    ("postgresql", 'SELECT 1 AS "a"";b"', 19),
    ("postgresql", "SELECT $1, $tag$ $$ ; $tag$", 27),
    ("postgresql", "SELECT a$b$ FROM t; $b$", "second statement after the `;` at character 19"),
    ("postgresql", "SELECT 1 /* /* */ ; */", 22),
    ("postgresql", "SELECT 1 -- c\r;DELETE", "second statement after the `;` at character 15: 'DELETE'"),
    ("postgresql", "SELECT arr[1;2]", "second statement after the `;` at character 13"),
    ("postgresql", "SELECT 'open", "leaves a string literal open: the one starting at character 8"),
    ("postgresql", "SELECT $x$ open", "leaves a dollar-quoted string open"),
    ("postgresql", "SELECT 1 /* open", "leaves a /\\* comment open"),
    ("postgresql", "SELECT (1", r"leaves 1 parenthesis\(es\) open"),
    ("postgresql", "  -- only a comment\n", "holds no query"),
    ("postgresql", "EXPLAIN ANALYZE SELECT 1", "is not a query: it starts with 'EXPLAIN'"),
    ("postgresql", "/* hi */ (DELETE FROM t)", "tries to modify the database: it starts with 'DELETE'"),
    ("sqlite", "SELECT 1 -- c\r;DELETE", 21),
    ("sqlite", "SELECT 1 /* /* */ ; */", "second statement after the `;` at character 19: '\\*/'"),
    ("sqlite", "SELECT [a;b], `c;``d`, x'00'", 28),
    ("sqlite", "SELECT $$;$$", "second statement after the `;` at character 10"),
    ("sqlite", "SELECT '\\';' ;", "second statement after the `;` at character 11"),
]


@pytest.mark.parametrize("driver, sql, expected", TOKENIZER)
def test_tokenizer_finds_the_one_statement(driver, sql, expected):
  if isinstance(expected, int):
    assert statements.check_read_query(sql, "query", driver) == expected
  else:
    with pytest.raises(errors.ConfigError, match=expected) as raised:
      statements.check_read_query(sql, "side_table_sql", driver, where="there")
    faults.assert_message(raised.value, ["`side_table_sql` must be exactly one read-only query",
                                         "Nothing was sent to run on there", "Give one query"])


@pytest.mark.postgres
def test_standard_strings_follow_the_server_setting(request, tmp_path):
  """`'\\'` ends a string unless the server has standard_conforming_strings off."""
  source = _source(request, "postgresql", tmp_path)
  query = r"SELECT id, 'it\'s; fine' AS v FROM {t}".format(t=source.table)
  case = faults.FaultCase("standard_strings", errors.ConfigError,
                          [*second("fine' AS v FROM"), "`query`", NO_PASSWORD])
  options = {"dsn": source.pg.dsn}

  def repair():  # the same text is one statement where backslashes escape quotes
    options["dsn"] = source.pg.dsn + " options='-c standard_conforming_strings=off'"

  rows = faults.check_fault(
      case, lambda: _build_with_dsn(source, query, tmp_path / "tfds", options["dsn"]),
      repair, source.sources, tmp_path / "tfds", source_digest=source.digest)
  assert rows == same(b"it's; fine")


def _build_with_dsn(source: Source, query: str, data_dir: pathlib.Path, dsn: str) -> list[tuple]:
  return build_database(dataclasses.replace(source, pg=dataclasses.replace(source.pg, dsn=dsn)),
                        query, data_dir)


# ------------------------------- layers 2 and 3: PostgreSQL's parser, the session --


@pytest.mark.postgres
def test_postgres_parses_every_statement_as_one(request, tmp_path):
  source = _source(request, "postgresql", tmp_path)
  assert postgres._libpq() is not None  # pylint: disable=protected-access  # psycopg2's libpq
  spec = connection.ConnectionSpec("postgresql", dsn=source.pg.dsn)
  with drivers.open_session(spec) as session:
    parses_as_many = session._parses_as_many  # pylint: disable=protected-access
    # What the tokenizer would also refuse, checked by the server's own parser alone.
    assert parses_as_many(b"SELECT 1; SELECT 2")
    assert parses_as_many("SELECT 1 AS\u00a0$a$; SELECT 1 AS\u00a0$a$".encode())
    assert parses_as_many(b"SELECT 1 -- c\r; DELETE FROM t")
    assert not parses_as_many(b"SELECT $$;$$, ';' -- ;")
    assert not parses_as_many(b"SELECT * FROM no_such_table")  # other errors: left to the run
    assert session.fetch_all(statements.Statement("SELECT 7")) == [(7,)]  # the transaction goes on


@pytest.mark.postgres
def test_postgres_session_stays_read_only_after_a_commit(request, tmp_path):
  """Even a COMMIT sent on the raw connection leaves the next transaction READ ONLY."""
  import psycopg2  # pylint: disable=import-outside-toplevel

  source = _source(request, "postgresql", tmp_path)
  before = source.digest()
  spec = connection.ConnectionSpec("postgresql", dsn=source.pg.dsn)
  with drivers.open_session(spec) as session, session.connection.cursor() as cursor:
    cursor.execute("COMMIT")
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
      cursor.execute(f"DELETE FROM {source.table}")
    session.connection.rollback()
    cursor.execute("RESET ALL")  # back to the connection's start values, not to read-write
    cursor.execute("SHOW default_transaction_read_only")
    assert cursor.fetchall() == [(b"on",)]
  assert source.digest() == before


# ------------------------------------------- layer 3: SQLite's authorizer --


def test_sqlite_guard_and_read_only_file_refuse_raw_statements(tmp_path):
  """Statements sent past the tokenizer, on the session's own connection."""
  source = sqlite_source(tmp_path)
  before = faults.tree_hashes(source.sources)
  spec = connection.ConnectionSpec("sqlite", sqlite_path=str(source.sqlite_path))
  with drivers.open_session(spec) as session:
    for statement in (f"ATTACH '{source.scratch}/evil.db' AS evil",
                      f"VACUUM INTO '{source.scratch}/copy.db'", "PRAGMA user_version = 7",
                      "PRAGMA query_only = OFF", "PRAGMA journal_mode = WAL", "COMMIT",
                      "SAVEPOINT s", "DELETE FROM t", "CREATE TEMP TABLE x (a)"):
      with pytest.raises(sqlite3.DatabaseError, match="not authorized|cannot VACUUM"):
        session.connection.execute(statement)
    assert session.fetch_all(statements.Statement("SELECT count(*) FROM t")) == [(3,)]
    session.connection.set_authorizer(None)  # without the guard: mode=ro and query_only
    for statement in ("DELETE FROM t", "CREATE TEMP TABLE x (a)", "PRAGMA user_version = 7"):
      with pytest.raises(sqlite3.OperationalError, match="readonly database"):
        session.connection.execute(statement)
  assert faults.tree_hashes(source.sources) == before  # no evil.db, no copy.db, same t.db


# ------------------------------------------------------------- timeouts --


@pytest.mark.postgres
def test_postgres_statement_timeout_of_a_side_table(request, tmp_path):
  source = _source(request, "postgresql", tmp_path)
  query = {"sql": f"SELECT id, v FROM {source.table}, LATERAL (SELECT pg_sleep(2)) AS s"}
  case = faults.FaultCase("statement_timeout", errors.SourceError, [
      "ran longer than statement_timeout='100ms'", "canceling statement due to statement timeout",
      "raise statement_timeout", NO_PASSWORD])
  rows = faults.check_fault(
      case, lambda: build_augmented(source, query["sql"], tmp_path / "tfds", statement_timeout="100ms"),
      lambda: query.update(sql=source.sql(CLEAN)), source.sources, tmp_path / "tfds",
      source_digest=source.digest)
  assert rows == ROWS


@pytest.mark.postgres
def test_postgres_statement_timeout_from_the_dsn(request, tmp_path):
  source = _source(request, "postgresql", tmp_path)
  query = {"sql": f"SELECT id, v FROM {source.table} WHERE pg_sleep(0.2) IS NOT NULL"}
  case = faults.FaultCase("dsn_statement_timeout", errors.SourceError, [
      r"ran longer than statement_timeout \(the server setting\)", "`?statement_timeout`?",
      NO_PASSWORD])
  dsn = source.pg.dsn + " options='-c statement_timeout=100'"
  rows = faults.check_fault(
      case, lambda: _build_with_dsn(source, query["sql"], tmp_path / "tfds", dsn),
      lambda: query.update(sql=source.sql(CLEAN)), source.sources, tmp_path / "tfds",
      source_digest=source.digest)
  assert rows == ROWS


@pytest.mark.postgres
def test_postgres_lock_timeout_of_a_side_table(request, tmp_path):
  import psycopg2  # pylint: disable=import-outside-toplevel

  source = _source(request, "postgresql", tmp_path)
  locked = {"now": True}

  def run():
    locker = psycopg2.connect(source.pg.dsn)  # holds the lock while the build waits
    try:
      if locked["now"]:
        locker.cursor().execute(f"LOCK TABLE {source.table} IN ACCESS EXCLUSIVE MODE")
      return build_augmented(source, source.sql(CLEAN), tmp_path / "tfds", lock_timeout=100)
    finally:
      locker.rollback()
      locker.close()

  case = faults.FaultCase("lock_timeout", errors.SourceError, [
      "waited longer for a lock than lock_timeout=100", "lock timeout", "raise lock_timeout"])
  rows = faults.check_fault(case, run, lambda: locked.update(now=False), source.sources,
                            tmp_path / "tfds", source_digest=source.digest)
  assert rows == ROWS


@pytest.mark.parametrize("case_name, build", [
    ("sqlite_statement_timeout", build_augmented),
    ("database_statement_timeout", build_database),
], ids=["side_table", "database_builder"])
def test_sqlite_statement_timeout(tmp_path, case_name, build):
  source = sqlite_source(tmp_path)
  query = {"sql": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 100000000) "
                  "SELECT id, v FROM t WHERE (SELECT max(x) FROM r) > 0"}
  case = faults.FaultCase(case_name, errors.SourceError, [
      "ran longer than statement_timeout=50", "interrupted", "raise statement_timeout"])
  rows = faults.check_fault(
      case, lambda: build(source, query["sql"], tmp_path / "tfds", statement_timeout=50),
      lambda: query.update(sql=CLEAN.format(t="t")), source.sources, tmp_path / "tfds",
      source_digest=source.digest)
  assert rows == ROWS


@pytest.mark.parametrize("value", ["soon", "-5s", "10 parsecs", True])
def test_a_timeout_that_is_not_a_duration(value, tmp_path):
  source = sqlite_source(tmp_path)
  with pytest.raises(errors.ConfigError, match=r"statement_timeout=.* is not a duration\. Give "
                                               r"milliseconds \(30000\) or a number with a unit"):
    build_augmented(source, CLEAN.format(t="t"), tmp_path / "tfds", statement_timeout=value)
  assert not faults.loadable_dirs(tmp_path / "tfds")


# ------------------------------------------------------ the role warning --


@pytest.mark.postgres
def test_postgres_warns_when_the_role_can_write_what_it_reads(request, tmp_path, caplog):
  source = _source(request, "postgresql", tmp_path)
  superuser = source.pg.run("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0][0]
  with caplog.at_level(logging.WARNING):
    build_database(source, source.sql(CLEAN), tmp_path / "own")
  # The test role owns the table (scripts/start_postgres.sh makes it no superuser).
  if superuser:
    assert "is a superuser" in caplog.text or "a superuser" in caplog.text
  else:
    assert f"may INSERT, UPDATE, DELETE or TRUNCATE {source.table}, which the query reads" in caplog.text
  assert "role 'tfds_builders'" in caplog.text and PASSWORD_MARK not in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):  # the catalog: readable, not writable
    rows = build_database(source, "SELECT oid::int8 AS id, typname::text AS v FROM pg_catalog.pg_type "
                                  "WHERE oid IN (16, 17, 20)", tmp_path / "catalog")
  assert rows == [(16, b"bool"), (17, b"bytea"), (20, b"int8")]
  assert "may INSERT" not in caplog.text
  assert ("a superuser" in caplog.text) == bool(superuser)
