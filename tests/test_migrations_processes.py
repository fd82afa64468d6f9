"""Concurrent ``init()`` from separate processes (sync API; not generated)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg

CHILD = textwrap.dedent(
    """
    import sys, time
    from pikku_pg._sync._service import PgService
    from pikku_pg.migrations import Component, Migration

    NOTES = Component("notes", (
        Migration(1, "notes", "CREATE TABLE IF NOT EXISTS {schema}.notes (id TEXT PRIMARY KEY)"),
        Migration(2, "tags", "CREATE TABLE {schema}.tags (name TEXT)"),
    ))

    class Notes(PgService):
        components = (NOTES,)

    dsn, schema, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(max(0.0, start_at - time.time()))  # start together
    with Notes(dsn, schema) as service:
        print(len(service.init()))
    """
)


def test_eight_processes_init_an_empty_schema_together(pg_dsn: str, schema_name: str) -> None:
    import time

    start_at = str(time.time() + 1.5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, pg_dsn, schema_name, start_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outputs]
    # One process applied both versions (v2 has no IF NOT EXISTS: a second run would fail).
    assert sorted(int(out) for out, _ in outputs) == [0] * 7 + [2]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema_name,)
        ).fetchall()
    assert rows == [("notes",), ("pikku_pg_migrations",), ("tags",)]
