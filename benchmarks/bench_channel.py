"""Benchmark of channels, subscriptions, deployments and the event hub (sync and async).

    python benchmarks/bench_channel.py [--dsn CONNINFO] [--seconds 2] [--messages 5000]

Without ``--dsn`` it starts an embedded server with ``fsync`` and ``synchronous_commit``
off (how the TypeScript reference figures were measured). Prints ops/s with 1 and 16
calls in flight, for each flavour, next to TypeScript ``@pikku/pg`` 0.12.1; then the
event hub's publish->receive latency (p50/p99) and messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from pikku_pg import (
    AsyncPgChannelStore,
    AsyncPgDeploymentService,
    AsyncPgEventHubService,
    AsyncPgEventHubStore,
    PgChannelStore,
    PgDeploymentService,
    PgEventHubService,
    PgEventHubStore,
)
from pikku_pg.models import EventHubMessage

SCHEMA = "bench_channel"
IN_FLIGHT = 16
DEPLOYMENTS = 200
# TypeScript @pikku/pg 0.12.1 (sequential, 16 in flight), from the issue.
TS_REFERENCE = {
    "add_channel + remove_channels": (1891, 5856),
    "subscribe": (3863, 11768),
    "find_function (200 deployments)": (5308, 17316),
}
_counter = itertools.count()


def prepare(dsn: str) -> None:
    """Fresh schema, 16 lane channels, 200 live deployments of 20 functions each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE".encode())
    with PgChannelStore(dsn, SCHEMA) as store:
        store.init()
        for lane in range(IN_FLIGHT):
            store.add_channel(f"lane-{lane}", "bench")
    with PgDeploymentService(dsn, SCHEMA) as registry:
        registry.init()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Deployment d serves f{d % 40}..f{d % 40 + 19}: each function has ~100 servers;
        # "f0" is served by 5 of them.
        conn.execute(
            f"""INSERT INTO {SCHEMA}.pikku_deployments (deployment_id, endpoint, functions)
            SELECT 'dep-' || d, 'http://dep-' || d,
                   ARRAY(SELECT 'f' || (d * 7 %% 40 + k) FROM generate_series(0, 19) k)
            FROM generate_series(1, %s) d""".encode(),
            (DEPLOYMENTS,),
        )
        conn.execute(f"ANALYZE {SCHEMA}.pikku_deployments".encode())


