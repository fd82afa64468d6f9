"""Run every benchmark on one server and print their tables.

    python benchmarks/run_all.py [--dsn CONNINFO] [--seconds 2] [--ts] [--rounds N]

Without ``--dsn`` it starts one embedded server with ``fsync`` and ``synchronous_commit``
off for all of them. ``--ts`` and ``--rounds`` go to the benchmarks that have TS columns.
Each benchmark runs with its own defaults for its other options (run a script alone to
change them).
"""

from __future__ import annotations

import argparse
import sys
import time

import _harness as harness
import bench_ai
import bench_channel
import bench_event_hub
import bench_workflow
import bench_workflow_engine

BENCHMARKS = [bench_ai, bench_channel, bench_event_hub, bench_workflow, bench_workflow_engine]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_ts_argument(parser)


def main() -> None:
    args = harness.parser(sys.modules[__name__]).parse_args()
    if args.ts:
        harness.install_ts()
    began = time.perf_counter()
    with harness.server(args.dsn) as dsn:
        harness.print_server(dsn, args.seconds)
        for module in BENCHMARKS:
            argv = ["--seconds", str(args.seconds)]
            if hasattr(module, "TS_SCRIPT"):
                argv += ["--rounds", str(args.rounds)] + (["--ts"] if args.ts else [])
            options = harness.parser(module).parse_args(argv)
            print(f"\n== {module.__name__} ==", flush=True)
            started = time.perf_counter()
            module.bench(dsn, options)
            print(f"({module.__name__}: {time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\nall benchmarks: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
