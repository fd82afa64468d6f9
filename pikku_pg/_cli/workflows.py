"""``runs``, ``run ID``, ``cancel ID`` and ``resume ID``: durable workflow runs."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from typing import Any

from psycopg import errors as pg_errors

from pikku_pg._cli._common import EXIT_OK, connect, expect_tables, positive_int
from pikku_pg._cli.output import Column, Output, compact_json, fmt_duration, fmt_time, shorten
from pikku_pg._sync.workflow import PgWorkflowService
from pikku_pg._sync.workflow_runs import PgWorkflowRunService
from pikku_pg.errors import SchemaNotInitializedError, WorkflowRunNotFoundError
from pikku_pg.models.workflow import (
    WORKFLOW_STATUSES,
    RunActivity,
    SerializedError,
    WorkflowRun,
    WorkflowStepHistory,
)

WORKFLOW_SCHEMA = "pikku_workflow"


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the workflow run commands on the sub-command parser."""
    runs = commands.add_parser("runs", parents=[common], help="list workflow runs, newest first")
    runs.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    runs.add_argument(
        "--status",
        choices=WORKFLOW_STATUSES,
        metavar="S",
        help=f"only runs in this status: {', '.join(WORKFLOW_STATUSES)}",
    )
    runs.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="at most N runs (50)"
    )
    runs.add_argument("--schema", default=WORKFLOW_SCHEMA, help=f"({WORKFLOW_SCHEMA})")
    runs.set_defaults(run=list_runs)

    run = commands.add_parser(
        "run", parents=[common], help="show a run and the timeline of its step attempts"
    )
    run.add_argument("id", metavar="ID", help="workflow run id")
    run.add_argument("--schema", default=WORKFLOW_SCHEMA, help=f"({WORKFLOW_SCHEMA})")
    run.set_defaults(run=show_run)

    cancel = commands.add_parser(
        "cancel", parents=[common], help="cancel a running or suspended run"
    )
    cancel.add_argument("id", metavar="ID", help="workflow run id")
    cancel.add_argument("--reason", help="stored as the run's error message")
    cancel.add_argument("--schema", default=WORKFLOW_SCHEMA, help=f"({WORKFLOW_SCHEMA})")
    cancel.set_defaults(run=cancel_run)

    resume = commands.add_parser(
        "resume",
        parents=[common],
        help="resume a suspended run, or retry a failed one (a worker continues it)",
    )
    resume.add_argument("id", metavar="ID", help="workflow run id")
    resume.add_argument("--schema", default=WORKFLOW_SCHEMA, help=f"({WORKFLOW_SCHEMA})")
    resume.set_defaults(run=resume_run)


def _error_text(error: SerializedError | None) -> str:
    if error is None:
        return ""
    code = f"[{error.code}] " if error.code else ""
    name = f"{error.name}: " if error.name and error.name != "Error" else ""
    return f"{code}{name}{error.message}"


def list_runs(args: argparse.Namespace, out: Output) -> int:
    with (
        connect(args) as conn,
        PgWorkflowRunService(conn, args.schema) as console,
        expect_tables(args.schema, "workflow"),
    ):
        found = console.list_runs(workflow_name=args.workflow, status=args.status, limit=args.limit)
        activity = _activity(conn, args.schema, found)
    if out.json_mode:
        out.json([_run_json(r, activity) for r in found])
        return EXIT_OK
    out.table(
        [
            Column("id", 36),
            Column("workflow", 30),
            Column("status", 20, status=True),
            Column("created", 20),
            Column("updated", 20),
            Column("error", 50),
        ],
        [
            [
                r.id,
                r.workflow,
                _status_text(r, activity),
                fmt_time(r.created_at),
                fmt_time(r.updated_at),
                _error_text(r.error),
            ]
            for r in found
        ],
        empty="no workflow runs",
    )
    return EXIT_OK


def attempt_times(
    attempt: WorkflowStepHistory,
) -> tuple[datetime, timedelta | None, timedelta | None]:
    """When an attempt began, how long it waited (a sleep, a retry delay) before it
    ran, and how long it ran (None while it has not finished)."""
    began = attempt.scheduled_at or attempt.running_at or attempt.created_at
    waited = None
    if attempt.scheduled_at is not None and attempt.running_at is not None:
        waited = attempt.running_at - attempt.scheduled_at
    end = attempt.succeeded_at or attempt.failed_at
    if end is None and attempt.status == "suspended":
        end = attempt.updated_at
    ran = None if end is None else end - (attempt.running_at or began)
    return began, waited, ran


def _jobs(conn: Any, schema: str, run_id: str) -> list[dict[str, Any]]:
    """The run's queued jobs; none when the schema has no job queue (TypeScript-made)."""
    with PgWorkflowService(conn, schema) as engine:
        try:
            return engine.get_run_jobs(run_id)
        except (SchemaNotInitializedError, pg_errors.UndefinedTable):
            return []


def _activity(conn: Any, schema: str, runs: list[WorkflowRun]) -> dict[str, RunActivity]:
    """What the running runs are doing (held, waiting for a worker...); nothing when the
    schema has no job queue (TypeScript-made)."""
    running = [r.id for r in runs if r.status == "running"]
    if not running:
        return {}
    with PgWorkflowService(conn, schema) as engine:
        try:
            return engine.get_run_activity(running)
        except pg_errors.UndefinedTable:
            return {}