def refresh_heartbeats(dsn: str) -> None:
    """Make the 200 deployments live again (their TTL is 30 s; a run takes longer)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.pikku_deployments SET last_heartbeat = now()".encode())
    with PgDeploymentService(dsn, SCHEMA) as registry:
        assert len(registry.find_function("f0")) == 5, "the benchmark data is not as expected"


def _topic() -> str:
    return f"topic-{next(_counter)}"


# --- sync --------------------------------------------------------------------------------


def _pool(lanes: int) -> dict[str, Any]:
    return {"pool_kwargs": {"min_size": lanes, "max_size": lanes}}


def sync_op(name: str, dsn: str, lanes: int, keep: list[Any]) -> Callable[[int], object]:
    """The operation of one figure; one service (pool of ``lanes``) shared by the lanes."""
    if name == "add_channel + remove_channels":
        store = PgChannelStore(dsn, SCHEMA, **_pool(lanes))
        keep.append(store)

        def add_remove(lane: int) -> None:
            cid = uuid.uuid4().hex
            store.add_channel(cid, "bench", {"lane": lane})
            store.remove_channels([cid])

        return add_remove
    if name == "subscribe":
        hub = PgEventHubStore(dsn, SCHEMA, **_pool(lanes))
        keep.append(hub)
        return lambda lane: hub.subscribe(_topic(), f"lane-{lane}")
    registry = PgDeploymentService(dsn, SCHEMA, **_pool(lanes))
    keep.append(registry)
    return lambda lane: registry.find_function("f0")


def measure_sync(dsn: str, name: str, lanes: int, seconds: float) -> float:
    if name.startswith("find_function"):
        refresh_heartbeats(dsn)
    keep: list[Any] = []
    op = sync_op(name, dsn, lanes, keep)
    warm = [threading.Thread(target=op, args=(i,)) for i in range(lanes)]
    for t in warm:  # warm up: connections, prepared statements
        t.start()
    for t in warm:
        t.join()
    counts = [0] * lanes
    barrier = threading.Barrier(lanes + 1)
    stop_at = [0.0]

    def work(i: int) -> None:
        n = 0
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            op(i)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(lanes)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    for service in keep:
        service.close()
    return sum(counts) / elapsed


# --- async -------------------------------------------------------------------------------


def async_op(
    name: str, dsn: str, lanes: int, keep: list[Any]
) -> Callable[[int], Awaitable[object]]:
    """The operation of one figure; one service (pool of ``lanes``) shared by the lanes."""
    if name == "add_channel + remove_channels":
        store = AsyncPgChannelStore(dsn, SCHEMA, **_pool(lanes))
        keep.append(store)

        async def add_remove(lane: int) -> None:
            cid = uuid.uuid4().hex
            await store.add_channel(cid, "bench", {"lane": lane})
            await store.remove_channels([cid])

        return add_remove
    if name == "subscribe":
        hub = AsyncPgEventHubStore(dsn, SCHEMA, **_pool(lanes))
        keep.append(hub)
        return lambda lane: hub.subscribe(_topic(), f"lane-{lane}")
    registry = AsyncPgDeploymentService(dsn, SCHEMA, **_pool(lanes))
    keep.append(registry)
    return lambda lane: registry.find_function("f0")


async def measure_async(dsn: str, name: str, lanes: int, seconds: float) -> float:
    if name.startswith("find_function"):
        refresh_heartbeats(dsn)
    keep: list[Any] = []
    op = async_op(name, dsn, lanes, keep)
    await asyncio.gather(*(op(i) for i in range(lanes)))  # warm up
    counts = [0] * lanes
    stop_at = time.perf_counter() + seconds

    async def work(i: int) -> None:
        n = 0
        while time.perf_counter() < stop_at:
            await op(i)
            n += 1
        counts[i] = n

    began = time.perf_counter()
    await asyncio.gather(*(work(i) for i in range(lanes)))
    elapsed = time.perf_counter() - began
    for service in keep:
        await service.close()
    return sum(counts) / elapsed


# --- event hub ---------------------------------------------------------------------------


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99)] * 1000


def hub_sync(dsn: str, rounds: int, messages: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, messages/s) through a sync event hub (callback on a thread)."""
    received = threading.Event()
    count = [0]
    done = threading.Event()

    def on_event(message: EventHubMessage) -> None:
        count[0] += 1
        received.set()
        if count[0] == target[0]:
            done.set()

    target = [-1]
    with PgEventHubService(dsn, SCHEMA, pool_kwargs={"max_size": IN_FLIGHT}) as hub:
        hub.subscribe("bench", "lane-0")
        hub.start(on_event)
        samples = []
        for i in range(rounds):
            received.clear()
            t = time.perf_counter()
            hub.publish("bench", {"i": i})
            received.wait(5)
            samples.append(time.perf_counter() - t)
        count[0], target[0] = 0, messages
        per_lane = messages // IN_FLIGHT

        def publisher() -> None:
            for i in range(per_lane):
                hub.publish("bench", {"i": i, "payload": "x" * 100})

        began = time.perf_counter()
        threads = [threading.Thread(target=publisher) for _ in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        target[0] = per_lane * IN_FLIGHT
        if count[0] < target[0]:
            done.wait(30)
        rate = count[0] / (time.perf_counter() - began)
    return (*_percentiles(samples), rate)


async def hub_async(dsn: str, rounds: int, messages: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, messages/s) through an async event hub (async iterator)."""
    async with AsyncPgEventHubService(dsn, SCHEMA, pool_kwargs={"max_size": IN_FLIGHT}) as hub:
        await hub.subscribe("bench", "lane-0")
        await hub.start()
        events = hub.events()
        samples = []
        for i in range(rounds):
            t = time.perf_counter()
            await hub.publish("bench", {"i": i})
            await events.__anext__()
            samples.append(time.perf_counter() - t)
        per_lane = messages // IN_FLIGHT

        async def publisher() -> None:
            for i in range(per_lane):
                await hub.publish("bench", {"i": i, "payload": "x" * 100})

        async def consumer() -> None:
            for _ in range(per_lane * IN_FLIGHT):
                await events.__anext__()

        began = time.perf_counter()
        await asyncio.gather(consumer(), *(publisher() for _ in range(IN_FLIGHT)))
        rate = per_lane * IN_FLIGHT / (time.perf_counter() - began)
    return (*_percentiles(samples), rate)


# --- main --------------------------------------------------------------------------------


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


def bench(dsn: str, seconds: float, messages: int) -> None:
    print(server_settings(dsn), f"| {os.cpu_count()} CPUs | {seconds:g} s per figure")
    prepare(dsn)
    header = (
        f"{'operation':<32} {'sync x1':>9} {'sync x16':>9} {'async x1':>9} {'async x16':>9}"
        f" {'TS x1':>7} {'TS x16':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, (ts1, ts16) in TS_REFERENCE.items():
        figures = [
            measure_sync(dsn, name, 1, seconds),
            measure_sync(dsn, name, IN_FLIGHT, seconds),
            asyncio.run(measure_async(dsn, name, 1, seconds)),
            asyncio.run(measure_async(dsn, name, IN_FLIGHT, seconds)),
        ]
        print(f"{name:<32} " + " ".join(f"{f:>9,.0f}" for f in figures) + f" {ts1:>7,} {ts16:>7,}")
    print("\nevent hub (LISTEN/NOTIFY), 1 listener, publishers in the same process")
    print(f"{'flavour':<8} {'p50 ms':>8} {'p99 ms':>8} {'msgs/s (16 publishers)':>24}")
    for flavour, (p50, p99, rate) in (
        ("sync", hub_sync(dsn, 500, messages)),
        ("async", asyncio.run(hub_async(dsn, 500, messages))),
    ):
        print(f"{flavour:<8} {p50:>8.3f} {p99:>8.3f} {rate:>24,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL conninfo (default: an embedded server)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each figure")
    parser.add_argument("--messages", type=int, default=5000, help="event hub messages")
    args = parser.parse_args()
    if args.dsn:
        bench(args.dsn, args.seconds, args.messages)
        return
    from pikku_pg._embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg:
        tune_embedded(pg.dsn)
        bench(pg.dsn, args.seconds, args.messages)


if __name__ == "__main__":
    main()
