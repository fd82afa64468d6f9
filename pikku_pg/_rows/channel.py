"""Input checks, JSON encoding and row mapping of channels and the event hub (no I/O)."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from pikku_pg._check import check_list, validation_summary
from pikku_pg._json import check_text, dumps, jsonb, read_list, read_object
from pikku_pg.errors import InvalidInputError
from pikku_pg.models._base import trusted
from pikku_pg.models.channel import Channel

#: Longest channel id and topic we write. Both are in the subscriptions' primary key and
#: topic index, and a btree entry must stay under ~2,700 bytes: 2 x 255 characters of up
#: to 4 UTF-8 bytes each fits.
MAX_ID_LENGTH = 255

#: NOTIFY refuses a payload of 8,000 bytes or more (PostgreSQL's NOTIFY_PAYLOAD_MAX_LENGTH
#: with the default 8 kB block size); larger envelopes go through the payload table.
MAX_INLINE_PAYLOAD_BYTES = 7999

_NOTIFY_CHANNEL_PREFIX = "pikku_event_hub_"


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


def _plain(value: Any) -> Any:
    """A pydantic model as its TypeScript JSON shape; anything else unchanged."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json")
    return value


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
    data = {} if opening_data is None else _plain(opening_data)
    try:
        return channel_id, name, jsonb(data)
    except InvalidInputError as exc:
        raise InvalidInputError(f"opening_data: {exc}") from exc


def session_param(session: Any) -> Jsonb | None:
    """The user session to store: an object (dict or pydantic model), or None to clear."""
    if session is None:
        return None
    session = _plain(session)
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


# --- event hub envelopes ----------------------------------------------------------------


def notify_channel(schema: str) -> str:
    """The NOTIFY channel of a schema's event hub (at most 63 bytes, an identifier)."""
    name = _NOTIFY_CHANNEL_PREFIX + schema
    if len(name.encode()) <= 63:
        return name
    return _NOTIFY_CHANNEL_PREFIX + hashlib.sha256(schema.encode()).hexdigest()[:40]


def encode_data(data: Any) -> tuple[Jsonb, str]:
    """Event data as a JSONB parameter and its compact JSON text.

    Refuses what JSON or JSONB cannot hold (e.g. a NUL character), like any stored value.
    """
    wrapped = jsonb(_plain(data))
    # jsonb() serialized the value once already; reuse that text.
    text = cast(Callable[[Any], str], wrapped.dumps)(wrapped.obj)
    return wrapped, text


def publish_nonce() -> str:
    """12 random hex characters that make every inline payload distinct.

    PostgreSQL delivers identical notifications sent in one transaction only once; two
    publishes of the same data inside a caller's transaction must arrive twice.
    """
    return secrets.token_hex(6)


def inline_envelope(topic: str, text: str, nonce: str) -> str:
    """The NOTIFY payload carrying the data itself."""
    return '{"t":' + dumps(topic) + ',"n":"' + nonce + '","d":' + text + "}"


def reference_token() -> uuid.UUID:
    """128 random bits: what a notification must quote to have a stored payload delivered."""
    return uuid.UUID(bytes=secrets.token_bytes(16))


def reference_envelope_parts(topic: str, token: uuid.UUID) -> tuple[str, str]:
    """The NOTIFY payload that points at a stored payload, before and after its id.

    ``prefix + str(id) + suffix`` is ``{"t": topic, "r": id, "k": token}``; the database
    fills in the id in the publishing statement.
    """
    return '{"t":' + dumps(topic) + ',"r":', ',"k":"' + str(token) + '"}'


def fits_inline(envelope: str) -> bool:
    """Whether a NOTIFY accepts this payload."""
    return len(envelope) <= MAX_INLINE_PAYLOAD_BYTES // 4 or (
        len(envelope.encode()) <= MAX_INLINE_PAYLOAD_BYTES
    )


@dataclass(frozen=True)
class InlineEvent:
    """A notification carrying its data (inline mode): anyone who can connect may send it."""

    topic: str
    data: Any


@dataclass(frozen=True)
class EventReference:
    """A notification pointing at a stored payload; valid only if all three fields match."""

    topic: str
    payload_id: int
    token: uuid.UUID


_INLINE_KEYS = frozenset(("t", "n", "d"))
_REFERENCE_KEYS = frozenset(("t", "r", "k"))
_MAX_BIGINT = 2**63 - 1


def parse_envelope(payload: str) -> InlineEvent | EventReference:
    """The event a NOTIFY payload announces; ValueError unless it is exactly one of ours.

    Strict on purpose: anyone who can connect can send anything on the channel, and a
    reference that reached the database with an id out of bigint range would fail the
    fetch of the genuine events batched with it.
    """
    try:
        envelope = json.loads(payload)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("t"), str):
        raise ValueError("not an envelope with a topic")
    keys = envelope.keys()
    if keys == _INLINE_KEYS and isinstance(envelope["n"], str):
        return InlineEvent(envelope["t"], envelope["d"])
    if keys != _REFERENCE_KEYS:
        raise ValueError(f"unexpected fields {sorted(keys)[:10]}")
    payload_id, token = envelope["r"], envelope["k"]
    if type(payload_id) is not int or not 1 <= payload_id <= _MAX_BIGINT:
        raise ValueError("the payload id is not a positive bigint")
    if not isinstance(token, str) or len(token) != 36:
        raise ValueError("the token is not a UUID")
    parsed = uuid.UUID(token)  # ValueError if it is not one
    if str(parsed) != token:
        raise ValueError("the token is not a UUID in canonical form")
    return EventReference(envelope["t"], payload_id, parsed)
