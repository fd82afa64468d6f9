"""Workflow workers in separate processes: a worker killed with SIGKILL mid-step, and
several worker processes sharing one queue (sync API)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pikku_pg._sync.workflow import PgWorkflowService, WorkflowContext
from pikku_pg.errors import DatabaseUnavailableError

# A worker process. Every step execution is counted in the table "executions";
# in mode "hang" the step "slow" announces itself and then hangs (to be killed).
WORKER = """
import sys, threading, time
import psycopg
from pikku_pg._sync.workflow import PgWorkflowService

dsn, schema, mode = sys.argv[1], sys.argv[2], sys.argv[3]
conn = psycopg.connect(dsn, autocommit=True)
lock = threading.Lock()
wf = PgWorkflowService(dsn, schema)

def record(data):
    with lock:
        conn.execute(
            f'INSERT INTO "{schema}".executions (run_id, step) VALUES (%s, %s)',
            (data["run"], data["step"]),
        )
    if data["step"] == "slow" and mode == "hang":
        print("slow started", flush=True)
        time.sleep(120)
    return data["step"]

@wf.workflow("three", version="1")
def three(ctx, data):
    return [ctx.do(s, record, {"run": ctx.run_id, "step": s}) for s in ("first", "slow", "last")]

print("ready", flush=True)
with wf:
    try:
        wf.run_worker(concurrency=2, lease=1.0, poll_interval=0.2, shutdown_timeout=5)
    except KeyboardInterrupt:
        pass
"""


def _register(wf: PgWorkflowService, dsn: str, schema: str) -> None:
    conn = psycopg.connect(dsn, autocommit=True)

    def record(data: dict[str, str]) -> str:
        conn.execute(
            sql.SQL("INSERT INTO {}.executions (run_id, step) VALUES (%s, %s)").format(
                sql.Identifier(schema)
            ),
            (data["run"], data["step"]),
        )
        return data["step"]

    @wf.workflow("three", version="1")
    def three(ctx: WorkflowContext, data: Any) -> list[str]:
        return [
            ctx.do(s, record, {"run": ctx.run_id, "step": s}) for s in ("first", "slow", "last")
        ]


@pytest.fixture
def wf(pg_dsn: str, schema_name: str) -> Iterator[PgWorkflowService]:
    with PgWorkflowService(pg_dsn, schema_name) as service:
        service.init()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLE {}.executions (run_id TEXT, step TEXT)").format(
                    sql.Identifier(schema_name)
                )
            )
        _register(service, pg_dsn, schema_name)
        yield service


def _spawn(dsn: str, schema: str, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, dsn, schema, mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _postmaster_start(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def _executions(dsn: str, schema: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT run_id, step, count(*) FROM {}.executions GROUP BY 1, 2").format(
                sql.Identifier(schema)
            )
        ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def test_a_killed_worker_s_run_is_finished_by_another(
    wf: PgWorkflowService, pg_dsn: str, schema_name: str
) -> None:
    proc = _spawn(pg_dsn, schema_name, "hang")
    try:
        run_id = wf.start_workflow("three", None)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "slow started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = time.monotonic()
    with wf.worker(concurrency=1, lease=1.0, poll_interval=0.2, shutdown_timeout=5):
        run = wf.wait_for_run(run_id, timeout=20)
    assert run.status == "completed" and run.output == ["first", "slow", "last"]
    assert time.monotonic() - killed_at < 15
    # "first" had succeeded: not run again. "slow" was running when its worker died:
    # it ran again as a new attempt (at-least-once). Nothing was lost.
    assert _executions(pg_dsn, schema_name) == {
        (run_id, "first"): 1,
        (run_id, "slow"): 2,
        (run_id, "last"): 1,
    }
    history = [(h.step_name, h.attempt_count, h.status) for h in wf.get_run_history(run_id)]
    assert history == [
        ("first", 1, "succeeded"),
        ("slow", 1, "running"),
        ("slow", 2, "succeeded"),
        ("last", 1, "succeeded"),
    ]


def test_four_worker_processes_run_every_run_and_step_once(
    wf: PgWorkflowService, pg_dsn: str, schema_name: str
) -> None:
    run_ids = [wf.start_workflow("three", i) for i in range(200)]
    procs = [_spawn(pg_dsn, schema_name, "normal") for _ in range(4)]
    try:
        runs = [wf.wait_for_run(r, timeout=60) for r in run_ids]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # graceful stop
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert {r.status for r in runs} == {"completed"}
    counts = _executions(pg_dsn, schema_name)
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert all(p.returncode == 0 for p in procs)


def test_workers_survive_a_server_restart() -> None:
    """Restart PostgreSQL (pg_ctl restart) while a worker is busy: all runs complete."""
    from pikku_pg._embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg, PgWorkflowService(pg.dsn, "restart") as wf:
        wf.init()

        def step(name: str) -> str:
            time.sleep(0.03)
            return name

        @wf.workflow("slowish")
        def slowish(ctx: WorkflowContext, _: Any) -> list[str]:
            return [ctx.do(n, step, n) for n in ("a", "b", "c", "d")]

        run_ids = [wf.start_workflow("slowish", i) for i in range(12)]
        with wf.worker(concurrency=3, lease=1.0, poll_interval=0.2, shutdown_timeout=5):
            time.sleep(0.2)
            assert pg.pgdata is not None
            statuses = [wf.get_run(r).status for r in run_ids]  # type: ignore[union-attr]
            assert statuses.count("completed") < 12  # workers are busy
            started = _postmaster_start(pg.dsn)
            pg.restart()
            assert _postmaster_start(pg.dsn) != started  # a new postmaster
            deadline = time.monotonic() + 40
            runs: list[Any] = []
            raw: list[BaseException] = []
            while time.monotonic() < deadline:
                try:
                    runs = [wf.wait_for_run(r, timeout=40) for r in run_ids]
                    break
                except DatabaseUnavailableError:
                    time.sleep(0.2)  # this caller's pooled connection died too
                except Exception as exc:  # never a raw psycopg error
                    raw.append(exc)
                    time.sleep(0.2)
            assert raw == []
        assert [r.status for r in runs] == ["completed"] * 12
        assert {tuple(r.output) for r in runs} == {("a", "b", "c", "d")}
