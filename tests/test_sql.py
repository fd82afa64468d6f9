"""The query sets of ``pikku_pg._sql``: each lists its module's statements once, renders
completely, and every statement is valid SQL for the server (``PREPARE``d on a schema
holding every component)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType

import psycopg
import pytest

from pikku_pg._components import COMPONENTS
from pikku_pg._sql import (
    QuerySet,
    ai,
    channel,
    compose,
    deployment,
    render,
    statement,
    variants,
    workflow,
    workflow_queue,
)
from pikku_pg.errors import InvalidSchemaNameError
from pikku_pg.migrations import MigrationQueries, ddl

SQL_MODULES = (ai, channel, deployment, workflow, workflow_queue)
SCHEMA_SETS: tuple[type[QuerySet], ...] = (
    ai.AIQueries,
    channel.ChannelQueries,
    deployment.DeploymentQueries,
    workflow.WorkflowQueries,
    workflow_queue.QueueQueries,
    MigrationQueries,
)
UNSCOPED_SETS: tuple[type[QuerySet], ...] = (workflow.LockQueries,)

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_PARAMETER = re.compile(rb"%\((\w+)\)s|%s|%%")


def query_sets_of(module: ModuleType) -> list[type[QuerySet]]:
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, QuerySet) and obj.__module__ == module.__name__
    ]


def statement_constants(module: ModuleType) -> set[str]:
    """The module's public SQL constants that are not a migration's DDL."""
    ddl_texts = {id(m.sql) for m in module.COMPONENT.migrations}
    return {
        name
        for name, value in vars(module).items()
        if name.isupper()
        and not name.startswith("_")
        and isinstance(value, str | Mapping)
        and id(value) not in ddl_texts
    }


def rendered_statements(queries: QuerySet) -> Iterator[tuple[str, bytes]]:
    """(label, statement) of every statement of a rendered set, variants included."""
    for name in type(queries).templates():
        value = getattr(queries, name)
        if isinstance(value, bytes):
            yield f"{type(queries).__name__}.{name}", value
        else:
            for key, text in value.items():
                yield f"{type(queries).__name__}.{name}[{key}]", text


def numbered_parameters(text: bytes) -> tuple[bytes, int]:
    """psycopg's ``%s`` / ``%(name)s`` as the server's ``$n``; and how many there are."""
    numbers: dict[bytes, int] = {}

    def number(match: re.Match[bytes]) -> bytes:
        if match.group(0) == b"%%":
            return b"%"
        name = match.group(1) if match.group(1) is not None else str(len(numbers)).encode()
        return b"$%d" % numbers.setdefault(name, len(numbers) + 1)

    return _PARAMETER.sub(number, text), len(numbers)


@pytest.mark.parametrize("module", SQL_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_query_sets_list_every_statement_of_their_module_once(module: ModuleType) -> None:
    listed: Counter[str] = Counter()
    for queries in query_sets_of(module):
        for field_name, template in queries.templates().items():
            constant = field_name.upper()
            assert getattr(module, constant, None) is template, (
                f"{queries.__name__}.{field_name} is not {module.__name__}.{constant}"
            )
            listed[constant] += 1
    assert listed == Counter(statement_constants(module))


@pytest.mark.parametrize("queries", SCHEMA_SETS, ids=lambda q: q.__name__)
def test_rendering_fills_every_placeholder_once_per_schema(queries: type[QuerySet]) -> None:
    rendered = queries.render("Odd$Schema_1")
    assert queries.render("Odd$Schema_1") is rendered  # cached: services come per request
    assert queries.render("other") is not rendered
    found = list(rendered_statements(rendered))
    assert found
    for label, text in found:
        sql = text.decode()
        assert not _PLACEHOLDER.search(sql), f"{label}: {sql[:200]}"
        assert "{schema}" not in sql
    assert any(b'"Odd$Schema_1".' in text for _, text in found)


def test_every_statement_prepares_on_a_schema_with_every_component(
    pg_dsn: str, schema_name: str
) -> None:
    """Valid for the server, with every parameter's type determined by the server."""
    sets = [q.render(schema_name) for q in SCHEMA_SETS] + [q.unscoped() for q in UNSCOPED_SETS]
    failures: list[str] = []
    checked = 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(ddl(COMPONENTS, schema_name))
        for queries in sets:
            for label, text in rendered_statements(queries):
                sql, count = numbered_parameters(text)
                try:
                    conn.execute(b"PREPARE pikku_sql_check AS " + sql)
                except psycopg.Error as exc:
                    failures.append(f"{label}: {exc}")
                    continue
                row = conn.execute(
                    "SELECT cardinality(parameter_types), 'unknown'::regtype = ANY(parameter_types)"
                    " FROM pg_prepared_statements WHERE name = 'pikku_sql_check'"
                ).fetchone()
                conn.execute("DEALLOCATE pikku_sql_check")
                if row != (count, False):
                    failures.append(f"{label}: parameters {row}, expected {count} typed ones")
                checked += 1
    assert failures == []
    assert checked > 100


def test_compose_fails_loudly() -> None:
    assert compose("SELECT {a} FROM {schema}.t", a="1") == "SELECT 1 FROM {schema}.t"
    with pytest.raises(ValueError, match=r"\{b\} left unfilled"):
        compose("SELECT {a}, {b}", a="1")
    with pytest.raises(ValueError, match=r"not used"):
        compose("SELECT {a}", a="1", c="2")
    with pytest.raises(ValueError, match=r"\{x\} left unfilled"):
        compose("SELECT {a}", a="{x}")  # a fragment must be complete itself
    # One pass: the text put in is not searched again.
    assert compose("{a}{b}", a="{schema}", b="x") == "{schema}x"


def test_variants_give_one_statement_per_combination() -> None:
    found = variants("SELECT 1{f};", "f", {"a": " A", "b": " B"}, "".join)
    assert found == {
        (): "SELECT 1;",
        ("a",): "SELECT 1 A;",
        ("b",): "SELECT 1 B;",
        ("a", "b"): "SELECT 1 A B;",
    }


def test_statements_must_be_complete_and_sets_built_by_render() -> None:
    with pytest.raises(ValueError, match=r"\{where\} left unfilled"):
        statement("SELECT 1 {where}")

    @dataclass(frozen=True)
    class Scoped(QuerySet):
        one: bytes = statement("SELECT 1 FROM {schema}.t")

    with pytest.raises(ValueError, match="names a schema"):
        Scoped.unscoped()
    with pytest.raises(InvalidSchemaNameError):
        Scoped.render('bad"name')
    assert Scoped.render("s").one == b'SELECT 1 FROM "s".t'
    assert render("{schema}.t", "s") == '"s".t'
