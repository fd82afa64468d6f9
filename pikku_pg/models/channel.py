"""Models of the channel store and the event hub."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class EventHubStats:
    """What an event hub service's listener did with the notifications it received.

    Every notification is counted once: ``received == delivered + forged + dropped +
    ignored``. ``forged`` are the ones the service refused as not genuine: malformed, an
    inline envelope while inline payloads are off, a reference whose id, token and topic
    do not match a stored payload (forged, or expired past ``payload_retention``), or a
    repeat of one already delivered. ``dropped`` were genuine or unchecked but could not be
    delivered (the queue held ``max_pending`` events, or the payload table could not be
    read). ``ignored`` were for topics this process holds no channel of.
    """

    received: int = 0
    delivered: int = 0
    forged: int = 0
    dropped: int = 0
    ignored: int = 0
    reconnects: int = 0
