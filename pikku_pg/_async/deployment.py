"""The registry of running deployments, with heartbeats (TypeScript ``PgDeploymentService``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from psycopg.rows import tuple_row

from pikku_pg._acompat import AEvent, agather, aspawn, await_event
from pikku_pg._arrays import text_array
from pikku_pg._async._database import ConnectionSource
from pikku_pg._async._service import AsyncPgService
from pikku_pg._check import MAX_INT4, check_bool, check_int
from pikku_pg._rows.deployment import (
    check_function_name,
    check_seconds,
    deployment_from_row,
    deployment_input,
)
from pikku_pg._sql import deployment as sql
from pikku_pg._sql.deployment import DeploymentQueries
from pikku_pg.errors import ConflictError, InvalidInputError
from pikku_pg.migrations import Component
from pikku_pg.models._base import trusted
from pikku_pg.models.deployment import DeploymentConfig, DeploymentInfo, DeploymentStatus

logger = logging.getLogger("pikku_pg.deployment")

#: Seconds between heartbeats, by default.
DEFAULT_HEARTBEAT_INTERVAL = 10.0
#: Seconds after its last heartbeat that a deployment counts as gone, by default.
DEFAULT_HEARTBEAT_TTL = 30.0


class AsyncPgDeploymentService(AsyncPgService):
    """Registers this deployment, keeps its heartbeat, finds live deployments by function.

    ``AsyncPgDeploymentService(conn, schema="pikku", *, heartbeat_interval=10.0,
    heartbeat_ttl=30.0)`` (seconds). :meth:`start` registers the deployment and starts
    the heartbeat (a background task; in the sync flavour a daemon thread), which
    updates ``last_heartbeat`` every ``heartbeat_interval`` seconds. A failed beat is
    logged and retried on the next one; it never raises. :meth:`find_function` returns
    the deployments serving a function whose last beat is within ``heartbeat_ttl``;
    :meth:`list_deployments` every registered one, live or stale (for operators).
    :meth:`stop` (also run by :meth:`close` and ``async with``) stops the heartbeat,
    removes the row and releases an owned pool; it is idempotent.
    """

    components: ClassVar[tuple[Component, ...]] = (sql.COMPONENT,)
    default_schema: ClassVar[str] = sql.COMPONENT.default_schema

    def __init__(
        self,
        conn: ConnectionSource,
        schema: str | None = None,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        heartbeat_ttl: float = DEFAULT_HEARTBEAT_TTL,
        connect_kwargs: Mapping[str, Any] | None = None,
        pool_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        interval = check_seconds("heartbeat_interval", heartbeat_interval)
        ttl = check_seconds("heartbeat_ttl", heartbeat_ttl)
        if ttl <= interval:
            raise InvalidInputError(
                f"heartbeat_ttl ({ttl:g} s) must be longer than heartbeat_interval "
                f"({interval:g} s), or live deployments would look dead between beats"
            )
        super().__init__(conn, schema, connect_kwargs=connect_kwargs, pool_kwargs=pool_kwargs)
        self._interval = interval
        self._ttl = ttl
        self._config: tuple[str, str, list[str]] | None = None
        self._task: Any = None
        self._stopping = False
        self._stop_event = AEvent()  # wakes the heartbeat up at once on stop()
        self._stopped = False
        self._beats = 0
        self._failures = 0

    def _prepare_queries(self) -> None:
        self._q = DeploymentQueries.render(self._schema)

    @property
    def deployment_id(self) -> str | None:
        """The id given to :meth:`start` (None before)."""
        return None if self._config is None else self._config[0]

    @property
    def heartbeats(self) -> int:
        """How many heartbeats succeeded since :meth:`start`."""
        return self._beats

    @property
    def heartbeat_failures(self) -> int:
        """How many heartbeats failed (each was logged and retried on the next beat)."""
        return self._failures

    async def start(
        self,
        deployment_id: str | DeploymentConfig | Mapping[str, Any],
        endpoint: str | None = None,
        functions: Sequence[str] | None = None,
    ) -> None:
        """Register (upsert) this deployment and start its heartbeat.

        Accepts the three values, or one :class:`DeploymentConfig` / dict
        (``deploymentId``, ``endpoint``, ``functions``). Raises
        :class:`~pikku_pg.errors.ConflictError` if already started.
        """
        if self._config is not None:
            raise ConflictError(
                f"deployment service already started as {self._config[0]!r}; call stop() first"
            )
        config = deployment_input(deployment_id, endpoint, functions)
        await self._db.execute(self._q.upsert, config)
        self._config = config
        self._task = aspawn(self._beat_loop, (config,), name=f"pikku_pg heartbeat {config[0]}")

    async def stop(self) -> None:
        """Stop the heartbeat, remove this deployment's row and release an owned pool.

        Idempotent; before :meth:`start` it only releases the pool.
        """
        if self._stopped:
            return
        self._stopped = True
        await self._stop_heartbeat()
        try:
            if self._config is not None:
                await self._db.execute(self._q.delete, (self._config[0],))
        finally:
            await super().close()

    async def close(self) -> None:
        """The same as :meth:`stop`."""
        await self.stop()

    async def find_function(self, name: str) -> list[DeploymentInfo]:
        """Live deployments serving ``name``, most recent heartbeat first (one round trip).

        Uses the GIN index on ``functions`` (``functions @> ARRAY[name]``), kept free of
        a pending list by migration 2, whatever the heartbeats did to the statistics.
        """
        name = check_function_name(name)
        params = (text_array((name,)), self._ttl)
        rows = await self._db.fetch_all(
            self._q.find_function, params, row_factory=tuple_row, read=True
        )
        return [deployment_from_row(row) for row in rows]

    async def list_deployments(
        self,
        *,
        function: str | None = None,
        live_only: bool = False,
        ttl: float | None = None,
        limit: int = 100,
    ) -> list[DeploymentStatus]:
        """Every registered deployment, live or stale, for an operator (one round trip).

        Live ones first, then by most recent heartbeat. A deployment is live when its
        last beat is within ``ttl`` seconds (default: this service's
        ``heartbeat_ttl``). ``function`` keeps those serving it, ``live_only`` the
        live ones; at most ``limit`` are returned.
        """
        params = {
            "function": None if function is None else check_function_name(function),
            "live_only": check_bool("live_only", live_only),
            "ttl": self._ttl if ttl is None else check_seconds("ttl", ttl),
            "limit": check_int("limit", limit, min=1, max=MAX_INT4),
        }
        rows = await self._db.fetch_all(
            self._q.list_deployments, params, row_factory=tuple_row, read=True
        )
        return [_status_from_row(row) for row in rows]

    async def _stop_heartbeat(self) -> None:
        self._stopping = True
        self._stop_event.set()
        if self._task is not None:
            # A beat in flight finishes first, so it cannot re-create the row we delete.
            await agather(self._task, timeout=self._interval + 30.0)
            self._task = None

    async def _beat_loop(self, config: tuple[str, str, list[str]]) -> None:
        deployment_id = config[0]
        failing = False
        while True:
            if await await_event(self._stop_event, self._interval) or self._stopping:
                return
            try:
                if await self._db.execute(self._q.heartbeat, (deployment_id,)) == 0:
                    if self._stopping:
                        return
                    await self._db.execute(self._q.upsert, config)
                    logger.warning(
                        "deployment %r was missing from the registry: registered again",
                        deployment_id,
                    )
            except Exception as exc:  # a heartbeat must never kill the process
                self._failures += 1
                failing = True
                logger.warning(
                    "deployment %r heartbeat failed (%s: %s); retrying in %g s",
                    deployment_id,
                    type(exc).__name__,
                    str(exc).strip(),
                    self._interval,
                )
                continue
            self._beats += 1
            if failing:
                failing = False
                logger.warning("deployment %r heartbeat recovered", deployment_id)


def _status_from_row(row: tuple[Any, ...]) -> DeploymentStatus:
    deployment_id, endpoint, functions, last_heartbeat, created_at, live, age = row
    return trusted(
        DeploymentStatus,
        deployment_id=deployment_id,
        endpoint=endpoint,
        functions=functions,
        last_heartbeat=last_heartbeat,
        created_at=created_at,
        live=live,
        heartbeat_age=age,
    )
