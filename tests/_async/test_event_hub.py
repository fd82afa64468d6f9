"""The LISTEN/NOTIFY event hub service: delivery, large payloads, reconnection, back-pressure."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from pikku_pg._acompat import asleep
from pikku_pg._async.channel import AsyncPgChannelStore
from pikku_pg._async.event_hub import AsyncPgEventHubService
from pikku_pg._hub_envelope import (
    MAX_INLINE_PAYLOAD_BYTES,
    EventReference,
    inline_envelope,
    notify_channel,
)
from pikku_pg.errors import ConflictError, InvalidInputError, ServiceClosedError
from pikku_pg.models.channel import EventHubMessage


async def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asleep(0.01)


@pytest.fixture
async def channels(pg_dsn: str, schema_name: str) -> AsyncIterator[AsyncPgChannelStore]:
    async with AsyncPgChannelStore(pg_dsn, schema_name) as store:
        await store.init()
        for cid in ("a1", "a2", "b1"):
            await store.add_channel(cid, "chat")
        yield store


class _Collector:
    """Collects events from a started hub (a callback: async or sync with the flavour)."""

    def __init__(self) -> None:
        self.events: list[EventHubMessage] = []

    async def __call__(self, message: EventHubMessage) -> None:
        self.events.append(message)


async def _stored_payloads(admin: AsyncConnection[Any], schema: str) -> int:
    cur = await admin.execute(
        pgsql.SQL("SELECT count(*) FROM {}.event_hub_payloads").format(pgsql.Identifier(schema))
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_publish_reaches_the_processes_holding_subscribed_channels(
    conn_source: Any, pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    schema = channels.schema
    got_a, got_b = _Collector(), _Collector()
    async with (
        AsyncPgEventHubService(conn_source, schema) as hub_a,
        AsyncPgEventHubService(pg_dsn, schema) as hub_b,
    ):
        # Two "processes": each holds its own channels, each has its own listener.
        assert await hub_a.subscribe("news", "a2")
        assert await hub_a.subscribe("news", "a1")
        assert await hub_b.subscribe("news", "b1")
        assert await hub_b.subscribe("sport", "b1")
        assert not await hub_a.subscribe("news", "ghost")
        await hub_a.start(got_a)
        await hub_b.start(got_b)
        await hub_a.publish("news", {"headline": "héllo", "n": 1})
        await hub_b.publish("sport", [1, 2, 3])
        await hub_b.publish("weather", "nobody listens")
        await _wait_until(lambda: len(got_a.events) == 1 and len(got_b.events) == 2, "events")
        assert got_a.events == [
            EventHubMessage("news", ["a1", "a2"], {"headline": "héllo", "n": 1})
        ]
        assert got_b.events == [
            EventHubMessage("news", ["b1"], {"headline": "héllo", "n": 1}),
            EventHubMessage("sport", ["b1"], [1, 2, 3]),
        ]
        assert await hub_a.get_channel_ids_for_topic("news") == ["a1", "a2", "b1"]
        # Unsubscribed or released channels are no longer this process's listeners.
        assert await hub_a.unsubscribe("news", "a1")
        hub_b.release_channels(["b1"])
        assert hub_b.local_channel_ids("news") == []
        await hub_a.publish("news", None)
        await _wait_until(lambda: len(got_a.events) == 2, "the second event")
        assert got_a.events[1] == EventHubMessage("news", ["a2"], None)
        await asleep(0.2)
        assert len(got_b.events) == 2


@pytest.mark.parametrize("text", ["x", "é"])
async def test_inline_mode_stores_only_payloads_above_the_notify_limit(
    pg_dsn: str, channels: AsyncPgChannelStore, admin_conn: AsyncConnection[Any], text: str
) -> None:
    # The largest envelope NOTIFY takes is 7,999 bytes; "é" is 2 bytes, so counting
    # characters instead of bytes would send an envelope NOTIFY refuses.
    fixed = len(inline_envelope("big", '""', "0" * 12).encode())
    fits = text * ((MAX_INLINE_PAYLOAD_BYTES - fixed) // len(text.encode()))
    text_json = json.dumps(fits, ensure_ascii=False)
    assert len(inline_envelope("big", text_json, "0" * 12).encode()) in (7998, 7999)
    too_big = fits + "xx"
    huge = {"rows": [{"i": i, "text": text * 50} for i in range(2000)]}
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, channels.schema, inline_payloads=True) as hub:
        assert await hub.subscribe("big", "a1")
        await hub.start(got)
        await hub.publish("big", fits)
        await _wait_until(lambda: len(got.events) == 1, "the largest inline event")
        assert await _stored_payloads(admin_conn, channels.schema) == 0
        await hub.publish("big", too_big)
        await hub.publish("big", huge)
        await _wait_until(lambda: len(got.events) == 3, "the stored events")
        assert [e.data for e in got.events] == [fits, too_big, huge]
        assert await _stored_payloads(admin_conn, channels.schema) == 2


async def test_stored_payloads_are_cleaned_up_after_the_retention(
    pg_dsn: str, channels: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    async with AsyncPgEventHubService(pg_dsn, channels.schema, payload_retention=0.05) as hub:
        await hub.publish("big", "y" * 9000)
        await hub.publish("big", "y" * 9000)
        assert await _stored_payloads(admin_conn, channels.schema) == 2
        await asleep(0.1)
        await hub.publish("big", "z" * 9000)
        assert await _stored_payloads(admin_conn, channels.schema) == 1


@pytest.mark.parametrize(
    ("topic", "data", "match"),
    [
        ("big", "x" * 20_000, "event data is 20002 bytes of JSON; at most 10000"),
        ("t", {"a": "b\x00"}, "NUL"),
        ("t", {"a": object()}, "not JSON-serializable"),
        ("t", float("inf"), "not JSON-serializable"),
        ("", 1, "topic must not be empty"),
        ("t" * 256, 1, "topic is 256 characters"),
        ("a\x00", 1, "topic contains a NUL"),
        (b"t", 1, "topic must be a str, not bytes"),
    ],
)
async def test_bad_publishes_are_refused_before_anything_is_sent(
    pg_dsn: str,
    channels: AsyncPgChannelStore,
    admin_conn: AsyncConnection[Any],
    topic: Any,
    data: Any,
    match: str,
) -> None:
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, channels.schema, max_payload_bytes=10_000) as hub:
        await hub.subscribe("big", "a1")
        await hub.subscribe("t", "a1")
        await hub.start(got)
        with pytest.raises(InvalidInputError, match=match):
            await hub.publish(topic, data)
        await hub.publish("t", "marker")  # delivered in order: nothing came before it
        await _wait_until(lambda: len(got.events) == 1, "the marker")
        assert got.events[0].data == "marker"
        assert await _stored_payloads(admin_conn, channels.schema) == 1  # the marker only


async def test_the_listener_reconnects_after_its_connection_is_killed(
    pg_dsn: str,
    channels: AsyncPgChannelStore,
    admin_conn: AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pikku_pg.event_hub")
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, channels.schema) as hub:
        await hub.subscribe("news", "a1")
        await hub.start(got)
        pid = hub.listener_pid
        assert pid is not None
        await admin_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await hub.publish("news", "during the outage")  # may be lost: NOTIFY is not durable
        await _wait_until(lambda: hub.reconnects == 1, "the reconnection")
        assert hub.listener_pid not in (None, pid)
        await hub.publish("news", "after")
        await _wait_until(lambda: "after" in [e.data for e in got.events], "a later event")
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost its connection" in m for m in messages), messages
    assert any("reconnected" in m for m in messages), messages


async def test_a_slow_consumer_does_not_block_publishers(
    pg_dsn: str, channels: AsyncPgChannelStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pikku_pg.event_hub")
    async with AsyncPgEventHubService(pg_dsn, channels.schema, max_pending=5) as hub:
        await hub.subscribe("news", "a1")
        await hub.start()  # nobody reads events()
        started = time.monotonic()
        for i in range(50):
            await hub.publish("news", i)
        assert time.monotonic() - started < 5.0
        await _wait_until(lambda: hub.dropped == 45, "the drops")
        assert any("too slow: 1 events dropped" in r.getMessage() for r in caplog.records)
        await hub.close()
        received = [message.data async for message in hub.events()]
    assert received == [0, 1, 2, 3, 4]


async def test_a_failing_callback_is_logged_and_the_next_event_delivered(
    pg_dsn: str, channels: AsyncPgChannelStore, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Any] = []

    async def callback(message: EventHubMessage) -> None:
        seen.append(message.data)
        if message.data == "boom":
            raise RuntimeError("callback bug")

    async with AsyncPgEventHubService(pg_dsn, channels.schema) as hub:
        await hub.subscribe("news", "a1")
        await hub.start(callback)
        await hub.publish("news", "boom")
        await hub.publish("news", "fine")
        await _wait_until(lambda: seen == ["boom", "fine"], "both events")
    assert any("callback failed" in r.getMessage() for r in caplog.records)


async def test_close_from_inside_the_callback_does_not_hang(
    pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    hub = AsyncPgEventHubService(pg_dsn, channels.schema)
    closed: list[bool] = []

    async def callback(message: EventHubMessage) -> None:
        await hub.close()
        closed.append(True)

    await hub.subscribe("news", "a1")
    await hub.start(callback)
    await hub.publish("news", 1)
    started = time.monotonic()
    await _wait_until(lambda: closed == [True], "the close in the callback", timeout=4.0)
    assert time.monotonic() - started < 4.0
    with pytest.raises(ServiceClosedError):
        await hub.publish("news", 2)


async def test_publish_inside_a_transaction_is_delivered_on_commit_only(
    pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    got = _Collector()
    conn = await AsyncConnection.connect(pg_dsn)
    try:
        async with (
            AsyncPgEventHubService(pg_dsn, channels.schema) as listener,
            AsyncPgEventHubService(conn, channels.schema) as publisher,
        ):
            await listener.subscribe("news", "a1")
            await listener.start(got)
            async with conn.transaction(force_rollback=True):
                await publisher.publish("news", "rolled back")
            async with conn.transaction():
                await publisher.publish("news", "committed")
                await publisher.publish("news", "committed")  # not merged with the first
                await asleep(0.2)
                assert got.events == []
            await _wait_until(lambda: len(got.events) == 2, "the committed events")
            assert [e.data for e in got.events] == ["committed", "committed"]
    finally:
        await conn.close()


async def test_lifecycle_errors(pg_dsn: str, channels: AsyncPgChannelStore) -> None:
    hub = AsyncPgEventHubService(pg_dsn, channels.schema)
    await hub.start()
    with pytest.raises(ConflictError, match="already listening"):
        await hub.start()
    await hub.close()
    await hub.close()  # idempotent
    assert [m async for m in hub.events()] == []  # ends at once after close
    with pytest.raises(ServiceClosedError):
        await hub.start()
    with pytest.raises(ServiceClosedError):
        await hub.publish("news", 1)
    for bad in ({"max_pending": 0}, {"payload_retention": -1}, {"max_payload_bytes": "big"}):
        with pytest.raises(InvalidInputError, match="must be a (positive )?number"):
            AsyncPgEventHubService(pg_dsn, channels.schema, **bad)
    # A pool that computes its conninfo: the listener cannot know where to connect.
    pool = AsyncConnectionPool(lambda: pg_dsn, open=False)
    with pytest.raises(InvalidInputError, match="pass listen_conninfo"):
        AsyncPgEventHubService(pool, channels.schema)
    AsyncPgEventHubService(pool, channels.schema, listen_conninfo=pg_dsn)  # accepted


# --- private and authentic events (the default) ------------------------------------------


async def _listening(pg_dsn: str, schema: str) -> AsyncConnection[Any]:
    """A plain connection LISTENing on the hub's NOTIFY channel, as a snooper would."""
    conn = await AsyncConnection.connect(pg_dsn, autocommit=True)
    await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(notify_channel(schema))))
    return conn


