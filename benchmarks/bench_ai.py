"""Benchmark of the AI storage services (ops/s, sync and async, 1 and 16 in flight).

    python benchmarks/bench_ai.py [--dsn CONNINFO] [--seconds 2] [--big 100000] [--ts]

Without ``--dsn`` it starts an embedded server with ``fsync`` and
``synchronous_commit`` off (how the TypeScript reference figures were measured).
With ``--dsn`` it uses that server as it is configured (its settings are printed).
It also counts the round trips of one call of each operation (libpq trace: one
``Sync`` message per round trip) and compares ``get_messages(last_n=50)`` latency on
a 500-message thread and a ``--big``-message thread. With ``--ts``, TypeScript
``@pikku/pg`` 0.12.1 is measured on the same server after each line (``ts/ai.mjs``).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as harness
import psycopg
from _harness import IN_FLIGHT, Column, Figure

from pikku_pg import AsyncPgAIStorageService, PgAIStorageService

SCHEMA = "bench_ai"
TS_SCRIPT = "ai.mjs"
# TypeScript @pikku/pg 0.12.1 on this kind of machine (sequential, 16 in flight), from the issue.
TS_REFERENCE = {
    "create_thread": (4098, 10932),
    "save_messages (10 msgs)": (574, 1558),
    "get_messages last_n=50": (1521, 1889),
    "create_run + update_run": (1504, 3105),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--big", type=int, default=100_000, help="messages in the big thread")


def batch() -> list[dict[str, Any]]:
    """10 messages: an assistant message with 2 tool calls and a tool message with results."""
    n = uuid.uuid4().hex
    messages: list[dict[str, Any]] = [
        {"id": f"{n}-u0", "role": "user", "content": "What is the weather in Paris and Rome?"},
        {
            "id": f"{n}-a0",
            "role": "assistant",
            "content": "Let me check.",
            "toolCalls": [
                {"id": f"{n}-tc1", "name": "weather", "args": {"city": "Paris"}},
                {"id": f"{n}-tc2", "name": "weather", "args": {"city": "Rome"}},
            ],
        },
        {
            "id": f"tool-results-{n}-a0",
            "role": "tool",
            "toolResults": [
                {"id": f"{n}-tc1", "name": "weather", "result": "sunny, 21°C"},
                {"id": f"{n}-tc2", "name": "weather", "result": "cloudy, 18°C"},
            ],
        },
    ]
    for i in range(7):
        role = "assistant" if i % 2 else "user"
        messages.append({"id": f"{n}-m{i}", "role": role, "content": f"message {i} " * 8})
    return messages


def run_input(thread_id: str) -> dict[str, Any]:
    return {
        "agentName": "bench-agent",
        "threadId": thread_id,
        "resourceId": "bench",
        "status": "running",
        "usage": {"inputTokens": 0, "outputTokens": 0, "model": "m"},
    }


RUN_UPDATE = {
    "status": "completed",
    "usage": {"inputTokens": 120, "outputTokens": 80, "model": "m"},
}


# --- setup -----------------------------------------------------------------------------------


def prepare(dsn: str, big: int) -> list[str]:
    """A 500-message thread, a ``big``-message thread, a 1,000-run thread; the lane threads."""
    with PgAIStorageService(dsn, SCHEMA) as store:
        store.init()
        for name in ("t500", "tbig", "truns"):
            store.create_thread("bench", thread_id=name)
        for start in range(0, 500, 50):
            store.save_messages(
                "t500",
                [
                    {"id": f"t500-{i}", "role": "user", "content": f"message {i}"}
                    for i in range(start, start + 50)
                ],
            )
        # One thread per in-flight lane, so concurrent saves do not queue on one row lock.
        lanes = [f"lane-{uuid.uuid4().hex[:8]}" for _ in range(IN_FLIGHT)]
        for tid in lanes:
            store.create_thread("bench", thread_id=tid)
    harness.execute(
        dsn,
        f"""INSERT INTO {SCHEMA}.ai_message (id, thread_id, role, content, created_at)
        SELECT 'big-' || g, 'tbig', 'user', 'message ' || g,
               now() - make_interval(secs => %s - g)
        FROM generate_series(1, %s) g""",
        params=(big, big),
    )
    harness.execute(
        dsn,
        f"""INSERT INTO {SCHEMA}.ai_run (agent_name, thread_id, resource_id, created_at)
        SELECT 'agent-' || (g % 5), 'truns', 'bench', now() - make_interval(secs => g)
        FROM generate_series(1, 1000) g""",
        f"ANALYZE {SCHEMA}.ai_message, {SCHEMA}.ai_run",
    )
    return lanes


# --- operations ------------------------------------------------------------------------------


def operations(
    store: Any, lane: str, create_and_update: Callable[[], Any]
) -> dict[str, Callable[[], Any]]:
    """The operations on ``store`` (sync or async: each call returns what the store does)."""
    return {
        "create_thread": lambda: store.create_thread("bench"),
        "save_messages (10 msgs)": lambda: store.save_messages(lane, batch()),
        "get_messages last_n=50": lambda: store.get_messages("t500", last_n=50),
        "create_run + update_run": create_and_update,
        "get_runs_by_thread (1,000 runs)": lambda: store.get_runs_by_thread("truns"),
    }


def sync_ops(store: PgAIStorageService, lane: str) -> dict[str, Callable[[], object]]:
    def create_and_update() -> None:
        run_id = store.create_run(run_input(lane))
        store.update_run(run_id, RUN_UPDATE)

    return operations(store, lane, create_and_update)


def async_ops(
    store: AsyncPgAIStorageService, lane: str
) -> dict[str, Callable[[], Awaitable[object]]]:
    async def create_and_update() -> None:
        run_id = await store.create_run(run_input(lane))
        await store.update_run(run_id, RUN_UPDATE)

    return operations(store, lane, create_and_update)


def figures(dsn: str, name: str, lanes: list[str], seconds: float) -> list[float]:
    """ops/s of operation ``name``: sync x1, sync x16, async x1, async x16."""

    def measure_sync(n: int) -> Figure:
        with PgAIStorageService(dsn, SCHEMA, **harness.pool(n)) as store:
            return harness.run_sync([sync_ops(store, lane)[name] for lane in lanes[:n]], seconds)

    async def measure_async(n: int) -> Figure:
        async with AsyncPgAIStorageService(dsn, SCHEMA, **harness.pool(n)) as store:
            ops = [async_ops(store, lane)[name] for lane in lanes[:n]]
            return await harness.run_async(ops, seconds)

    return harness.four_figures(measure_sync, measure_async)


def latency(dsn: str, thread_id: str, seconds: float) -> Figure:
    """``get_messages(thread_id, last_n=50)`` called back to back on one connection."""
    with PgAIStorageService(dsn, SCHEMA, **harness.pool(1)) as store:
        return harness.run_sync([lambda: store.get_messages(thread_id, last_n=50)], seconds)


# --- main ------------------------------------------------------------------------------------


def bench(dsn: str, args: argparse.Namespace) -> None:
    with harness.fresh_schema(dsn, SCHEMA):
        lanes = prepare(dsn, args.big)
        with psycopg.connect(dsn, autocommit=True) as conn:
            trips = harness.round_trips(conn, sync_ops(PgAIStorageService(conn, SCHEMA), lanes[0]))
        rows = []
        for name, trip in trips.items():

            def line(name: str = name) -> list[float | None]:
                ours = figures(dsn, name, lanes, args.seconds)
                return [*ours, *harness.ts_figures(args, dsn, TS_SCRIPT, TS_REFERENCE, name)]

            rows.append([name, trip, *harness.best_of(args.rounds, line)])
        harness.print_ts_note(args, TS_SCRIPT)
        harness.print_table(
            [
                Column("operation", 32, left=True),
                Column("trips", 5),
                *harness.FLAVOURS,
                *harness.TS_COLUMNS,
            ],
            rows,
        )
        small = latency(dsn, "t500", args.seconds)
        large = latency(dsn, "tbig", args.seconds)
    print("\nget_messages(last_n=50) latency, p50 / p99 ms:")
    for messages, figure in ((500, small), (args.big, large)):
        print(f"  {messages:>9,} messages {figure.p50_ms:.3f} / {figure.p99_ms:.3f}")


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
