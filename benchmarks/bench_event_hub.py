"""Benchmark of the event hub: the private default against ``inline_payloads=True``.

    python benchmarks/bench_event_hub.py [--dsn CONNINFO] [--seconds 2] [--latency 300] [--rounds 1]

Without ``--dsn`` it starts an embedded server with ``fsync`` and ``synchronous_commit``
off. For small (100 B) and large (20 kB) events, in each mode, prints publish ops/s with 1
and 16 calls in flight for each flavour (one service, its own listener subscribed and
receiving), then publish->delivery latency (p50/p99, one event at a time). By default
every event is stored and read back by the listener; inline mode sends small events in
the NOTIFY itself. Stored payloads are kept ``RETENTION`` seconds, so the deletes of
expired payloads are part of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import _harness as harness
from _harness import Column, Figure

from pikku_pg import AsyncPgEventHubService, PgChannelStore, PgEventHubService
from pikku_pg.models import EventHubMessage

SCHEMA = "bench_event_hub"
TOPIC = "bench"
RETENTION = 1.0
SIZES = {"100 B": 100, "20 kB": 20_000}
MODES = {"default": False, "inline": True}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency", type=int, default=300, help="events timed one at a time")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each line this many times and show the best figure of each column",
    )


def event_data(size: int) -> str:
    """A JSON string of ``size`` bytes that does not compress (as real data mostly won't)."""
    return secrets.token_hex(size // 2 + 1)[: size - 2]


def hub_kwargs(inline: bool, lanes: int) -> dict[str, Any]:
    return {"inline_payloads": inline, "payload_retention": RETENTION, **harness.pool(lanes)}


# --- publish throughput ------------------------------------------------------------------------


def throughput(dsn: str, inline: bool, data: str, seconds: float) -> list[float]:
    """Publish ops/s: sync x1, sync x16, async x1, async x16."""

    def measure_sync(lanes: int) -> Figure:
        with PgEventHubService(dsn, SCHEMA, **hub_kwargs(inline, lanes)) as hub:
            hub.subscribe(TOPIC, "bench-1")
            hub.start(lambda message: None)
            return harness.run_sync([lambda: hub.publish(TOPIC, data)] * lanes, seconds)

    async def measure_async(lanes: int) -> Figure:
        async with AsyncPgEventHubService(dsn, SCHEMA, **hub_kwargs(inline, lanes)) as hub:
            await hub.subscribe(TOPIC, "bench-1")

            async def ignore(message: EventHubMessage) -> None:
                pass

            await hub.start(ignore)
            return await harness.run_async([lambda: hub.publish(TOPIC, data)] * lanes, seconds)

    return harness.four_figures(measure_sync, measure_async)


# --- publish -> delivery latency ---------------------------------------------------------------


def latency_sync(dsn: str, inline: bool, data: str, count: int) -> tuple[float, float]:
    """(p50 ms, p99 ms) from publish to the sync callback, one event at a time."""
    received = threading.Event()
    samples = []
    with PgEventHubService(dsn, SCHEMA, **hub_kwargs(inline, 1)) as hub:
        hub.subscribe(TOPIC, "bench-1")
        hub.start(lambda message: received.set())
        for _ in range(count + 10):  # the first 10 warm up
            received.clear()
            began = time.perf_counter()
            hub.publish(TOPIC, data)
            if not received.wait(5):
                raise SystemExit("an event was not delivered within 5 s")
            samples.append((time.perf_counter() - began) * 1000)
    return harness.percentiles(samples[10:])


async def latency_async(dsn: str, inline: bool, data: str, count: int) -> tuple[float, float]:
    """(p50 ms, p99 ms) from publish to the async iterator, one event at a time."""
    samples = []
    async with AsyncPgEventHubService(dsn, SCHEMA, **hub_kwargs(inline, 1)) as hub:
        await hub.subscribe(TOPIC, "bench-1")
        await hub.start()
        events = hub.events()
        for _ in range(count + 10):
            began = time.perf_counter()
            await hub.publish(TOPIC, data)
            await asyncio.wait_for(events.__anext__(), 5)
            samples.append((time.perf_counter() - began) * 1000)
    return harness.percentiles(samples[10:])


def latencies(dsn: str, inline: bool, data: str, count: int) -> list[float]:
    """sync p50, sync p99, async p50, async p99 (ms)."""
    return [
        *latency_sync(dsn, inline, data, count),
        *asyncio.run(latency_async(dsn, inline, data, count)),
    ]


def lowest_of(rounds: int, measure: Callable[[], Sequence[float]]) -> list[float]:
    """The lowest figure of each column over ``rounds`` calls (for latencies)."""
    best = list(measure())
    for _ in range(rounds - 1):
        best = [min(old, new) for old, new in zip(best, measure(), strict=True)]
    return best


# --- main --------------------------------------------------------------------------------------


def lines() -> list[tuple[str, bool, str]]:
    return [
        (f"{mode}, {label}", inline, event_data(size))
        for label, size in SIZES.items()
        for mode, inline in MODES.items()
    ]


def bench(dsn: str, args: argparse.Namespace) -> None:
    with harness.fresh_schema(dsn, SCHEMA):
        with PgChannelStore(dsn, SCHEMA) as store:
            store.init()
            store.add_channel("bench-1", "bench")
        print(f"publish ops/s, a listener subscribed and receiving (retention {RETENTION:g} s)")
        harness.print_table(
            [Column("mode, event size", 18, left=True), *harness.FLAVOURS],
            (
                [
                    name,
                    *harness.best_of(
                        args.rounds,
                        lambda inline=inline, data=data: throughput(
                            dsn, inline, data, args.seconds
                        ),
                    ),
                ]
                for name, inline, data in lines()
            ),
        )
        print(f"\npublish -> delivery latency, one event at a time ({args.latency} events)")
        harness.print_table(
            [
                Column("mode, event size", 18, left=True),
                *(Column(title, 12, ".3f") for title in ("sync p50 ms", "sync p99 ms")),
                *(Column(title, 12, ".3f") for title in ("async p50 ms", "async p99 ms")),
            ],
            (
                [
                    name,
                    *lowest_of(
                        args.rounds,
                        lambda inline=inline, data=data: latencies(dsn, inline, data, args.latency),
                    ),
                ]
                for name, inline, data in lines()
            ),
        )


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
