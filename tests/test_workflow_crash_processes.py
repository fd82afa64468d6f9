"""Workflow workers in separate processes (tests/faults.py starts them): a worker killed
with SIGKILL mid-step, and several worker processes sharing one queue (sync API)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pikku_pg._sync.workflow import PgWorkflowService, WorkflowContext
from pikku_pg.errors import DatabaseUnavailableError
from tests.faults import STEPS, Recorder, audit, children, install_audit, register, spawn

WORKER = {"role": "worker", "lease": 1.0, "poll": 0.2, "concurrency": 2}


@pytest.fixture
def wf(pg_dsn: str, schema_name: str) -> Iterator[PgWorkflowService]:
    """A service with the fault workflows (tests/faults.py) and the executions table."""
    with PgWorkflowService(pg_dsn, schema_name) as service:
        service.init()
        install_audit(pg_dsn, schema_name)
        register(service, Recorder(pg_dsn, schema_name, slow=0.0))
        yield service


def _postmaster_start(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def _executions(dsn: str, schema: str) -> dict[tuple[str, str], int]:
    return {key: len(runs) for key, runs in audit(dsn, schema).executions.items()}


def test_a_killed_worker_s_run_is_finished_by_another(
    wf: PgWorkflowService, pg_dsn: str, schema_name: str, tmp_path: Path
) -> None:
    proc = spawn(tmp_path, dsn=pg_dsn, schema=schema_name, **WORKER, hang=True, announce=True)
    try:
        run_id = wf.start_workflow("three", None)
        assert proc.line() == f"slow {run_id}"
        proc.signal(signal.SIGKILL)
        proc.proc.wait(10)
    finally:
        proc.stop()
    killed_at = time.monotonic()
    with wf.worker(concurrency=1, lease=1.0, poll_interval=0.2, shutdown_timeout=5):
        run = wf.wait_for_run(run_id, timeout=20)
    assert run.status == "completed"
    assert [token.split(":")[0] for token in run.output] == list(STEPS)
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
    wf: PgWorkflowService, pg_dsn: str, schema_name: str, tmp_path: Path
) -> None:
    run_ids = [wf.start_workflow("three", i) for i in range(200)]
    with children(tmp_path, 4, dsn=pg_dsn, schema=schema_name, **WORKER, slow=0.0) as procs:
        runs = [wf.wait_for_run(r, timeout=60) for r in run_ids]
    assert {r.status for r in runs} == {"completed"}
    counts = _executions(pg_dsn, schema_name)
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert all(p.proc.returncode == 0 for p in procs)  # stopped gracefully


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
