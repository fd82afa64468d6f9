"""The PostgreSQL database the test suite runs against (one server per session).

Where it comes from, in order:

1. ``PIKKU_PG_TEST_DSN``, if set: that server, checked once up front. If it cannot be reached
   the whole session stops with exit code 3: no silent fallback to another server.
2. A Docker container (testcontainers, ``postgres:16-alpine``), if a Docker daemon answers a
   ping within 2 seconds.
3. Otherwise an embedded server (``pikku_pg._embedded``, the PostgreSQL 16 bundled by pgserver).

The role behind ``pg_dsn`` may CREATE SCHEMA, CREATE DATABASE and CREATE ROLE.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pikku_pg.models import _base as models_base

# Every model built without validation (``trusted``) is checked against validation.
models_base.VERIFY_TRUSTED = True

DSN_ENV = "PIKKU_PG_TEST_DSN"
DOCKER_IMAGE = "postgres:16-alpine"
CONNECT_TIMEOUT = 5  # seconds
EXIT_BAD_DSN = 3


@dataclass
class _Database:
    source: str  # "dsn" | "docker" | "embedded"
    description: str
    target: str = ""  # host/port/dbname/user of PIKKU_PG_TEST_DSN, for messages
    dsn: str = ""
    version: str = ""
    version_num: int = 0
    startup_seconds: float = 0.0
    close: Callable[[], None] = field(default=lambda: None)


_DB_KEY = pytest.StashKey[_Database]()


def _describe_conninfo(dsn: str) -> str:
    """host/port/dbname/user of a conninfo, never its password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        pytest.exit(f"{DSN_ENV} is not a valid PostgreSQL conninfo: {exc}", returncode=EXIT_BAD_DSN)
    host = params.get("host") or params.get("hostaddr") or "(default Unix socket)"
    return (
        f"host={host} port={params.get('port') or 5432} "
        f"dbname={params.get('dbname') or '(default)'} user={params.get('user') or '(default)'}"
    )


def _server_version(dsn: str) -> tuple[str, int]:
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
        return (str(row[0]) if row else "?"), conn.info.server_version


def _check_dsn(db: _Database) -> None:
    """Connect once to PIKKU_PG_TEST_DSN; stop the whole session loudly if that fails."""
    try:
        with psycopg.connect(db.dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), r.rolsuper,"
                " r.rolcreaterole AND r.rolcreatedb"
                " AND has_database_privilege(current_database(), 'CREATE')"
                " FROM pg_roles r WHERE r.rolname = current_user"
            ).fetchone()
            db.version_num = conn.info.server_version
    except psycopg.Error as exc:
        pytest.exit(
            f"{DSN_ENV} is set but PostgreSQL at {db.target} cannot be reached: "
            f"{str(exc).strip()}\nFix the server or unset {DSN_ENV} (there is no fallback).",
            returncode=EXIT_BAD_DSN,
        )
    assert row is not None
    db.version = str(row[0])
    if not (row[1] or row[2]):
        pytest.exit(
            f"{DSN_ENV}: the role at {db.target} needs CREATE on the database plus "
            "CREATEDB and CREATEROLE (or be a superuser)",
            returncode=EXIT_BAD_DSN,
        )


def _docker_daemon_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no daemon, timeout: all mean "no Docker"
        return False
    return True


def _choose_database(config: pytest.Config) -> _Database:
    """Decide (once per session) where the database comes from; cheap, nothing is started."""
    db = config.stash.get(_DB_KEY, None)
    if db is not None:
        return db
    dsn = os.environ.get(DSN_ENV, "").strip()
    if dsn:
        target = _describe_conninfo(dsn)
        db = _Database("dsn", f"{DSN_ENV} ({target})", target=target, dsn=dsn)
        _check_dsn(db)
    elif _docker_daemon_answers():
        db = _Database("docker", f"Docker container {DOCKER_IMAGE} (testcontainers)")
    else:
        db = _Database("embedded", "embedded server (pgserver, bundled PostgreSQL 16)")
    config.stash[_DB_KEY] = db
    return db


def _start(db: _Database) -> None:
    started = time.monotonic()
    if db.source == "docker":
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers < 4.13
            from testcontainers.postgres import PostgresContainer
        container: Any = PostgresContainer(DOCKER_IMAGE, driver=None)
        container.start()
        db.close = container.stop
        db.dsn = container.get_connection_url()
    else:
        from pikku_pg._embedded import EmbeddedPostgres

        server = EmbeddedPostgres()
        db.close = server.stop
        db.dsn = server.start()
    db.version, db.version_num = _server_version(db.dsn)
    db.startup_seconds = time.monotonic() - started


@pytest.fixture(scope="session")
def _pg_database(pytestconfig: pytest.Config) -> Iterator[_Database]:
    db = _choose_database(pytestconfig)
    if db.source == "dsn":
        yield db
        return
    try:
        _start(db)
        yield db
    finally:
        db.close()


@pytest.fixture(scope="session")
def pg_dsn(_pg_database: _Database) -> str:
    """Conninfo of the test database, for a role that can create schemas, databases and roles."""
    return _pg_database.dsn


@pytest.fixture(scope="session")
def pg_server_version(_pg_database: _Database) -> int:
    """The server's ``server_version_num``, e.g. 160002."""
    return _pg_database.version_num


@pytest.fixture
def schema_name(pg_dsn: str) -> Iterator[str]:
    """A fresh unique schema name (``t_<12 hex>``), not created; dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
        # A connection the test leaked inside a transaction would block the DROP forever.
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def pytest_report_header(config: pytest.Config) -> str:
    """Say which database the session uses (and its version, when already known)."""
    db = _choose_database(config)
    if db.version:
        return f"pikku_pg test database: {db.description}, PostgreSQL {db.version}"
    return f"pikku_pg test database: {db.description}, started on first use"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Report the version of a server that the session started itself."""
    db = config.stash.get(_DB_KEY, None)
    if db is None or db.source == "dsn" or not db.version:
        return
    with contextlib.suppress(Exception):
        terminalreporter.write_line(
            f"pikku_pg test database: {db.description}: PostgreSQL {db.version} "
            f"({db.version_num}), started in {db.startup_seconds:.1f} s"
        )
