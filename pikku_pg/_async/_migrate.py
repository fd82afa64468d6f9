"""Apply the missing migrations of some components to a schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from pikku_pg._async._database import AsyncDatabase
from pikku_pg._schema import quote_identifier
from pikku_pg.errors import MigrationError
from pikku_pg.migrations import (
    BOOTSTRAP_SQL,
    MIGRATIONS_TABLE,
    Component,
    MigrationQueries,
    lock_key_text,
    render_sql,
)


async def _applied_versions(conn: AsyncConnection[Any], schema: str) -> dict[str, int] | None:
    """Applied version per component, or None when the migrations table does not exist."""
    table = f"{quote_identifier(schema)}.{MIGRATIONS_TABLE}"
    queries = MigrationQueries.render(schema)
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(queries.table_exists, (table,))
    exists = await cur.fetchone()
    if not exists or not exists[0]:
        return None
    await cur.execute(queries.applied)
    return {name: version for name, version in await cur.fetchall()}


def _up_to_date(applied: dict[str, int] | None, components: Sequence[Component]) -> bool:
    if applied is None:
        return False
    return all(applied.get(c.name, 0) >= c.latest for c in components)


async def apply_migrations(
    db: AsyncDatabase, schema: str, components: Sequence[Component]
) -> list[tuple[str, int]]:
    """Bring ``components`` in ``schema`` to their latest version.

    Safe to run from many processes at once: the work happens in one transaction
    holding transaction-scoped advisory locks on the schema and on each
    (schema, component). A schema already up to date costs two reads and no DDL,
    so a role with only DML rights can call it. Returns the versions applied.
    """
    async with db.connection() as conn:
        if _up_to_date(await _applied_versions(conn, schema), components):
            return []
    applied_now: list[tuple[str, int]] = []
    queries = MigrationQueries.render(schema)
    async with db.transaction() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        # The schema lock serializes the bootstrap (concurrent CREATE SCHEMA IF NOT
        # EXISTS can still collide); component locks are taken in a fixed order.
        keys = [lock_key_text(schema)]
        keys += sorted(lock_key_text(schema, c.name) for c in components)
        for key in keys:
            await cur.execute(queries.lock, (key,))
        await cur.execute(render_sql(BOOTSTRAP_SQL, schema).encode())
        applied = await _applied_versions(conn, schema) or {}
        for component in components:
            for migration in component.missing(applied.get(component.name, 0)):
                try:
                    await cur.execute(render_sql(migration.sql, schema).encode())
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {component.name} v{migration.version} "
                        f"({migration.name}) failed in schema {schema!r}: {exc}"
                    ) from exc
                await cur.execute(
                    queries.record,
                    (component.name, migration.version, migration.name),
                )
                applied_now.append((component.name, migration.version))
    return applied_now
