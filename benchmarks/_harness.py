"""What the benchmark scripts share: the command line, the server, the timing loops, the tables.

A benchmark script defines ``bench(dsn, args)`` (and, if it has options of its own,
``add_arguments(parser)``; ``TIMED = False`` if ``--seconds`` does not apply to it) and ends
with ``_harness.main(sys.modules[__name__])``; ``run_all.py`` runs such modules on one server.

* :func:`server`: the given ``--dsn``, or an embedded server (``pikku_pg._embedded``) with
  ``fsync`` and ``synchronous_commit`` off, as the TypeScript reference figures were measured.
* :func:`run_sync` / :func:`run_async`: call each of N operations in a loop for a fixed time,
  N threads (sync) or N asyncio tasks (async); N = 1 is the sequential figure.
* :func:`round_trips`: round trips of one call, counted in a libpq trace.
* :func:`print_table`: a plain-text table.
* :func:`ts_figures`: the TS columns, the issue's figures or (``--ts``) TypeScript ``@pikku/pg``
  0.12.1 measured in this run by a node script in ``benchmarks/ts`` (a script with TS columns
  names it in ``TS_SCRIPT``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

IN_FLIGHT = 16
"""Calls in flight for the concurrent figures."""


# --- command line and server --------------------------------------------------------------------


def parser(module: ModuleType) -> argparse.ArgumentParser:
    """``--dsn``, ``--seconds``, ``--ts`` if it has a ``TS_SCRIPT``, its own ``add_arguments``."""
    result = argparse.ArgumentParser(description=(module.__doc__ or "").split("\n\n")[0])
    result.add_argument("--dsn", help="PostgreSQL conninfo (default: an embedded server)")
    result.add_argument("--seconds", type=float, default=2.0, help="duration of each figure")
    if hasattr(module, "TS_SCRIPT"):
        add_ts_argument(result)
    add_arguments = getattr(module, "add_arguments", None)
    if add_arguments is not None:
        add_arguments(result)
    return result


def main(module: ModuleType) -> None:
    """Run one benchmark module from the command line."""
    args = parser(module).parse_args()
    if getattr(args, "ts", False):
        install_ts()
    with server(args.dsn) as dsn:
        print_server(dsn, args.seconds if getattr(module, "TIMED", True) else None)
        module.bench(dsn, args)


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[str]:
    """``dsn`` as it is, or an embedded server with ``fsync`` and ``synchronous_commit`` off."""
    if dsn:
        yield dsn
        return
    from pikku_pg._embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg:
        execute(
            pg.dsn,
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "SELECT pg_reload_conf()",
        )
        yield pg.dsn


def print_server(dsn: str, seconds: float | None) -> None:
    """The server's version and durability settings, the CPUs, the duration of a figure."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('fsync'),"
            " current_setting('synchronous_commit')"
        ).fetchone()
    assert row is not None
    line = f"PostgreSQL {row[0]}, fsync={row[1]}, synchronous_commit={row[2]}"
    line += f" | {os.cpu_count()} CPUs"
    print(line if seconds is None else f"{line} | {seconds:g} s per figure")


def execute(dsn: str, *statements: str, params: Sequence[Any] | None = None) -> None:
    """Run statements on a fresh autocommit connection (``params`` go to each of them)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql.encode(), params)


def fetch_value(dsn: str, sql: str) -> Any:
    """The first column of the first row of a query, on a fresh autocommit connection."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return row[0]