async def _notified(conn: AsyncConnection[Any], count: int) -> list[str]:
    """The payloads of the next ``count`` notifications on ``conn``."""
    payloads = [n.payload async for n in conn.notifies(timeout=10, stop_after=count)]
    assert len(payloads) == count, payloads
    return payloads


async def _notify(conn: AsyncConnection[Any], schema: str, payload: str) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (notify_channel(schema), payload))


@pytest.fixture
async def outsider(
    pg_dsn: str, admin_conn: AsyncConnection[Any]
) -> AsyncIterator[AsyncConnection[Any]]:
    """An autocommit connection as a new role that may only CONNECT to the database."""
    role = f"outsider_{uuid.uuid4().hex[:12]}"
    password = secrets.token_hex(16)
    ident = pgsql.Identifier(role)
    await admin_conn.execute(
        pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, pgsql.Literal(password))
    )
    try:
        await admin_conn.execute(
            pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                pgsql.Identifier(admin_conn.info.dbname), ident
            )
        )
        conn = await AsyncConnection.connect(
            make_conninfo(pg_dsn, user=role, password=password), autocommit=True
        )
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await admin_conn.execute(pgsql.SQL("DROP OWNED BY {}").format(ident))
        await admin_conn.execute(pgsql.SQL("DROP ROLE {}").format(ident))


