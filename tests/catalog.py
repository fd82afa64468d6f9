"""Compare a schema made by ``init()`` with what TypeScript ``@pikku/pg`` 0.12.1 creates.

The catalog (``tests/interop/ts-catalog.json``, a copy of the shared
``interop/ts-catalog.json``) lists, per TypeScript schema, every table with its
columns (type, nullability, default), keys, indexes and the enum types.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg

CATALOG = Path(__file__).resolve().parent / "interop" / "ts-catalog.json"


def ts_schema(name: str) -> dict[str, Any]:
    """The catalog of one TypeScript schema (``pikku``, ``pikku_ai``, ``pikku_workflow``)."""
    schemas: dict[str, Any] = json.loads(CATALOG.read_text())["schemas"]
    return dict(schemas[name])


def _found(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    columns = {
        (t, c): (dt, udt, nullable, default)
        for t, c, dt, udt, nullable, default in conn.execute(
            "SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = %s",
            (schema,),
        )
    }
    # Storage parameters (``WITH (fastupdate='off')``) tune an index without changing
    # what it indexes: a TypeScript writer and reader work the same with them.
    indexes = {
        name: re.sub(r" WITH \([^)]*\)$", "", definition)
        for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
        )
    }
    constraints = {
        (t.split(".")[-1], n): d
        for t, n, d in conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = %s::regnamespace",
            (schema,),
        )
    }
    enums = dict(
        conn.execute(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)"
            " FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
            " WHERE t.typnamespace = %s::regnamespace GROUP BY 1",
            (schema,),
        )
    )
    identity = set(
        conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND is_identity = 'YES'",
            (schema,),
        )
    )
    return {
        "columns": columns,
        "identity": identity,
        "indexes": indexes,
        "constraints": constraints,
        "enums": enums,
    }


def catalog_differences(
    dsn: str, ts_name: str, schema: str, tables: list[str] | None = None
) -> list[str]:
    """What the TypeScript schema ``ts_name`` has that ``schema`` lacks or has differently.

    Only ``tables`` when given (e.g. the tables of one component). Also reports a
    column of ours that a TypeScript writer could not fill (NOT NULL, no default).
    """
    expected = ts_schema(ts_name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = _found(conn, schema)

    def ours(text: str | None) -> str | None:
        if text is None:
            return None
        return text.replace(f"{ts_name}.", f"{schema}.").replace(f'"{ts_name}".', f"{schema}.")

    problems: list[str] = []
    names = tables if tables is not None else list(expected["tables"])
    for table in names:
        spec = expected["tables"][table]
        for column, col in spec["columns"].items():
            want = (col["data_type"], col["udt_name"], col["is_nullable"])
            want += (ours(col["column_default"]),)
            got = found["columns"].get((table, column))
            if got != want:
                problems.append(f"column {table}.{column}: expected {want}, found {got}")
        keys = {
            spec["primary_key"]["name"]: "PRIMARY KEY ({})".format(
                ", ".join(spec["primary_key"]["columns"])
            )
        }
        for kind in ("foreign_keys", "unique", "checks"):
            keys |= {name: c["definition"] for name, c in spec[kind].items()}
        for name, definition in keys.items():
            got_key = found["constraints"].get((table, name))
            if got_key != ours(definition):
                problems.append(
                    f"constraint {table}.{name}: expected {definition}, found {got_key}"
                )
        for name, definition in spec["indexes"].items():
            if found["indexes"].get(name) != ours(definition):
                problems.append(
                    f"index {name}: expected {definition}, found {found['indexes'].get(name)}"
                )
        for (t, column), (_, _, nullable, default) in found["columns"].items():
            fillable = nullable == "YES" or default is not None or (t, column) in found["identity"]
            if t == table and column not in spec["columns"] and not fillable:
                problems.append(f"column {t}.{column} (ours) is NOT NULL without a default")
    if tables is None:
        for enum, labels in expected["enums"].items():
            if found["enums"].get(enum) != labels:
                problems.append(f"enum {enum}: expected {labels}, found {found['enums'].get(enum)}")
    return problems
