"""The event hub's NOTIFY envelopes: what a notification carries, built and parsed
(no I/O). The default envelope is a reference (payload id, token, topic) to a row only
the application's role can read; inline envelopes carry the data itself."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from psycopg.types.json import Jsonb

from pikku_pg._json import dumps, jsonb, plain_json

#: NOTIFY refuses a payload of 8,000 bytes or more (PostgreSQL's NOTIFY_PAYLOAD_MAX_LENGTH
#: with the default 8 kB block size); larger envelopes go through the payload table.
MAX_INLINE_PAYLOAD_BYTES = 7999

_NOTIFY_CHANNEL_PREFIX = "pikku_event_hub_"


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
    wrapped = jsonb(plain_json(data))
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
