"""The workflow schema against the TypeScript catalog, and adoption of a TypeScript schema."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from psycopg import AsyncConnection

from pikku_pg import AsyncPgWorkflowRunService, AsyncPgWorkflowService
from pikku_pg._sql.workflow import V1_TYPESCRIPT_DDL, WORKFLOW
from pikku_pg.migrations import render_sql
from tests.catalog import catalog_differences

TS_SCHEMA = "pikku_workflow"


async def test_schema_matches_typescript_catalog(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    wf = AsyncPgWorkflowService(pg_dsn, schema_name)
    try:
        assert await wf.init() == [
            ("workflow", 1),
            ("workflow", 2),
            ("workflow_queue", 1),
            ("workflow_queue", 2),
            ("workflow_queue", 3),
        ]
        assert await wf.init() == []
    finally:
        await wf.close()
    assert catalog_differences(pg_dsn, TS_SCHEMA, schema_name) == []
    # The indexes our queries need exist too.
    cur = await admin_conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema_name,)
    )
    assert {
        "workflow_step_history_step_seq_idx",
        "workflow_step_run_seq_idx",
        "workflow_jobs_run_idx",
        "workflow_runs_workflow_created_idx",
        "workflow_runs_status_created_idx",
        "workflow_runs_created_idx",
    } <= {row[0] for row in await cur.fetchall()}


async def test_adopts_typescript_schema_with_rows(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    """A schema and rows that TypeScript wrote before us: attempts keep their order."""
    await admin_conn.execute(render_sql(V1_TYPESCRIPT_DDL, schema_name).encode())
    s = f'"{schema_name}"'
    cur = await admin_conn.execute(
        f"INSERT INTO {s}.workflow_runs (workflow, status, input) VALUES ('ts', 'running', '{{}}')"
        " RETURNING workflow_run_id"
    )
    row = await cur.fetchone()
    assert row is not None
    run_id = row[0]
    cur = await admin_conn.execute(
        f"INSERT INTO {s}.workflow_step (workflow_run_id, step_name, rpc_name)"
        " VALUES (%s, 'st', 'rpc') RETURNING workflow_step_id",
        (run_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    step_id = row[0]
    # Inserted newest first, so physical order disagrees with created_at.
    for minute, status in [(3, "pending"), (2, "failed"), (1, "failed")]:
        await admin_conn.execute(
            f"INSERT INTO {s}.workflow_step_history (workflow_step_id, status, created_at)"
            " VALUES (%s, %s, %s)",
            (step_id, status, datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc)),
        )
    runs = AsyncPgWorkflowRunService(pg_dsn, schema_name)
    try:
        assert await runs.init() == [(WORKFLOW.name, 1), (WORKFLOW.name, 2)]  # v1 adopts
        history = await runs.get_run_history(str(run_id))
        assert [(h.attempt_count, h.created_at.minute) for h in history] == [
            (1, 1),
            (2, 2),
            (3, 3),
        ]
        wf = AsyncPgWorkflowService(pg_dsn, schema_name)
        try:
            await wf.set_step_running(str(step_id))  # the current attempt is the latest
            state = await wf.create_retry_attempt(str(step_id), "pending")
            assert state.attempt_count == 4
        finally:
            await wf.close()
        history = await runs.get_run_history(str(run_id))
        assert [h.status for h in history] == ["failed", "failed", "running", "pending"]
    finally:
        await runs.close()
