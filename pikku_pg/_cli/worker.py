"""``worker --module app.workflows``: run the queued workflows of an application.

The module registers its workflows and RPCs on a workflow service and exposes
it as a module-level attribute named ``workflow_service`` or ``wf`` (or another
name given with ``--service module:attr``). The attribute is a
``PgWorkflowService`` / ``AsyncPgWorkflowService``, or a function without
arguments that returns one. ``--dsn`` is exported as ``DATABASE_URL`` before the
module is imported, so a module that reads ``DATABASE_URL`` gets it.

The worker runs until SIGINT (Ctrl-C) or SIGTERM, then stops gracefully: runs
in flight stop at their next step boundary and are handed back to the queue.
A second signal quits at once (the leases of the jobs in hand then run out and
other workers take them over).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
from types import FrameType, ModuleType
from typing import Any

from pikku_pg._cli._common import EXIT_INTERRUPTED, EXIT_OK, CliError
from pikku_pg._cli.output import Output
from pikku_pg._worker_options import WorkerOptions

SERVICE_NAMES = ("workflow_service", "wf")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The options are parsed here and checked by WorkerOptions (as for wf.worker()).
_DEFAULTS = WorkerOptions()


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``worker`` on the sub-command parser."""
    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="run queued workflows from a module until Ctrl-C / SIGTERM",
        description=(
            "Import MODULE (which registers workflows on a workflow service exposed as "
            f"`{SERVICE_NAMES[0]}` or `{SERVICE_NAMES[1]}`, or as --service module:attr), "
            "then process queued runs until SIGINT/SIGTERM, stopping gracefully. "
            "--dsn is exported as DATABASE_URL before the import."
        ),
    )
    worker.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="MODULE",
        help="module to import, e.g. app.workflows (repeatable)",
    )
    worker.add_argument(
        "--service",
        metavar="MODULE:ATTR",
        help=f"where the service is (default: `{SERVICE_NAMES[0]}` or `{SERVICE_NAMES[1]}` "
        "of the modules)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=_DEFAULTS.concurrency,
        metavar="N",
        help=f"runs at once ({_DEFAULTS.concurrency})",
    )
    worker.add_argument(
        "--lease",
        type=float,
        default=_DEFAULTS.lease,
        metavar="S",
        help=f"job lease seconds ({_DEFAULTS.lease:g})",
    )
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=_DEFAULTS.poll_interval,
        metavar="S",
        help=f"seconds between polls when idle ({_DEFAULTS.poll_interval:g})",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=_DEFAULTS.shutdown_timeout,
        metavar="S",
        help="seconds to let runs in flight reach a step boundary on stop "
        f"({_DEFAULTS.shutdown_timeout:g})",
    )
    worker.add_argument(
        "--no-listen",
        action="store_true",
        help="poll instead of LISTEN/NOTIFY (PgBouncer in transaction mode)",
    )
    worker.add_argument("--name", help="worker name recorded on claimed jobs")
    worker.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="(INFO)",
    )
    worker.set_defaults(run=run_worker)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # SyntaxError, ImportError, whatever the module raised
        raise CliError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from None


def _is_service(value: object) -> bool:
    return all(callable(getattr(value, attr, None)) for attr in ("worker", "init", "close", "rpc"))


def load_service(modules: list[str], service: str | None) -> Any:
    """Import ``modules`` and return the workflow service they expose (see module doc)."""
    if not modules and not service:
        raise CliError("worker needs --module MODULE (or --service MODULE:ATTR)")
    # What `python -m` does: the current directory is importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    imported = [_import(name) for name in modules]
    if service:
        module_name, _, attr = service.partition(":")
        if not module_name or not attr:
            raise CliError(f"--service must be MODULE:ATTR, not {service!r}")
        module = _import(module_name)
        if not hasattr(module, attr):
            raise CliError(f"module {module_name!r} has no attribute {attr!r}")
        found, where = getattr(module, attr), service
    else:
        for module in imported:
            names = [n for n in SERVICE_NAMES if hasattr(module, n)]
            if names:
                found, where = getattr(module, names[0]), f"{module.__name__}:{names[0]}"
                break
        else:
            raise CliError(
                f"no workflow service in {', '.join(modules)}: define `{SERVICE_NAMES[0]}` "
                f"or `{SERVICE_NAMES[1]}`, or pass --service MODULE:ATTR"
            )
    if not _is_service(found) and callable(found):
        try:
            found = found()
        except Exception as exc:
            raise CliError(f"{where}() failed: {type(exc).__name__}: {exc}") from None
    if not _is_service(found):
        raise CliError(
            f"{where} is a {type(found).__name__}, not a PgWorkflowService or "
            "AsyncPgWorkflowService (or a function returning one)"
        )
    return found


def worker_options(args: argparse.Namespace) -> WorkerOptions:
    """The worker options given on the command line, checked (a bad one: exit 2)."""
    return WorkerOptions(
        concurrency=args.concurrency,
        lease=args.lease,
        poll_interval=args.poll_interval,
        listen=not args.no_listen,
        shutdown_timeout=args.shutdown_timeout,
        name=args.name,
    )


def _describe(service: Any, worker: Any) -> str:
    names = sorted(getattr(service, "_workflows", {}) or [])
    what = ", ".join(names) if names else "no workflows registered!"
    return (
        f"worker {worker.name}: {worker.concurrency} at once, schema {service.schema}, "
        f"workflows: {what}. Ctrl-C to stop."
    )


def run_worker(args: argparse.Namespace, out: Output) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    options = worker_options(args)  # before the application is imported
    if args.dsn:
        os.environ["DATABASE_URL"] = args.dsn
    service = load_service(args.module, args.service)
    if threading.current_thread() is not threading.main_thread():
        raise CliError("the worker command must run in the main thread (it handles signals)")
    if inspect.iscoroutinefunction(service.init):
        return asyncio.run(_run_async(service, options, out))
    return _run_sync(service, options, out)


def _stopping(out: Output, worker: Any) -> None:
    out.line(
        f"stopping: runs in flight stop at their next step boundary "
        f"(at most {worker.shutdown_timeout:g} s); Ctrl-C again to quit at once"
    )


def _quit_now(out: Output) -> None:
    """The second signal: leave at once; the leases of the jobs in hand run out and
    another worker takes them over."""
    out.line("quitting now: runs in flight are taken over when their leases run out")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _run_sync(service: Any, options: WorkerOptions, out: Output) -> int:
    worker = service.worker(options)
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            _quit_now(out)
        _stopping(out, worker)
        # Not here: the main thread may hold the lock of the event we would set.
        threading.Thread(target=worker.request_stop, daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in _SIGNALS}
    try:
        service.init()
        out.line(_describe(service, worker))
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        service.close()
    out.line(f"stopped: {worker.jobs_done} jobs done")
    return EXIT_OK


async def _run_async(service: Any, options: WorkerOptions, out: Output) -> int:
    worker = service.worker(options)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            _quit_now(out)
        _stopping(out, worker)
        worker.request_stop()

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    try:
        await service.init()
        out.line(_describe(service, worker))
        await worker.run()
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
        await service.close()
    out.line(f"stopped: {worker.jobs_done} jobs done")
    return EXIT_OK
