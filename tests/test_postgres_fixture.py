"""Tests that the PostgreSQL fixtures give a working, non-leaking connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from psycopg2.extensions import connection as PgConnection


def test_round_trip_of_common_types(postgres_connection: PgConnection) -> None:
    """Values of each common column type come back exactly as inserted."""
    assert postgres_connection.autocommit is False
    assert postgres_connection.server_version >= 120000
    with postgres_connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE fixture_check (id integer, name text, payload bytea,"
            " score double precision, flag boolean)"
        )
        cursor.execute(
            "INSERT INTO fixture_check VALUES (%s, %s, %s, %s, %s)",
            (7, "zoë", b"\x00\xff", 0.1, False),
        )
        cursor.execute("SELECT id, name, payload, score, flag FROM fixture_check")
        rows = cursor.fetchall()

    assert len(rows) == 1
    row_id, name, payload, score, flag = rows[0]
    assert row_id == 7
    assert name == "zoë"
    assert bytes(payload) == b"\x00\xff"
    assert score == 0.1
    assert flag is False


def test_wrong_password_error_does_not_leak(postgres_dsn: str) -> None:
    """A failed login's error message does not contain the real password."""
    import psycopg2  # pylint: disable=import-outside-toplevel
    from psycopg2.extensions import make_dsn, parse_dsn

    password = parse_dsn(postgres_dsn).get("password")
    assert password, "TFDS_BUILDERS_PG_DSN should contain a password"
    wrong_dsn = make_dsn(postgres_dsn, password="wrong")

    with pytest.raises(psycopg2.OperationalError) as excinfo:
        psycopg2.connect(wrong_dsn, connect_timeout=5)

    assert password not in str(excinfo.value)