async def test_the_default_delivers_every_size_in_order_without_data_in_the_notify(
    pg_dsn: str, channels: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    schema = channels.schema
    mark = uuid.uuid4().hex
    sent = [
        f"{mark}-small",
        {"text": mark * 240},  # 7.7 kB: inline mode would send it in the NOTIFY
        {"text": mark * 300},  # above the NOTIFY limit
        [mark] * 20_000,  # 680 kB
        None,
        f"{mark}-small",  # the same data twice arrives twice
    ]
    got = _Collector()
    snooper = await _listening(pg_dsn, schema)
    try:
        async with AsyncPgEventHubService(pg_dsn, schema) as hub:
            assert await hub.subscribe("news", "a1")
            await hub.start(got)
            for data in sent:
                await hub.publish("news", data)
            await _wait_until(lambda: len(got.events) == len(sent), "every event")
            assert [e.data for e in got.events] == sent
            assert all(e.channel_ids == ["a1"] for e in got.events)
            assert await _stored_payloads(admin_conn, schema) == len(sent)
            cur = await admin_conn.execute(
                "SELECT relpersistence FROM pg_class WHERE oid = %s::regclass",
                (f"{schema}.event_hub_payloads",),
            )
            assert await cur.fetchone() == ("u",)  # as ephemeral as the notifications
            stats = hub.stats
            assert (stats.received, stats.delivered, stats.forged) == (len(sent), len(sent), 0)
        for payload in await _notified(snooper, len(sent)):
            assert mark not in payload
            envelope = json.loads(payload)
            assert sorted(envelope) == ["k", "r", "t"] and envelope["t"] == "news"
    finally:
        await snooper.close()


async def test_a_role_that_can_only_connect_can_neither_read_nor_forge_events(
    pg_dsn: str,
    channels: AsyncPgChannelStore,
    admin_conn: AsyncConnection[Any],
    outsider: AsyncConnection[Any],
) -> None:
    schema = channels.schema
    cur = await admin_conn.execute(
        "SELECT has_schema_privilege(%s, %s, 'USAGE')", (outsider.info.user, schema)
    )
    assert await cur.fetchone() == (False,)  # what a fresh role sees of the app's schema
    await outsider.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(notify_channel(schema))))
    secret_a = f"secret-{uuid.uuid4().hex}"
    secret_b = {"secret": "b" * 9000}
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, schema) as hub:
        assert await hub.subscribe("A", "a1")
        assert await hub.subscribe("B", "b1")
        await hub.start(got)
        await hub.publish("A", secret_a)
        await hub.publish("B", secret_b)
        # (1) It hears every notification, but they hold no data.
        heard = await _notified(outsider, 2)
        assert all("secret" not in payload for payload in heard)
        ref_a, ref_b = (json.loads(payload) for payload in heard)
        # (2) It cannot read the payloads.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await outsider.execute(
                pgsql.SQL("SELECT data FROM {}.event_hub_payloads").format(pgsql.Identifier(schema))
            )
        # (3) Nothing it sends is delivered, and each forgery is counted.
        forgeries = _forgeries(ref_a, ref_b)
        for payload in forgeries:
            await _notify(outsider, schema, payload)
        await _notify(outsider, schema, json.dumps({"t": "C", "r": 1, "k": str(uuid.uuid4())}))
        await hub.publish("A", "marker")  # notified after every forgery
        await _wait_until(lambda: len(got.events) == 3, "the marker")
        assert [(e.topic, e.data) for e in got.events] == [
            ("A", secret_a),
            ("B", secret_b),
            ("A", "marker"),
        ]
        stats = hub.stats
        assert stats.forged == len(forgeries)
        assert stats.ignored == 1  # topic C: no channel here, nothing fetched
        assert stats.delivered == 3 and stats.dropped == 0
        assert stats.received == len(forgeries) + 4


