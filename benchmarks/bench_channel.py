"""Benchmark of channels, subscriptions, deployments and the event hub (sync and async).

    python benchmarks/bench_channel.py [--dsn CONNINFO] [--seconds 2] [--messages 5000] [--ts]

Without ``--dsn`` it starts an embedded server with ``fsync`` and ``synchronous_commit``
off (how the TypeScript reference figures were measured). Prints ops/s with 1 and 16
calls in flight, for each flavour, next to TypeScript ``@pikku/pg`` 0.12.1 (the issue's
figures, or with ``--ts`` measured on the same server after each line: ``ts/channel.mjs``);
then the event hub's publish->receive latency (p50/p99) and messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as harness
from _harness import IN_FLIGHT, Column, Figure

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
TS_SCRIPT = "channel.mjs"
DEPLOYMENTS = 200
ADD_REMOVE = "add_channel + remove_channels"
SUBSCRIBE = "subscribe"
FIND = "find_function (200 deployments)"
# TypeScript @pikku/pg 0.12.1 (sequential, 16 in flight), from the issue.
TS_REFERENCE = {ADD_REMOVE: (1891, 5856), SUBSCRIBE: (3863, 11768), FIND: (5308, 17316)}
# The service (sync, async) each operation runs on.
SERVICES: dict[str, tuple[Any, Any]] = {
    ADD_REMOVE: (PgChannelStore, AsyncPgChannelStore),
    SUBSCRIBE: (PgEventHubStore, AsyncPgEventHubStore),
    FIND: (PgDeploymentService, AsyncPgDeploymentService),
}
_counter = itertools.count()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=5000, help="event hub messages")


def prepare(dsn: str) -> None:
    """16 lane channels, 200 live deployments of 20 functions each."""
    with PgChannelStore(dsn, SCHEMA) as store:
        store.init()
        for lane in range(IN_FLIGHT):
            store.add_channel(f"lane-{lane}", "bench")
    with PgDeploymentService(dsn, SCHEMA) as registry:
        registry.init()
    # Deployment d serves f{d * 7 % 40}..f{d * 7 % 40 + 19}: "f0" is served by 5 of them.
    harness.execute(
        dsn,
        f"""INSERT INTO {SCHEMA}.pikku_deployments (deployment_id, endpoint, functions)
        SELECT 'dep-' || d, 'http://dep-' || d,
               ARRAY(SELECT 'f' || (d * 7 %% 40 + k) FROM generate_series(0, 19) k)
        FROM generate_series(1, %s) d""",
        params=(DEPLOYMENTS,),
    )
    harness.execute(dsn, f"ANALYZE {SCHEMA}.pikku_deployments")


def refresh_heartbeats(dsn: str) -> None:
    """Make the 200 deployments live again (their TTL is 30 s; a run takes longer).

    Then VACUUM, as autovacuum does between heartbeats in a live registry: each refresh
    leaves 200 dead rows, and the figures (of both sides) start from the same clean table
    instead of one carrying the dead rows of the rounds before.
    """
    harness.execute(
        dsn,
        f"UPDATE {SCHEMA}.pikku_deployments SET last_heartbeat = now()",
        f"VACUUM {SCHEMA}.pikku_deployments",
    )
    with PgDeploymentService(dsn, SCHEMA) as registry:
        assert len(registry.find_function("f0")) == 5, "the benchmark data is not as expected"


def _topic() -> str:
    return f"topic-{next(_counter)}"


# --- operations ----------------------------------------------------------------------------


def sync_op(name: str, service: Any, lane: int) -> Callable[[], object]:
    if name == ADD_REMOVE:

        def add_remove() -> None:
            cid = uuid.uuid4().hex
            service.add_channel(cid, "bench", {"lane": lane})
            service.remove_channels([cid])

        return add_remove
    if name == SUBSCRIBE:
        return lambda: service.subscribe(_topic(), f"lane-{lane}")
    return lambda: service.find_function("f0")


def async_op(name: str, service: Any, lane: int) -> Callable[[], Awaitable[object]]:
    if name == ADD_REMOVE:

        async def add_remove() -> None:
            cid = uuid.uuid4().hex
            await service.add_channel(cid, "bench", {"lane": lane})
            await service.remove_channels([cid])

        return add_remove
    if name == SUBSCRIBE:
        return lambda: service.subscribe(_topic(), f"lane-{lane}")
    return lambda: service.find_function("f0")


def figures(dsn: str, name: str, seconds: float) -> list[float]:
    """ops/s of operation ``name``: one service (pool of ``n``) shared by ``n`` lanes."""
    sync_service, async_service = SERVICES[name]

    def measure_sync(n: int) -> Figure:
        if name == FIND:
            refresh_heartbeats(dsn)
        with sync_service(dsn, SCHEMA, **harness.pool(n)) as service:
            return harness.run_sync([sync_op(name, service, lane) for lane in range(n)], seconds)

    async def measure_async(n: int) -> Figure:
        if name == FIND:
            refresh_heartbeats(dsn)
        async with async_service(dsn, SCHEMA, **harness.pool(n)) as service:
            ops = [async_op(name, service, lane) for lane in range(n)]
            return await harness.run_async(ops, seconds)

    return harness.four_figures(measure_sync, measure_async)


# --- event hub -----------------------------------------------------------------------------


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
            samples.append((time.perf_counter() - t) * 1000)
        count[0], target[0] = 0, messages
        per_lane = messages // IN_FLIGHT

        def publisher() -> None:
            for i in range(per_lane):
                hub.publish("bench", {"i": i, "payload": "x" * 100})

        began = time.perf_counter()
        harness.in_threads([publisher] * IN_FLIGHT)
        target[0] = per_lane * IN_FLIGHT
        if count[0] < target[0]:
            done.wait(30)
        rate = count[0] / (time.perf_counter() - began)
    return (*harness.percentiles(samples), rate)


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
            samples.append((time.perf_counter() - t) * 1000)
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
    return (*harness.percentiles(samples), rate)


# --- main ----------------------------------------------------------------------------------


def bench(dsn: str, args: argparse.Namespace) -> None:
    with harness.fresh_schema(dsn, SCHEMA):
        prepare(dsn)
        harness.print_ts_note(args, TS_SCRIPT)
        harness.print_table(
            [Column("operation", 32, left=True), *harness.FLAVOURS, *harness.TS_COLUMNS],
            (
                [
                    name,
                    *harness.best_of(
                        args.rounds,
                        lambda name=name: [
                            *figures(dsn, name, args.seconds),
                            *harness.ts_figures(args, dsn, TS_SCRIPT, TS_REFERENCE, name),
                        ],
                    ),
                ]
                for name in TS_REFERENCE
            ),
        )
        print("\nevent hub (LISTEN/NOTIFY), 1 listener, publishers in the same process")
        hub = [
            ("sync", *hub_sync(dsn, 500, args.messages)),
            ("async", *asyncio.run(hub_async(dsn, 500, args.messages))),
        ]
        harness.print_table(
            [
                Column("flavour", 8, left=True),
                Column("p50 ms", 8, ".3f"),
                Column("p99 ms", 8, ".3f"),
                Column(f"msgs/s ({IN_FLIGHT} publishers)", 24),
            ],
            hub,
        )


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
