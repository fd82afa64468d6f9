"""AI storage: threads, messages with tool calls, working memory, agent runs, approvals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from psycopg import AsyncConnection, sql

from pikku_pg._acompat import agather, asleep, aspawn
from pikku_pg._async.ai import AsyncPgAIStorageService
from pikku_pg.errors import (
    ConflictError,
    InvalidInputError,
    InvalidSchemaNameError,
    MessageNotFoundError,
    RunNotFoundError,
    ServiceClosedError,
    ThreadNotFoundError,
)
from pikku_pg.models.ai import AIMessage, TextPart, ToolCall

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def store(conn_source: Any, schema_name: str) -> AsyncIterator[AsyncPgAIStorageService]:
    """A storage service over each connection form, its schema initialised."""
    service = AsyncPgAIStorageService(conn_source, schema_name)
    await service.init()
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def owned(pg_dsn: str, schema_name: str) -> AsyncIterator[AsyncPgAIStorageService]:
    """A storage service owning its pool (the form concurrency tests need)."""
    service = AsyncPgAIStorageService(pg_dsn, schema_name, pool_kwargs={"max_size": 8})
    await service.init()
    try:
        yield service
    finally:
        await service.close()


async def _snapshot(admin: AsyncConnection[Any], schema: str) -> dict[str, Any]:
    """Everything stored in the AI tables, to check that a failed call wrote nothing."""
    state: dict[str, Any] = {}
    for table in ("ai_threads", "ai_message", "ai_tool_call", "ai_run", "ai_working_memory"):
        cur = await admin.execute(
            sql.SQL("SELECT to_jsonb(t) FROM {}.{} t ORDER BY 1::text").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        )
        state[table] = sorted(json.dumps(r[0], sort_keys=True) for r in await cur.fetchall())
    return state


def _complete(*models: Any) -> bool:
    """Models read from the database carry every field (they are built without validation)."""
    return all(set(m.__dict__) == set(type(m).model_fields) for m in models)


def _assistant(message_id: str, *calls: tuple[str, str], at: datetime | None = None) -> AIMessage:
    return AIMessage(
        id=message_id,
        role="assistant",
        content="calling tools",
        tool_calls=[ToolCall(id=cid, name=name, args={"n": cid}) for cid, name in calls],
        created_at=at,
    )


def _results(message_id: str, *results: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "id": f"tool-results-{message_id}",
        "role": "tool",
        "toolResults": [{"id": i, "name": n, "result": r} for i, n, r in results],
    }


# --- threads ---------------------------------------------------------------------------------


async def test_threads_create_get_list_delete(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    first = await store.create_thread("user:1", title="First", metadata={"k": "v", "ü": [1]})
    assert first.title == "First" and first.metadata == {"k": "v", "ü": [1]}
    assert first.created_at.tzinfo is not None
    second = await store.create_thread("user:1", thread_id="t-2")
    await store.create_thread("user:2", thread_id="t-other")
    assert second.id == "t-2" and second.title is None and second.metadata is None

    got = await store.get_thread(first.id)
    assert got.model_dump() == first.model_dump()
    # Saving a message moves updated_at, so the first thread becomes the most recent.
    await store.save_messages(first.id, [{"id": "m1", "role": "user", "content": "hi"}])
    listed = await store.get_threads("user:1")
    assert [t.id for t in listed] == [first.id, "t-2"]
    assert listed[0].updated_at > first.updated_at
    assert first.model_dump(by_alias=True, mode="json")["resourceId"] == "user:1"

    await store.save_working_memory(first.id, "thread", {"a": 1})
    await store.save_working_memory("user:1", "resource", {"b": 2})
    run_id = await store.create_run(
        {"agentName": "a", "threadId": first.id, "resourceId": "user:1", "status": "running"}
    )
    await store.delete_thread(first.id)
    await store.delete_thread("never-existed")  # no error, like TypeScript
    with pytest.raises(ThreadNotFoundError, match=first.id):
        await store.get_thread(first.id)
    assert await store.get_run(run_id) is None
    assert await store.get_working_memory(first.id, "thread") is None
    assert await store.get_working_memory("user:1", "resource") == {"b": 2}
    snap = await _snapshot(admin_conn, schema_name)
    assert snap["ai_message"] == [] and snap["ai_run"] == []


async def test_create_thread_duplicate_id_conflicts(store: AsyncPgAIStorageService) -> None:
    await store.create_thread("r", thread_id="dup", title="original")
    with pytest.raises(ConflictError, match="dup"):
        await store.create_thread("r2", thread_id="dup", title="other")
    assert (await store.get_thread("dup")).title == "original"


# --- messages --------------------------------------------------------------------------------


async def test_messages_with_tool_calls_and_results(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    await store.save_messages(
        thread.id,
        [
            {"id": "u1", "role": "user", "content": "find things"},
            _assistant("a1", ("tc-b", "beta"), ("tc-a", "alpha"), ("tc-c", "gamma")),
            _results("a1", ("tc-a", "alpha", "A!")),
        ],
    )
    # A later batch fills in a result of a tool call stored before.
    await store.save_messages(thread.id, [_results("a1", ("tc-c", "gamma", "C!"))])
    messages = await store.get_messages(thread.id)
    assert [m.id for m in messages] == ["u1", "a1", "tool-results-a1"]
    calls = messages[1].tool_calls
    assert calls is not None
    assert [c.id for c in calls] == ["tc-b", "tc-a", "tc-c"]  # the order given, not by id
    assert calls[0].args == {"n": "tc-b"} and calls[0].name == "beta"
    tool = messages[2]
    assert tool.role == "tool" and tool.created_at == messages[1].created_at
    assert [(r.id, r.name, r.result) for r in tool.tool_results or []] == [
        ("tc-a", "alpha", "A!"),
        ("tc-c", "gamma", "C!"),
    ]
    assert _complete(*messages, *calls, *(tool.tool_results or []))
    dumped = messages[1].model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["toolCalls"][0] == {"id": "tc-b", "name": "beta", "args": {"n": "tc-b"}}


async def test_content_round_trip(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    thread = await store.create_thread("r")
    contents: list[Any] = [
        "plain",
        None,
        [TextPart(text="héllo"), {"type": "image", "url": "http://x/y.png"}],
        [
            {"type": "data", "name": "chart", "data": {"x": [1, 2]}},
            {"type": "generative-ui", "spec": {"c": "Card"}},
        ],
        [{"type": "file", "mediaType": "application/pdf", "url": "http://x/a.pdf"}],
        '"quoted"',  # looks like a JSON string
        '[{"type":"text","text":"looks like parts"}]',  # looks like content parts
        "[not json",
        "",
    ]
    await store.save_messages(
        thread.id,
        [{"id": f"c{i}", "role": "user", "content": c} for i, c in enumerate(contents)],
    )
    read = [m.content for m in await store.get_messages(thread.id)]
    assert read[0] == "plain" and read[1] is None
    assert isinstance(read[2], list) and read[2][0] == TextPart(text="héllo")
    assert [[p.model_dump(by_alias=True, exclude_none=True) for p in c] for c in read[3:5]] == (
        contents[3:5]
    )
    assert read[5:] == contents[5:]
    assert await store.get_messages("no-such-thread") == []
    cur = await admin_conn.execute(
        sql.SQL("SELECT content FROM {}.ai_message WHERE id = 'c2'").format(
            sql.Identifier(schema_name)
        )
    )
    row = await cur.fetchone()
    # What a TypeScript writer stores: compact JSON, non-ASCII unescaped, no None fields.
    assert row is not None
    assert row[0] == '[{"type":"text","text":"héllo"},{"type":"image","url":"http://x/y.png"}]'


async def test_order_kept_with_equal_timestamps_and_cursor_paging(
    store: AsyncPgAIStorageService,
) -> None:
    thread = await store.create_thread("r")
    # Ids that sort differently from their order; all but the last share one timestamp.
    ids = [f"m-{(i * 7) % 23:02d}" for i in range(23)]
    batch = [{"id": mid, "role": "user", "content": mid, "createdAt": T0} for mid in ids]
    await store.save_messages(thread.id, batch[:10])
    await store.save_messages(thread.id, batch[10:])
    assert [m.id for m in await store.get_messages(thread.id)] == ids
    assert [m.id for m in await store.get_messages(thread.id, last_n=4)] == ids[-4:]
    assert [m.id for m in await store.get_messages(thread.id, last_n=100)] == ids

    # Page backwards from the newest, 5 at a time: every message exactly once.
    pages: list[str] = []
    cursor = ids[-1]
    pages.insert(0, cursor)
    while True:
        page = await store.get_messages(thread.id, cursor=cursor, last_n=5)
        if not page:
            break
        pages[:0] = [m.id for m in page]
        cursor = page[0].id
    assert pages == ids
    assert [m.id for m in await store.get_messages(thread.id, cursor=ids[-1])] == ids[:-1]


async def test_timestamps_order_across_batches(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    await store.save_messages(
        thread.id,
        [
            {"id": "late", "role": "user", "content": "2", "createdAt": T0 + timedelta(hours=1)},
            {"id": "early", "role": "user", "content": "1", "createdAt": T0},
        ],
    )
    naive = datetime(2026, 1, 1, 12, 30)  # naive datetimes are UTC
    await store.save_messages(thread.id, [{"id": "mid", "role": "user", "createdAt": naive}])
    messages = await store.get_messages(thread.id)
    assert [m.id for m in messages] == ["early", "mid", "late"]
    assert messages[0].created_at == T0
    assert messages[1].created_at == naive.replace(tzinfo=timezone.utc)


async def test_resave_is_a_no_op(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    thread = await store.create_thread("r")
    batch = [
        {"id": "u1", "role": "user", "content": "hello"},
        _assistant("a1", ("tc1", "t")),
        _results("a1", ("tc1", "t", "done")),
    ]
    await store.save_messages(thread.id, batch)
    before = await _snapshot(admin_conn, schema_name)
    await store.save_messages(thread.id, batch)  # a retry after a timeout
    after = await _snapshot(admin_conn, schema_name)
    assert after["ai_message"] == before["ai_message"]
    assert after["ai_tool_call"] == before["ai_tool_call"]
    assert [m.id for m in await store.get_messages(thread.id)] == ["u1", "a1", "tool-results-a1"]


async def test_failure_in_save_leaves_nothing(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    one = await store.create_thread("r", thread_id="one")
    two = await store.create_thread("r", thread_id="two")
    await store.save_messages(one.id, [{"id": "taken", "role": "user", "content": "x"}])
    before = await _snapshot(admin_conn, schema_name)
    batch = [
        {"id": "new-1", "role": "user", "content": "a"},
        _assistant("new-2", ("tc-new", "t")),
        {"id": "taken", "role": "user", "content": "b"},  # stored in thread "one"
    ]
    with pytest.raises(ConflictError, match="taken"):
        await store.save_messages(two.id, batch)
    assert await _snapshot(admin_conn, schema_name) == before  # updated_at included


async def test_results_for_a_message_sent_again(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    await store.save_messages(thread.id, [_assistant("a1", ("tc1", "t"))])
    # The caller sends the stored assistant message again with the new results.
    await store.save_messages(
        thread.id, [_assistant("a1", ("tc1", "t")), _results("a1", ("tc1", "t", "ok"))]
    )
    messages = await store.get_messages(thread.id)
    assert [m.id for m in messages] == ["a1", "tool-results-a1"]
    assert [r.result for r in messages[1].tool_results or []] == ["ok"]


async def test_database_error_mid_save_rolls_back_everything(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    one = await store.create_thread("r", thread_id="one")
    two = await store.create_thread("r", thread_id="two")
    await store.save_messages(one.id, [_assistant("a-one", ("tc-shared", "t"))])
    before = await _snapshot(admin_conn, schema_name)
    # The tool call id is taken in thread "one": the INSERT of tool calls fails after
    # the messages were inserted in the same statement.
    with pytest.raises(ConflictError, match="tc-shared"):
        await store.save_messages(
            two.id,
            [{"id": "u", "role": "user", "content": "x"}, _assistant("a-two", ("tc-shared", "t"))],
        )
    assert await _snapshot(admin_conn, schema_name) == before
    # The service (and a borrowed connection) is still usable afterwards.
    await store.save_messages(two.id, [{"id": "u", "role": "user", "content": "x"}])
    assert [m.id for m in await store.get_messages(two.id)] == ["u"]


async def test_tool_result_for_unknown_tool_call(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    thread = await store.create_thread("r")
    other = await store.create_thread("r")
    await store.save_messages(other.id, [_assistant("elsewhere", ("tc-other", "t"))])
    before = await _snapshot(admin_conn, schema_name)
    for result_id in ("tc-missing", "tc-other"):  # the second is in another thread
        with pytest.raises(InvalidInputError, match=result_id):
            await store.save_messages(
                thread.id,
                [
                    {"id": "u1", "role": "user", "content": "a"},
                    _results("x", (result_id, "t", "r")),
                ],
            )
    assert await _snapshot(admin_conn, schema_name) == before


async def test_unknown_thread_on_save(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    before = await _snapshot(admin_conn, schema_name)
    with pytest.raises(ThreadNotFoundError, match="nope"):
        await store.save_messages("nope", [{"id": "m", "role": "user", "content": "x"}])
    assert await _snapshot(admin_conn, schema_name) == before


async def test_cursor_must_be_a_message_of_the_thread(store: AsyncPgAIStorageService) -> None:
    one = await store.create_thread("r")
    two = await store.create_thread("r")
    await store.save_messages(one.id, [{"id": "m1", "role": "user", "content": "x"}])
    await store.save_messages(two.id, [{"id": "m2", "role": "user", "content": "y"}])
    with pytest.raises(MessageNotFoundError, match="m1"):
        await store.get_messages(two.id, cursor="m1")
    with pytest.raises(MessageNotFoundError, match="ghost"):
        await store.get_messages(two.id, cursor="ghost")
    assert await store.get_messages(two.id, cursor="m2") == []


# --- working memory -----------------------------------------------------------------------------


async def test_working_memory(store: AsyncPgAIStorageService) -> None:
    assert await store.get_working_memory("t1", "thread") is None
    await store.save_working_memory("t1", "thread", {"name": "Ada", "n": [1, 2]})
    await store.save_working_memory("t1", "resource", {"other": True})
    assert await store.get_working_memory("t1", "thread") == {"name": "Ada", "n": [1, 2]}
    await store.save_working_memory("t1", "thread", {"name": "Bob"})
    assert await store.get_working_memory("t1", "thread") == {"name": "Bob"}
    merged = await store.update_working_memory("t1", "thread", {"age": 3, "name": "Cy"})
    assert merged == {"name": "Cy", "age": 3}
    assert await store.update_working_memory("new", "resource", {"x": 1}) == {"x": 1}
    assert await store.get_working_memory("t1", "resource") == {"other": True}


async def test_update_working_memory_concurrent_writers_lose_nothing(
    owned: AsyncPgAIStorageService,
) -> None:
    async def patch(i: int) -> None:
        await owned.update_working_memory("shared", "resource", {f"k{i}": i})

    tasks = [aspawn(patch, (i,)) for i in range(24)]
    await agather(*tasks, timeout=30)
    memory = await owned.get_working_memory("shared", "resource")
    assert memory == {f"k{i}": i for i in range(24)}


# --- TypeScript interop ---------------------------------------------------------------------------


async def test_reads_what_typescript_wrote(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    # What @pikku/pg 0.12.1 writes: JSON.stringify'd objects inside JSONB, raw content.
    statements = [
        "INSERT INTO {}.ai_threads (id, resource_id, title, metadata)"
        " VALUES ('ts', 'r', NULL, to_jsonb('{\"a\":1}'::text)),"
        " ('ts-null', 'r', NULL, 'null'::jsonb)",
        "INSERT INTO {}.ai_message (id, thread_id, role, content, created_at) VALUES"
        " ('tm1', 'ts', 'user', 'hi there', '2026-01-01T00:00:00Z'),"
        " ('tm2', 'ts', 'assistant', NULL, '2026-01-01T00:00:01Z')",
        "INSERT INTO {}.ai_tool_call (id, thread_id, message_id, tool_name, args, result,"
        " approval_status, run_id, approval_type, agent_run_id, display_tool_name,"
        " display_args) VALUES ('ttc', 'ts', 'tm2', 'sub', to_jsonb('{\"q\":\"x\"}'::text),"
        " 'res', 'pending', 'run-ts', 'agent-call', 'child', 'Sub agent',"
        " to_jsonb('{\"d\":1}'::text))",
        "INSERT INTO {}.ai_run (run_id, agent_name, thread_id, resource_id, status,"
        " suspend_reason, missing_rpcs) VALUES ('run-ts', 'agent', 'ts', 'r', 'suspended',"
        " 'approval', to_jsonb('[\"rpc.a\"]'::text))",
        "INSERT INTO {}.ai_working_memory (id, scope, data)"
        " VALUES ('ts', 'thread', to_jsonb('{\"m\":1}'::text))",
    ]
    for statement in statements:
        await admin_conn.execute(statement.replace("{}", schema_name).encode())
    assert (await store.get_thread("ts")).metadata == {"a": 1}
    assert (await store.get_thread("ts-null")).metadata is None
    messages = await store.get_messages("ts")
    assert [m.id for m in messages] == ["tm1", "tm2", "tool-results-tm2"]
    assert messages[0].content == "hi there"
    assert messages[1].tool_calls == [ToolCall(id="ttc", name="sub", args={"q": "x"})]
    run = await store.get_run("run-ts")
    assert run is not None and run.missing_rpcs == ["rpc.a"]
    found = await store.find_run_by_tool_call_id("ttc")
    assert found is not None and found.run.run_id == "run-ts"
    assert _complete(found, found.run, found.approval, await store.get_thread("ts"))
    assert found.approval.model_dump(by_alias=True) == {
        "type": "agent-call",
        "toolCallId": "ttc",
        "agentName": "sub",
        "agentRunId": "child",
        "displayToolName": "Sub agent",
        "displayArgs": {"d": 1},
    }
    assert await store.get_working_memory("ts", "thread") == {"m": 1}
    assert await store.update_working_memory("ts", "thread", {"n": 2}) == {"m": 1, "n": 2}


async def test_writes_what_typescript_reads(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    thread = await store.create_thread("r", thread_id="py", metadata={"a": 1})
    await store.save_messages(thread.id, [_assistant("a1", ("tc1", "tool"))])
    await store.save_working_memory("py", "thread", {"m": 1})
    cur = await admin_conn.execute(
        sql.SQL(
            "SELECT jsonb_typeof(t.metadata), jsonb_typeof(c.args), jsonb_typeof(w.data)"
            " FROM {s}.ai_threads t JOIN {s}.ai_tool_call c ON c.thread_id = t.id"
            " JOIN {s}.ai_working_memory w ON w.id = t.id"
        ).format(s=sql.Identifier(schema_name))
    )
    # JSON values themselves (a TypeScript reader gets objects), not strings of JSON.
    assert await cur.fetchone() == ("object", "object", "object")


# --- runs -----------------------------------------------------------------------------------------


def _run(thread_id: str, **extra: Any) -> dict[str, Any]:
    run = {
        "agentName": "helper",
        "threadId": thread_id,
        "resourceId": "r",
        "status": "running",
        "usage": {"inputTokens": 10, "outputTokens": 5, "model": "m1"},
    }
    run.update(extra)
    return run


async def test_create_update_get_run(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    await store.save_messages(thread.id, [_assistant("a1", ("tc1", "rm"), ("tc2", "sub"))])
    approval = {"type": "tool-call", "toolCallId": "tc1", "toolName": "rm", "args": {"n": "tc1"}}
    run_id = await store.create_run(
        _run(thread.id, status="suspended", suspendReason="approval", pendingApprovals=[approval])
    )
    run = await store.get_run(run_id)
    assert run is not None and run.status == "suspended" and run.usage.input_tokens == 10
    assert [a.tool_call_id for a in run.pending_approvals or []] == ["tc1"]
    assert run.model_dump(by_alias=True, mode="json")["pendingApprovals"][0] == approval

    # Only the fields given change; the pending set is replaced.
    agent_approval = {
        "type": "agent-call",
        "toolCallId": "tc2",
        "agentName": "sub",
        "agentRunId": "child-run",
        "displayToolName": "Ask sub",
        "displayArgs": {"q": "?"},
    }
    await store.update_run(run_id, {"missingRpcs": ["x.y"], "pendingApprovals": [agent_approval]})
    run = await store.get_run(run_id)
    assert run is not None and run.status == "suspended" and run.suspend_reason == "approval"
    assert run.missing_rpcs == ["x.y"] and run.usage.model == "m1"
    assert run.pending_approvals is not None
    assert [a.model_dump(by_alias=True) for a in run.pending_approvals] == [agent_approval]
    assert await store.find_run_by_tool_call_id("tc1") is None

    await store.update_run(
        run_id,
        {
            "status": "failed",
            "errorMessage": "boom",
            "suspendReason": None,
            "usage": {"inputTokens": 7, "outputTokens": 8, "model": "m2"},
            "pendingApprovals": None,
        },
    )
    run = await store.get_run(run_id)
    assert run is not None and run.status == "failed" and run.error_message == "boom"
    assert run.suspend_reason is None and run.pending_approvals is None
    assert (run.usage.input_tokens, run.usage.output_tokens, run.usage.model) == (7, 8, "m2")
    assert run.updated_at > run.created_at
    assert await store.get_run("no-such-run") is None
    await store.update_run(run_id, {})  # nothing given: only updated_at moves
    again = await store.get_run(run_id)
    assert again is not None and again.updated_at > run.updated_at
    assert again.model_dump(exclude={"updated_at"}) == run.model_dump(exclude={"updated_at"})


async def test_update_run_replaces_the_pending_set(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    other = await store.create_thread("r")
    await store.save_messages(
        thread.id, [_assistant("a1", ("tc1", "t"), ("tc2", "t"), ("tc3", "t"))]
    )
    await store.save_messages(other.id, [_assistant("o1", ("tc-other", "t"))])

    def approvals(*ids: str) -> list[dict[str, Any]]:
        return [{"type": "tool-call", "toolCallId": i, "toolName": "t", "args": {}} for i in ids]

    run_id = await store.create_run(_run(thread.id, pendingApprovals=approvals("tc1", "tc2")))
    await store.update_run(run_id, {"pendingApprovals": approvals("tc2", "tc3")})
    run = await store.get_run(run_id)
    assert run is not None
    assert [a.tool_call_id for a in run.pending_approvals or []] == ["tc2", "tc3"]
    assert await store.find_run_by_tool_call_id("tc1") is None
    # A tool call of another thread cannot become an approval of this run.
    with pytest.raises(InvalidInputError, match="tc-other"):
        await store.update_run(run_id, {"pendingApprovals": approvals("tc-other")})
    with pytest.raises(InvalidInputError, match="twice"):
        await store.update_run(run_id, {"pendingApprovals": approvals("tc3", "tc3")})
    run = await store.get_run(run_id)
    assert run is not None
    assert [a.tool_call_id for a in run.pending_approvals or []] == ["tc2", "tc3"]


async def test_runs_by_thread_newest_first(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    await store.save_messages(thread.id, [_assistant("a1", ("tc1", "t"), ("tc2", "t"))])
    ids = [await store.create_run(_run(thread.id, createdAt=T0, updatedAt=T0)) for _ in range(3)]
    last = await store.create_run(
        _run(
            thread.id,
            createdAt=T0 + timedelta(seconds=1),
            pendingApprovals=[
                {"type": "tool-call", "toolCallId": "tc2", "toolName": "t", "args": {}},
                {"type": "tool-call", "toolCallId": "tc1", "toolName": "t", "args": {}},
            ],
        )
    )
    runs = await store.get_runs_by_thread(thread.id)
    assert [r.run_id for r in runs] == [last, *reversed(ids)]
    assert runs[1].created_at == T0 and runs[1].pending_approvals is None
    assert [a.tool_call_id for a in runs[0].pending_approvals or []] == ["tc1", "tc2"]
    assert _complete(*runs, runs[0].usage, *(runs[0].pending_approvals or []))
    assert await store.get_runs_by_thread("other") == []


async def test_find_run_and_resolve_approval(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    await store.save_messages(thread.id, [_assistant("a1", ("tc1", "t"), ("tc2", "t"))])
    pending = [
        {"type": "tool-call", "toolCallId": "tc1", "toolName": "t", "args": {"n": "tc1"}},
        {"type": "tool-call", "toolCallId": "tc2", "toolName": "t", "args": {"n": "tc2"}},
    ]
    run_id = await store.create_run(_run(thread.id, status="suspended", pendingApprovals=pending))
    found = await store.find_run_by_tool_call_id("tc2")
    assert found is not None and found.run.run_id == run_id
    assert found.approval.tool_call_id == "tc2"
    assert len(found.run.pending_approvals or []) == 2

    assert await store.resolve_approval("tc2", "denied") is True
    assert await store.resolve_approval("tc2", "approved") is False  # already resolved
    assert await store.resolve_approval("unknown", "approved") is False
    assert await store.find_run_by_tool_call_id("tc2") is None
    run = await store.get_run(run_id)
    assert run is not None and [a.tool_call_id for a in run.pending_approvals or []] == ["tc1"]


async def test_resolve_approval_is_compare_and_set(
    owned: AsyncPgAIStorageService,
    admin_conn: AsyncConnection[Any],
    schema_name: str,
    pg_dsn: str,
) -> None:
    thread = await owned.create_thread("r")
    await owned.save_messages(thread.id, [_assistant("a1", ("tc1", "t"))])
    approval = {"type": "tool-call", "toolCallId": "tc1", "toolName": "t", "args": {}}
    await owned.create_run(_run(thread.id, pendingApprovals=[approval]))
    outcomes: list[tuple[str, bool]] = []

    async def resolve(status: str) -> None:
        outcomes.append((status, await owned.resolve_approval("tc1", status)))

    # Hold the row lock so both calls queue up on it, then release them together.
    async with admin_conn.transaction():
        await admin_conn.execute(
            sql.SQL("SELECT 1 FROM {}.ai_tool_call WHERE id = 'tc1' FOR UPDATE").format(
                sql.Identifier(schema_name)
            )
        )
        tasks = [aspawn(resolve, ("approved",)), aspawn(resolve, ("denied",))]
        waiting = 0
        for _ in range(200):  # until both UPDATEs wait on the row lock (at most ~10 s)
            await asleep(0.05)
            async with await AsyncConnection.connect(pg_dsn, autocommit=True) as probe:
                cur = await probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'UPDATE %ai_tool_call SET approval_status%'"
                )
                row = await cur.fetchone()
            waiting = row[0] if row else 0
            if waiting >= 2:
                break
        assert waiting == 2
    await agather(*tasks, timeout=30)
    winners = [status for status, won in outcomes if won]
    assert len(outcomes) == 2 and len(winners) == 1
    cur = await admin_conn.execute(
        sql.SQL("SELECT approval_status FROM {}.ai_tool_call WHERE id = 'tc1'").format(
            sql.Identifier(schema_name)
        )
    )
    assert await cur.fetchone() == (winners[0],)


async def test_run_errors_write_nothing(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    thread = await store.create_thread("r")
    await store.save_messages(thread.id, [_assistant("a1", ("tc1", "t"))])
    run_id = await store.create_run(_run(thread.id))
    before = await _snapshot(admin_conn, schema_name)
    ghost = {"type": "tool-call", "toolCallId": "ghost", "toolName": "t", "args": {}}
    with pytest.raises(ThreadNotFoundError, match="nope"):
        await store.create_run(_run("nope"))
    with pytest.raises(InvalidInputError, match="ghost"):
        await store.create_run(_run(thread.id, pendingApprovals=[ghost]))
    with pytest.raises(InvalidInputError, match="ghost"):
        await store.update_run(run_id, {"status": "completed", "pendingApprovals": [ghost]})
    with pytest.raises(RunNotFoundError, match="no-run"):
        await store.update_run("no-run", {"status": "completed"})
    with pytest.raises(InvalidInputError, match="status"):
        await store.update_run(run_id, {"status": "exploded"})
    with pytest.raises(InvalidInputError, match="credential-request"):
        await store.update_run(
            run_id, {"pendingApprovals": [{"type": "credential-request", "toolCallId": "tc1"}]}
        )
    with pytest.raises(InvalidInputError, match="status"):
        await store.resolve_approval("tc1", "maybe")
    assert await _snapshot(admin_conn, schema_name) == before


# --- bad input ------------------------------------------------------------------------------------


async def test_bad_message_input_writes_nothing(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    thread = await store.create_thread("r")
    before = await _snapshot(admin_conn, schema_name)
    ok = {"id": "fine", "role": "user", "content": "fine"}
    bad_batches: list[tuple[list[Any], str]] = [
        ([ok, {"id": "m", "role": "robot", "content": "x"}], "role"),
        ([ok, {"id": "m", "role": "user", "content": [{"type": "video", "u": 1}]}], "video"),
        ([ok, {"id": "m", "role": "user", "content": "a\x00b"}], "content"),
        ([ok, {"id": "m\x00", "role": "user"}], "message id"),
        ([ok, _assistant("m", ("tc", "t")).model_copy(update={"tool_calls": None}), 1], "dict"),
        (
            [
                ok,
                {
                    "id": "m",
                    "role": "assistant",
                    "toolCalls": [{"id": "t", "name": "n", "args": {"k": "\x00"}}],
                },
            ],
            "args of tool call 't'",
        ),
        ([ok, {"id": "m", "role": "user", "content": [{"type": "text", "text": "\x00"}]}], "NUL"),
        ([ok, ok], "twice"),
    ]
    for batch, message in bad_batches:
        with pytest.raises(InvalidInputError, match=message):
            await store.save_messages(thread.id, batch)
    with pytest.raises(InvalidInputError, match="thread_id"):
        await store.save_messages(123, [ok])  # type: ignore[arg-type]
    assert await _snapshot(admin_conn, schema_name) == before


async def test_bad_thread_and_memory_input_writes_nothing(
    store: AsyncPgAIStorageService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    before = await _snapshot(admin_conn, schema_name)
    with pytest.raises(InvalidInputError, match="JSON"):
        await store.create_thread("r", metadata={"when": object()})
    with pytest.raises(InvalidInputError, match="metadata"):
        await store.create_thread("r", metadata={"k": "\x00"})
    with pytest.raises(InvalidInputError, match="metadata"):
        await store.create_thread("r", metadata=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="title"):
        await store.create_thread("r", title="a\x00")
    with pytest.raises(InvalidInputError, match="resource_id"):
        await store.create_thread(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="scope"):
        await store.save_working_memory("x", "global", {"a": 1})
    with pytest.raises(InvalidInputError, match="scope"):
        await store.get_working_memory("x", "global")
    with pytest.raises(InvalidInputError, match="scope"):
        await store.update_working_memory("x", "session", {"a": 1})
    with pytest.raises(InvalidInputError, match="working memory"):
        await store.save_working_memory("x", "thread", {"a": float("nan")})
    with pytest.raises(InvalidInputError, match="patch"):
        await store.update_working_memory("x", "thread", {"a": "\x00"})
    assert await _snapshot(admin_conn, schema_name) == before


async def test_bad_paging_arguments(store: AsyncPgAIStorageService) -> None:
    thread = await store.create_thread("r")
    for bad in (0, -1, True, 2.5):
        with pytest.raises(InvalidInputError, match="last_n"):
            await store.get_messages(thread.id, last_n=bad)  # type: ignore[arg-type]


async def test_invalid_schema_and_closed_service(pg_dsn: str, schema_name: str) -> None:
    with pytest.raises(InvalidSchemaNameError):
        AsyncPgAIStorageService(pg_dsn, "bad-name; DROP")
    service = AsyncPgAIStorageService(pg_dsn, schema_name)
    await service.init()
    await service.close()
    with pytest.raises(ServiceClosedError):
        await service.create_thread("r")


async def test_get_messages_reads_only_its_page_of_a_huge_thread(
    pg_dsn: str, schema_name: str, admin_conn: AsyncConnection[Any]
) -> None:
    """Flat latency: the newest N come off the ordering index, however skewed the threads are.

    Most threads are short and one is huge, so a plan built for an average thread would
    sort the huge one in full; the plans a prepared call may run must read 50 rows.
    """
    from pikku_pg._sql import ai as ai_sql
    from pikku_pg._sql import render

    async with AsyncPgAIStorageService(pg_dsn, schema_name) as store:
        await store.init()
    threads = sql.Identifier(schema_name, "ai_threads")
    messages = sql.Identifier(schema_name, "ai_message")
    for statement in (
        "INSERT INTO {t} (id, resource_id) SELECT 't' || g, 'r' FROM generate_series(1, 5000) g",
        "INSERT INTO {t} (id, resource_id) VALUES ('huge', 'r')",
        "INSERT INTO {m} (id, thread_id, role, content)"
        " SELECT 'm' || g, 't' || g, 'user', 'hi' FROM generate_series(1, 5000) g",
        "INSERT INTO {m} (id, thread_id, role, content, created_at)"
        " SELECT 'h' || g, 'huge', 'user', 'hi', now() + make_interval(secs => g)"
        " FROM generate_series(1, 20000) g",
        "ANALYZE {m}",
    ):
        await admin_conn.execute(sql.SQL(statement).format(t=threads, m=messages))
    query = render(ai_sql.GET_MESSAGES, schema_name)
    query = query.replace("%(thread_id)s", "$1").replace("%(limit)s", "$2")
    for plans in ("force_generic_plan", "force_custom_plan"):
        async with admin_conn.transaction():
            await admin_conn.execute(f"SET LOCAL plan_cache_mode = {plans}")
            await admin_conn.execute(f"PREPARE page(text, bigint) AS {query}")
            cur = await admin_conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE page('huge', 50)"
            )
            plan = "\n".join(row[0] for row in await cur.fetchall())
            await admin_conn.execute("DEALLOCATE page")
        scan = next(line for line in plan.splitlines() if "on ai_message" in line)
        assert "Index Scan Backward using idx_ai_message_thread_order" in scan, plan
        assert "rows=50 " in scan, plan
    async with AsyncPgAIStorageService(pg_dsn, schema_name) as store:
        page = await store.get_messages("huge", last_n=50)
    assert [m.id for m in page] == [f"h{g}" for g in range(19951, 20001)]
