"""AI console queries (read-only service) and the ``pikku_ai`` schema vs the TypeScript one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pikku_pg._async.ai import AsyncPgAgentRunService, AsyncPgAIStorageService
from pikku_pg.errors import InvalidInputError
from tests.catalog import catalog_differences

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def services(
    conn_source: Any, schema_name: str
) -> AsyncIterator[tuple[AsyncPgAIStorageService, AsyncPgAgentRunService]]:
    """A storage service and a console service on one schema, over each connection form."""
    store = AsyncPgAIStorageService(conn_source, schema_name)
    console = AsyncPgAgentRunService(conn_source, schema_name)
    await store.init()
    try:
        yield store, console
    finally:
        await console.close()
        await store.close()


async def _seed(store: AsyncPgAIStorageService) -> None:
    """Threads of several owners; updated_at set by message saves, oldest first."""
    resources = ["alice", "alice:proj", "alicex", "bob", "50%_off", "50%_off:a", "5x%_off"]
    for i, resource in enumerate(resources):
        await store.create_thread(resource, thread_id=f"t{i}", title=resource)
        await store.save_messages(f"t{i}", [{"id": f"m{i}", "role": "user", "content": "hi"}])
    await store.create_run(
        {"agentName": "writer", "threadId": "t0", "resourceId": "alice", "status": "running"}
    )
    for _ in range(2):  # two runs of one agent in one thread: the thread is listed once
        await store.create_run(
            {"agentName": "reader", "threadId": "t3", "resourceId": "bob", "status": "completed"}
        )


async def test_list_threads_filters_and_paging(
    services: tuple[AsyncPgAIStorageService, AsyncPgAgentRunService],
) -> None:
    store, console = services
    await _seed(store)
    newest_first = [f"t{i}" for i in reversed(range(7))]
    assert [t.id for t in await console.list_threads()] == newest_first
    assert [t.id for t in await console.list_threads(limit=2, offset=1)] == newest_first[1:3]
    assert await console.list_threads(limit=0) == []
    assert [t.id for t in await console.list_threads(agent_name="reader")] == ["t3"]
    assert await console.list_threads(agent_name="nobody") == []
    assert [t.id for t in await console.list_threads(resource_id="alice")] == ["t0"]
    # An owner matches itself and "owner:..." but not a longer name.
    assert [t.id for t in await console.list_threads(owners=["alice"])] == ["t1", "t0"]
    assert [t.id for t in await console.list_threads(owners=["alice", "bob"])] == [
        "t3",
        "t1",
        "t0",
    ]
    # '%' and '_' are plain characters, not patterns.
    assert [t.id for t in await console.list_threads(owners=["50%_off"])] == ["t5", "t4"]
    assert await console.list_threads(owners=["5%"]) == []
    assert await console.list_threads(owners=[]) == []
    both = await console.list_threads(owners=["alice"], agent_name="writer", resource_id="alice")
    assert [t.id for t in both] == ["t0"]


async def test_console_thread_messages_runs_and_delete(
    services: tuple[AsyncPgAIStorageService, AsyncPgAgentRunService],
) -> None:
    store, console = services
    await store.create_thread("r", thread_id="t", title="T", metadata={"x": 1})
    await store.save_messages(
        "t",
        [
            {"id": "u", "role": "user", "content": "go"},
            {
                "id": "a",
                "role": "assistant",
                "toolCalls": [{"id": "tc", "name": "search", "args": {"q": 1}}],
            },
            {
                "id": "tr",
                "role": "tool",
                "toolResults": [{"id": "tc", "name": "search", "result": "r"}],
            },
        ],
    )
    old = await store.create_run(
        {"agentName": "b", "threadId": "t", "resourceId": "r", "status": "running", "createdAt": T0}
    )
    new = await store.create_run(
        {
            "agentName": "a",
            "threadId": "t",
            "resourceId": "r",
            "status": "failed",
            "errorMessage": "model timed out",
            "createdAt": T0 + timedelta(minutes=1),
            "usage": {"inputTokens": 3, "outputTokens": 4, "model": "gpt"},
        }
    )
    thread = await console.get_thread("t")
    assert thread is not None and thread.title == "T" and thread.metadata == {"x": 1}
    assert await console.get_thread("missing") is None
    assert [m.id for m in await console.get_thread_messages("t")] == ["u", "a", "tool-results-a"]
    assert [m.model_dump() for m in await console.get_thread_messages("t")] == [
        m.model_dump() for m in await store.get_messages("t")
    ]
    runs = await console.get_thread_runs("t")
    assert [r.run_id for r in runs] == [new, old]
    assert runs[0].error_message == "model timed out" and runs[1].error_message is None
    assert set(runs[0].__dict__) == set(type(runs[0]).model_fields)
    dumped = runs[0].model_dump(by_alias=True, mode="json")
    assert (dumped["usageInputTokens"], dumped["usageOutputTokens"], dumped["usageModel"]) == (
        3,
        4,
        "gpt",
    )
    assert await console.get_distinct_agent_names() == ["a", "b"]
    assert await console.delete_thread("t") is True
    assert await console.delete_thread("t") is False
    assert await console.get_thread_runs("t") == []
    assert await console.get_distinct_agent_names() == []


async def test_console_bad_input(
    services: tuple[AsyncPgAIStorageService, AsyncPgAgentRunService],
) -> None:
    _, console = services
    with pytest.raises(InvalidInputError, match="limit"):
        await console.list_threads(limit=-1)
    with pytest.raises(InvalidInputError, match="offset"):
        await console.list_threads(offset=-5)
    with pytest.raises(InvalidInputError, match="owners"):
        await console.list_threads(owners="alice")
    with pytest.raises(InvalidInputError, match="owner"):
        await console.list_threads(owners=["a\x00"])
    with pytest.raises(InvalidInputError, match="thread_id"):
        await console.delete_thread(None)  # type: ignore[arg-type]


# --- schema vs the TypeScript catalog -----------------------------------------------------------


async def test_schema_matches_typescript_catalog(pg_dsn: str, schema_name: str) -> None:
    service = AsyncPgAIStorageService(pg_dsn, schema_name)
    try:
        await service.init()
        assert await service.init() == []  # up to date: no DDL the second time
    finally:
        await service.close()
    assert catalog_differences(pg_dsn, "pikku_ai", schema_name) == []
