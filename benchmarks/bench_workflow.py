"""Benchmark of the workflow state store and run service (ops/s, sync and async, x1 and x16).

    python benchmarks/bench_workflow.py [--dsn CONNINFO] [--seconds 2] [--runs 100000]

Without ``--dsn`` it starts an embedded server with ``fsync`` and
``synchronous_commit`` off (how the TypeScript reference figures were measured).
Operations: the step lifecycle (insert -> running -> result), ``get_run_steps`` of a
50-step run while the history table holds 1,000 and then 100,000 rows (it must not
slow down), and ``list_runs(workflow_name=..., limit=50)`` over ``--runs`` runs. The
``trips`` column counts the round trips of one call (libpq trace: one ``Sync`` each).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import _harness as harness
import psycopg
from _harness import IN_FLIGHT, Column, Figure

from pikku_pg import (
    AsyncPgWorkflowRunService,
    AsyncPgWorkflowService,
    PgWorkflowRunService,
    PgWorkflowService,
)

SCHEMA = "bench_workflow"
LIFECYCLE = "step lifecycle (3 calls)"
STEPS = "get_run_steps (50 steps)"
LISTING = "list_runs(workflow, limit=50)"
# TypeScript @pikku/pg 0.12.1 (fsync off), sequential and 16 in flight where known.
TS_REFERENCE: dict[str, str] = {
    LIFECYCLE: "470 / 1,077",
    "get_run_steps, 1,000 history": "1,462 @50 rows; 119 @4,000",
    "get_run_steps, 100,000 history": "(falls with size)",
}
_names = itertools.count()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=100_000, help="runs for list_runs")


# --- setup -------------------------------------------------------------------------------------


def prepare(dsn: str) -> tuple[str, list[str]]:
    """The 50-step run to read, and one run per in-flight lane."""
    with PgWorkflowService(dsn, SCHEMA) as wf:
        wf.init()
        target = wf.create_run("bench-target", {"n": 1}, wire={"type": "bench"})
        for i in range(50):
            step = wf.insert_step_state(target, f"step-{i}", "rpc.bench", {"i": i}, retries=2)
            wf.set_step_running(step.step_id)
            wf.set_step_result(step.step_id, {"out": i})
        lanes = [wf.create_run("bench-lane", {}) for _ in range(IN_FLIGHT)]
    return target, lanes


def fill_history(dsn: str, total: int) -> None:
    """Add filler steps with 50 attempts each until the history table holds ``total`` rows."""
    have = harness.fetch_value(dsn, f"SELECT count(*) FROM {SCHEMA}.workflow_step_history")
    harness.execute(
        dsn,
        f"""WITH r AS (
              INSERT INTO {SCHEMA}.workflow_runs (workflow, status, input)
              VALUES ('bench-filler', 'completed', '{{}}') RETURNING workflow_run_id
            ), s AS (
              INSERT INTO {SCHEMA}.workflow_step (workflow_run_id, step_name, status)
              SELECT r.workflow_run_id, 'filler-' || g, 'succeeded'
              FROM r, generate_series(1, %s) g RETURNING workflow_step_id
            )
            INSERT INTO {SCHEMA}.workflow_step_history (workflow_step_id, status)
            SELECT s.workflow_step_id, 'failed' FROM s, generate_series(1, 50)""",
        params=(max(0, (total - int(have)) // 50),),
    )
    harness.execute(dsn, f"ANALYZE {SCHEMA}.workflow_step, {SCHEMA}.workflow_step_history")


def fill_runs(dsn: str, total: int) -> None:
    """``total`` runs spread over 10 workflow names, created over the last ``total`` s."""
    harness.execute(
        dsn,
        f"""INSERT INTO {SCHEMA}.workflow_runs (workflow, status, input, created_at)
        SELECT 'wf-' || (g %% 10), 'completed', jsonb_build_object('g', g),
               now() - make_interval(secs => g)
        FROM generate_series(1, %s) g""",
        params=(total,),
    )
    harness.execute(dsn, f"ANALYZE {SCHEMA}.workflow_runs")


# --- operations ---------------------------------------------------------------------------------


def operations(
    runs: Any, target: str, lifecycle: Callable[[], Any]
) -> dict[str, Callable[[], Any]]:
    """The operations (sync or async: each call returns what the service does)."""
    return {
        LIFECYCLE: lifecycle,
        STEPS: lambda: runs.get_run_steps(target),
        LISTING: lambda: runs.list_runs(workflow_name="wf-3", limit=50),
    }


def sync_ops(
    wf: PgWorkflowService, runs: PgWorkflowRunService, lane: str, target: str
) -> dict[str, Callable[[], object]]:
    def lifecycle() -> None:
        step = wf.insert_step_state(lane, f"s{next(_names)}", "rpc", {"x": 1})
        wf.set_step_running(step.step_id)
        wf.set_step_result(step.step_id, {"ok": True})

    return operations(runs, target, lifecycle)


def async_ops(
    wf: AsyncPgWorkflowService, runs: AsyncPgWorkflowRunService, lane: str, target: str
) -> dict[str, Callable[[], Awaitable[object]]]:
    async def lifecycle() -> None:
        step = await wf.insert_step_state(lane, f"s{next(_names)}", "rpc", {"x": 1})
        await wf.set_step_running(step.step_id)
        await wf.set_step_result(step.step_id, {"ok": True})

    return operations(runs, target, lifecycle)


def figures(dsn: str, name: str, lanes: list[str], target: str, seconds: float) -> list[float]:
    """ops/s of operation ``name``: sync x1, sync x16, async x1, async x16."""

    def measure_sync(n: int) -> Figure:
        pool = harness.pool(n)
        with (
            PgWorkflowService(dsn, SCHEMA, **pool) as wf,
            PgWorkflowRunService(dsn, SCHEMA, **pool) as runs,
        ):
            ops = [sync_ops(wf, runs, lane, target)[name] for lane in lanes[:n]]
            return harness.run_sync(ops, seconds)

    async def measure_async(n: int) -> Figure:
        pool = harness.pool(n)
        async with (
            AsyncPgWorkflowService(dsn, SCHEMA, **pool) as wf,
            AsyncPgWorkflowRunService(dsn, SCHEMA, **pool) as runs,
        ):
            ops = [async_ops(wf, runs, lane, target)[name] for lane in lanes[:n]]
            return await harness.run_async(ops, seconds)

    return harness.four_figures(measure_sync, measure_async)


# --- main ----------------------------------------------------------------------------------------


def rows(dsn: str, total_runs: int, seconds: float) -> Iterator[list[Any]]:
    """The table's rows, each measured when it is asked for (the data grows between them)."""
    target, lanes = prepare(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ops = sync_ops(
            PgWorkflowService(conn, SCHEMA), PgWorkflowRunService(conn, SCHEMA), lanes[0], target
        )
        trips = harness.round_trips(conn, ops)

    def row(label: str, name: str) -> list[Any]:
        numbers = figures(dsn, name, lanes, target, seconds)
        return [label, trips[name], *numbers, TS_REFERENCE.get(label, "-")]

    yield row(LIFECYCLE, LIFECYCLE)
    fill_history(dsn, 1_000)
    yield row("get_run_steps, 1,000 history", STEPS)
    fill_history(dsn, 100_000)
    yield row("get_run_steps, 100,000 history", STEPS)
    fill_runs(dsn, total_runs)
    yield row(f"list_runs(wf, 50), {total_runs:,} runs", LISTING)


def bench(dsn: str, args: argparse.Namespace) -> None:
    with harness.fresh_schema(dsn, SCHEMA):
        harness.print_table(
            [
                Column("operation (ops/s)", 34, left=True),
                Column("trips", 5),
                *harness.FLAVOURS,
                Column("TypeScript x1 / x16", 0, left=True),
            ],
            rows(dsn, args.runs, args.seconds),
        )


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