def _status_text(run: WorkflowRun, activity: dict[str, RunActivity]) -> str:
    """The run's status, or for a running run what it is doing (``waiting for a
    worker`` when nobody runs it now)."""
    found = activity.get(run.id)
    return run.status if found is None else found.label


def show_run(args: argparse.Namespace, out: Output) -> int:
    with (
        connect(args) as conn,
        PgWorkflowRunService(conn, args.schema) as console,
        expect_tables(args.schema, "workflow"),
    ):
        run = console.get_run(args.id)
        if run is None:
            raise WorkflowRunNotFoundError(args.id)
        history = console.get_run_history(args.id)
        jobs = _jobs(conn, args.schema, run.id)
        activity = _activity(conn, args.schema, [run])
    if out.json_mode:
        out.json(
            {
                "run": _run_json(run, activity),
                "history": [h.model_dump(by_alias=True, mode="json") for h in history],
                "jobs": jobs,
            }
        )
        return EXIT_OK
    _print_run(out, run, activity)
    out.line()
    out.heading("Step attempts")
    rows = []
    for attempt in history:
        began, waited, ran = attempt_times(attempt)
        detail = _error_text(attempt.error)
        if not detail and attempt.status == "succeeded" and attempt.result is not None:
            detail = "→ " + compact_json(attempt.result)
        rows.append(
            [
                attempt.step_name,
                str(attempt.attempt_count),
                attempt.status,
                fmt_time(began, precise=True),
                fmt_duration(waited) if waited is not None else "",
                fmt_duration(ran) if ran is not None else "…",
                detail,
            ]
        )
    out.table(
        [
            Column("step", 30),
            Column("attempt", 7),
            Column("status", 10, status=True),
            Column("began (UTC)", 12),
            Column("waited", 9),
            Column("ran", 9),
            Column("error / result", 60),
        ],
        rows,
        empty="no steps yet",
    )
    if jobs:
        out.line()
        out.heading("Queued jobs")
        out.table(
            [
                Column("kind", 8),
                Column("step", 30),
                Column("status", 10),
                Column("due", 20),
                Column("attempts", 8),
                Column("worker", 40),
            ],
            [
                [
                    str(job.get("kind") or ""),
                    str(job.get("step_name") or ""),
                    str(job.get("status") or ""),
                    fmt_time(job.get("run_at")),
                    str(job.get("attempts") or 0),
                    str(job.get("locked_by") or ""),
                ]
                for job in jobs
            ],
        )
    return EXIT_OK


def _run_json(run: WorkflowRun, activity: dict[str, RunActivity]) -> dict[str, Any]:
    """A run as JSON, with ``activity`` (``running``, ``waiting``, ``scheduled``,
    ``unowned``) when it is running and the schema has a job queue."""
    data: dict[str, Any] = run.model_dump(by_alias=True, mode="json")
    found = activity.get(run.id)
    if found is not None:
        data["activity"] = found.state
    return data


def _print_run(out: Output, run: WorkflowRun, activity: dict[str, RunActivity]) -> None:
    out.heading(f"Workflow run {run.id}")
    took = fmt_duration(run.updated_at - run.created_at)
    status = _status_text(run, activity)
    found = activity.get(run.id)
    if found is not None and found.worker:
        status += f" (by {found.worker})"
    elif found is not None and found.due_at is not None:
        status += f" (due {fmt_time(found.due_at)})"
    pairs = [
        ("workflow", run.workflow),
        ("status", status),
        ("created", fmt_time(run.created_at)),
        ("updated", f"{fmt_time(run.updated_at)} ({took} after creation)"),
        ("mode", "inline" if run.inline else "queued"),
        ("started by", compact_json(run.wire.model_dump(by_alias=True, exclude_none=True))),
    ]
    if run.graph_hash:
        pairs.append(("version", run.graph_hash))
    pairs.append(("input", shorten(compact_json(run.input), 500)))
    if run.output is not None:
        pairs.append(("output", shorten(compact_json(run.output), 500)))
    if run.error is not None:
        pairs.append(("error", _error_text(run.error)))
    out.fields(pairs)


def cancel_run(args: argparse.Namespace, out: Output) -> int:
    with (
        connect(args) as conn,
        PgWorkflowService(conn, args.schema) as engine,
        expect_tables(args.schema, "workflow", "workflow_queue"),
    ):
        engine.cancel_run(args.id, args.reason)
        run = engine.get_run(args.id)
    status = run.status if run is not None else "cancelled"
    if out.json_mode:
        out.json({"id": args.id, "status": status})
    else:
        out.line(f"workflow run {args.id} is {status}")
    return EXIT_OK


def resume_run(args: argparse.Namespace, out: Output) -> int:
    with (
        connect(args) as conn,
        PgWorkflowService(conn, args.schema) as engine,
        expect_tables(args.schema, "workflow", "workflow_queue"),
    ):
        engine.resume_run(args.id)
        run = engine.get_run(args.id)
    status = run.status if run is not None else "running"
    if out.json_mode:
        out.json({"id": args.id, "status": status})
    else:
        out.line(f"workflow run {args.id} is {status} again: a worker will continue it")
    return EXIT_OK
