"""The LISTEN machinery shared by the event hub and the workflow workers: back-off,
batches, reconnection after the backend is killed, and the ``listen_conninfo`` checks."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from psycopg import AsyncConnection

from pikku_pg._acompat import agather, asleep, aspawn
from pikku_pg._async._listener import AsyncListener, Backoff, ListenTarget, listen_target
from pikku_pg._async.event_hub import AsyncPgEventHubService
from pikku_pg._async.workflow import AsyncPgWorkflowService
from pikku_pg.errors import DatabaseUnavailableError, InvalidInputError

LOGGER = "pikku_pg.test_listener"


async def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asleep(0.01)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class _Batches:
    """Records the batches a listener hands over; the first ``fail`` batches raise."""

    def __init__(self, fail: int = 0) -> None:
        self.payloads: list[str] = []
        self.fail = fail

    async def __call__(self, conn: AsyncConnection[Any], batch: list[str]) -> None:
        assert not conn.closed  # handed over on the listener's own, open connection
        if self.fail:
            self.fail -= 1
            raise ValueError("a bad batch")
        self.payloads.extend(batch)


def test_backoff_doubles_up_to_its_limit_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next_delay() == 0.1


async def test_the_listener_backs_off_while_the_server_is_out_of_reach(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    target = ListenTarget(f"postgresql://x@127.0.0.1:{_closed_port()}/db", {"connect_timeout": 2})
    listener = AsyncListener(
        target,
        "nobody",
        _Batches(),
        label="test listener",
        log=logging.getLogger(LOGGER),
        reconnect_delay=0.02,
        max_reconnect_delay=0.08,
    )
    with pytest.raises(DatabaseUnavailableError, match="test listener cannot connect"):
        await listener.connect()
    task = aspawn(listener.run, ())
    await asleep(0.6)
    listener.stop()
    await agather(task, timeout=5)
    delays = [
        float(match.group(1))
        for record in caplog.records
        if (match := re.search(r"retrying in ([\d.]+) s", record.getMessage()))
    ]
    assert delays[:5] == [0.02, 0.04, 0.08, 0.08, 0.08], delays
    assert listener.pid is None and listener.reconnects == 0


async def test_the_listener_hands_over_batches_and_reconnects_after_a_kill(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    batches = _Batches(fail=1)
    listens: list[int | None] = []
    channel = f"test_listener_{schema_name}"
    listener = AsyncListener(
        listen_target(pg_dsn, None, None, application_name="test listener"),
        channel,
        batches,
        label="test listener",
        log=logging.getLogger(LOGGER),
        on_listening=lambda: listens.append(listener.pid),
    )
    conn = await listener.connect()
    first_pid = listener.pid
    assert first_pid is not None and listens == [first_pid]
    task = aspawn(listener.run, (conn,))
    try:
        await admin_conn.execute("SELECT pg_notify(%s, 'lost in a bad batch')", (channel,))
        await asleep(0.3)  # that batch raised: logged, and the listener goes on
        await admin_conn.execute("SELECT pg_notify(%s, 'one')", (channel,))
        await _wait_until(lambda: batches.payloads == ["one"], "the first notification")
        await admin_conn.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
        await _wait_until(lambda: listener.reconnects == 1, "the reconnection")
        assert listener.pid not in (None, first_pid) and listens == [first_pid, listener.pid]
        await admin_conn.execute("SELECT pg_notify(%s, 'two')", (channel,))
        await _wait_until(lambda: batches.payloads == ["one", "two"], "a later notification")
    finally:
        listener.stop()
        await agather(task, timeout=5)
    assert listener.pid is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [(5, "must be a str"), ("", "must not be empty"), ("a\x00b", "NUL"), ("\ud800", "surrogate")],
)
@pytest.mark.parametrize("service", [AsyncPgWorkflowService, AsyncPgEventHubService])
async def test_listen_conninfo_is_checked_by_both_services(
    pg_dsn: str, schema_name: str, service: Any, value: object, problem: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"listen_conninfo.*{problem}"):
        service(pg_dsn, schema_name, listen_conninfo=value)
