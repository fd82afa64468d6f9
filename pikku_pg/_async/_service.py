"""What every service shares: its schema, its connection source, init and close."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from pikku_pg._async._database import AsyncDatabase, ConnectionSource
from pikku_pg._async._migrate import apply_migrations
from pikku_pg._check import check_list
from pikku_pg._schema import validate_schema_name
from pikku_pg.errors import InvalidInputError
from pikku_pg.migrations import Component

_Service = TypeVar("_Service", bound="AsyncPgService")


class AsyncPgService:
    """Base class of the services: a validated schema and an :class:`AsyncDatabase`.

    ``conn`` is a conninfo string (the service owns a pool it opens on first use
    and closes in :meth:`close`), an ``AsyncConnectionPool`` or an
    ``AsyncConnection`` (borrowed: never closed by the service).
    ``connect_kwargs`` (e.g. ``{"prepare_threshold": None}`` behind PgBouncer) and
    ``pool_kwargs`` (e.g. ``{"max_size": 20}``) configure an owned pool.
    """

    #: The tables this service needs; ``init()`` migrates them.
    components: ClassVar[tuple[Component, ...]] = ()
    default_schema: ClassVar[str] = "pikku"

    def __init__(
        self,
        conn: ConnectionSource,
        schema: str | None = None,
        *,
        connect_kwargs: Mapping[str, Any] | None = None,
        pool_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        # Validate before anything can touch the database.
        self._schema = validate_schema_name(self.default_schema if schema is None else schema)
        self._db = AsyncDatabase(
            conn,
            connect_kwargs=connect_kwargs,
            pool_kwargs=pool_kwargs,
            # So that a missing table is reported with the fix for this service.
            schema=self._schema,
            components=[component.name for component in self.components],
        )
        self._prepare_queries()

    def _prepare_queries(self) -> None:
        """Render the service's SQL for its schema, once (subclasses override)."""

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this service's tables."""
        return self._schema

    async def init(self) -> list[tuple[str, int]]:
        """Create or upgrade this service's tables; returns the versions applied.

        Safe to call from many processes at once; on a schema already up to date it
        runs no DDL, so an application role with only DML rights may call it.
        """
        return await self.init_components(self.components)

    async def init_components(self, components: Sequence[Component]) -> list[tuple[str, int]]:
        """Like :meth:`init`, for the given components (in this service's schema):
        what ``pikku-pg migrate --component`` does. Returns the versions applied."""
        chosen = check_list("components", components, of="Component")
        for component in chosen:
            if not isinstance(component, Component):
                kind = type(component).__name__
                raise InvalidInputError(f"components must hold Component items, not {kind}")
        return await apply_migrations(self._db, self._schema, chosen)

    async def open(self) -> None:
        """Open an owned pool now (otherwise it opens on first use)."""
        await self._db.open()

    async def close(self) -> None:
        """Release what the service owns; borrowed pools and connections stay open."""
        await self._db.close()

    async def __aenter__(self: _Service) -> _Service:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
