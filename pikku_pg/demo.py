"""The end-to-end demo behind ``python -m pikku_pg demo``.

It runs on ``DATABASE_URL`` / ``--dsn`` when given, else on an embedded server
that it starts and always stops (Ctrl-C included). It uses the sync API, the
one a script or a notebook would use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pikku_pg._components import COMPONENTS
from pikku_pg._sync._migrate import apply_migrations
from pikku_pg._sync._service import PgService

Printer = Callable[[str], None]


def run_demo(dsn: str | None = None, out: Printer = print) -> None:
    """Run the demo on ``dsn``, or on a fresh embedded server when ``dsn`` is None."""
    if dsn:
        out(f"Using the database at {dsn.split('@')[-1]}")
        _story(dsn, out)
        return
    from pikku_pg._embedded import EmbeddedPostgres

    started = time.perf_counter()
    with EmbeddedPostgres() as server:
        out(f"Started an embedded PostgreSQL in {time.perf_counter() - started:.1f} s")
        _story(server.dsn, out)
    out("Stopped the embedded PostgreSQL")


def _story(dsn: str, out: Printer) -> None:
    _init_everything(dsn, out)


def _init_everything(dsn: str, out: Printer) -> None:
    out(f"Creating the tables of {len(COMPONENTS)} component(s):")
    for info in COMPONENTS:
        with PgService(dsn, info.default_schema) as service:
            applied = apply_migrations(service._db, info.default_schema, [info.load()])
        versions = ", ".join(f"v{v}" for _, v in applied) or "already up to date"
        out(f"  {info.name:<11} schema {info.default_schema:<15} {versions}")
