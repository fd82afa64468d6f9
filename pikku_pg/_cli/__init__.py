"""The ``pikku-pg`` command line (also ``python -m pikku_pg``).

One module per command group (``ai``, ``workflows``, ``worker``, ``deployments``,
``schema``), output formatting in ``output``. Exit codes: 0 success, 1 not
found, 2 usage error (including an operation the object's state does not
allow, e.g. cancelling a completed run), 3 database unreachable, 130
interrupted. Expected failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import psycopg

from pikku_pg._cli import ai, deployments, schema, worker, workflows
from pikku_pg._cli._common import (
    DEFAULT_CONNECT_TIMEOUT,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    positive_float,
)
from pikku_pg._cli.output import Output, error
from pikku_pg.errors import DatabaseUnavailableError, NotFoundError, PikkuPgError

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "main",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command name (``pikku-pg --json runs`` and
    ``pikku-pg runs --json``); after it they default to "not given", so they never
    overwrite a value given before it."""
    common = _Parser(add_help=False)
    unset = argparse.SUPPRESS
    common.add_argument(
        "--dsn",
        default=os.environ.get("DATABASE_URL") if top else unset,
        help="PostgreSQL conninfo or URL (default: $DATABASE_URL)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=False if top else unset,
        help="print JSON for scripts instead of tables",
    )
    common.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=None if top else unset,
        metavar="S",
        help="seconds to wait for the server before exit code 3 (default: the conninfo's "
        f"connect_timeout, else {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the whole command line."""
    parser = _Parser(
        prog="pikku-pg",
        parents=[_common_options(top=True)],
        description="Pikku's PostgreSQL storage services, from the shell.",
        epilog="Exit codes: 0 success, 1 not found, 2 usage error, 3 database unreachable.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options(top=False)
    schema.add_commands(commands, common)
    ai.add_commands(commands, common)
    workflows.add_commands(commands, common)
    worker.add_commands(commands, common)
    deployments.add_commands(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(json_mode=args.json)
    try:
        code: int = args.run(args, out)
        return code
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except CliError as exc:
        error(str(exc))
        return exc.code
    except NotFoundError as exc:
        error(str(exc))
        return EXIT_NOT_FOUND
    except DatabaseUnavailableError as exc:
        error(str(exc))
        return EXIT_UNREACHABLE
    except PikkuPgError as exc:
        error(str(exc))
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        error(f"lost the connection to PostgreSQL: {exc}")
        return EXIT_UNREACHABLE
    except psycopg.Error as exc:
        error(f"database error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:
        # `pikku-pg runs | head`: the reader is gone; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
