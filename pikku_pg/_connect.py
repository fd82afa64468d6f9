"""Connection settings shared by both flavours of the database layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.conninfo import conninfo_to_dict

DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_POOL_KWARGS: dict[str, Any] = {"min_size": 1, "max_size": 10}


def owned_connection_kwargs(connect_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of the connections of a pool the service owns.

    Autocommit, so one-statement calls cost one round trip; a bounded connect
    timeout so an unreachable server fails instead of hanging. Callers may add
    e.g. ``prepare_threshold=None`` for PgBouncer in transaction mode.
    """
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": DEFAULT_CONNECT_TIMEOUT}
    kwargs.update(connect_kwargs or {})
    return kwargs


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
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return "the configured server"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = params.get("port") or "5432"
    return f"{host}:{port}"
