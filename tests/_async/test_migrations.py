"""The migration mechanism, proven with a test component."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import AsyncConnection

from pikku_pg._acompat import agather, aspawn
from pikku_pg._async._service import AsyncPgService
from pikku_pg.errors import InvalidInputError, MigrationError
from pikku_pg.migrations import Component, Migration, ddl

V1 = Migration(
    1,
    "notes table",
    """
    CREATE TABLE IF NOT EXISTS {schema}.notes (
        id   TEXT PRIMARY KEY,
        body TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS notes_body_idx ON {schema}.notes (body);
    """,
)
V2 = Migration(
    2, "notes.created_at", "ALTER TABLE {schema}.notes ADD COLUMN created_at TIMESTAMPTZ"
)
BROKEN_V3 = Migration(
    3,
    "half of it fails",
    """
    CREATE TABLE {schema}.tags (name TEXT);
    ALTER TABLE {schema}.notes ADD COLUMN no_such_type not_a_type;
    """,
)
NOTES = Component("notes", (V1, V2))
NOTES_BROKEN = Component("notes", (V1, V2, BROKEN_V3))


class NotesService(AsyncPgService):
    components = (NOTES,)
    default_schema = "notes"


class BrokenNotesService(AsyncPgService):
    components = (NOTES_BROKEN,)


async def _versions(admin_conn: Any, schema: str) -> list[tuple[str, int]]:
    cur = await admin_conn.execute(
        f'SELECT component, version FROM "{schema}".pikku_pg_migrations ORDER BY 1, 2'
    )
    return [tuple(r) for r in await cur.fetchall()]


async def _columns(admin_conn: Any, schema: str, table: str) -> list[str]:
    cur = await admin_conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    )
    return [r[0] for r in await cur.fetchall()]


async def test_init_applies_every_version_once(
    conn_source: Any, schema_name: str, admin_conn: Any
) -> None:
    service = NotesService(conn_source, schema_name)
    try:
        assert await service.init() == [("notes", 1), ("notes", 2)]
        assert await service.init() == []
    finally:
        await service.close()
    assert await _versions(admin_conn, schema_name) == [("notes", 1), ("notes", 2)]
    assert await _columns(admin_conn, schema_name, "notes") == ["id", "body", "created_at"]


async def test_init_components_migrates_the_given_components(
    pg_dsn: str, schema_name: str, admin_conn: Any
) -> None:
    async with AsyncPgService(pg_dsn, schema_name) as service:
        with pytest.raises(InvalidInputError, match="components"):
            await service.init_components(NOTES)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="components"):
            await service.init_components(["notes"])  # type: ignore[list-item]
        assert await service.init_components([NOTES]) == [("notes", 1), ("notes", 2)]
        assert await service.init_components([NOTES]) == []
    assert await _versions(admin_conn, schema_name) == [("notes", 1), ("notes", 2)]


async def test_version_1_adopts_tables_created_by_typescript(
    pg_dsn: str, schema_name: str, admin_conn: Any
) -> None:
    await admin_conn.execute(f'CREATE SCHEMA "{schema_name}"')
    await admin_conn.execute(f'CREATE TABLE "{schema_name}".notes (id TEXT PRIMARY KEY, body TEXT)')
    await admin_conn.execute(f"INSERT INTO \"{schema_name}\".notes VALUES ('kept', 'x')")
    async with NotesService(pg_dsn, schema_name) as service:
        assert await service.init() == [("notes", 1), ("notes", 2)]
    cur = await admin_conn.execute(f'SELECT id FROM "{schema_name}".notes')
    assert await cur.fetchall() == [("kept",)]


async def test_a_failing_migration_leaves_the_previous_version(
    pg_dsn: str, schema_name: str, admin_conn: Any
) -> None:
    async with NotesService(pg_dsn, schema_name) as service:
        await service.init()
    async with BrokenNotesService(pg_dsn, schema_name) as broken:
        with pytest.raises(MigrationError, match=r"notes v3 \(half of it fails\)"):
            await broken.init()
    assert await _versions(admin_conn, schema_name) == [("notes", 1), ("notes", 2)]
    cur = await admin_conn.execute("SELECT to_regclass(%s)", (f'"{schema_name}".tags',))
    assert await cur.fetchone() == (None,)


async def test_a_failure_on_an_empty_schema_leaves_nothing(
    pg_dsn: str, schema_name: str, admin_conn: Any
) -> None:
    async with BrokenNotesService(pg_dsn, schema_name) as broken:
        with pytest.raises(MigrationError):
            await broken.init()
    cur = await admin_conn.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema_name,)
    )
    assert await cur.fetchone() == (0,)


async def test_concurrent_init_from_eight_connections(
    pg_dsn: str, schema_name: str, admin_conn: Any
) -> None:
    conns = [await AsyncConnection.connect(pg_dsn, autocommit=True) for _ in range(8)]
    applied: list[list[tuple[str, int]]] = []

    async def run_init(conn: Any) -> None:
        applied.append(await NotesService(conn, schema_name).init())

    try:
        await agather(*[aspawn(run_init, (c,)) for c in conns], timeout=60)
    finally:
        for conn in conns:
            await conn.close()
    assert len(applied) == 8
    # Exactly one caller did the work; the others found it done.
    assert sorted(applied, key=len) == [[]] * 7 + [[("notes", 1), ("notes", 2)]]
    assert await _versions(admin_conn, schema_name) == [("notes", 1), ("notes", 2)]
    cur = await admin_conn.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema_name,)
    )
    assert await cur.fetchone() == (2,)  # notes + pikku_pg_migrations


async def test_an_up_to_date_schema_needs_no_ddl_rights(
    pg_dsn: str, schema_name: str, admin_conn: Any
) -> None:
    async with NotesService(pg_dsn, schema_name) as service:
        await service.init()
    role = f"dml_{schema_name}"
    await admin_conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        await admin_conn.execute(f'GRANT USAGE ON SCHEMA "{schema_name}" TO {role}')
        await admin_conn.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema_name}" '
            f"TO {role}"
        )
        conn = await AsyncConnection.connect(pg_dsn, user=role, password="pw")
        try:
            assert await NotesService(conn, schema_name).init() == []
            # The role really has no DDL rights: creating anything fails.
            with pytest.raises(Exception, match="permission denied"):
                await conn.execute(f'CREATE TABLE "{schema_name}".nope (x int)')
        finally:
            await conn.close()
    finally:
        await admin_conn.execute(f"DROP OWNED BY {role}")
        await admin_conn.execute(f"DROP ROLE {role}")


async def test_ddl_script_matches_init(pg_dsn: str, schema_name: str, admin_conn: Any) -> None:
    script = ddl(NOTES, schema_name)
    assert script.startswith("BEGIN;") and script.rstrip().endswith("COMMIT;")
    await admin_conn.execute(script.encode())
    assert await _versions(admin_conn, schema_name) == [("notes", 1), ("notes", 2)]
    async with NotesService(pg_dsn, schema_name) as service:
        assert await service.init() == []


def test_component_versions_must_be_consecutive() -> None:
    with pytest.raises(ValueError, match="versions must be 1..n"):
        Component("bad", (V2,))


def test_ddl_refuses_an_invalid_schema_name() -> None:
    from pikku_pg.errors import InvalidSchemaNameError

    with pytest.raises(InvalidSchemaNameError):
        ddl(NOTES, 'x"; drop table y; --')
