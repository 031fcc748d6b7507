"""The `pg` fixture: a schema of the test module's own in the test PostgreSQL database."""

from __future__ import annotations

import os

import pytest

from tests.database.common import Postgres


EVERY_TYPE_DDL = """
CREATE TYPE {schema}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {schema}.every_type (
  id int4 PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 real, f8 float8, num numeric, flag boolean,
  txt text, vc varchar(8), ch char(3), raw bytea, d date, ts timestamp, tstz timestamptz,
  tm time, js json, jsb jsonb, m {schema}.mood, u uuid, ints int8[], floats float8[],
  reals real[], texts text[], flags boolean[], dates date[], nums numeric[], moods {schema}.mood[]
);
INSERT INTO {schema}.every_type VALUES
  (1, -32768, 2147483647, -9223372036854775808, 3.4028235e38, '-0', 12345678901234567890.0123456789,
   true, 'héllo, 世界', 'varchar', 'ab', '\\x00ff10', '2024-02-29', '2024-02-29 12:34:56.789012',
   '2024-02-29 12:34:56.789012+02', '23:59:59.5', '{{"b": 1,  "a": [1, 2]}}', '{{"b": 1, "a": [1, 2]}}',
   'happy', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{1,-2,9223372036854775807}}',
   '{{1.5,-Infinity,NaN}}', '{{0.25}}', '{{"a","b c",""}}', '{{true,false}}', '{{2024-01-01}}',
   '{{1.5,-0.000000001}}', '{{sad,ok}}'),
  (2, 0, 0, 0, 0, 0, 0, false, '', '', '', '', '1970-01-01', '1970-01-01 00:00:00',
   '1970-01-01 00:00:00+00', '00:00', '0', '0', 'sad', '00000000-0000-0000-0000-000000000000',
   '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE {schema}.odd (id int4 PRIMARY KEY, span interval, spot point, grid int4[], holes int4[]);
INSERT INTO {schema}.odd VALUES (1, '1 day', '(1,2)', '{{{{1,2}},{{3,4}}}}', '{{1,NULL}}');
CREATE SEQUENCE {schema}.counter;
"""


@pytest.fixture(scope="module")
def pg(postgres_dsn):
  """A schema of this module's own in the test database, dropped afterwards."""
  import psycopg2  # pylint: disable=import-outside-toplevel
  from psycopg2 import sql  # pylint: disable=import-outside-toplevel

  schema = f"tfds_database_test_{os.getpid()}"
  admin = psycopg2.connect(postgres_dsn)
  admin.autocommit = True
  with admin.cursor() as cursor:
    cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}").format(
        sql.Identifier(schema)))
    cursor.execute(EVERY_TYPE_DDL.format(schema=schema))
  try:
    yield Postgres(postgres_dsn, schema, admin)
  finally:
    with admin.cursor() as cursor:
      cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    admin.close()
