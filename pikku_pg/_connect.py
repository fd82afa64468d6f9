"""Connection settings shared by both flavours of the database layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pikku_pg.errors import InvalidInputError

DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_POOL_KWARGS: dict[str, Any] = {"min_size": 1, "max_size": 10}


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
    kwargs.update(connect_kwargs or {})
    return kwargs


def connect_timeout(conninfo: str, kwargs: Mapping[str, Any]) -> float:
    """The connect timeout in effect, in seconds (keyword arguments override the conninfo)."""
    value = kwargs.get("connect_timeout", _parse(conninfo).get("connect_timeout"))
    try:
        return float(value) if value is not None else float(DEFAULT_CONNECT_TIMEOUT)
    except (TypeError, ValueError):
        return float(DEFAULT_CONNECT_TIMEOUT)


def check_conninfo(conninfo: str) -> None:
    """Refuse a conninfo string libpq cannot parse, before anything connects."""
    try:
        conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise InvalidInputError(f"invalid conninfo string: {exc}") from None


def _parse(conninfo: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(conninfo)
    except Exception:
        return {}


def owned_pool_kwargs(pool_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of a pool the service owns (sizes, timeouts, name...)."""
    kwargs = dict(DEFAULT_POOL_KWARGS)
    kwargs.update(pool_kwargs or {})
    for reserved in ("conninfo", "kwargs", "open"):
        if reserved in kwargs:
            raise TypeError(f"pool_kwargs cannot set {reserved!r}")
    return kwargs


def describe_server(conninfo: str) -> str:
    """Name the server a conninfo points at, for error messages (never the password)."""
    params = _parse(conninfo)
    if not params:
        return "the configured server"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = params.get("port") or "5432"
    return f"{host}:{port}"
