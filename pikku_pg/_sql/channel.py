"""SQL of the ``channel`` component: WebSocket channels, topic subscriptions, event hub.

Version 1 is the DDL of TypeScript ``@pikku/pg`` 0.12.1 (``channels`` and
``channel_subscriptions``) with ``IF NOT EXISTS``, so a schema made by TypeScript is
adopted. Version 2 adds what our queries need: an index to find the channels of a
topic (the primary key starts with ``channel_id``), and the table that carries event
hub payloads too large for a NOTIFY. Version 3 gives every stored payload a secret token:
the event hub's NOTIFY carries only (topic, id, token), and a listener delivers a payload
only when all three match a row (see ``pikku_pg._async.event_hub``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pikku_pg._sql import QuerySet, compose, statement
from pikku_pg.migrations import Component, Migration

V1_TYPESCRIPT_TABLES = """\
CREATE TABLE IF NOT EXISTS {schema}.channels (
    channel_id TEXT PRIMARY KEY,
    channel_name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    opening_data JSONB NOT NULL DEFAULT '{}',
    user_session JSONB,
    last_wire TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {schema}.channel_subscriptions (
    channel_id TEXT NOT NULL REFERENCES {schema}.channels(channel_id) ON DELETE CASCADE,
    topic TEXT NOT NULL,
    PRIMARY KEY (channel_id, topic)
);
"""

V2_TOPIC_INDEX_AND_LARGE_PAYLOADS = """\
CREATE INDEX IF NOT EXISTS channel_subscriptions_topic_idx
    ON {schema}.channel_subscriptions (topic, channel_id);

CREATE TABLE IF NOT EXISTS {schema}.event_hub_payloads (
    payload_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic TEXT NOT NULL,
    data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS event_hub_payloads_created_at_idx
    ON {schema}.event_hub_payloads (created_at);
"""

# The token is nullable, with no default: rows without one (written by an earlier version)
# never match a reference, so they are never delivered. UNLOGGED: the payloads live no
# longer than the notifications pointing at them, which a crash loses too; a publish then
# does not wait for a WAL flush (measured with synchronous_commit on: 1.8x the publishes/s
# one at a time, 5x with 16 in flight). It rewrites only minutes of transient rows.
V3_EVENT_HUB_PAYLOAD_TOKENS = """\
ALTER TABLE {schema}.event_hub_payloads ADD COLUMN IF NOT EXISTS token UUID;
ALTER TABLE {schema}.event_hub_payloads SET UNLOGGED;
"""

COMPONENT = Component(
    "channel",
    (
        Migration(1, "channels and subscriptions (TypeScript 0.12.1)", V1_TYPESCRIPT_TABLES),
        Migration(2, "topic index and event hub payloads", V2_TOPIC_INDEX_AND_LARGE_PAYLOADS),
        Migration(3, "event hub payload tokens", V3_EVENT_HUB_PAYLOAD_TOKENS),
    ),
    default_schema="pikku",
)

# --- channel store ---------------------------------------------------------------------

# ON CONFLICT DO NOTHING + RETURNING: a duplicate id returns no row instead of an error,
# so a duplicate never aborts a caller's transaction.
ADD_CHANNEL = """\
INSERT INTO {schema}.channels (channel_id, channel_name, opening_data)
VALUES (%s, %s, %s)
ON CONFLICT (channel_id) DO NOTHING
RETURNING 1
"""

# Subscriptions go with their channels (ON DELETE CASCADE).
REMOVE_CHANNELS = """\
DELETE FROM {schema}.channels
WHERE channel_id = ANY(%s::text[])
"""

SET_USER_SESSION = """\
UPDATE {schema}.channels
SET user_session = %s
WHERE channel_id = %s
"""

GET_CHANNEL_AND_SESSION = """\
SELECT channel_id, channel_name, opening_data, user_session
FROM {schema}.channels
WHERE channel_id = %s
"""

# --- event hub store ---------------------------------------------------------------------

# One statement: insert when the channel exists (idempotent), and say whether it exists.
# Both read the same snapshot; a channel deleted concurrently makes the foreign key check
# fail, which the service also reports as "no such channel".
SUBSCRIBE = """\
WITH channel AS (
    SELECT channel_id FROM {schema}.channels WHERE channel_id = %(channel_id)s
), inserted AS (
    INSERT INTO {schema}.channel_subscriptions (channel_id, topic)
    SELECT channel_id, %(topic)s FROM channel
    ON CONFLICT (channel_id, topic) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM channel)
"""

UNSUBSCRIBE = """\
DELETE FROM {schema}.channel_subscriptions
WHERE channel_id = %s AND topic = %s
"""

GET_CHANNEL_IDS_FOR_TOPIC = """\
SELECT channel_id
FROM {schema}.channel_subscriptions
WHERE topic = %s
ORDER BY channel_id
"""

# --- event hub service (LISTEN/NOTIFY) -------------------------------------------------

PUBLISH_INLINE = "SELECT pg_notify(%s, %s)"

# Store the payload with its token and notify (topic, id, token): one statement, so one
# round trip and one transaction (the row is visible when the notification arrives).
_STORE_AND_NOTIFY = """\
stored AS (
    INSERT INTO {schema}.event_hub_payloads (topic, data, token)
    VALUES (%(topic)s, %(data)s, %(token)s)
    RETURNING payload_id
)
SELECT pg_notify(%(channel)s, %(prefix)s || payload_id::text || %(suffix)s) FROM stored
"""

PUBLISH_REFERENCE = compose("WITH {store_and_notify}", store_and_notify=_STORE_AND_NOTIFY)

# The same, also deleting up to %(limit)s payloads older than the retention, oldest first
# (the created_at index); SKIP LOCKED: concurrent publishers never wait for each other's
# deletes. The service runs this one only now and then, not on every publish.
PUBLISH_REFERENCE_AND_EXPIRE = compose(
    """\
WITH expired AS (
    DELETE FROM {schema}.event_hub_payloads
    WHERE payload_id IN (
        SELECT payload_id
        FROM {schema}.event_hub_payloads
        WHERE created_at < now() - make_interval(secs => %(retention)s)
        ORDER BY created_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
), {store_and_notify}""",
    store_and_notify=_STORE_AND_NOTIFY,
)

# The payloads of a batch of references, each only if its id, token and topic all match a
# row that is still within the retention. One round trip for the whole batch.
FETCH_REFERENCED = """\
SELECT p.payload_id, p.token, p.topic, p.data
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(topics)s::text[])
    AS ref(payload_id, token, topic)
JOIN {schema}.event_hub_payloads p
    ON p.payload_id = ref.payload_id AND p.token = ref.token AND p.topic = ref.topic
WHERE p.created_at >= now() - make_interval(secs => %(retention)s)
"""


@dataclass(frozen=True)
class ChannelQueries(QuerySet):
    """The statements of the ``channel`` component: channel store and event hub."""

    add_channel: bytes = statement(ADD_CHANNEL)
    remove_channels: bytes = statement(REMOVE_CHANNELS)
    set_user_session: bytes = statement(SET_USER_SESSION)
    get_channel_and_session: bytes = statement(GET_CHANNEL_AND_SESSION)
    subscribe: bytes = statement(SUBSCRIBE)
    unsubscribe: bytes = statement(UNSUBSCRIBE)
    get_channel_ids_for_topic: bytes = statement(GET_CHANNEL_IDS_FOR_TOPIC)
    publish_inline: bytes = statement(PUBLISH_INLINE)
    publish_reference: bytes = statement(PUBLISH_REFERENCE)
    publish_reference_and_expire: bytes = statement(PUBLISH_REFERENCE_AND_EXPIRE)
    fetch_referenced: bytes = statement(FETCH_REFERENCED)
