"""Tests of the test harness itself: the embedded server and the database selection in conftest.

They always use real embedded servers (whatever database the rest of the session uses).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from pikku_pg._embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]

CHILD_SCRIPT = """
import os, sys, time
from pikku_pg._embedded import EmbeddedPostgres
pg = EmbeddedPostgres()
pg.start()
print(pg.pgdata, pg.pid, os.environ["XDG_RUNTIME_DIR"], flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.1)
    return bool(callable(condition) and condition())


def test_embedded_start_select_stop() -> None:
    pg = EmbeddedPostgres()
    with pytest.raises(RuntimeError, match="not running"):
        _ = pg.dsn
    dsn = pg.start()
    try:
        assert pg.start() == dsn == pg.dsn  # start() is idempotent too
        pgdata, pid = pg.pgdata, pg.pid
        assert pgdata is not None and pid is not None
        # Directly under the temp dir: pgserver chmods all parents of pgdata when run as root.
        assert pgdata.parent == Path(tempfile.gettempdir()).resolve()
        assert pgdata.name.startswith("pikku-pg-")
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()
    assert not pgdata.exists()
    assert _wait_until(lambda: not _alive(pid), 5)
    assert not pg.running and pg.pgdata is None
    pg.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = pg.dsn


def test_embedded_context_manager() -> None:
    with EmbeddedPostgres() as pg:
        pgdata = pg.pgdata
        assert pgdata is not None and pgdata.is_dir()
        with psycopg.connect(pg.dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    assert not pg.running
    assert not pgdata.exists()


def test_embedded_restart_and_down_keep_the_data_and_the_dsn() -> None:
    with EmbeddedPostgres() as pg:
        dsn, first_pid = pg.dsn, pg.pid
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (1)")
            pg.restart()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")  # the fast shutdown ended the session
        assert pg.dsn == dsn and pg.pid not in (None, first_pid)
        with pg.down(), pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [(1,)]
    with pytest.raises(RuntimeError, match="not running"):
        pg.restart()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_process_does_not_leak_its_server(signum: signal.Signals) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XDG_RUNTIME_DIR", None)  # so the child creates (and must remove) its own
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child did not start its server within 30 s"
        pgdata_s, pid_s, runtime_dir_s = child.stdout.readline().split()
        pgdata, pid, runtime_dir = Path(pgdata_s), int(pid_s), Path(runtime_dir_s)
        assert pgdata.is_dir() and _alive(pid) and runtime_dir.is_dir()

        child.send_signal(signum)
        returncode = child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # SIGTERM: our handler stops the server then exits with 128 + signum.
    assert returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 128 + signum)
    assert _wait_until(lambda: not _alive(pid) and not pgdata.exists(), 10), (
        f"postmaster {pid} alive={_alive(pid)}, {pgdata} exists={pgdata.exists()}"
    )
    assert _wait_until(lambda: not runtime_dir.exists(), 5)


def test_unreachable_dsn_fails_the_session_fast(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_tiny.py").write_text("def test_tiny(pg_dsn):\n    assert pg_dsn\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PIKKU_PG_TEST_DSN=f"postgresql://nobody:s3cret@127.0.0.1:{port}/nowhere")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", "pytest.ini"]
    started = time.monotonic()
    result = subprocess.run(
        [*command, "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert f"127.0.0.1 port={port}" in output
    assert "PIKKU_PG_TEST_DSN" in output
    assert "s3cret" not in output
    assert "passed" not in output  # no fallback to another server
    assert elapsed < 15, output


@pytest.fixture
def dropped_afterwards(pg_dsn: str) -> Iterator[list[str]]:
    """Set up before ``schema_name``, so torn down after it: checks that it dropped its schema."""
    names: list[str] = []
    yield names
    with psycopg.connect(pg_dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)", [names]
        ).fetchone()
    assert names and row == (0,), f"schema(s) {names} left behind"


def test_schema_name_fixture(
    dropped_afterwards: list[str], pg_dsn: str, pg_server_version: int, schema_name: str
) -> None:
    assert schema_name.startswith("t_") and len(schema_name) == 14
    assert pg_server_version >= 130000
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=5) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema_name]
        ).fetchone() == (0,)
        conn.execute(f'CREATE SCHEMA "{schema_name}"')
        conn.execute(f'CREATE TABLE "{schema_name}".t (id int)')
    dropped_afterwards.append(schema_name)