def _forgeries(ref_a: dict[str, Any], ref_b: dict[str, Any]) -> list[str]:
    """Notifications a role that heard the references of A and B could send."""
    a_id, a_key, b_id, b_key = ref_a["r"], ref_a["k"], ref_b["r"], ref_b["k"]
    guess = str(uuid.uuid4())
    envelopes: list[Any] = [
        {"t": "A", "n": "0" * 12, "d": "forged"},  # inline, and inline payloads are off
        {"t": "A", "r": a_id + 5, "k": guess},  # a guessed id and token
        {"t": "A", "r": a_id, "k": guess},  # A's id, a guessed token
        {"t": "A", "r": a_id, "k": b_key},  # A's id with B's token
        {"t": "A", "r": b_id, "k": b_key},  # B's whole reference, claimed for A
        {"t": "B", "r": a_id, "k": a_key},  # A's whole reference, claimed for B
        {"t": "A", "r": a_id, "k": a_key},  # a replay of A's
        {"t": "B", "r": b_id, "k": b_key},  # a replay of B's
        {"t": "A", "r": a_id, "k": a_key.upper()},  # not the token's canonical text
        {"t": "A", "r": a_id, "k": a_key.replace("-", "")},
        {"t": "A", "r": str(a_id), "k": a_key},  # the id as a string
        {"t": "A", "r": float(a_id), "k": a_key},
        {"t": "A", "r": True, "k": a_key},
        {"t": "A", "r": 2**63, "k": a_key},  # out of bigint range
        {"t": "A", "r": 0, "k": a_key},
        {"t": "A", "r": a_id, "k": None},
        {"t": "A", "r": a_id, "k": a_key, "d": "extra"},  # an extra field
        {"t": "A", "r": a_id},  # no token at all
        {"t": ["A"], "r": a_id, "k": a_key},  # the topic not a str
        [ref_a["t"], a_id, a_key],
        "A",
    ]
    return [json.dumps(e) for e in envelopes] + ["not JSON", "[" * 7000, ""]


