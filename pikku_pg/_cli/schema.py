"""``demo`` and ``migrate``: the end-to-end story, and the tables of each component."""

from __future__ import annotations

import argparse
from typing import Any

from pikku_pg._cli._common import EXIT_OK, connect
from pikku_pg._cli.output import Output
from pikku_pg._components import COMPONENTS, component_names


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``demo`` and ``migrate`` on the sub-command parser."""
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run the end-to-end story (on an embedded server when no --dsn is given)",
    )
    demo.set_defaults(run=run_demo)

    migrate = commands.add_parser(
        "migrate", parents=[common], help="apply migrations, or print their DDL"
    )
    migrate.add_argument(
        "--component",
        action="append",
        choices=component_names(),
        help="only this component (repeatable; default: all)",
    )
    migrate.add_argument("--schema", help="schema name (default: each component's own)")
    migrate.add_argument(
        "--print-sql", action="store_true", help="print the DDL instead of applying it"
    )
    migrate.set_defaults(run=migrate_command)


def run_demo(args: argparse.Namespace, out: Output) -> int:
    from pikku_pg.demo import run_demo as story

    story(args.dsn)
    return EXIT_OK


def migrate_command(args: argparse.Namespace, out: Output) -> int:
    from pikku_pg._schema import validate_schema_name
    from pikku_pg._sync._service import PgService
    from pikku_pg.migrations import ddl

    chosen = [c for c in COMPONENTS if not args.component or c.name in args.component]
    if args.schema is not None:
        validate_schema_name(args.schema)
    if args.print_sql:
        for component in chosen:
            out.stream.write(ddl(component, args.schema or component.default_schema) + "\n")
        return EXIT_OK
    report: list[dict[str, Any]] = []
    with connect(args) as conn:
        for component in chosen:
            schema = args.schema or component.default_schema
            with (
                out.progress(f"migrating {component.name} in schema {schema}"),
                PgService(conn, schema) as service,
            ):
                applied = service.init_components([component])
            versions = [version for _, version in applied]
            report.append({"component": component.name, "schema": schema, "applied": versions})
            if not out.json_mode:
                done = ", ".join(f"v{v}" for v in versions) or "already up to date"
                out.line(f"{component.name} in schema {schema}: {done}")
    if out.json_mode:
        out.json(report)
    return EXIT_OK
