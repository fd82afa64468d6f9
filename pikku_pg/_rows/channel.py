"""Input checks, JSON encoding and row mapping of channels and topic subscriptions
(no I/O; the event hub's envelopes are in :mod:`pikku_pg._hub_envelope`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import ValidationError

from pikku_pg._check import check_list, validation_summary
from pikku_pg._json import check_text, jsonb, plain_json, read_list, read_object
from pikku_pg.errors import InvalidInputError
from pikku_pg.models._base import trusted
from pikku_pg.models.channel import Channel

#: Longest channel id and topic we write. Both are in the subscriptions' primary key and
#: topic index, and a btree entry must stay under ~2,700 bytes: 2 x 255 characters of up
#: to 4 UTF-8 bytes each fits.
MAX_ID_LENGTH = 255


def check_channel_id(value: object, *, writing: bool = False) -> str:
    """A channel id: a str without NUL; when written, non-empty and not too long."""
    text = check_text("channel_id", value, max_length=MAX_ID_LENGTH if writing else None)
    if writing and not text:
        raise InvalidInputError("channel_id must not be empty")
    return text


def check_topic(value: object) -> str:
    """A topic: a non-empty str of at most MAX_ID_LENGTH characters, without NUL."""
    text = check_text("topic", value, max_length=MAX_ID_LENGTH)
    if not text:
        raise InvalidInputError("topic must not be empty")
    return text


def check_channel_ids(values: object) -> list[str]:
    """A list of channel ids (a str alone is refused: it is not a list of ids)."""
    return [check_channel_id(v) for v in check_list("channel_ids", values, of="str")]


def channel_input(
    channel: str | Channel | Mapping[str, Any], channel_name: object, opening_data: Any
) -> tuple[str, str, Jsonb]:
    """(channel_id, channel_name, opening data) to insert, from arguments or a model/dict."""
    if isinstance(channel, (Channel, Mapping)):
        if channel_name is not None or opening_data is not None:
            raise InvalidInputError(
                "pass either a channel (model or dict) or channel_id, channel_name, opening_data"
            )
        try:
            model = channel if isinstance(channel, Channel) else Channel.model_validate(channel)
        except ValidationError as exc:
            raise InvalidInputError(f"invalid channel: {validation_summary(exc)}") from exc
        channel, channel_name, opening_data = (
            model.channel_id,
            model.channel_name,
            model.opening_data,
        )
    channel_id = check_channel_id(channel, writing=True)
    name = check_text("channel_name", channel_name)
    data = {} if opening_data is None else plain_json(opening_data)
    try:
        return channel_id, name, jsonb(data)
    except InvalidInputError as exc:
        raise InvalidInputError(f"opening_data: {exc}") from exc


def session_param(session: Any) -> Jsonb | None:
    """The user session to store: an object (dict or pydantic model), or None to clear."""
    if session is None:
        return None
    session = plain_json(session)
    if not isinstance(session, Mapping):
        raise InvalidInputError(
            f"session must be a dict, a pydantic model or None, not {type(session).__name__}"
        )
    try:
        return jsonb(dict(session))
    except InvalidInputError as exc:
        raise InvalidInputError(f"session: {exc}") from exc


def _read_opening_data(value: Any) -> Any:
    # TypeScript 0.12.1 may have stored the object as a JSON string holding JSON.
    if isinstance(value, str):
        parsed = read_object(value)
        if parsed is not None:
            return parsed
        listed = read_list(value)
        if listed is not None:
            return listed
    return value


def channel_from_row(row: tuple[Any, ...]) -> Channel:
    """A ``(channel_id, channel_name, opening_data, user_session)`` row as a Channel."""
    channel_id, channel_name, opening_data, user_session = row
    return trusted(
        Channel,
        channel_id=channel_id,
        channel_name=channel_name,
        opening_data=_read_opening_data(opening_data),
        session=read_object(user_session) or {},
    )