class _CountingHub(AsyncPgEventHubService):
    """A hub that records how many references each of its payload reads checks."""

    fetched: list[int]

    async def _fetch(
        self, conn: AsyncConnection[Any], references: list[EventReference]
    ) -> dict[EventReference, Any] | None:
        self.fetched = [*getattr(self, "fetched", []), len(references)]
        return await super()._fetch(conn, references)


async def test_a_burst_is_checked_in_a_few_reads_and_a_bad_reference_spoils_none(
    pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    schema = channels.schema
    got = _Collector()
    conn = await AsyncConnection.connect(pg_dsn)
    try:
        async with (
            _CountingHub(pg_dsn, schema) as hub,
            AsyncPgEventHubService(conn, schema) as publisher,
        ):
            await hub.subscribe("A", "a1")
            await hub.start(got)
            async with conn.transaction():  # all notified at once, on commit
                for i in range(200):
                    await publisher.publish("A", i)
                    if i == 100:  # batched with genuine events, refused alone
                        big = json.dumps({"t": "A", "r": 2**70, "k": str(uuid.uuid4())})
                        wrong = json.dumps({"t": "A", "r": 1, "k": str(uuid.uuid4())})
                        await _notify(conn, schema, big)
                        await _notify(conn, schema, wrong)
                for i in range(100):
                    await publisher.publish("elsewhere", i)  # no channel here: never read
            await _wait_until(lambda: len(got.events) == 200, "the burst")
            await publisher.publish("A", "marker")
            await _wait_until(lambda: len(got.events) == 201, "the marker")
            assert [e.data for e in got.events] == [*range(200), "marker"]
            assert sum(hub.fetched) == 200 + 1 + 1  # + the wrong token + the marker
            assert len(hub.fetched) <= 20, hub.fetched
            assert (hub.stats.forged, hub.stats.ignored) == (2, 100)
    finally:
        await conn.close()


async def test_publish_rolled_back_delivers_nothing_of_any_size(
    pg_dsn: str, channels: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    got = _Collector()
    conn = await AsyncConnection.connect(pg_dsn)
    try:
        async with (
            AsyncPgEventHubService(pg_dsn, channels.schema) as listener,
            AsyncPgEventHubService(conn, channels.schema) as publisher,
        ):
            await listener.subscribe("news", "a1")
            await listener.start(got)
            async with conn.transaction(force_rollback=True):
                await publisher.publish("news", "small")
                await publisher.publish("news", "x" * 20_000)
            await publisher.publish("news", "after")
            await _wait_until(lambda: len(got.events) == 1, "the later event")
            assert [e.data for e in got.events] == ["after"]
            assert listener.stats.received == 1
            assert await _stored_payloads(admin_conn, channels.schema) == 1
    finally:
        await conn.close()


async def test_expired_payloads_are_deleted_in_bounded_batches_by_some_publishes(
    pg_dsn: str, channels: AsyncPgChannelStore, admin_conn: AsyncConnection[Any]
) -> None:
    schema = channels.schema
    async with AsyncPgEventHubService(pg_dsn, schema, payload_retention=60) as hub:
        await admin_conn.execute(
            pgsql.SQL(
                "INSERT INTO {}.event_hub_payloads (topic, data, created_at)"
                " SELECT 'old', '1', now() - interval '1 hour' FROM generate_series(1, 1500)"
            ).format(pgsql.Identifier(schema))
        )
        await hub.publish("news", 1)  # the first publish deletes, at most 1,000 rows
        assert await _stored_payloads(admin_conn, schema) == 500 + 1
        for i in range(31):  # the next 31 do not delete
            await hub.publish("news", i)
        assert await _stored_payloads(admin_conn, schema) == 500 + 32
        await hub.publish("news", "the 33rd")
        assert await _stored_payloads(admin_conn, schema) == 33


# --- inline mode ---------------------------------------------------------------------------


async def test_inline_mode_sends_small_data_in_the_notify_where_anyone_can_forge_it(
    pg_dsn: str,
    channels: AsyncPgChannelStore,
    admin_conn: AsyncConnection[Any],
    outsider: AsyncConnection[Any],
) -> None:
    schema = channels.schema
    await outsider.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(notify_channel(schema))))
    got = _Collector()
    async with AsyncPgEventHubService(pg_dsn, schema, inline_payloads=True) as hub:
        await hub.subscribe("A", "a1")
        await hub.start(got)
        await hub.publish("A", "in the clear")
        # The trade-off the option documents: readable, and forgeable, by any role.
        assert "in the clear" in (await _notified(outsider, 1))[0]
        await _notify(outsider, schema, json.dumps({"t": "A", "n": "x", "d": "forged"}))
        await _wait_until(lambda: len(got.events) == 2, "both events")
        assert [e.data for e in got.events] == ["in the clear", "forged"]
        assert await _stored_payloads(admin_conn, schema) == 0
        assert hub.stats.forged == 0


