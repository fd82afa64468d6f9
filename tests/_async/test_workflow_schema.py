"""The workflow schema against the TypeScript catalog, and adoption of a TypeScript schema."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

from pikku_pg import AsyncPgWorkflowRunService, AsyncPgWorkflowService
from pikku_pg._sql.workflow import V1_TYPESCRIPT_DDL, WORKFLOW
from pikku_pg.migrations import render_sql

CATALOG = Path(__file__).resolve().parents[3] / "shared" / "interop" / "ts-catalog.json"
TS_SCHEMA = "pikku_workflow"


def _ts_catalog() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CATALOG.read_text())
    return data["schemas"][TS_SCHEMA]


async def _rows(conn: AsyncConnection[Any], query: str, params: Any = None) -> list[Any]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def test_schema_matches_typescript_catalog(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    wf = AsyncPgWorkflowService(pg_dsn, schema_name)
    try:
        assert await wf.init() == [("workflow", 1), ("workflow", 2)]
        assert await wf.init() == []
    finally:
        await wf.close()
    ts = _ts_catalog()

    def ours(text: str | None) -> str | None:
        return None if text is None else text.replace(f"{TS_SCHEMA}.", f"{schema_name}.")

    enums = await _rows(
        admin_conn,
        "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)"
        " FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
        " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %s GROUP BY 1",
        (schema_name,),
    )
    assert dict(enums) == ts["enums"]

    for table, spec in ts["tables"].items():
        columns = {
            r[0]: r[1:]
            for r in await _rows(
                admin_conn,
                "SELECT column_name, column_default, data_type, is_nullable, udt_name"
                " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (schema_name, table),
            )
        }
        for name, col in spec["columns"].items():
            assert name in columns, f"{table}.{name} missing"
            expected = (
                ours(col["column_default"]),
                col["data_type"],
                col["is_nullable"],
                col["udt_name"],
            )
            assert columns[name] == expected, f"{table}.{name}"

        indexes = dict(
            await _rows(
                admin_conn,
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = %s AND tablename = %s",
                (schema_name, table),
            )
        )
        for name, definition in spec["indexes"].items():
            assert indexes.get(name) == ours(definition), f"index {name}"

        constraints = {
            r[0]: (r[1], r[2])
            for r in await _rows(
                admin_conn,
                "SELECT c.conname, c.contype::text, pg_get_constraintdef(c.oid)"
                " FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
                " JOIN pg_namespace n ON n.oid = t.relnamespace"
                " WHERE n.nspname = %s AND t.relname = %s",
                (schema_name, table),
            )
        }
        assert constraints[spec["primary_key"]["name"]][0] == "p"
        for name, unique in spec["unique"].items():
            assert constraints[name] == ("u", unique["definition"])
        for name, fk in spec["foreign_keys"].items():
            assert constraints[name] == ("f", ours(fk["definition"]))

    # The indexes our queries need exist too.
    ours_only = {
        r[0]
        for r in await _rows(
            admin_conn, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema_name,)
        )
    }
    assert {
        "workflow_step_history_step_seq_idx",
        "workflow_step_run_seq_idx",
        "workflow_runs_workflow_created_idx",
        "workflow_runs_status_created_idx",
        "workflow_runs_created_idx",
    } <= ours_only


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
