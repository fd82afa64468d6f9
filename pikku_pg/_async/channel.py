"""WebSocket channels and their topic subscriptions (TypeScript ``PgChannelStore`` and
``PgEventHubStore``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from psycopg import errors as pg_errors
from psycopg.rows import tuple_row

from pikku_pg._arrays import text_array
from pikku_pg._async._service import AsyncPgService
from pikku_pg._json import check_text
from pikku_pg._rows.channel import (
    channel_from_row,
    channel_input,
    check_channel_id,
    check_channel_ids,
    check_topic,
    session_param,
)
from pikku_pg._sql import channel as sql
from pikku_pg._sql.channel import ChannelQueries
from pikku_pg.errors import ChannelExistsError, ChannelNotFoundError
from pikku_pg.migrations import Component
from pikku_pg.models.channel import Channel


class AsyncPgChannelStore(AsyncPgService):
    """WebSocket channels: opening data and user session per channel.

    ``AsyncPgChannelStore(conn, schema="pikku")``; ``conn`` is a conninfo string, a pool
    or a connection (see :class:`~pikku_pg._async._service.AsyncPgService`). Every call
    is one statement, one round trip.
    """

    components: ClassVar[tuple[Component, ...]] = (sql.COMPONENT,)
    default_schema: ClassVar[str] = sql.COMPONENT.default_schema

    def _prepare_queries(self) -> None:
        self._q = ChannelQueries.render(self._schema)

    async def add_channel(
        self,
        channel_id: str | Channel | Mapping[str, Any],
        channel_name: str | None = None,
        opening_data: Any = None,
    ) -> None:
        """Store a new channel (``opening_data`` defaults to ``{}``).

        Accepts the three values, or one :class:`Channel` / dict (camelCase or
        snake_case keys). An id that exists already raises :class:`ChannelExistsError`
        and leaves the stored channel unchanged.
        """
        params = channel_input(channel_id, channel_name, opening_data)
        row = await self._db.fetch_one(self._q.add_channel, params, row_factory=tuple_row)
        if row is None:
            raise ChannelExistsError(params[0])

    async def remove_channels(self, channel_ids: Sequence[str]) -> None:
        """Delete channels and their subscriptions; unknown ids and ``[]`` are no-ops."""
        ids = check_channel_ids(channel_ids)
        if not ids:
            return
        await self._db.execute(self._q.remove_channels, (text_array(ids),))

    async def set_user_session(self, channel_id: str, session: Any) -> None:
        """Set (a dict or pydantic model) or clear (``None``) the user session of a channel.

        Raises :class:`ChannelNotFoundError` when the channel does not exist.
        """
        channel_id = check_channel_id(channel_id)
        value = session_param(session)
        if await self._db.execute(self._q.set_user_session, (value, channel_id)) == 0:
            raise ChannelNotFoundError(channel_id)

    async def get_channel_and_session(self, channel_id: str) -> Channel:
        """The channel with its session (``{}`` when none is set).

        Raises :class:`ChannelNotFoundError` when the channel does not exist.
        """
        channel_id = check_channel_id(channel_id)
        row = await self._db.fetch_one(
            self._q.get_channel_and_session, (channel_id,), row_factory=tuple_row, read=True
        )
        if row is None:
            raise ChannelNotFoundError(channel_id)
        return channel_from_row(row)


class AsyncPgEventHubStore(AsyncPgService):
    """Topic subscriptions of channels, on the channel store's tables.

    ``AsyncPgEventHubStore(conn, schema="pikku")``. Every call is one round trip.
    """

    components: ClassVar[tuple[Component, ...]] = (sql.COMPONENT,)
    default_schema: ClassVar[str] = sql.COMPONENT.default_schema

    def _prepare_queries(self) -> None:
        self._q = ChannelQueries.render(self._schema)

    async def subscribe(self, topic: str, channel_id: str) -> bool:
        """Subscribe a channel to a topic (idempotent).

        Returns False only when the channel does not exist; any other database error
        is raised.
        """
        params = {"topic": check_topic(topic), "channel_id": check_channel_id(channel_id)}
        try:
            row = await self._db.fetch_one(self._q.subscribe, params, row_factory=tuple_row)
        except pg_errors.ForeignKeyViolation:
            return False  # the channel was removed while we subscribed it
        return bool(row and row[0])

    async def unsubscribe(self, topic: str, channel_id: str) -> bool:
        """Remove a subscription; returns whether there was one."""
        topic = check_text("topic", topic)
        channel_id = check_channel_id(channel_id)
        return await self._db.execute(self._q.unsubscribe, (channel_id, topic)) > 0

    async def get_channel_ids_for_topic(self, topic: str) -> list[str]:
        """The ids of the channels subscribed to ``topic``, sorted."""
        topic = check_text("topic", topic)
        rows = await self._db.fetch_all(
            self._q.get_channel_ids_for_topic, (topic,), row_factory=tuple_row, read=True
        )
        return [row[0] for row in rows]
