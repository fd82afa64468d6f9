"""What the commands share: exit codes, expected failures, the database connection."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from pikku_pg._connect import describe_server
from pikku_pg.errors import DatabaseUnavailableError, SchemaNotInitializedError

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130

#: Seconds to wait for the server before exit code 3 (``--connect-timeout``).
DEFAULT_CONNECT_TIMEOUT = 5.0


class CliError(Exception):
    """An expected failure: a one-line message and the exit code to return."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        self.code = code
        super().__init__(message)


def positive_int(text: str) -> int:
    """argparse type: an int of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def require_dsn(args: argparse.Namespace) -> str:
    """The conninfo given by ``--dsn`` or ``DATABASE_URL``; a usage error without one."""
    dsn: str | None = getattr(args, "dsn", None)
    if not dsn:
        raise CliError("no database: pass --dsn or set DATABASE_URL", EXIT_USAGE)
    return dsn


def connect(args: argparse.Namespace) -> psycopg.Connection[Any]:
    """One autocommit connection for a command, or exit 3 within the connect timeout
    (``--connect-timeout``, else the conninfo's ``connect_timeout``, else 5 s).

    A command is short-lived: one connection (no pool) is the fastest way in, and
    the services borrow it (each call is one statement, one round trip).
    """
    dsn = require_dsn(args)
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": "pikku-pg cli"}
    timeout: float | None = getattr(args, "connect_timeout", None)
    if timeout is not None or "connect_timeout" not in _conninfo_params(dsn):
        # Whole seconds; psycopg waits at least 2 s (as libpq does).
        kwargs["connect_timeout"] = max(round(timeout or DEFAULT_CONNECT_TIMEOUT), 1)
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {describe_server(dsn)}: {reason}"
        ) from None
    except psycopg.ProgrammingError as exc:  # a conninfo that does not parse
        raise CliError(f"invalid --dsn / DATABASE_URL: {exc}", EXIT_USAGE) from None


def _conninfo_params(dsn: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.Error:
        return {}


@contextlib.contextmanager
def expect_tables(schema: str, *components: str) -> Iterator[None]:
    """Turn "relation does not exist" into a not-found error that says what to run."""
    try:
        yield
    except (
        SchemaNotInitializedError,  # from a service
        pg_errors.UndefinedTable,  # from the command's own queries
        pg_errors.InvalidSchemaName,
        pg_errors.UndefinedObject,
    ):
        options = " ".join(f"--component {c}" for c in components)
        raise CliError(
            f"schema {schema!r} has no {components[0]} tables: "
            f"run `pikku-pg migrate {options} --schema {schema}`",
            EXIT_NOT_FOUND,
        ) from None
