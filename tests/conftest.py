"""Shared pytest set-up: offline TFDS, the `postgres`/`slow` markers, PostgreSQL and S3 server fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

# Before TFDS is imported: no GCE metadata probing (there is no metadata server).
os.environ.setdefault("NO_GCE_CHECK", "true")

import pytest  # pylint: disable=wrong-import-position

from tfds_builders import tfds_internals  # pylint: disable=wrong-import-position
from tfds_builders.core import provenance  # pylint: disable=wrong-import-position

if TYPE_CHECKING:
    from psycopg2.extensions import connection as PgConnection

# TFDS may look datasets up on GCS (info, pre-built data); tests stay offline.
tfds_internals.disable_gcs_access()

MARKERS = {
    "postgres": "needs the PostgreSQL server of TFDS_BUILDERS_PG_DSN (added to every test using its fixtures)",
    "slow": "runs `tfds build` / CLI subprocesses or takes over 10 s; skip with -m 'not slow'",
}
# Using one of these fixtures marks a test `postgres`, so `-m "not postgres"` skips it.
POSTGRES_FIXTURES = frozenset({"postgres_dsn", "postgres_connection"})


def pytest_configure(config: pytest.Config) -> None:
  for name, description in MARKERS.items():
    config.addinivalue_line("markers", f"{name}: {description}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  for item in items:
    if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.postgres)


PG_DSN_ENV = "TFDS_BUILDERS_PG_DSN"
_HOW_TO_START = (
    "run ./scripts/test.sh, or `source scripts/start_postgres.sh` and rerun pytest"
)


def _redact(text: str, dsn: str = "") -> str:
    """`text` with DSN/URI passwords, and the literal password of `dsn`, as `***`."""
    text = provenance.redact(text)
    password = _dsn_password(dsn)
    return text.replace(password, provenance.REDACTED) if password else text


def _dsn_password(dsn: str) -> str:
    if not dsn:
        return ""
    from psycopg2.extensions import parse_dsn  # pylint: disable=import-outside-toplevel

    try:
        return parse_dsn(dsn).get("password", "")
    except Exception:  # pylint: disable=broad-except  # an unparsable DSN
        return ""


def _unavailable(service: str, reason: str, how_to_start: str = _HOW_TO_START) -> NoReturn:
    """Skips the test, or fails it on CI where the service is mandatory.

    Args:
        service: The server the test needs ("PostgreSQL", "S3 server").
        reason: Why it cannot be used; must not contain a password.
        how_to_start: What to run to start one.
    """
    message = f"{service} unavailable: {reason}; to start one, {how_to_start}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The libpq DSN of the test database, checked once per session.

    Returns:
        The value of `TFDS_BUILDERS_PG_DSN`, known to accept connections.
    """
    dsn = os.environ.get(PG_DSN_ENV, "").strip()
    if not dsn:
        _unavailable("PostgreSQL", f"{PG_DSN_ENV} is not set")
    try:
        import psycopg2  # pylint: disable=import-outside-toplevel
    except ImportError:
        _unavailable("PostgreSQL", "psycopg2 is not installed")
    problem = ""
    try:
        psycopg2.connect(dsn, connect_timeout=5).close()
    except psycopg2.Error as error:
        # libpq messages span lines; keep the skip reason on one line.
        problem = _redact(" ".join(str(error).split()), dsn)
    # Skip/fail outside the `except` block: pytest would otherwise also print
    # the chained driver exception, unredacted.
    if problem:
        _unavailable("PostgreSQL", f"cannot connect to {PG_DSN_ENV}={_redact(dsn)!r}: {problem}")
    return dsn


@pytest.fixture
def postgres_connection(postgres_dsn: str) -> Iterator[PgConnection]:
    """An open connection to the test database, closed after the test.

    Autocommit is off: uncommitted work is discarded when the connection closes.

    Args:
        postgres_dsn: The session's DSN fixture.

    Yields:
        A psycopg2 connection.
    """
    import psycopg2  # pylint: disable=import-outside-toplevel

    connection = psycopg2.connect(postgres_dsn, connect_timeout=5)
    connection.autocommit = False
    try:
        yield connection
    finally:
        connection.close()


S3_ENDPOINT_ENV = "TFDS_BUILDERS_S3_ENDPOINT"


def _s3_unavailable(reason: str) -> NoReturn:
    _unavailable("S3 server", reason, "run ./scripts/test.sh, or `source scripts/start_s3.sh` and rerun pytest")


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """The URL of the test S3 server (scripts/start_s3.sh), checked once per session.

    Returns:
        `TFDS_BUILDERS_S3_ENDPOINT`, which `AWS_ENDPOINT_URL` (read by s3fs) also names.
    """
    import urllib.error  # pylint: disable=import-outside-toplevel
    import urllib.request  # pylint: disable=import-outside-toplevel

    endpoint = os.environ.get(S3_ENDPOINT_ENV, "").strip()
    if not endpoint:
        _s3_unavailable(f"{S3_ENDPOINT_ENV} is not set")
    if os.environ.get("AWS_ENDPOINT_URL") != endpoint:
        _s3_unavailable(f"AWS_ENDPOINT_URL is not {endpoint}, so s3fs would not reach the test server")
    try:
        import s3fs  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        _s3_unavailable("s3fs is not installed")
    problem = ""
    try:
        urllib.request.urlopen(endpoint, timeout=5).close()
    except urllib.error.HTTPError:
        pass  # it answers: an S3 error is a reply
    except OSError as error:
        problem = str(error)
    if problem:
        _s3_unavailable(f"nothing answers at {endpoint}: {problem}")
    return endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    """A new, empty bucket on the test S3 server, as `s3://<name>`; removed after the test."""
    import uuid  # pylint: disable=import-outside-toplevel

    import s3fs  # pylint: disable=import-outside-toplevel

    filesystem = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    name = f"tfds-builders-{uuid.uuid4().hex[:12]}"
    filesystem.mkdir(name)
    try:
        yield f"s3://{name}"
    finally:
        filesystem.rm(name, recursive=True)
