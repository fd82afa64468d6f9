"""Channel store and event hub store: behaviour, bad input, TypeScript compatibility."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg import sql as pgsql
from pydantic import BaseModel

from pikku_pg._async.channel import AsyncPgChannelStore, AsyncPgEventHubStore
from pikku_pg.errors import (
    ChannelExistsError,
    ChannelNotFoundError,
    InvalidInputError,
    InvalidSchemaNameError,
    SchemaNotInitializedError,
    ServiceClosedError,
)
from pikku_pg.models.channel import Channel
from tests.catalog import catalog_differences


@pytest.fixture
async def store(conn_source: Any, schema_name: str) -> AsyncIterator[AsyncPgChannelStore]:
    async with AsyncPgChannelStore(conn_source, schema_name) as service:
        await service.init()
        yield service
        if isinstance(conn_source, AsyncConnection):
            # The services never leave a borrowed connection idle in a transaction.
            assert conn_source.info.transaction_status.name == "IDLE"


@pytest.fixture
async def hub(conn_source: Any, schema_name: str) -> AsyncIterator[AsyncPgEventHubStore]:
    async with AsyncPgEventHubStore(conn_source, schema_name) as service:
        await service.init()
        yield service


async def _count(admin: AsyncConnection[Any], schema: str, table: str) -> int:
    cur = await admin.execute(
        pgsql.SQL("SELECT count(*) FROM {}.{}").format(
            pgsql.Identifier(schema), pgsql.Identifier(table)
        )
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _stored(admin: AsyncConnection[Any], schema: str, channel_id: str) -> Any:
    cur = await admin.execute(
        pgsql.SQL(
            "SELECT opening_data, user_session FROM {}.channels WHERE channel_id = %s"
        ).format(pgsql.Identifier(schema)),
        (channel_id,),
    )
    return await cur.fetchone()


# --- channel store ---------------------------------------------------------------------------


async def test_add_and_get_channel_round_trip(store: AsyncPgChannelStore) -> None:
    await store.add_channel("c1", "chat", {"room": "lobby", "n": [1, 2], "ü": "ö"})
    channel = await store.get_channel_and_session("c1")
    assert channel == Channel(
        channel_id="c1", channel_name="chat", opening_data={"room": "lobby", "n": [1, 2], "ü": "ö"}
    )
    assert channel.model_dump(by_alias=True) == {
        "channelId": "c1",
        "channelName": "chat",
        "openingData": {"room": "lobby", "n": [1, 2], "ü": "ö"},
        "session": {},
    }


async def test_add_channel_accepts_a_model_or_a_dict(
    store: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    await store.add_channel(Channel(channel_id="m", channel_name="a", opening_data={"k": 1}))
    await store.add_channel({"channelId": "d", "channelName": "b"})
    await store.add_channel({"channel_id": "s", "channel_name": "c", "opening_data": [1]})
    assert (await store.get_channel_and_session("m")).opening_data == {"k": 1}
    # No opening data: stored as {} (the column's NOT NULL default), like TypeScript.
    assert (await _stored(admin_conn, store.schema, "d"))[0] == {}
    assert (await store.get_channel_and_session("s")).opening_data == [1]
    with pytest.raises(InvalidInputError, match="either a channel"):
        await store.add_channel({"channelId": "x", "channelName": "y"}, "again")
    with pytest.raises(InvalidInputError, match="invalid channel"):
        await store.add_channel({"channelId": "x"})


async def test_duplicate_channel_id_raises_and_keeps_the_first(
    store: AsyncPgChannelStore,
) -> None:
    await store.add_channel("c1", "first", {"v": 1})
    with pytest.raises(ChannelExistsError, match="'c1' already exists") as info:
        await store.add_channel("c1", "second", {"v": 2})
    assert info.value.id == "c1"
    channel = await store.get_channel_and_session("c1")
    assert (channel.channel_name, channel.opening_data) == ("first", {"v": 1})


async def test_user_session_set_read_and_clear(
    store: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    class Session(BaseModel):
        user_id: str

    await store.add_channel("c1", "chat")
    await store.set_user_session("c1", {"userId": "u1", "roles": ["admin"]})
    assert (await store.get_channel_and_session("c1")).session == {
        "userId": "u1",
        "roles": ["admin"],
    }
    await store.set_user_session("c1", Session(user_id="u2"))
    assert (await store.get_channel_and_session("c1")).session == {"user_id": "u2"}
    await store.set_user_session("c1", None)
    assert (await _stored(admin_conn, store.schema, "c1"))[1] is None
    assert (await store.get_channel_and_session("c1")).session == {}


async def test_set_user_session_of_unknown_channel_raises_and_writes_nothing(
    store: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    await store.add_channel("c1", "chat")
    with pytest.raises(ChannelNotFoundError, match="channel 'nope' not found") as info:
        await store.set_user_session("nope", {"userId": "u"})
    assert info.value.id == "nope"
    assert await _count(admin_conn, store.schema, "channels") == 1
    assert (await _stored(admin_conn, store.schema, "c1"))[1] is None


async def test_get_unknown_channel_raises(store: AsyncPgChannelStore) -> None:
    with pytest.raises(ChannelNotFoundError, match="'missing'"):
        await store.get_channel_and_session("missing")


async def test_remove_channels_takes_their_subscriptions(
    store: AsyncPgChannelStore, admin_conn: AsyncConnection[Any], pg_dsn: str
) -> None:
    async with AsyncPgEventHubStore(pg_dsn, store.schema) as hub:
        for cid in ("a", "b", "c"):
            await store.add_channel(cid, "chat")
            assert await hub.subscribe("news", cid)
        await store.remove_channels([])  # nothing
        assert await _count(admin_conn, store.schema, "channels") == 3
        await store.remove_channels(["a", "c", "unknown"])
        assert await hub.get_channel_ids_for_topic("news") == ["b"]
        assert await _count(admin_conn, store.schema, "channels") == 1
        with pytest.raises(ChannelNotFoundError):
            await store.get_channel_and_session("a")


async def test_remove_channels_takes_ids_with_array_syntax_literally(
    store: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    """The ids travel as one array literal: quotes, backslashes, commas and braces stay text."""
    tricky = ['say "hi"', "back\\slash", "a,b", "{x}", "NULL", " padded "]
    for cid in [*tricky, "a", "b", "keep"]:
        await store.add_channel(cid, "chat")
    await store.remove_channels(tricky)
    cur = await admin_conn.execute(
        pgsql.SQL("SELECT channel_id FROM {} ORDER BY channel_id").format(
            pgsql.Identifier(store.schema, "channels")
        )
    )
    assert [r[0] for r in await cur.fetchall()] == ["a", "b", "keep"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("c\x00", "chat", {}), "channel_id contains a NUL"),
        (("c", "ch\x00at", {}), "channel_name contains a NUL"),
        (("c", "chat", {"k": "v\x00"}), "opening_data: .*NUL"),
        (("c", "chat", {"k": object()}), "opening_data: .*not JSON-serializable"),
        (("c", "chat", {1, 2}), "not JSON-serializable"),
        (("c", "chat", {"x": float("nan")}), "not JSON-serializable"),
        ((42, "chat", {}), "channel_id must be a str, not int"),
        (("c", None, {}), "channel_name must be a str, not NoneType"),
        (("", "chat", {}), "channel_id must not be empty"),
        (("x" * 256, "chat", {}), "channel_id is 256 characters; at most 255"),
    ],
)
async def test_add_channel_refuses_bad_input_and_writes_nothing(
    store: AsyncPgChannelStore,
    admin_conn: AsyncConnection[Any],
    args: tuple[Any, ...],
    match: str,
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        await store.add_channel(*args)
    assert await _count(admin_conn, store.schema, "channels") == 0


@pytest.mark.parametrize(
    ("session", "match"),
    [
        ({"k": "a\x00b"}, "session: .*NUL"),
        ({"k": object()}, "session: .*not JSON-serializable"),
        ("a string", "session must be a dict"),
        ([1, 2], "session must be a dict"),
    ],
)
async def test_set_user_session_refuses_bad_input_and_writes_nothing(
    store: AsyncPgChannelStore, admin_conn: AsyncConnection[Any], session: Any, match: str
) -> None:
    await store.add_channel("c1", "chat")
    await store.set_user_session("c1", {"ok": True})
    with pytest.raises(InvalidInputError, match=match):
        await store.set_user_session("c1", session)
    assert (await _stored(admin_conn, store.schema, "c1"))[1] == {"ok": True}


async def test_bad_ids_in_lookups_and_removals(store: AsyncPgChannelStore) -> None:
    await store.add_channel("c1", "chat")
    with pytest.raises(InvalidInputError, match="channel_ids must be a list of str, not str"):
        await store.remove_channels("c1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="NUL"):
        await store.remove_channels(["c1", "x\x00"])
    with pytest.raises(InvalidInputError, match="must be a str, not int"):
        await store.get_channel_and_session(1)  # type: ignore[arg-type]
    assert (await store.get_channel_and_session("c1")).channel_id == "c1"


async def test_reads_what_typescript_wrote(
    store: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    # TypeScript 0.12.1 may store objects as a JSON string holding JSON.
    await admin_conn.execute(
        pgsql.SQL(
            "INSERT INTO {}.channels (channel_id, channel_name, opening_data, user_session)"
            " VALUES ('ts', 'chat', to_jsonb(%s::text), to_jsonb(%s::text))"
        ).format(pgsql.Identifier(store.schema)),
        (json.dumps({"a": 1}), json.dumps({"userId": "u"})),
    )
    channel = await store.get_channel_and_session("ts")
    assert channel.opening_data == {"a": 1}
    assert channel.session == {"userId": "u"}


async def test_invalid_schema_and_closed_service(pg_dsn: str) -> None:
    with pytest.raises(InvalidSchemaNameError):
        AsyncPgChannelStore(pg_dsn, "bad-name")
    with pytest.raises(InvalidSchemaNameError):
        AsyncPgEventHubStore(pg_dsn, "x;drop")
    service = AsyncPgChannelStore(pg_dsn, "pikku")
    await service.close()
    with pytest.raises(ServiceClosedError):
        await service.get_channel_and_session("c1")


# --- event hub store -------------------------------------------------------------------------


async def test_subscribe_is_idempotent_and_false_only_for_unknown_channels(
    store: AsyncPgChannelStore, hub: AsyncPgEventHubStore, admin_conn: AsyncConnection[Any]
) -> None:
    await store.add_channel("b", "chat")
    await store.add_channel("a", "chat")
    assert await hub.subscribe("news", "b") is True
    assert await hub.subscribe("news", "b") is True
    assert await hub.subscribe("news", "a") is True
    assert await hub.subscribe("other", "a") is True
    assert await hub.subscribe("news", "ghost") is False
    assert await _count(admin_conn, hub.schema, "channel_subscriptions") == 3
    assert await hub.get_channel_ids_for_topic("news") == ["a", "b"]
    assert await hub.get_channel_ids_for_topic("nobody") == []
    assert await hub.unsubscribe("news", "b") is True
    assert await hub.unsubscribe("news", "b") is False
    assert await hub.unsubscribe("never", "a") is False
    assert await hub.get_channel_ids_for_topic("news") == ["a"]


@pytest.mark.parametrize(
    ("topic", "match"),
    [
        ("", "topic must not be empty"),
        ("t" * 256, "topic is 256 characters; at most 255"),
        ("a\x00b", "topic contains a NUL"),
        (7, "topic must be a str, not int"),
        (None, "topic must be a str, not NoneType"),
    ],
)
async def test_subscribe_refuses_bad_topics_and_writes_nothing(
    store: AsyncPgChannelStore,
    hub: AsyncPgEventHubStore,
    admin_conn: AsyncConnection[Any],
    topic: Any,
    match: str,
) -> None:
    await store.add_channel("c1", "chat")
    with pytest.raises(InvalidInputError, match=match):
        await hub.subscribe(topic, "c1")
    assert await _count(admin_conn, hub.schema, "channel_subscriptions") == 0


async def test_a_topic_of_the_maximum_length_is_accepted(
    store: AsyncPgChannelStore, hub: AsyncPgEventHubStore
) -> None:
    channel_id, topic = "é" * 255, "😀" * 255  # 4-byte characters: the btree limit holds
    await store.add_channel(channel_id, "chat")
    assert await hub.subscribe(topic, channel_id)
    assert await hub.get_channel_ids_for_topic(topic) == [channel_id]


async def test_subscribe_raises_database_errors_other_than_a_missing_channel(
    store: AsyncPgChannelStore, hub: AsyncPgEventHubStore, admin_conn: AsyncConnection[Any]
) -> None:
    await store.add_channel("c1", "chat")
    await admin_conn.execute(
        pgsql.SQL("DROP TABLE {}.channel_subscriptions").format(pgsql.Identifier(hub.schema))
    )
    with pytest.raises(SchemaNotInitializedError, match="channel_subscriptions") as raised:
        await hub.subscribe("news", "c1")
    assert raised.value.schema == hub.schema and raised.value.components == ("channel",)


async def test_topic_lookup_uses_the_topic_index(
    hub: AsyncPgEventHubStore, admin_conn: AsyncConnection[Any]
) -> None:
    async with admin_conn.transaction():
        await admin_conn.execute("SET LOCAL enable_seqscan = off")
        cur = await admin_conn.execute(
            pgsql.SQL(
                "EXPLAIN SELECT channel_id FROM {}.channel_subscriptions"
                " WHERE topic = 'x' ORDER BY channel_id"
            ).format(pgsql.Identifier(hub.schema))
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "channel_subscriptions_topic_idx" in plan


# --- the schema against the TypeScript catalog ----------------------------------------------


async def test_schema_matches_the_typescript_catalog(pg_dsn: str, schema_name: str) -> None:
    async with AsyncPgChannelStore(pg_dsn, schema_name) as service:
        await service.init()
    tables = ["channels", "channel_subscriptions"]
    assert catalog_differences(pg_dsn, "pikku", schema_name, tables) == []


async def test_init_adopts_a_schema_created_by_typescript(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    # The DDL that TypeScript's initializeSchema runs, and a channel it wrote.
    ident = pgsql.Identifier(schema_name)
    await admin_conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(ident))
    await admin_conn.execute(
        pgsql.SQL(
            "CREATE TABLE {s}.channels (channel_id TEXT PRIMARY KEY, channel_name TEXT NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            " opening_data JSONB NOT NULL DEFAULT '{{}}', user_session JSONB,"
            " last_wire TIMESTAMPTZ NOT NULL DEFAULT now());"
            " CREATE TABLE {s}.channel_subscriptions (channel_id TEXT NOT NULL"
            " REFERENCES {s}.channels(channel_id) ON DELETE CASCADE, topic TEXT NOT NULL,"
            " PRIMARY KEY (channel_id, topic));"
            " INSERT INTO {s}.channels (channel_id, channel_name) VALUES ('old', 'chat');"
            " INSERT INTO {s}.channel_subscriptions VALUES ('old', 'news')"
        ).format(s=ident)
    )
    async with AsyncPgEventHubStore(pg_dsn, schema_name) as hub:
        assert await hub.init() == [("channel", 1), ("channel", 2), ("channel", 3)]
        assert await hub.get_channel_ids_for_topic("news") == ["old"]
        assert await hub.init() == []
