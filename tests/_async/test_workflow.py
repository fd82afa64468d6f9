"""Workflow state store: runs, step transitions, history, run state, graph, versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from psycopg import AsyncConnection

from pikku_pg import AsyncPgWorkflowRunService, AsyncPgWorkflowService
from pikku_pg._acompat import agather, aspawn
from pikku_pg.errors import (
    InvalidInputError,
    InvalidSchemaNameError,
    ServiceClosedError,
    StepExistsError,
    StepNotFoundError,
    WorkflowRunNotFoundError,
)
from pikku_pg.models import SerializedError, StepState, WorkflowRun

WIRE = {"type": "http", "id": "req-1", "pikkuUserId": "u1"}


@pytest.fixture
def wf1(wf_owned: AsyncPgWorkflowService) -> AsyncPgWorkflowService:
    """One connection form only (an owned pool): for tests of pure logic."""
    return wf_owned


async def _count(admin: AsyncConnection[Any], schema: str, table: str) -> int:
    cur = await admin.execute(f'SELECT count(*) FROM "{schema}".{table}')
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _counts(admin: AsyncConnection[Any], schema: str) -> tuple[int, int, int]:
    return (
        await _count(admin, schema, "workflow_runs"),
        await _count(admin, schema, "workflow_step"),
        await _count(admin, schema, "workflow_step_history"),
    )


# ---------------------------------------------------------------------------------- runs


async def test_run_lifecycle(wf: AsyncPgWorkflowService) -> None:
    run_id = await wf.create_run(
        "onboard", {"user": "ünï"}, inline=True, graph_hash="h1", wire=WIRE
    )
    assert str(uuid.UUID(run_id)) == run_id
    run = await wf.get_run(run_id)
    assert isinstance(run, WorkflowRun)
    assert (run.workflow, run.status, run.input) == ("onboard", "running", {"user": "ünï"})
    assert run.inline is True and run.graph_hash == "h1"
    assert run.wire.type == "http" and run.wire.pikku_user_id == "u1"
    assert run.created_at.tzinfo is not None
    dumped = run.model_dump(by_alias=True, mode="json")
    assert dumped["graphHash"] == "h1" and dumped["wire"]["pikkuUserId"] == "u1"
    assert await wf.get_run(uuid.UUID(run_id)) == run

    for falsy in (0, False, "", [], {}):
        await wf.update_run_status(run_id, "completed", falsy)
        got = await wf.get_run(run_id)
        assert got is not None and got.output == falsy and type(got.output) is type(falsy)
        assert got.status == "completed"

    try:
        raise KeyError("boom")
    except KeyError as exc:
        await wf.update_run_status(run_id, "failed", error=exc)
    failed = await wf.get_run(run_id)
    assert failed is not None and failed.status == "failed" and failed.output is None
    assert failed.error is not None and failed.error.name == "KeyError"
    assert failed.error.message == "'boom'" and "KeyError" in (failed.error.stack or "")
    assert failed.updated_at >= failed.created_at

    await wf.update_run_status(run_id, "suspended", error={"message": "wait", "code": "X"})
    suspended = await wf.get_run(run_id)
    assert suspended is not None and suspended.error == SerializedError(message="wait", code="X")


async def test_run_without_wire_reads_unknown(wf1: AsyncPgWorkflowService) -> None:
    run_id = await wf1.create_run("w", None)
    run = await wf1.get_run(run_id)
    assert run is not None and run.wire.type == "unknown" and run.input is None
    assert run.inline is False and run.graph_hash is None


async def test_get_run_unknown(wf1: AsyncPgWorkflowService) -> None:
    assert await wf1.get_run(str(uuid.uuid4())) is None
    assert await wf1.get_run("not-a-uuid") is None
    with pytest.raises(InvalidInputError, match="run_id"):
        await wf1.get_run(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workflow_name": "a\x00b", "input": {}}, "NUL"),
        ({"workflow_name": 7, "input": {}}, "workflow_name"),
        ({"workflow_name": "w", "input": {"x": object()}}, "JSON"),
        ({"workflow_name": "w", "input": {"x": float("nan")}}, "JSON"),
        ({"workflow_name": "w", "input": {"x": "a\x00"}}, "NUL"),
        ({"workflow_name": "w", "input": {}, "inline": "yes"}, "inline"),
        ({"workflow_name": "w", "input": {}, "graph_hash": 5}, "graph_hash"),
        ({"workflow_name": "w", "input": {}, "wire": {"id": "no type"}}, "wire"),
        ({"workflow_name": "w", "input": {}, "wire": "http"}, "wire"),
    ],
)
async def test_create_run_bad_input(
    wf1: AsyncPgWorkflowService,
    admin_conn: AsyncConnection[Any],
    schema_name: str,
    kwargs: dict[str, Any],
    match: str,
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        await wf1.create_run(**kwargs)
    assert await _count(admin_conn, schema_name, "workflow_runs") == 0


async def test_update_run_status_bad_input(
    wf1: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    run_id = await wf1.create_run("w", {"a": 1})
    before = await wf1.get_run(run_id)
    with pytest.raises(WorkflowRunNotFoundError):
        await wf1.update_run_status(str(uuid.uuid4()), "completed")
    with pytest.raises(WorkflowRunNotFoundError, match="nope"):
        await wf1.update_run_status("nope", "completed")
    with pytest.raises(InvalidInputError, match="done"):
        await wf1.update_run_status(run_id, "done")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="JSON"):
        await wf1.update_run_status(run_id, "completed", {1, 2})
    with pytest.raises(InvalidInputError, match="NUL"):
        await wf1.update_run_status(run_id, "completed", "\x00")
    with pytest.raises(InvalidInputError, match="error"):
        await wf1.update_run_status(run_id, "failed", error={"no": "message"})
    with pytest.raises(InvalidInputError, match="error"):
        await wf1.update_run_status(run_id, "failed", error="text")  # type: ignore[arg-type]
    assert await wf1.get_run(run_id) == before


# --------------------------------------------------------------------------------- steps


async def test_step_lifecycle(wf: AsyncPgWorkflowService) -> None:
    run_id = await wf.create_run("w", {})
    step = await wf.insert_step_state(
        run_id, "send", "email.send", {"to": "a@b"}, retries=0, retry_delay=2000
    )
    assert isinstance(step, StepState)
    assert (step.status, step.attempt_count, step.retries, step.retry_delay) == (
        "pending",
        1,
        0,
        "2000",
    )
    await wf.set_step_running(step.step_id)
    assert (await wf.get_step_state(run_id, "send")).status == "running"
    await wf.set_step_error(step.step_id, ValueError("flaky"))
    failed = await wf.get_step_state(run_id, "send")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.message == "flaky" and failed.error.name == "ValueError"

    retry = await wf.create_retry_attempt(step.step_id, "running")
    assert (retry.status, retry.attempt_count, retry.error, retry.result) == (
        "running",
        2,
        None,
        None,
    )
    await wf.set_step_result(step.step_id, {"ok": True})
    done = await wf.get_step_state(run_id, "send")
    assert (done.status, done.result, done.error, done.attempt_count) == (
        "succeeded",
        {"ok": True},
        None,
        2,
    )

    other = await wf.insert_step_state(run_id, "wait", None, None, retry_delay="5s")
    await wf.set_step_scheduled(other.step_id)
    assert other.retry_delay == "5s" and other.retries is None

    history = await wf.get_run_history(run_id)
    assert [(h.step_name, h.attempt_count, h.status) for h in history] == [
        ("send", 1, "failed"),
        ("send", 2, "succeeded"),
        ("wait", 1, "scheduled"),
    ]
    first, second, third = history
    assert first.running_at is not None and first.failed_at is not None
    assert first.error is not None and first.error.message == "flaky"
    assert first.succeeded_at is None and first.scheduled_at is None
    assert first.created_at <= first.running_at <= first.failed_at == first.updated_at
    assert second.running_at is not None and second.succeeded_at is not None
    assert second.result == {"ok": True} and second.error is None
    assert second.created_at > first.failed_at
    assert third.scheduled_at is not None and third.running_at is None
    dumped = second.model_dump(by_alias=True, mode="json")
    assert dumped["stepName"] == "send" and dumped["attemptCount"] == 2


async def test_step_result_none_and_falsy(wf1: AsyncPgWorkflowService) -> None:
    run_id = await wf1.create_run("w", {})
    for i, value in enumerate([None, 0, False, "", []]):
        step = await wf1.insert_step_state(run_id, f"s{i}", "rpc", value)
        await wf1.set_step_result(step.step_id, value)
        state = await wf1.get_step_state(run_id, f"s{i}")
        assert state.status == "succeeded" and state.result == value
        assert type(state.result) is type(value)


async def test_insert_step_twice(
    wf: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    run_id = await wf.create_run("w", {})
    await wf.insert_step_state(run_id, "a", "rpc", {"n": 1})
    with pytest.raises(StepExistsError, match="'a'") as info:
        await wf.insert_step_state(run_id, "a", "rpc", {"n": 2})
    assert info.value.run_id == run_id and info.value.step_name == "a"
    assert await _counts(admin_conn, schema_name) == (1, 1, 1)
    # The service (and a borrowed connection) still works after the error.
    assert (await wf.get_step_state(run_id, "a")).attempt_count == 1


async def test_insert_step_unknown_run(
    wf: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(WorkflowRunNotFoundError, match=missing):
        await wf.insert_step_state(missing, "a", "rpc", {})
    with pytest.raises(WorkflowRunNotFoundError, match="garbage"):
        await wf.insert_step_state("garbage", "a", "rpc", {})
    assert await _counts(admin_conn, schema_name) == (0, 0, 0)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("a\x00", "rpc", {}), {}, "NUL"),
        ((3, "rpc", {}), {}, "step_name"),
        (("a", "r\x00", {}), {}, "NUL"),
        (("a", "rpc", {"x": "\x00"}), {}, "NUL"),
        (("a", "rpc", {"x": {1, 2}}), {}, "JSON"),
        (("a", "rpc", {}), {"retries": -1}, "retries"),
        (("a", "rpc", {}), {"retries": True}, "retries"),
        (("a", "rpc", {}), {"retries": "3"}, "retries"),
        (("a", "rpc", {}), {"retries": 2**31}, "retries"),
        (("a", "rpc", {}), {"retry_delay": [1]}, "retry_delay"),
        (("a", "rpc", {}), {"retry_delay": -5}, "retry_delay"),
        (("a", "rpc", {}), {"retry_delay": float("inf")}, "retry_delay"),
    ],
)
async def test_insert_step_bad_input(
    wf1: AsyncPgWorkflowService,
    admin_conn: AsyncConnection[Any],
    schema_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    match: str,
) -> None:
    run_id = await wf1.create_run("w", {})
    with pytest.raises(InvalidInputError, match=match):
        await wf1.insert_step_state(run_id, *args, **kwargs)
    assert await _counts(admin_conn, schema_name) == (1, 0, 0)


async def test_transitions_unknown_step(wf: AsyncPgWorkflowService) -> None:
    for step_id in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(StepNotFoundError, match=step_id):
            await wf.set_step_running(step_id)
        with pytest.raises(StepNotFoundError):
            await wf.set_step_scheduled(step_id)
        with pytest.raises(StepNotFoundError):
            await wf.set_step_result(step_id, 1)
        with pytest.raises(StepNotFoundError):
            await wf.set_step_error(step_id, RuntimeError("x"))
        with pytest.raises(StepNotFoundError):
            await wf.create_retry_attempt(step_id, "pending")
        with pytest.raises(StepNotFoundError):
            await wf.set_branch_taken(step_id, "left")
    run_id = await wf.create_run("w", {})
    with pytest.raises(StepNotFoundError, match="missing"):
        await wf.get_step_state(run_id, "missing")
    with pytest.raises(StepNotFoundError):
        await wf.get_step_state("bad-run", "missing")
    with pytest.raises(StepNotFoundError):
        await wf.get_step_state(str(uuid.uuid4()), "missing")


async def test_transition_bad_values_change_nothing(wf1: AsyncPgWorkflowService) -> None:
    run_id = await wf1.create_run("w", {})
    step = await wf1.insert_step_state(run_id, "a", "rpc", {})
    await wf1.set_step_running(step.step_id)
    before = await wf1.get_run_history(run_id)
    with pytest.raises(InvalidInputError, match="JSON"):
        await wf1.set_step_result(step.step_id, object())
    with pytest.raises(InvalidInputError, match="NUL"):
        await wf1.set_step_result(step.step_id, ["\x00"])
    with pytest.raises(InvalidInputError, match="error"):
        await wf1.set_step_error(step.step_id, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="error"):
        await wf1.set_step_error(step.step_id, {"code": "no message"})
    with pytest.raises(InvalidInputError, match="retry attempt"):
        await wf1.create_retry_attempt(step.step_id, "succeeded")
    with pytest.raises(InvalidInputError, match="branch_key"):
        await wf1.set_branch_taken(step.step_id, "\x00")
    assert await wf1.get_run_history(run_id) == before
    assert (await wf1.get_step_state(run_id, "a")).status == "running"


async def test_error_forms(wf1: AsyncPgWorkflowService) -> None:
    class CodedError(Exception):
        code = "E_RATE"

    run_id = await wf1.create_run("w", {})
    step = await wf1.insert_step_state(run_id, "a", "rpc", {})
    await wf1.set_step_error(step.step_id, CodedError("slow down"))
    err = (await wf1.get_step_state(run_id, "a")).error
    assert err is not None and (err.name, err.message, err.code) == (
        "CodedError",
        "slow down",
        "E_RATE",
    )
    await wf1.set_step_error(step.step_id, SerializedError(message="m", stack="s"))
    err = (await wf1.get_step_state(run_id, "a")).error
    assert err is not None and (err.message, err.stack, err.code) == ("m", "s", None)
    await wf1.set_step_error(step.step_id, {"message": "m2", "httpStatus": 429})
    err = (await wf1.get_step_state(run_id, "a")).error
    assert err is not None and err.model_dump(by_alias=True, exclude_none=True) == {
        "message": "m2",
        "httpStatus": 429,
    }


async def test_history_total_order_within_one_instant(
    wf1: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    run_id = await wf1.create_run("w", {})
    step = await wf1.insert_step_state(run_id, "a", "rpc", {}, retries=20)
    for i in range(2, 13):
        await wf1.set_step_error(step.step_id, {"message": f"attempt {i - 1}"})
        state = await wf1.create_retry_attempt(step.step_id)
        assert state.attempt_count == i
    await wf1.set_step_result(step.step_id, "done")
    # Every attempt stamped with the same instant: the order must still hold.
    await admin_conn.execute(
        f'UPDATE "{schema_name}".workflow_step_history SET created_at = %s',
        (datetime(2026, 1, 1).astimezone(),),
    )
    history = await wf1.get_run_history(run_id)
    assert [h.attempt_count for h in history] == list(range(1, 13))
    assert [h.error.message if h.error else None for h in history] == [
        *(f"attempt {i}" for i in range(1, 12)),
        None,
    ]
    assert history[-1].result == "done" and history[-1].status == "succeeded"
    assert (await wf1.get_step_state(run_id, "a")).attempt_count == 12


async def test_get_run_history_unknown_run(wf1: AsyncPgWorkflowService) -> None:
    with pytest.raises(WorkflowRunNotFoundError):
        await wf1.get_run_history(str(uuid.uuid4()))
    with pytest.raises(WorkflowRunNotFoundError):
        await wf1.get_run_history("x")
    assert await wf1.get_run_history(await wf1.create_run("w", {})) == []


# ---------------------------------------------------------------------------- run state


async def test_run_state(wf: AsyncPgWorkflowService) -> None:
    run_id = await wf.create_run("w", {})
    assert await wf.get_run_state(run_id) == {}
    values: dict[str, Any] = {
        "counter": 5,
        "name": "test",
        "a.b": {"nested": [1, "two"]},
        'it\'s "quoted"': None,
        "looks like json": "5",
        "quoted json": '"x"',
        "list text": "[1, 2]",
        "flag": False,
        "ünï": "ü",
    }
    for name, value in values.items():
        await wf.update_run_state(run_id, name, value)
    state = await wf.get_run_state(run_id)
    assert state == values
    assert type(state["looks like json"]) is str
    await wf.update_run_state(run_id, "counter", 6)
    assert (await wf.get_run_state(run_id))["counter"] == 6


async def test_run_state_bad_input(wf1: AsyncPgWorkflowService) -> None:
    run_id = await wf1.create_run("w", {})
    await wf1.update_run_state(run_id, "keep", 1)
    with pytest.raises(WorkflowRunNotFoundError):
        await wf1.update_run_state(str(uuid.uuid4()), "a", 1)
    with pytest.raises(WorkflowRunNotFoundError):
        await wf1.update_run_state("nope", "a", 1)
    with pytest.raises(WorkflowRunNotFoundError):
        await wf1.get_run_state(str(uuid.uuid4()))
    with pytest.raises(InvalidInputError, match="NUL"):
        await wf1.update_run_state(run_id, "a\x00", 1)
    with pytest.raises(InvalidInputError, match="JSON"):
        await wf1.update_run_state(run_id, "a", object())
    with pytest.raises(InvalidInputError, match="state name"):
        await wf1.update_run_state(run_id, 5, 1)  # type: ignore[arg-type]
    assert await wf1.get_run_state(run_id) == {"keep": 1}


async def test_run_state_concurrent_writers(pg_dsn: str, schema_name: str) -> None:
    async with AsyncPgWorkflowService(
        pg_dsn, schema_name, pool_kwargs={"min_size": 4, "max_size": 8}
    ) as wf:
        await wf.init()
        run_id = await wf.create_run("w", {})

        async def write(i: int) -> None:
            for j in range(5):
                await wf.update_run_state(run_id, f"k{i}.{j}", i * 10 + j)

        await agather(*[aspawn(write, (i,)) for i in range(8)])
        state = await wf.get_run_state(run_id)
        assert state == {f"k{i}.{j}": i * 10 + j for i in range(8) for j in range(5)}


async def test_reads_typescript_rows(
    wf1: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    """Rows as TypeScript 0.12.1 writes them: double-encoded state, NULL wire."""
    s = f'"{schema_name}"'
    cur = await admin_conn.execute(
        f"""INSERT INTO {s}.workflow_runs (workflow, status, input, inline, graph_hash, wire)
        VALUES ('ts', 'running', '{{"a":1}}', false, 'h', NULL) RETURNING workflow_run_id"""
    )
    row = await cur.fetchone()
    assert row is not None
    run_id = str(row[0])
    # jsonb_set(state, '{name}', <JSON.stringify(value) sent as a JSON string>)
    for name, text in [("counter", "5"), ("name", '"test"'), ("obj", '{"a":[1]}')]:
        await admin_conn.execute(
            f"UPDATE {s}.workflow_runs SET state = jsonb_set(COALESCE(state, '{{}}'),"
            " %s, to_jsonb(%s::text)) WHERE workflow_run_id = %s",
            ([name], text, run_id),
        )
    assert await wf1.get_run_state(run_id) == {"counter": 5, "name": "test", "obj": {"a": [1]}}
    run = await wf1.get_run(run_id)
    assert run is not None and run.wire.type == "unknown" and run.input == {"a": 1}

    # A TypeScript step with its history row (created_at set by JS, same millisecond).
    cur = await admin_conn.execute(
        f"""INSERT INTO {s}.workflow_step (workflow_run_id, step_name, rpc_name, data,
        status, retries, retry_delay) VALUES (%s, 'st', 'rpc', '{{}}', 'pending', 2, '100')
        RETURNING workflow_step_id""",
        (run_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    step_id = str(row[0])
    await admin_conn.execute(
        f"INSERT INTO {s}.workflow_step_history (workflow_step_id, status, created_at)"
        " VALUES (%s, 'pending', now())",
        (step_id,),
    )
    await wf1.set_step_running(step_id)
    await wf1.set_step_error(step_id, {"message": "e", "stack": "s"})
    state = await wf1.create_retry_attempt(step_id, "pending")
    assert (state.attempt_count, state.retries, state.retry_delay) == (2, 2, "100")
    history = await wf1.get_run_history(run_id)
    assert [(h.attempt_count, h.status) for h in history] == [(1, "failed"), (2, "pending")]

    # What we write reads plainly in TypeScript (getRunState returns the raw state).
    await wf1.update_run_state(run_id, "plain", {"b": 2})
    cur = await admin_conn.execute(
        f"SELECT state -> 'plain' FROM {s}.workflow_runs WHERE workflow_run_id = %s", (run_id,)
    )
    row = await cur.fetchone()
    assert row is not None and row[0] == {"b": 2}


# -------------------------------------------------------------------------------- graph


async def test_graph_state(wf: AsyncPgWorkflowService) -> None:
    run_id = await wf.create_run("g", {}, graph_hash="gh")
    a = await wf.insert_step_state(run_id, "a", "rpc", {})
    await wf.set_step_result(a.step_id, {"out": "hello"})
    await wf.set_branch_taken(a.step_id, "left")
    b = await wf.insert_step_state(run_id, "b", "rpc", {}, retries=1)
    await wf.set_step_error(b.step_id, RuntimeError("1"))  # 1 attempt of 2: not exhausted
    c = await wf.insert_step_state(run_id, "c", "rpc", {})
    await wf.set_step_error(c.step_id, RuntimeError("x"))  # no retries: exhausted
    d = await wf.insert_step_state(run_id, "d", "rpc", {})
    await wf.set_step_result(d.step_id, None)
    await wf.insert_step_state(run_id, "e", "rpc", {})  # pending

    state = await wf.get_completed_graph_state(run_id)
    assert state.completed_node_ids == ["a", "d"]
    assert state.failed_node_ids == ["c"]
    assert state.branch_keys == {"a": "left"}
    await wf.create_retry_attempt(b.step_id, "running")
    await wf.set_step_error(b.step_id, RuntimeError("2"))
    assert (await wf.get_completed_graph_state(run_id)).failed_node_ids == ["b", "c"]

    nodes = ["z", "a", "e", "y"]
    assert await wf.get_nodes_without_steps(run_id, nodes) == ["z", "y"]
    assert await wf.get_nodes_without_steps(run_id, []) == []
    assert await wf.get_node_results(run_id, ["a", "b", "d", "zz"]) == {
        "a": {"out": "hello"},
        "d": None,
    }
    assert await wf.get_node_results(run_id, []) == {}
    other = await wf.create_run("g", {})
    assert (await wf.get_completed_graph_state(other)).completed_node_ids == []
    assert await wf.get_node_results(other, ["a"]) == {}


async def test_graph_unknown_run_and_bad_input(wf1: AsyncPgWorkflowService) -> None:
    for run_id in (str(uuid.uuid4()), "bad"):
        with pytest.raises(WorkflowRunNotFoundError):
            await wf1.get_completed_graph_state(run_id)
        with pytest.raises(WorkflowRunNotFoundError):
            await wf1.get_nodes_without_steps(run_id, ["a"])
        with pytest.raises(WorkflowRunNotFoundError):
            await wf1.get_node_results(run_id, ["a"])
    run_id = await wf1.create_run("g", {})
    with pytest.raises(InvalidInputError, match="single string"):
        await wf1.get_nodes_without_steps(run_id, "ab")
    with pytest.raises(InvalidInputError, match="NUL"):
        await wf1.get_node_results(run_id, ["a\x00"])


# ----------------------------------------------------------------------------- versions


async def test_workflow_versions(wf: AsyncPgWorkflowService) -> None:
    assert await wf.upsert_workflow_version("wf", "v1", {"nodes": ["a", "b"]}, "dsl") is True
    assert await wf.upsert_workflow_version("wf", "v1", {"nodes": ["changed"]}, "x") is False
    version = await wf.get_workflow_version("wf", "v1")
    assert version is not None and version.graph == {"nodes": ["a", "b"]}
    assert version.source == "dsl"
    assert await wf.get_workflow_version("wf", "missing") is None
    with pytest.raises(InvalidInputError, match="NUL"):
        await wf.upsert_workflow_version("wf", "v2", {}, "a\x00")
    with pytest.raises(InvalidInputError, match="JSON"):
        await wf.upsert_workflow_version("wf", "v2", {"f": print}, "dsl")
    assert await wf.get_workflow_version("wf", "v2") is None


async def test_find_step_state_and_run_steps(wf1: AsyncPgWorkflowService) -> None:
    run_id = await wf1.create_run("w", {})
    assert await wf1.find_step_state(run_id, "a") is None
    assert await wf1.find_step_state("not-a-uuid", "a") is None
    step = await wf1.insert_step_state(run_id, "a", "rpc", {"d": 1})
    assert await wf1.find_step_state(run_id, "a") == step
    steps = await wf1.get_run_steps(run_id)
    assert [(s.step_id, s.step_name, s.rpc_name, s.data) for s in steps] == [
        (step.step_id, "a", "rpc", {"d": 1})
    ]
    with pytest.raises(WorkflowRunNotFoundError):
        await wf1.get_run_steps(str(uuid.uuid4()))


async def test_read_models_equal_validated_models(wf1: AsyncPgWorkflowService) -> None:
    """Rows are mapped without validation: the result must be what validation gives."""
    run_id = await wf1.create_run("w", {"i": 1}, wire=WIRE)
    await wf1.update_run_status(run_id, "failed", [1], {"message": "m", "extra": 1})
    step = await wf1.insert_step_state(run_id, "a", "rpc", {"d": 1}, retries=3, retry_delay=5)
    await wf1.set_step_running(step.step_id)
    await wf1.set_step_error(step.step_id, {"message": "e"})
    await wf1.set_branch_taken(step.step_id, "left")
    models: list[Any] = [
        await wf1.get_run(run_id),
        step,
        await wf1.get_step_state(run_id, "a"),
        await wf1.create_retry_attempt(step.step_id, "running"),
        *(await wf1.get_run_steps(run_id)),
        *(await wf1.get_run_history(run_id)),
        await wf1.get_completed_graph_state(run_id),
    ]
    await wf1.upsert_workflow_version("w", "h", {"g": 1}, "src")
    models.append(await wf1.get_workflow_version("w", "h"))
    for model in models:
        validated = type(model).model_validate(model.model_dump(by_alias=True))
        assert validated == model
        assert validated.model_dump(by_alias=True) == model.model_dump(by_alias=True)
        assert model.model_fields_set == set(type(model).model_fields)


async def test_bad_schema_and_closed_service(pg_dsn: str, schema_name: str) -> None:
    with pytest.raises(InvalidSchemaNameError):
        AsyncPgWorkflowService(pg_dsn, "bad-name; DROP")
    with pytest.raises(InvalidSchemaNameError):
        AsyncPgWorkflowRunService(pg_dsn, "x" * 64)
    wf = AsyncPgWorkflowService(pg_dsn, schema_name)
    await wf.init()
    run_id = await wf.create_run("w", {})
    await wf.close()
    with pytest.raises(ServiceClosedError):
        await wf.create_run("w", {})
    with pytest.raises(ServiceClosedError):
        async with wf.run_lock(run_id):
            pass
    async with AsyncPgWorkflowRunService(pg_dsn, schema_name) as runs:
        assert [r.id for r in await runs.list_runs()] == [run_id]
