"""Models of the channel store and the event hub."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import Field

from pikku_pg.models._base import PikkuModel


class Channel(PikkuModel):
    """A WebSocket channel with its opening data and user session.

    ``model_dump(by_alias=True)`` gives the TypeScript shape of
    ``getChannelAndSession``: ``channelId``, ``channelName``, ``openingData``,
    ``session`` (``{}`` when no session was set).
    """

    channel_id: str
    channel_name: str
    opening_data: Any = Field(default_factory=dict)
    session: dict[str, Any] = Field(default_factory=dict)


class EventHubMessage(NamedTuple):
    """One event received by this process from the event hub.

    ``channel_ids`` are the channels subscribed to ``topic`` through this process's
    event hub service (the sockets this process holds), sorted.
    """

    topic: str
    channel_ids: list[str]
    data: Any
