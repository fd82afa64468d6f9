"""Benchmark of the durable workflow engine (sync and async).

    python benchmarks/bench_workflow_engine.py [--dsn CONNINFO] [--steps 2000] [--runs 400]

* inline step overhead: steps/s of no-op steps run sequentially by
  ``run_to_completion``, and database calls per step (each is at least one round trip);
* queued throughput: runs/s of a three-step no-op workflow with 1 and 4 concurrent
  executors (runs queued first, then drained by a worker);
* start -> complete latency (p50 / p99) with an idle worker, from the run's own
  ``created_at`` / ``updated_at`` (server clock, no polling bias).

The figures are counted in work (``--steps``, ``--runs``), not time: ``--seconds`` does
not apply. Without ``--dsn`` it starts an embedded server with ``fsync`` and
``synchronous_commit`` off (the issue's targets assume fsync off).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import _harness as harness
from _harness import Column

from pikku_pg._async.workflow import AsyncPgWorkflowService
from pikku_pg._sync.workflow import PgWorkflowService

SCHEMA = "bench_workflow_engine"
TIMED = False  # counted in work (--steps, --runs): --seconds does not apply
WORKER: dict[str, Any] = {"lease": 30.0, "poll_interval": 1.0, "shutdown_timeout": 10.0}
TARGETS = {
    "inline steps/s": ">= 1,000",
    "round trips/step": "",
    "queued runs/s x1": "",
    "queued runs/s x4": ">= 300",
    "p50 ms": "< 20",
    "p99 ms": "",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=2000, help="no-op steps of the inline run")
    parser.add_argument("--runs", type=int, default=400, help="queued runs per throughput line")


def count_database_calls(service: Any) -> Callable[[], int]:
    """Count the connections a service takes from its pool (each is >= 1 round trip)."""
    pool = service._db._pool
    original = pool.getconn
    calls = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    pool.getconn = counting
    return lambda: calls[0]


def completed(dsn: str) -> int:
    """Completed runs of the throughput workflow (a separate connection: no pool load)."""
    return int(
        harness.fetch_value(
            dsn,
            f"SELECT count(*) FROM {SCHEMA}.workflow_runs"
            " WHERE workflow = 'three' AND status = 'completed'",
        )
    )


def latency_ms(dsn: str) -> tuple[float, float]:
    """(p50, p99) of the 'latency' runs, from created_at to updated_at."""
    values = harness.fetch_value(
        dsn,
        f"SELECT array_agg(extract(epoch FROM updated_at - created_at) * 1000)"
        f" FROM {SCHEMA}.workflow_runs WHERE workflow = 'latency' AND status = 'completed'",
    )
    return harness.percentiles([float(v) for v in values])


# --- async ---------------------------------------------------------------------------------


async def bench_async(dsn: str, steps: int, runs: int) -> dict[str, float]:
    out: dict[str, float] = {}
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
    calls = count_database_calls(wf)
    before = calls()
    started = time.perf_counter()
    await wf.run_to_completion("many", steps)
    out["inline steps/s"] = steps / (time.perf_counter() - started)
    out["round trips/step"] = (calls() - before) / steps

    for concurrency in (1, 4):
        goal = completed(dsn) + runs
        for _ in range(runs):
            await wf.start_workflow("three", None)
        started = time.perf_counter()
        async with wf.worker(concurrency=concurrency, **WORKER):
            while completed(dsn) < goal:
                await asyncio.sleep(0.02)
            # Stop the clock when the work is done, not after the worker's shutdown.
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


# --- sync ----------------------------------------------------------------------------------


def bench_sync(dsn: str, steps: int, runs: int) -> dict[str, float]:
    out: dict[str, float] = {}
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
    calls = count_database_calls(wf)
    before = calls()
    started = time.perf_counter()
    wf.run_to_completion("many", steps)
    out["inline steps/s"] = steps / (time.perf_counter() - started)
    out["round trips/step"] = (calls() - before) / steps

    for concurrency in (1, 4):
        goal = completed(dsn) + runs
        for _ in range(runs):
            wf.start_workflow("three", None)
        started = time.perf_counter()
        with wf.worker(concurrency=concurrency, **WORKER):
            while completed(dsn) < goal:
                time.sleep(0.02)
            # Stop the clock when the work is done, not after the worker's shutdown.
            out[f"queued runs/s x{concurrency}"] = runs / (time.perf_counter() - started)

    with wf.worker(concurrency=1, **WORKER) as w:
        while w.listener_pid is None:
            time.sleep(0.01)
        for _ in range(100):
            wf.wait_for_run(wf.start_workflow("latency", None), timeout=30)
            time.sleep(0.01)  # the worker goes idle again
    out["p50 ms"], out["p99 ms"] = latency_ms(dsn)
    wf.close()
    return out


# --- main ----------------------------------------------------------------------------------


def bench(dsn: str, args: argparse.Namespace) -> None:
    with harness.fresh_schema(dsn, SCHEMA):
        sync = bench_sync(dsn, args.steps, args.runs)
    with harness.fresh_schema(dsn, SCHEMA):
        asyn = asyncio.run(bench_async(dsn, args.steps, args.runs))
    harness.print_table(
        [
            Column("measure", 22, left=True),
            Column("sync", 10, ",.1f"),
            Column("async", 10, ",.1f"),
            Column("target", 0, left=True),
        ],
        ([name, sync[name], asyn[name], target] for name, target in TARGETS.items()),
    )


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
