"""Benchmark of the AI storage services (ops/s, sync and async, 1 and 16 in flight).

    python benchmarks/bench_ai.py [--dsn CONNINFO] [--seconds 2] [--big 100000]

Without ``--dsn`` it starts an embedded server with ``fsync`` and
``synchronous_commit`` off (how the TypeScript reference figures were measured).
With ``--dsn`` it uses that server as it is configured (its settings are printed).
It also counts the round trips of one call of each operation (libpq trace: one
``Sync`` message per round trip) and compares ``get_messages(last_n=50)`` latency on
a 500-message thread and a ``--big``-message thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pikku_pg import AsyncPgAIStorageService, PgAIStorageService

SCHEMA = "bench_ai"
IN_FLIGHT = 16
# TypeScript @pikku/pg 0.12.1 on this kind of machine (sequential, 16 in flight).
TS_REFERENCE = {
    "create_thread": (4098, 10932),
    "save_messages (10 msgs)": (574, 1558),
    "get_messages last_n=50": (1521, 1889),
    "create_run + update_run": (1504, 3105),
}


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


def prepare(dsn: str, big: int) -> dict[str, str]:
    """Fresh schema; a 500-message thread, a ``big``-message thread, a 1,000-run thread."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE".encode())
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
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {SCHEMA}.ai_message (id, thread_id, role, content, created_at)
            SELECT 'big-' || g, 'tbig', 'user', 'message ' || g,
                   now() - make_interval(secs => %s - g)
            FROM generate_series(1, %s) g""".encode(),
            (big, big),
        )
        conn.execute(
            f"""INSERT INTO {SCHEMA}.ai_run (agent_name, thread_id, resource_id, created_at)
            SELECT 'agent-' || (g % 5), 'truns', 'bench', now() - make_interval(secs => g)
            FROM generate_series(1, 1000) g""".encode()
        )
        conn.execute(f"ANALYZE {SCHEMA}.ai_message, {SCHEMA}.ai_run".encode())
    return {"t500": "t500", "tbig": "tbig", "truns": "truns"}


def lane_threads(dsn: str, count: int) -> list[str]:
    """One thread per in-flight lane, so concurrent saves do not queue on one row lock."""
    ids = [f"lane-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    with PgAIStorageService(dsn, SCHEMA) as store:
        for tid in ids:
            store.create_thread("bench", thread_id=tid)
    return ids


# --- sync -------------------------------------------------------------------------------------


def sync_ops(store: PgAIStorageService, lane: str) -> dict[str, Callable[[], object]]:
    def create_and_update() -> None:
        run_id = store.create_run(run_input(lane))
        store.update_run(run_id, RUN_UPDATE)

    return {
        "create_thread": lambda: store.create_thread("bench"),
        "save_messages (10 msgs)": lambda: store.save_messages(lane, batch()),
        "get_messages last_n=50": lambda: store.get_messages("t500", last_n=50),
        "create_run + update_run": create_and_update,
        "get_runs_by_thread (1,000 runs)": lambda: store.get_runs_by_thread("truns"),
    }


def measure_sync(dsn: str, name: str, lanes: list[str], seconds: float) -> float:
    with PgAIStorageService(
        dsn, SCHEMA, pool_kwargs={"min_size": len(lanes), "max_size": len(lanes)}
    ) as store:
        ops = [sync_ops(store, lane)[name] for lane in lanes]
        for op in ops:
            op()  # warm up: connections, prepared statements
        counts = [0] * len(lanes)
        start = threading.Barrier(len(lanes) + 1)
        stop_at = [0.0]

        def work(i: int) -> None:
            op = ops[i]
            start.wait()
            n = 0
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


# --- async ------------------------------------------------------------------------------------


def async_ops(
    store: AsyncPgAIStorageService, lane: str
) -> dict[str, Callable[[], Awaitable[object]]]:
    async def create_and_update() -> None:
        run_id = await store.create_run(run_input(lane))
        await store.update_run(run_id, RUN_UPDATE)

    return {
        "create_thread": lambda: store.create_thread("bench"),
        "save_messages (10 msgs)": lambda: store.save_messages(lane, batch()),
        "get_messages last_n=50": lambda: store.get_messages("t500", last_n=50),
        "create_run + update_run": create_and_update,
        "get_runs_by_thread (1,000 runs)": lambda: store.get_runs_by_thread("truns"),
    }


async def measure_async(dsn: str, name: str, lanes: list[str], seconds: float) -> float:
    async with AsyncPgAIStorageService(
        dsn, SCHEMA, pool_kwargs={"min_size": len(lanes), "max_size": len(lanes)}
    ) as store:
        ops = [async_ops(store, lane)[name] for lane in lanes]
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


# --- round trips and latency -----------------------------------------------------------------


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


def round_trips(dsn: str, lane: str) -> dict[str, int]:
    found: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        store = PgAIStorageService(conn, SCHEMA)
        for name, op in sync_ops(store, lane).items():
            op()
            with traced(conn) as counted:
                op()
            found[name] = counted[0]
    return found


def latency_ms(dsn: str, thread_id: str, calls: int = 300) -> float:
    with PgAIStorageService(dsn, SCHEMA) as store:
        for _ in range(20):
            store.get_messages(thread_id, last_n=50)
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            store.get_messages(thread_id, last_n=50)
            samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


# --- main -------------------------------------------------------------------------------------


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


def typescript_figures(
    script: str, dsn: str, seconds: float, operation: str
) -> dict[str, tuple[int, int]]:
    """Run a TypeScript @pikku/pg benchmark of one operation on the same server.

    ``script`` is a node script taking (socket dir, seconds, operation) and printing
    ``{operation: [ops/s x1, ops/s x16]}`` as JSON.
    """
    params = conninfo_to_dict(dsn)
    out = subprocess.run(
        ["node", script, str(params.get("host") or "localhost"), str(seconds), operation],
        check=True,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(script)),
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    return {name: (round(x1), round(x16)) for name, (x1, x16) in figures.items()}


def bench(dsn: str, seconds: float, big: int, ts_script: str | None = None) -> None:
    print(server_settings(dsn), f"| {os.cpu_count()} CPUs | {seconds:g} s per figure")
    prepare(dsn, big)
    lanes = lane_threads(dsn, IN_FLIGHT)
    trips = round_trips(dsn, lanes[0])
    names = list(trips)
    rows = []
    reference = dict(TS_REFERENCE)
    for name in names:
        if ts_script:
            # Interleaved with ours, so both see the same machine load.
            reference.update(typescript_figures(ts_script, dsn, seconds, name))
        figures = [
            measure_sync(dsn, name, lanes[:1], seconds),
            measure_sync(dsn, name, lanes, seconds),
            asyncio.run(measure_async(dsn, name, lanes[:1], seconds)),
            asyncio.run(measure_async(dsn, name, lanes, seconds)),
        ]
        rows.append((name, trips[name], figures))
    if ts_script:
        print("TS columns: measured in this run, on this server, with", ts_script)
    else:
        print("TS columns: the reference figures of the issue (not measured here)")
    header = (
        f"{'operation':<32} {'trips':>5} {'sync x1':>9} {'sync x16':>9} "
        f"{'async x1':>9} {'async x16':>9} {'TS x1':>7} {'TS x16':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, trip, figures in rows:
        ts = reference.get(name)
        ts_text = f"{ts[0]:>7,} {ts[1]:>7,}" if ts else f"{'-':>7} {'-':>7}"
        print(f"{name:<32} {trip:>5} " + " ".join(f"{f:>9,.0f}" for f in figures) + f" {ts_text}")
    small, large = latency_ms(dsn, "t500"), latency_ms(dsn, "tbig")
    print(
        f"\nget_messages(last_n=50) median latency: 500 messages {small:.3f} ms, "
        f"{big:,} messages {large:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL conninfo (default: an embedded server)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each figure")
    parser.add_argument("--big", type=int, default=100_000, help="messages in the big thread")
    parser.add_argument(
        "--ts-bench",
        metavar="SCRIPT",
        help="a node script running the same operations with @pikku/pg (prints JSON), "
        "run on the same server for the TS columns",
    )
    args = parser.parse_args()
    if args.dsn:
        bench(args.dsn, args.seconds, args.big, args.ts_bench)
        return
    from pikku_pg._embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg:
        tune_embedded(pg.dsn)
        bench(pg.dsn, args.seconds, args.big, args.ts_bench)


if __name__ == "__main__":
    main()
