"""The read-only workflow run service (console queries) and delete_run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection

from pikku_pg import AsyncPgWorkflowRunService, AsyncPgWorkflowService
from pikku_pg.errors import InvalidInputError, WorkflowRunNotFoundError
from pikku_pg.models import WorkflowRunStep


@pytest.fixture
async def services(
    conn_source: Any, schema_name: str
) -> AsyncIterator[tuple[AsyncPgWorkflowService, AsyncPgWorkflowRunService]]:
    wf = AsyncPgWorkflowService(conn_source, schema_name)
    runs = AsyncPgWorkflowRunService(conn_source, schema_name)
    await runs.init()
    try:
        yield wf, runs
    finally:
        await runs.close()
        await wf.close()


async def test_list_runs(
    services: tuple[AsyncPgWorkflowService, AsyncPgWorkflowRunService],
) -> None:
    wf, runs = services
    ids = []
    for i in range(6):
        ids.append(await wf.create_run("alpha" if i % 2 == 0 else "beta", {"i": i}))
    await wf.update_run_status(ids[4], "completed", {"done": True})
    await wf.update_run_status(ids[1], "completed", 0)

    listed = await runs.list_runs()
    assert [r.id for r in listed] == ids[::-1]  # newest first, ties broken the same way
    assert [r.id for r in await runs.list_runs(workflow_name="alpha")] == [ids[4], ids[2], ids[0]]
    assert [r.id for r in await runs.list_runs(status="completed")] == [ids[4], ids[1]]
    both = await runs.list_runs(workflow_name="alpha", status="completed")
    assert [(r.id, r.output) for r in both] == [(ids[4], {"done": True})]
    assert [r.id for r in await runs.list_runs(limit=2, offset=1)] == ids[::-1][1:3]
    assert await runs.list_runs(limit=0) == []
    assert await runs.list_runs(offset=10) == []
    assert await runs.list_runs(workflow_name="nope") == []
    assert await runs.get_distinct_workflow_names() == ["alpha", "beta"]
    got = await runs.get_run(ids[1])
    assert got is not None and got.output == 0 and got.status == "completed"


async def test_list_runs_bad_input(
    services: tuple[AsyncPgWorkflowService, AsyncPgWorkflowRunService],
) -> None:
    _, runs = services
    with pytest.raises(InvalidInputError, match="limit"):
        await runs.list_runs(limit=-1)
    with pytest.raises(InvalidInputError, match="offset"):
        await runs.list_runs(offset=-5)
    with pytest.raises(InvalidInputError, match="limit"):
        await runs.list_runs(limit="10")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="status"):
        await runs.list_runs(status="done")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="NUL"):
        await runs.list_runs(workflow_name="a\x00")
    assert await runs.get_distinct_workflow_names() == []


async def test_run_steps_and_history(
    services: tuple[AsyncPgWorkflowService, AsyncPgWorkflowRunService],
) -> None:
    wf, runs = services
    run_id = await wf.create_run("w", {})
    first = await wf.insert_step_state(run_id, "b-first", "rpc.one", {"x": 1}, retries=2)
    await wf.set_step_error(first.step_id, RuntimeError("no"))
    await wf.create_retry_attempt(first.step_id, "running")
    await wf.set_step_result(first.step_id, [1, 2])
    await wf.insert_step_state(run_id, "a-second", None, None, retry_delay="1s")

    steps = await runs.get_run_steps(run_id)
    assert all(isinstance(s, WorkflowRunStep) for s in steps)
    assert [(s.step_name, s.rpc_name, s.data, s.status, s.attempt_count) for s in steps] == [
        ("b-first", "rpc.one", {"x": 1}, "succeeded", 2),
        ("a-second", None, None, "pending", 1),
    ]
    assert steps[0].result == [1, 2] and steps[0].retries == 2
    assert steps[1].retry_delay == "1s"
    assert steps[0].model_dump(by_alias=True, mode="json")["rpcName"] == "rpc.one"

    history = await runs.get_run_history(run_id)
    assert [(h.step_name, h.attempt_count, h.status) for h in history] == [
        ("b-first", 1, "failed"),
        ("b-first", 2, "succeeded"),
        ("a-second", 1, "pending"),
    ]
    assert history == await wf.get_run_history(run_id)

    empty = await wf.create_run("w", {})
    assert await runs.get_run_steps(empty) == []
    for bad in (str(uuid.uuid4()), "nope"):
        with pytest.raises(WorkflowRunNotFoundError):
            await runs.get_run_steps(bad)
        with pytest.raises(WorkflowRunNotFoundError):
            await runs.get_run_history(bad)
        assert await runs.get_run(bad) is None


async def test_delete_run(
    services: tuple[AsyncPgWorkflowService, AsyncPgWorkflowRunService],
    admin_conn: AsyncConnection[Any],
    schema_name: str,
) -> None:
    wf, runs = services
    keep = await wf.create_run("w", {})
    await wf.insert_step_state(keep, "s", "rpc", {})
    run_id = await wf.create_run("w", {})
    step = await wf.insert_step_state(run_id, "s", "rpc", {})
    await wf.create_retry_attempt(step.step_id)
    assert await runs.delete_run(run_id) is True
    assert await runs.delete_run(run_id) is False
    assert await runs.delete_run("not-a-uuid") is False
    assert await runs.get_run(run_id) is None
    cur = await admin_conn.execute(
        f'SELECT (SELECT count(*) FROM "{schema_name}".workflow_step),'
        f' (SELECT count(*) FROM "{schema_name}".workflow_step_history)'
    )
    assert await cur.fetchone() == (1, 1)
    with pytest.raises(InvalidInputError, match="run_id"):
        await runs.delete_run(None)  # type: ignore[arg-type]


async def test_versions_from_run_service(
    services: tuple[AsyncPgWorkflowService, AsyncPgWorkflowRunService],
) -> None:
    wf, runs = services
    await wf.upsert_workflow_version("w", "h", {"n": [1]}, "python")
    version = await runs.get_workflow_version("w", "h")
    assert version is not None and (version.graph, version.source) == ({"n": [1]}, "python")
    assert await runs.get_workflow_version("w", "other") is None
    with pytest.raises(InvalidInputError, match="graph_hash"):
        await runs.get_workflow_version("w", None)  # type: ignore[arg-type]