@contextlib.contextmanager
def fresh_schema(dsn: str, schema: str) -> Iterator[None]:
    """Drop ``schema`` before the block and after it."""
    execute(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    try:
        yield
    finally:
        execute(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def pool(size: int) -> dict[str, Any]:
    """Keyword arguments giving a service a pool of exactly ``size`` connections."""
    return {"pool_kwargs": {"min_size": size, "max_size": size}}


# --- timing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One timed loop: calls per second over all lanes, and the calls' latency."""

    ops_per_s: float
    p50_ms: float
    p99_ms: float


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of ``samples``, in their own unit."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _figure(lanes: Sequence[list[float]], elapsed: float) -> Figure:
    samples = [s for lane in lanes for s in lane]
    p50, p99 = percentiles(samples)
    return Figure(len(samples) / elapsed, p50 * 1000, p99 * 1000)


def run_sync(ops: Sequence[Callable[[], object]], seconds: float) -> Figure:
    """Call each op in a loop on its own thread for ``seconds``, all starting together.

    Each op is called once first (concurrently) to warm up connections and prepared statements.
    """
    in_threads(ops)
    samples: list[list[float]] = [[] for _ in ops]
    barrier = threading.Barrier(len(ops) + 1)
    stop_at = [0.0]

    def lane(op: Callable[[], object], times: list[float]) -> None:
        barrier.wait()
        while (began := time.perf_counter()) < stop_at[0]:
            op()
            times.append(time.perf_counter() - began)

    threads = [threading.Thread(target=lane, args=pair) for pair in zip(ops, samples, strict=True)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    barrier.wait()
    for t in threads:
        t.join()
    return _figure(samples, time.perf_counter() - began)


def in_threads(calls: Sequence[Callable[[], object]]) -> None:
    """Make each call on a thread of its own, all at once; return when all are done."""
    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def run_async(ops: Sequence[Callable[[], Awaitable[object]]], seconds: float) -> Figure:
    """Await each op in a loop in its own task for ``seconds`` (after one warm-up call each)."""
    await asyncio.gather(*(op() for op in ops))
    samples: list[list[float]] = [[] for _ in ops]
    stop_at = time.perf_counter() + seconds

    async def lane(op: Callable[[], Awaitable[object]], times: list[float]) -> None:
        while (began := time.perf_counter()) < stop_at:
            await op()
            times.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(lane(op, times) for op, times in zip(ops, samples, strict=True)))
    return _figure(samples, time.perf_counter() - began)


def four_figures(
    measure_sync: Callable[[int], Figure],
    measure_async: Callable[[int], Coroutine[Any, Any, Figure]],
) -> list[float]:
    """ops/s with 1 and :data:`IN_FLIGHT` lanes, sync then async (the :data:`FLAVOURS` columns).

    ``measure_*(lanes)`` open the services with a pool of ``lanes`` connections and call
    :func:`run_sync` / :func:`run_async` with ``lanes`` operations.
    """
    return [
        measure_sync(1).ops_per_s,
        measure_sync(IN_FLIGHT).ops_per_s,
        asyncio.run(measure_async(1)).ops_per_s,
        asyncio.run(measure_async(IN_FLIGHT)).ops_per_s,
    ]


# --- round trips --------------------------------------------------------------------------------


@contextlib.contextmanager
def traced(conn: psycopg.Connection[Any]) -> Iterator[list[int]]:
    """Count the Sync messages the client sends (one per round trip); the list gets the count."""
    result: list[int] = []
    with tempfile.TemporaryFile("w+") as f:
        conn.pgconn.trace(f.fileno())
        try:
            yield result
        finally:
            conn.pgconn.untrace()
        f.seek(0)
        result.append(sum(1 for line in f if "\tF\t" in line and "\tSync" in line))


def round_trips(
    conn: psycopg.Connection[Any], ops: Mapping[str, Callable[[], object]]
) -> dict[str, int]:
    """Round trips of the second call of each op (the first prepares), all on ``conn``."""
    found: dict[str, int] = {}
    for name, op in ops.items():
        op()
        with traced(conn) as counted:
            op()
        found[name] = counted[0]
    return found


# --- output -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column: numbers are formatted with ``number``, None shows as ``-``."""

    title: str
    width: int = 9
    number: str = ",.0f"
    left: bool = False


FLAVOURS = [
    Column(title) for title in ("sync x1", f"sync x{IN_FLIGHT}", "async x1", f"async x{IN_FLIGHT}")
]
"""The columns of :func:`four_figures`."""


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[object]]) -> None:
    """The header, a rule and one line a row; the last column may be free text."""

    def line(cells: Iterable[object]) -> str:
        texts = []
        for column, cell in zip(columns, cells, strict=True):
            if cell is None:
                cell = "-"
            text = cell if isinstance(cell, str) else format(cell, column.number)
            texts.append(text.ljust(column.width) if column.left else text.rjust(column.width))
        return " ".join(texts).rstrip()

    header = line(column.title for column in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        print(line(row))


# --- TypeScript comparison ----------------------------------------------------------------------

TS_DIR = Path(__file__).resolve().parent / "ts"
"""The node project running TypeScript ``@pikku/pg`` 0.12.1 on the same operations."""

TS_COLUMNS = [Column("TS x1", 7), Column(f"TS x{IN_FLIGHT}", 7)]
"""The columns of :func:`ts_figures`."""

# The conninfo parameters passed to node, as the libpq variables postgres.js reads too.
_NODE_ENVIRONMENT = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
    "password": "PGPASSWORD",
}


