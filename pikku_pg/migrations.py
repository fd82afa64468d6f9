"""Schema migrations: what each component's tables look like at each version.

Each component (``ai``, ``workflow``, ``channel``, ``deployment``) is an ordered
list of versions. ``init()`` on a service applies the missing versions of its
component in one transaction and records them in ``pikku_pg_migrations`` in the
target schema. Version 1 of a component reproduces the TypeScript ``@pikku/pg``
DDL with ``IF NOT EXISTS``, so it adopts a schema that TypeScript created; later
versions only add.

:func:`ddl` returns the same DDL as a script, for a DBA to review and apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pikku_pg._schema import quote_identifier, validate_schema_name
from pikku_pg._sql import QuerySet, render, statement

MIGRATIONS_TABLE = "pikku_pg_migrations"

# Creates the bookkeeping table; run under the schema's advisory lock.
BOOTSTRAP_SQL = """\
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.pikku_pg_migrations (
    component  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
);
"""

RECORD_SQL = """\
INSERT INTO {schema}.pikku_pg_migrations (component, version, name)
VALUES (%s, %s, %s)
"""

APPLIED_SQL = """\
SELECT component, max(version) AS version
FROM {schema}.pikku_pg_migrations
GROUP BY component
"""

# The transaction-scoped lock of a schema or of a component (see lock_key_text).
LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

# Whether the (quoted, schema-qualified) table exists.
TABLE_EXISTS_SQL = "SELECT to_regclass(%s) IS NOT NULL"


@dataclass(frozen=True)
class MigrationQueries(QuerySet):
    """The statements of the migration runner (``BOOTSTRAP_SQL`` and the migrations
    themselves are DDL scripts, run through :func:`render_sql`)."""

    record: bytes = statement(RECORD_SQL)
    applied: bytes = statement(APPLIED_SQL)
    lock: bytes = statement(LOCK_SQL)
    table_exists: bytes = statement(TABLE_EXISTS_SQL)


@dataclass(frozen=True)
class Migration:
    """One version of a component: a name and the SQL that brings it there.

    ``sql`` may hold several statements; it names the schema as ``{schema}`` and
    takes no parameters.
    """

    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class Component:
    """A named set of tables with its ordered migrations (versions 1, 2, 3...), and the
    schema its services use when none is given."""

    name: str
    migrations: tuple[Migration, ...]
    default_schema: str = "pikku"

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"component {self.name!r}: versions must be 1..n in order")

    @property
    def latest(self) -> int:
        """The version a schema is at once every migration is applied."""
        return len(self.migrations)

    def missing(self, applied: int) -> tuple[Migration, ...]:
        """The migrations after version ``applied``."""
        return self.migrations[applied:]


#: The one ``{schema}`` substitution (``pikku_pg._sql.render``), under its name here.
render_sql = render


def lock_key_text(schema: str, component: str | None = None) -> str:
    """The text hashed (with ``hashtextextended``) into an advisory lock key."""
    return f"pikku_pg:{schema}" if component is None else f"pikku_pg:{schema}:{component}"


def ddl(components: Component | Iterable[Component], schema: str) -> str:
    """The full DDL of ``components`` in ``schema`` as one script, for a DBA.

    The script creates the schema, applies every version and records them, so a
    later ``init()`` finds the schema up to date and runs no DDL.
    """
    schema = validate_schema_name(schema)
    items = [components] if isinstance(components, Component) else list(components)
    parts = ["BEGIN;", render(BOOTSTRAP_SQL, schema)]
    for component in items:
        for migration in component.migrations:
            parts.append(f"-- {component.name} v{migration.version}: {migration.name}")
            statements = render(migration.sql, schema).strip().rstrip(";")
            parts.append(statements + ";\n")
            parts.append(
                f"INSERT INTO {quote_identifier(schema)}.{MIGRATIONS_TABLE} "
                f"(component, version, name) VALUES ('{component.name}', "
                f"{migration.version}, '{_sql_string(migration.name)}') "
                "ON CONFLICT DO NOTHING;\n"
            )
    parts.append("COMMIT;\n")
    return "\n".join(parts)


def _sql_string(text: str) -> str:
    return text.replace("'", "''")
