"""Connection settings shared by both flavours of the database layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pikku_pg._check import check_text, quote
from pikku_pg.errors import (
    DatabaseUnavailableError,
    InvalidArgumentTypeError,
    InvalidInputError,
    PikkuPgError,
    SchemaNotInitializedError,
)

DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_POOL_KWARGS: dict[str, Any] = {"min_size": 1, "max_size": 10}


#: SQLSTATEs of a server that is going away or not there yet: admin shutdown, crash
#: shutdown, cannot connect now, idle session timeout. Class 08 is the connection itself.
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05"})
#: Serialization failure and deadlock (class 40): the transaction was rolled back, and
#: running it again may well succeed.
_ROLLED_BACK_CLASS = "40"
#: Undefined table, invalid schema name, undefined object (the enum types).
_MISSING_SQLSTATES = frozenset({"42P01", "3F000", "42704"})


def connection_lost(exc: BaseException | None) -> bool:
    """Whether a psycopg error says the connection to the server is gone.

    A client-side ``OperationalError`` (no SQLSTATE: the socket closed, the server
    went away), an ``InterfaceError`` (the connection is closed), SQLSTATE class 08,
    or a server shutting down. A pipeline aborted by an earlier statement is not.
    """
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.errors.PipelineAborted):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return sqlstate.startswith("08") or sqlstate in _LOST_SQLSTATES


def _reason(exc: BaseException) -> str:
    """The first line of a psycopg error, cut to a readable length."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def database_error(
    exc: psycopg.Error, schema: str | None, components: Sequence[str]
) -> PikkuPgError | None:
    """The ``pikku_pg.errors`` exception for a connection or schema problem, else None.

    Other errors (constraint violations...) are left to the services' own handlers.
    """
    if connection_lost(exc):
        return DatabaseUnavailableError(f"lost the connection to PostgreSQL: {_reason(exc)}")
    sqlstate = exc.sqlstate or ""
    if sqlstate.startswith(_ROLLED_BACK_CLASS):
        return DatabaseUnavailableError(
            f"PostgreSQL rolled the statement back, try again: {_reason(exc)}"
        )
    if sqlstate in _MISSING_SQLSTATES and schema is not None:
        return SchemaNotInitializedError(schema, components, _reason(exc))
    return None


def owned_connection_kwargs(
    conninfo: str, connect_kwargs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Keyword arguments of the connections of a pool the service owns.

    Autocommit, so one-statement calls cost one round trip; a bounded connect
    timeout so an unreachable server fails instead of hanging. Callers may add
    e.g. ``prepare_threshold=None`` for PgBouncer in transaction mode.
    """
    kwargs: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in _parse(conninfo):  # the conninfo's own setting wins
        kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    kwargs.update(check_kwargs("connect_kwargs", connect_kwargs))
    return kwargs


def check_kwargs(field: str, value: object) -> dict[str, Any]:
    """None or a mapping of keyword arguments (str keys), as a new dict."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{field} must be a dict, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInputError(f"{field} has a key that is not a name: {quote(key)}")
    return dict(value)


def connect_timeout(conninfo: str, kwargs: Mapping[str, Any]) -> float:
    """The connect timeout in effect, in seconds (keyword arguments override the conninfo)."""
    value = kwargs.get("connect_timeout", _parse(conninfo).get("connect_timeout"))
    try:
        return float(value) if value is not None else float(DEFAULT_CONNECT_TIMEOUT)
    except (TypeError, ValueError):
        return float(DEFAULT_CONNECT_TIMEOUT)


def check_conninfo(conninfo: object) -> str:
    """Refuse a conninfo string libpq cannot parse, before anything connects."""
    check_text("conninfo", conninfo)
    assert isinstance(conninfo, str)
    try:
        conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        # libpq's message may quote the conninfo (and its password): never echo it whole.
        raise InvalidInputError(f"invalid conninfo string: {_reason(exc)}") from None
    return conninfo


def _parse(conninfo: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(conninfo)
    except Exception:
        return {}


def owned_pool_kwargs(pool_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of a pool the service owns (sizes, timeouts, name...)."""
    kwargs = dict(DEFAULT_POOL_KWARGS)
    kwargs.update(check_kwargs("pool_kwargs", pool_kwargs))
    for reserved in ("conninfo", "kwargs", "open"):
        if reserved in kwargs:
            raise InvalidArgumentTypeError(f"pool_kwargs cannot set {reserved!r}")
    return kwargs


def describe_server(conninfo: str) -> str:
    """Name the server a conninfo points at, for error messages (never the password)."""
    params = _parse(conninfo)
    if not params:
        return "the configured server"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = params.get("port") or "5432"
    return f"{host}:{port}"
