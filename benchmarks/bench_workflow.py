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
import asyncio
import contextlib
import itertools
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg

from pikku_pg import (
    AsyncPgWorkflowRunService,
    AsyncPgWorkflowService,
    PgWorkflowRunService,
    PgWorkflowService,
)

SCHEMA = "bench_workflow"
IN_FLIGHT = 16
# TypeScript @pikku/pg 0.12.1 (fsync off), sequential and 16 in flight where known.
TS_REFERENCE: dict[str, str] = {
    "step lifecycle (3 calls)": "470 / 1,077",
    "get_run_steps, 1,000 history": "1,462 @50 rows; 119 @4,000",
    "get_run_steps, 100,000 history": "(falls with size)",
}
_names = itertools.count()


# --- setup -------------------------------------------------------------------------------------


def prepare(dsn: str) -> tuple[str, list[str]]:
    """Fresh schema; the 50-step run to read, and one run per in-flight lane."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE".encode())
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
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.workflow_step_history".encode())
        have = int(row.fetchone()[0])  # type: ignore[index]
        steps = max(0, (total - have) // 50)
        conn.execute(
            f"""WITH r AS (
                  INSERT INTO {SCHEMA}.workflow_runs (workflow, status, input)
                  VALUES ('bench-filler', 'completed', '{{}}') RETURNING workflow_run_id
                ), s AS (
                  INSERT INTO {SCHEMA}.workflow_step (workflow_run_id, step_name, status)
                  SELECT r.workflow_run_id, 'filler-' || g, 'succeeded'
                  FROM r, generate_series(1, %s) g RETURNING workflow_step_id
                )
                INSERT INTO {SCHEMA}.workflow_step_history (workflow_step_id, status)
                SELECT s.workflow_step_id, 'failed' FROM s, generate_series(1, 50)""".encode(),
            (steps,),
        )
        conn.execute(f"ANALYZE {SCHEMA}.workflow_step, {SCHEMA}.workflow_step_history".encode())


def fill_runs(dsn: str, total: int) -> None:
    """``total`` runs spread over 10 workflow names, created over the last ``total`` s."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {SCHEMA}.workflow_runs (workflow, status, input, created_at)
            SELECT 'wf-' || (g %% 10), 'completed', jsonb_build_object('g', g),
                   now() - make_interval(secs => g)
            FROM generate_series(1, %s) g""".encode(),
            (total,),
        )
        conn.execute(f"ANALYZE {SCHEMA}.workflow_runs".encode())


# --- operations ---------------------------------------------------------------------------------


def sync_ops(
    wf: PgWorkflowService, runs: PgWorkflowRunService, lane: str, target: str
) -> dict[str, Callable[[], object]]:
    def lifecycle() -> None:
        step = wf.insert_step_state(lane, f"s{next(_names)}", "rpc", {"x": 1})
        wf.set_step_running(step.step_id)
        wf.set_step_result(step.step_id, {"ok": True})

    return {
        "step lifecycle (3 calls)": lifecycle,
        "get_run_steps (50 steps)": lambda: runs.get_run_steps(target),
        "list_runs(workflow, limit=50)": lambda: runs.list_runs(workflow_name="wf-3", limit=50),
    }


def async_ops(
    wf: AsyncPgWorkflowService, runs: AsyncPgWorkflowRunService, lane: str, target: str
) -> dict[str, Callable[[], Awaitable[object]]]:
    async def lifecycle() -> None:
        step = await wf.insert_step_state(lane, f"s{next(_names)}", "rpc", {"x": 1})
        await wf.set_step_running(step.step_id)
        await wf.set_step_result(step.step_id, {"ok": True})

    return {
        "step lifecycle (3 calls)": lifecycle,
        "get_run_steps (50 steps)": lambda: runs.get_run_steps(target),
        "list_runs(workflow, limit=50)": lambda: runs.list_runs(workflow_name="wf-3", limit=50),
    }


def measure_sync(dsn: str, op_name: str, lanes: list[str], target: str, seconds: float) -> float:
    pool = {"min_size": len(lanes), "max_size": len(lanes)}
    with (
        PgWorkflowService(dsn, SCHEMA, pool_kwargs=pool) as wf,
        PgWorkflowRunService(dsn, SCHEMA, pool_kwargs=pool) as runs,
    ):
        ops = [sync_ops(wf, runs, lane, target)[op_name] for lane in lanes]
        for op in ops:
            op()  # warm up: connections, prepared statements
        counts = [0] * len(lanes)
        start = threading.Barrier(len(lanes) + 1)
        stop_at = [0.0]

        def work(i: int) -> None:
            op, n = ops[i], 0
            start.wait()
            while time.perf_counter() < stop_at[0]:
                op()
                n += 1
            counts[i] = n

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(lanes))]
        for t in threads:
            t.start()
        began = time.perf_counter()
        stop_at[0] = began + seconds
        start.wait()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - began)


async def measure_async(
    dsn: str, op_name: str, lanes: list[str], target: str, seconds: float
) -> float:
    pool = {"min_size": len(lanes), "max_size": len(lanes)}
    async with (
        AsyncPgWorkflowService(dsn, SCHEMA, pool_kwargs=pool) as wf,
        AsyncPgWorkflowRunService(dsn, SCHEMA, pool_kwargs=pool) as runs,
    ):
        ops = [async_ops(wf, runs, lane, target)[op_name] for lane in lanes]
        await asyncio.gather(*(op() for op in ops))
        stop_at = time.perf_counter() + seconds

        async def work(i: int) -> int:
            n = 0
            while time.perf_counter() < stop_at:
                await ops[i]()
                n += 1
            return n

        began = time.perf_counter()
        counts = await asyncio.gather(*(work(i) for i in range(len(lanes))))
        return sum(counts) / (time.perf_counter() - began)


@contextlib.contextmanager
def traced(conn: psycopg.Connection[Any]) -> Iterator[list[int]]:
    """Count the Sync messages the client sends (one per round trip)."""
    result: list[int] = []
    with tempfile.TemporaryFile("w+") as f:
        conn.pgconn.trace(f.fileno())
        try:
            yield result
        finally:
            conn.pgconn.untrace()
        f.seek(0)
        result.append(sum(1 for line in f if "\tF\t" in line and "\tSync" in line))


def round_trips(dsn: str, lane: str, target: str) -> dict[str, int]:
    found: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        ops = sync_ops(
            PgWorkflowService(conn, SCHEMA), PgWorkflowRunService(conn, SCHEMA), lane, target
        )
        for name, op in ops.items():
            op()
            with traced(conn) as counted:
                op()
            found[name] = counted[0]
    return found


# --- main ----------------------------------------------------------------------------------------


def tune_embedded(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("SELECT pg_reload_conf()")


def server_settings(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('fsync'),"
            " current_setting('synchronous_commit')"
        ).fetchone()
    assert row is not None
    return f"PostgreSQL {row[0]}, fsync={row[1]}, synchronous_commit={row[2]}"


def figures(dsn: str, op: str, lanes: list[str], target: str, seconds: float) -> list[float]:
    return [
        measure_sync(dsn, op, lanes[:1], target, seconds),
        measure_sync(dsn, op, lanes, target, seconds),
        asyncio.run(measure_async(dsn, op, lanes[:1], target, seconds)),
        asyncio.run(measure_async(dsn, op, lanes, target, seconds)),
    ]


def bench(dsn: str, seconds: float, total_runs: int) -> None:
    print(server_settings(dsn), f"| {os.cpu_count()} CPUs | {seconds:g} s per figure")
    target, lanes = prepare(dsn)
    trips = round_trips(dsn, lanes[0], target)
    rows: list[tuple[str, int, list[float]]] = []
    lifecycle = "step lifecycle (3 calls)"
    rows.append((lifecycle, trips[lifecycle], figures(dsn, lifecycle, lanes, target, seconds)))
    steps = "get_run_steps (50 steps)"
    fill_history(dsn, 1_000)
    rows.append(
        ("get_run_steps, 1,000 history", trips[steps], figures(dsn, steps, lanes, target, seconds))
    )
    fill_history(dsn, 100_000)
    rows.append(
        (
            "get_run_steps, 100,000 history",
            trips[steps],
            figures(dsn, steps, lanes, target, seconds),
        )
    )
    fill_runs(dsn, total_runs)
    listing = "list_runs(workflow, limit=50)"
    rows.append(
        (
            f"list_runs(wf, 50), {total_runs:,} runs",
            trips[listing],
            figures(dsn, listing, lanes, target, seconds),
        )
    )
    header = (
        f"{'operation (ops/s)':<34} {'trips':>5} {'sync x1':>9} {'sync x16':>9} "
        f"{'async x1':>9} {'async x16':>9}  TypeScript x1 / x16"
    )
    print(header)
    print("-" * len(header))
    for name, trip, numbers in rows:
        print(
            f"{name:<34} {trip:>5} "
            + " ".join(f"{n:>9,.0f}" for n in numbers)
            + f"  {TS_REFERENCE.get(name, '-')}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL conninfo (default: an embedded server)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each figure")
    parser.add_argument("--runs", type=int, default=100_000, help="runs for list_runs")
    args = parser.parse_args()
    if args.dsn:
        bench(args.dsn, args.seconds, args.runs)
        return
    from pikku_pg._embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg:
        tune_embedded(pg.dsn)
        bench(pg.dsn, args.seconds, args.runs)


if __name__ == "__main__":
    main()