async def test_mixed_modes_during_a_rolling_change_of_the_option(
    pg_dsn: str, channels: AsyncPgChannelStore
) -> None:
    schema = channels.schema
    got_secure, got_inline = _Collector(), _Collector()
    async with (
        AsyncPgEventHubService(pg_dsn, schema) as secure,
        AsyncPgEventHubService(pg_dsn, schema, inline_payloads=True) as inline,
    ):
        await secure.subscribe("A", "a1")
        await inline.subscribe("A", "b1")
        await secure.start(got_secure)
        await inline.start(got_inline)
        await secure.publish("A", "reference")  # inline hubs accept references
        await inline.publish("A", "inline")  # secure hubs refuse inline envelopes
        await inline.publish("A", "x" * 9000)  # stored: a reference, accepted by both
        await _wait_until(
            lambda: len(got_secure.events) == 2 and len(got_inline.events) == 3, "the events"
        )
        assert [e.data for e in got_secure.events] == ["reference", "x" * 9000]
        assert [e.data for e in got_inline.events] == ["reference", "inline", "x" * 9000]
        assert (secure.stats.forged, inline.stats.forged) == (1, 0)


@pytest.mark.parametrize("value", [1, 0, "yes", None])
async def test_inline_payloads_must_be_a_bool(
    pg_dsn: str, channels: AsyncPgChannelStore, value: Any
) -> None:
    with pytest.raises(InvalidInputError, match="inline_payloads must be a bool"):
        AsyncPgEventHubService(pg_dsn, channels.schema, inline_payloads=value)


async def test_a_listener_that_cannot_read_the_payloads_drops_them_and_goes_on(
    pg_dsn: str,
    channels: AsyncPgChannelStore,
    outsider: AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pikku_pg.event_hub")
    password = outsider.pgconn.password
    assert password is not None
    # The listener reads the payloads on its own connection, here as the outsider role.
    listen_as = make_conninfo(pg_dsn, user=outsider.info.user, password=password.decode())
    got = _Collector()
    async with AsyncPgEventHubService(
        pg_dsn, channels.schema, inline_payloads=True, listen_conninfo=listen_as
    ) as hub:
        await hub.subscribe("A", "a1")
        await hub.start(got)
        await hub.publish("A", "x" * 9000)  # stored: the listener may not read it
        await hub.publish("A", "small")  # inline
        await _wait_until(lambda: len(got.events) == 1, "the inline event")
        assert got.events[0].data == "small"
        assert (hub.stats.dropped, hub.stats.forged, hub.stats.delivered) == (1, 0, 1)
    assert any("could not read 1 stored payloads" in r.getMessage() for r in caplog.records)
