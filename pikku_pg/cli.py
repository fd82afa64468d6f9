"""The ``pikku-pg`` command line: the demo and schema migrations.

Exit codes: 0 success, 1 not found, 2 usage error, 3 database unreachable.
Expected failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pikku_pg._components import COMPONENTS, component_names
from pikku_pg.errors import DatabaseUnavailableError, PikkuPgError

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pikku-pg", description="Pikku's PostgreSQL storage services, from the shell."
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL conninfo or URL (default: $DATABASE_URL)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo", help="run the end-to-end story (on an embedded server when no --dsn is given)"
    )
    migrate = commands.add_parser("migrate", help="apply migrations, or print their DDL")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from pikku_pg.demo import run_demo

            run_demo(args.dsn)
            return EXIT_OK
        return _migrate(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except DatabaseUnavailableError as exc:
        print(f"pikku-pg: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except PikkuPgError as exc:
        print(f"pikku-pg: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _migrate(args: argparse.Namespace) -> int:
    from pikku_pg._sync._migrate import apply_migrations
    from pikku_pg._sync._service import PgService
    from pikku_pg.migrations import ddl

    chosen = [c for c in COMPONENTS if not args.component or c.name in args.component]
    if args.print_sql:
        for info in chosen:
            print(ddl(info.load(), args.schema or info.default_schema))
        return EXIT_OK
    if not args.dsn:
        print("pikku-pg: no database: pass --dsn or set DATABASE_URL", file=sys.stderr)
        return EXIT_USAGE
    for info in chosen:
        schema = args.schema or info.default_schema
        with PgService(args.dsn, schema) as service:
            applied = apply_migrations(service._db, schema, [info.load()])
        done = ", ".join(f"v{version}" for _, version in applied) or "already up to date"
        print(f"{info.name} in schema {schema}: {done}")
    return EXIT_OK