def add_ts_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ts",
        action="store_true",
        help="measure TypeScript @pikku/pg 0.12.1 in this run, after each line's Python figures"
        " (needs node and npm; see benchmarks/ts)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each line this many times (Python then TypeScript, interleaved) and"
        " show the best figure of each column",
    )


def best_of(rounds: int, measure: Callable[[], Sequence[float | None]]) -> list[float | None]:
    """The highest figure of each column over ``rounds`` calls of ``measure``.

    On a shared 2-core machine a figure can lose half its value to a neighbour's burst; the
    best of a few interleaved rounds compares the sides at their least disturbed.
    """
    best: list[float | None] = list(measure())
    for _ in range(rounds - 1):
        best = [
            None if old is None or new is None else max(old, new)
            for old, new in zip(best, measure(), strict=True)
        ]
    return best


def install_ts() -> None:
    """Check that node and npm are there; ``npm ci`` in ``benchmarks/ts`` if not done yet."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"--ts needs node and npm on the PATH; not found: {', '.join(missing)}")
    if (TS_DIR / "node_modules").is_dir():
        return
    print(f"npm ci in {TS_DIR}", file=sys.stderr, flush=True)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, stdout=sys.stderr, check=False
    )
    if done.returncode:
        raise SystemExit(f"npm ci failed in {TS_DIR} (exit status {done.returncode})")


def print_ts_note(args: argparse.Namespace, script: str) -> None:
    """Say where the TS columns of the next table come from."""
    if args.ts:
        print(
            f"TS columns: TypeScript @pikku/pg 0.12.1, measured in this run on this server,"
            f" after each line's Python figures (node benchmarks/ts/{script})"
        )
    else:
        print(
            "TS columns: TypeScript @pikku/pg 0.12.1 as the issue gives it"
            " (not measured in this run; --ts measures it)"
        )


def ts_figures(
    args: argparse.Namespace,
    dsn: str,
    script: str,
    reference: Mapping[str, tuple[float, float]],
    operation: str,
) -> tuple[float | None, float | None]:
    """The TS columns of a line: ops/s with 1 and :data:`IN_FLIGHT` calls in flight.

    Without ``--ts``, the issue's figures (``reference``; none if it has no such line). With it,
    ``node benchmarks/ts/<script> SECONDS OPERATION`` measures them now on the server of ``dsn``.
    """
    if not args.ts:
        return reference.get(operation, (None, None))
    environment = dict(os.environ)
    for key, value in conninfo_to_dict(dsn).items():
        if key in _NODE_ENVIRONMENT and value is not None:
            environment[_NODE_ENVIRONMENT[key]] = str(value)
    out = subprocess.run(
        ["node", script, str(args.seconds), operation],
        cwd=TS_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    x1, x16 = json.loads(out)[operation]
    return x1, x16
