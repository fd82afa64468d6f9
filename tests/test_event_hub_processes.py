"""The event hub across real processes: a publish in one reaches listeners in others."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from pikku_pg import PgChannelStore, PgEventHubService

ROOT = Path(__file__).resolve().parents[1]

# A listener process: holds one channel, prints "ready", then one JSON line per event.
LISTENER = textwrap.dedent(
    """
    import json, sys, threading
    from pikku_pg import PgEventHubService

    dsn, schema, channel_id = sys.argv[1:4]
    done = threading.Event()

    def on_event(message):
        print(json.dumps(list(message)), flush=True)
        if message.data == "last":
            done.set()

    with PgEventHubService(dsn, schema) as hub:
        assert hub.subscribe("news", channel_id)
        hub.start(on_event)
        print("ready", flush=True)
        done.wait(30)
    """
)


def _listener(dsn: str, schema: str, channel_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER, dsn, schema, channel_id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_publish_reaches_listeners_in_other_processes(pg_dsn: str, schema_name: str) -> None:
    with PgChannelStore(pg_dsn, schema_name) as store:
        store.init()
        for cid in ("p1", "p2"):
            store.add_channel(cid, "chat")
    listeners = [_listener(pg_dsn, schema_name, cid) for cid in ("p1", "p2")]
    try:
        with PgEventHubService(pg_dsn, schema_name) as publisher:
            publisher.publish("news", {"n": 1})
            publisher.publish("news", "x" * 10_000)  # above NOTIFY's limit: stored
            publisher.publish("other", "not subscribed")
            publisher.publish("news", "last")
        outputs = [proc.communicate(timeout=30)[0] for proc in listeners]
    finally:
        for proc in listeners:
            proc.kill()
    for cid, output in zip(("p1", "p2"), outputs, strict=True):
        events = [json.loads(line) for line in output.splitlines()]
        assert events == [
            ["news", [cid], {"n": 1}],
            ["news", [cid], "x" * 10_000],
            ["news", [cid], "last"],
        ]
