"""Benchmark of the durable workflow engine (sync and async).

    python benchmarks/bench_workflow_engine.py [--dsn CONNINFO] [--steps 2000] [--runs 400]

* inline step overhead: steps/s of no-op steps run sequentially by
  ``run_to_completion``, and database round trips per step;
* queued throughput: runs/s of a three-step no-op workflow with 1 and 4 concurrent
  executors (runs queued first, then drained by a worker);
* start -> complete latency (p50 / p99) with an idle worker, from the run's own
  ``created_at`` / ``updated_at`` (server clock, no polling bias).

Without ``--dsn`` it starts an embedded server with ``fsync`` and
``synchronous_commit`` off (the issue's targets assume fsync off).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pikku_pg._async.workflow import AsyncPgWorkflowService
from pikku_pg._sync.workflow import PgWorkflowService

SCHEMA = "bench_workflow_engine"
WORKER = {"lease": 30.0, "poll_interval": 1.0, "shutdown_timeout": 10.0}


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


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def count_round_trips(service: Any) -> Callable[[], int]:
    """Count the database calls of a service (each one is one round trip)."""
    db = service._db
    original = db._acquire
    calls = [0]

    def counting(mode: Any) -> Any:
        calls[0] += 1
        return original(mode)

    db._acquire = counting
    return lambda: calls[0]


def completed(dsn: str) -> int:
    """Completed runs of the throughput workflow (a separate connection: no pool load)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {SCHEMA}.workflow_runs"
            " WHERE workflow = 'three' AND status = 'completed'"
        ).fetchone()
    return int(row[0]) if row else 0


def latency_ms(dsn: str) -> tuple[float, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT extract(epoch FROM updated_at - created_at) * 1000"
            f" FROM {SCHEMA}.workflow_runs WHERE workflow = 'latency' AND status = 'completed'"
        ).fetchall()
    values = sorted(float(r[0]) for r in rows)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return statistics.median(values), p99


# --------------------------------------------------------------------- async


async def bench_async(dsn: str, steps: int, runs: int) -> dict[str, float]:
    out: dict[str, float] = {}
    reset(dsn)
    wf = AsyncPgWorkflowService(dsn, SCHEMA, pool_kwargs={"max_size": 12})
    await wf.init()

    async def noop(_: Any) -> None:
        return None

    @wf.workflow("many")
    async def many(ctx: Any, n: int) -> int:
        for i in range(n):
            await ctx.do(f"s{i}", noop)
        return n

    @wf.workflow("three")
    async def three(ctx: Any, _: Any) -> None:
        for name in ("a", "b", "c"):
            await ctx.do(name, noop)

    @wf.workflow("latency")
    async def latency(ctx: Any, _: Any) -> None:
        for name in ("a", "b", "c"):
            await ctx.do(name, noop)

    await wf.run_to_completion("many", 10)
    trips = count_round_trips(wf)
    before = trips()
    started = time.perf_counter()
    await wf.run_to_completion("many", steps)
    out["inline steps/s"] = steps / (time.perf_counter() - started)
    out["round trips/step"] = (trips() - before) / steps

    for concurrency in (1, 4):
        goal = completed(dsn) + runs
        for _ in range(runs):
            await wf.start_workflow("three", None)
        started = time.perf_counter()
        async with wf.worker(concurrency=concurrency, **WORKER):
            while completed(dsn) < goal:
                await asyncio.sleep(0.02)
        out[f"queued runs/s x{concurrency}"] = runs / (time.perf_counter() - started)

    async with wf.worker(concurrency=1, **WORKER) as w:
        while w.listener_pid is None:
            await asyncio.sleep(0.01)
        for _ in range(100):
            await wf.wait_for_run(await wf.start_workflow("latency", None), timeout=30)
            await asyncio.sleep(0.01)  # the worker goes idle again
    out["p50 ms"], out["p99 ms"] = latency_ms(dsn)
    await wf.close()
    return out


# ---------------------------------------------------------------------- sync


def bench_sync(dsn: str, steps: int, runs: int) -> dict[str, float]:
    out: dict[str, float] = {}
    reset(dsn)
    wf = PgWorkflowService(dsn, SCHEMA, pool_kwargs={"max_size": 12})
    wf.init()

    def noop(_: Any) -> None:
        return None

    @wf.workflow("many")
    def many(ctx: Any, n: int) -> int:
        for i in range(n):
            ctx.do(f"s{i}", noop)
        return n

    @wf.workflow("three")
    def three(ctx: Any, _: Any) -> None:
        for name in ("a", "b", "c"):
            ctx.do(name, noop)

    @wf.workflow("latency")
    def latency(ctx: Any, _: Any) -> None:
        for name in ("a", "b", "c"):
            ctx.do(name, noop)

    wf.run_to_completion("many", 10)
    trips = count_round_trips(wf)
    before = trips()
    started = time.perf_counter()
    wf.run_to_completion("many", steps)
    out["inline steps/s"] = steps / (time.perf_counter() - started)
    out["round trips/step"] = (trips() - before) / steps

    for concurrency in (1, 4):
        goal = completed(dsn) + runs
        for _ in range(runs):
            wf.start_workflow("three", None)
        started = time.perf_counter()
        with wf.worker(concurrency=concurrency, **WORKER):
            while completed(dsn) < goal:
                time.sleep(0.02)
        out[f"queued runs/s x{concurrency}"] = runs / (time.perf_counter() - started)

    with wf.worker(concurrency=1, **WORKER) as w:
        while w.listener_pid is None:
            time.sleep(0.01)
        for _ in range(100):
            wf.wait_for_run(wf.start_workflow("latency", None), timeout=30)
            time.sleep(0.01)
    out["p50 ms"], out["p99 ms"] = latency_ms(dsn)
    wf.close()
    return out


TARGETS = {
    "inline steps/s": ">= 1,000",
    "round trips/step": "",
    "queued runs/s x1": "",
    "queued runs/s x4": ">= 300",
    "p50 ms": "< 20",
    "p99 ms": "",
}


def bench(dsn: str, steps: int, runs: int) -> None:
    print(server_settings(dsn))
    sync = bench_sync(dsn, steps, runs)
    asyn = asyncio.run(bench_async(dsn, steps, runs))
    header = f"{'measure':<22} {'sync':>10} {'async':>10}   target"
    print(header)
    print("-" * (len(header) + 6))
    for name, target in TARGETS.items():
        print(f"{name:<22} {sync[name]:>10,.1f} {asyn[name]:>10,.1f}   {target}")
    reset(dsn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL conninfo (default: an embedded server)")
    parser.add_argument("--steps", type=int, default=2000, help="no-op steps of the inline run")
    parser.add_argument("--runs", type=int, default=400, help="queued runs per throughput line")
    args = parser.parse_args()
    if args.dsn:
        bench(args.dsn, args.steps, args.runs)
        return
    from pikku_pg._embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg:
        tune_embedded(pg.dsn)
        bench(pg.dsn, args.steps, args.runs)


if __name__ == "__main__":
    main()
