"""The replay engine, run inline: steps, caching, retries, suspension, versions, errors."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import pytest

from pikku_pg import AsyncPgWorkflowRunService, AsyncPgWorkflowService, AsyncWorkflowContext
from pikku_pg._workflow_rules import parse_duration
from pikku_pg.errors import (
    DuplicateRegistrationError,
    InvalidInputError,
    InvalidRunStateError,
    StepFailedError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowRunNotFoundError,
    WorkflowSuspendedError,
)


@pytest.fixture
def wf(wf_owned: AsyncPgWorkflowService) -> AsyncPgWorkflowService:
    """This file's tests need one form only: an owned pool."""
    return wf_owned


async def test_inline_steps_rpcs_and_history(conn_source: Any, schema_name: str) -> None:
    service = AsyncPgWorkflowService(conn_source, schema_name)
    await service.init()
    calls: list[str] = []

    @service.rpc("double")
    async def double(data: dict[str, int]) -> int:
        calls.append("double")
        return data["n"] * 2

    @service.workflow("calc")
    async def calc(ctx: AsyncWorkflowContext, data: dict[str, int]) -> dict[str, Any]:
        async def add_one(value: int) -> int:
            calls.append("add_one")
            return value + 1

        first = await ctx.do("add one", add_one, data["n"])
        second = await ctx.do("double it", "double", {"n": first})
        await ctx.update_run_state("seen", first)
        return {"result": second, "run": ctx.run_id, "name": ctx.workflow_name}

    try:
        output = await service.run_to_completion("calc", {"n": 4}, wire={"type": "test"})
        assert output["result"] == 10
        assert output["name"] == "calc"
        assert calls == ["add_one", "double"]
        run = await service.get_run(output["run"])
        assert run is not None and run.status == "completed" and run.output == output
        assert run.inline is True and run.wire.type == "test"
        assert await service.get_run_state(run.id) == {"seen": 5}
        steps = await service.get_run_steps(run.id)
        assert [(s.step_name, s.rpc_name, s.status, s.result) for s in steps] == [
            ("add one", None, "succeeded", 5),
            ("double it", "double", "succeeded", 10),
        ]
        history = await service.get_run_history(run.id)
        assert all(h.running_at is not None and h.succeeded_at is not None for h in history)
        version = await service.get_workflow_version("calc", run.graph_hash or "")
        assert version is not None and "def calc(ctx" in version.source
    finally:
        await service.close()


async def test_replay_returns_stored_results_without_running_again(
    wf: AsyncPgWorkflowService,
) -> None:
    counts = {"a": 0, "b": 0}

    async def step_a(_: Any) -> str:
        counts["a"] += 1
        return "A"

    async def step_b(_: Any) -> str:
        counts["b"] += 1
        return "B"

    @wf.workflow("pause")
    async def pause(ctx: AsyncWorkflowContext, _: Any) -> list[str]:
        a = await ctx.do("a", step_a)
        await ctx.suspend("waiting for approval")
        b = await ctx.do("b", step_b)
        return [a, b]

    with pytest.raises(WorkflowSuspendedError) as info:
        await wf.run_to_completion("pause", None)
    run_id = info.value.run_id
    run = await wf.get_run(run_id)
    assert run is not None and run.status == "suspended"
    assert run.error is not None and run.error.message == "waiting for approval"
    assert counts == {"a": 1, "b": 0}

    assert await wf.resume_to_completion(run_id) == ["A", "B"]
    assert counts == {"a": 1, "b": 1}
    run = await wf.get_run(run_id)
    assert run is not None and run.status == "completed" and run.error is None

    with pytest.raises(InvalidRunStateError, match="completed"):
        await wf.resume_run(run_id)
    with pytest.raises(InvalidRunStateError, match="completed"):
        await wf.cancel_run(run_id)


async def test_retries_with_fixed_delay_then_success(
    wf: AsyncPgWorkflowService, pg_dsn: str
) -> None:
    attempts: list[float] = []

    async def flaky(_: Any) -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)} failed")
        return "ok"

    @wf.workflow("flaky")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> str:
        result: str = await ctx.do("call", flaky, retries=3, retry_delay="50ms")
        return result

    started = time.monotonic()
    assert await wf.run_to_completion("flaky", {}) == "ok"
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.045 and attempts[2] - attempts[1] >= 0.045
    assert time.monotonic() - started < 5
    runs = await wf.get_run_history((await _only_run(wf, pg_dsn)).id)
    assert [(h.attempt_count, h.status) for h in runs] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert runs[0].error is not None and runs[0].error.message == "attempt 1 failed"
    assert runs[0].error.name == "ConnectionError"


async def test_exponential_backoff_doubles_the_delay(wf: AsyncPgWorkflowService) -> None:
    attempts: list[float] = []

    async def flaky(_: Any) -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "ok"

    @wf.workflow("backoff")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> str:
        result: str = await ctx.do(
            "call", flaky, retries=2, retry_delay=0.05, backoff="exponential"
        )
        return result

    assert await wf.run_to_completion("backoff", {}) == "ok"
    assert attempts[1] - attempts[0] >= 0.045
    assert attempts[2] - attempts[1] >= 0.095


async def test_exhausted_retries_fail_the_run_with_the_step_error(
    wf: AsyncPgWorkflowService,
) -> None:
    async def broken(_: Any) -> None:
        raise ValueError("the card was declined")

    @wf.workflow("pay")
    async def pay(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.do("charge", broken, retries=1)

    with pytest.raises(WorkflowFailedError, match="the card was declined") as info:
        await wf.run_to_completion("pay", {})
    run = await wf.get_run(info.value.run_id)
    assert run is not None and run.status == "failed"
    assert run.error is not None and run.error.name == "ValueError"
    assert run.error.message == "the card was declined"
    history = await wf.get_run_history(run.id)
    assert [h.status for h in history] == ["failed", "failed"]


async def test_a_workflow_may_catch_a_failed_step(wf: AsyncPgWorkflowService) -> None:
    async def broken(_: Any) -> None:
        raise ValueError("nope")

    @wf.workflow("fallback")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> str:
        try:
            await ctx.do("try", broken)
        except StepFailedError as exc:
            assert exc.step_name == "try"
            return f"fell back after: {exc.error['message']}"
        return "unreachable"

    assert await wf.run_to_completion("fallback", {}) == "fell back after: nope"


async def test_workflow_exception_fails_the_run(wf: AsyncPgWorkflowService) -> None:
    @wf.workflow("boom")
    async def boom(ctx: AsyncWorkflowContext, data: Any) -> None:
        raise KeyError("missing thing")

    with pytest.raises(WorkflowFailedError, match="missing thing") as info:
        await wf.run_to_completion("boom", {})
    assert getattr(info.value, "error")["name"] == "KeyError"  # noqa: B009


async def test_unknown_rpc_suspends_then_resumes_after_deploy(
    wf: AsyncPgWorkflowService,
) -> None:
    @wf.workflow("mail")
    async def mail(ctx: AsyncWorkflowContext, data: Any) -> Any:
        return await ctx.do("send", "email.send", {"to": data["to"]})

    with pytest.raises(WorkflowSuspendedError, match=r"email\.send") as info:
        await wf.run_to_completion("mail", {"to": "a@b.c"})
    assert getattr(info.value, "code") == "RPC_NOT_FOUND"  # noqa: B009
    run = await wf.get_run(info.value.run_id)
    assert run is not None and run.status == "suspended"
    assert run.error is not None and run.error.code == "RPC_NOT_FOUND"

    @wf.rpc("email.send")
    async def send(data: dict[str, str]) -> str:
        return "sent to " + data["to"]

    assert await wf.resume_to_completion(run.id) == "sent to a@b.c"


async def test_non_determinism_is_detected(pg_dsn: str, schema_name: str) -> None:
    async with AsyncPgWorkflowService(pg_dsn, schema_name) as old:
        await old.init()

        async def work(_: Any) -> int:
            return 1

        @old.workflow("flow", version="v1")
        async def flow_v1(ctx: AsyncWorkflowContext, _: Any) -> None:
            await ctx.do("a", work)
            await ctx.suspend("wait")

        with pytest.raises(WorkflowSuspendedError) as info:
            await old.run_to_completion("flow", {})

    async with AsyncPgWorkflowService(pg_dsn, schema_name) as new:

        @new.rpc("remote")
        async def remote(_: Any) -> int:
            return 2

        @new.workflow("flow", version="v1")
        async def flow_v1_edited(ctx: AsyncWorkflowContext, _: Any) -> None:
            with contextlib.suppress(Exception):  # cannot swallow non-determinism
                await ctx.do("a", "remote")

        with pytest.raises(WorkflowFailedError, match="non|code changed") as failed:
            await new.resume_to_completion(info.value.run_id)
        assert getattr(failed.value, "code") == "NON_DETERMINISTIC"  # noqa: B009
        run = await new.get_run(info.value.run_id)
        assert run is not None and run.error is not None
        assert run.error.name == "NonDeterminismError"


async def test_version_conflict_fails_instead_of_replaying(pg_dsn: str, schema_name: str) -> None:
    async with AsyncPgWorkflowService(pg_dsn, schema_name) as old:
        await old.init()

        @old.workflow("flow")
        async def flow(ctx: AsyncWorkflowContext, _: Any) -> None:
            await ctx.suspend("wait")

        with pytest.raises(WorkflowSuspendedError) as info:
            await old.run_to_completion("flow", {})
        run = await old.get_run(info.value.run_id)
        assert run is not None and run.graph_hash is not None

    async with AsyncPgWorkflowService(pg_dsn, schema_name) as new:
        ran = []

        @new.workflow("flow")
        async def flow_changed(ctx: AsyncWorkflowContext, _: Any) -> None:
            ran.append(1)

        with pytest.raises(WorkflowFailedError) as failed:
            await new.resume_to_completion(info.value.run_id)
        assert getattr(failed.value, "code") == "VERSION_CONFLICT"  # noqa: B009
        assert ran == []


async def test_inline_sleep_waits_and_is_recorded(wf: AsyncPgWorkflowService, pg_dsn: str) -> None:
    @wf.workflow("nap")
    async def nap(ctx: AsyncWorkflowContext, _: Any) -> str:
        await ctx.sleep("short nap", "60ms")
        return "rested"

    started = time.monotonic()
    assert await wf.run_to_completion("nap", None) == "rested"
    assert time.monotonic() - started >= 0.055
    run = await _only_run(wf, pg_dsn)
    steps = await wf.get_run_steps(run.id)
    assert [(s.step_name, s.status) for s in steps] == [("short nap", "succeeded")]


async def test_cancel_stops_an_inline_run_at_the_next_step(
    wf: AsyncPgWorkflowService, pg_dsn: str
) -> None:
    ran: list[str] = []
    outcome: dict[str, Any] = {}

    async def first(_: Any) -> None:
        ran.append("first")
        run = await _only_run(wf, pg_dsn)
        await wf.cancel_run(run.id, "changed my mind")

    async def second(_: Any) -> None:
        ran.append("second")

    @wf.workflow("cancellable")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.do("first", first)
        await ctx.do("second", second)

    with pytest.raises(WorkflowCancelledError, match="changed my mind") as info:
        await wf.run_to_completion("cancellable", None)
    outcome["run"] = await wf.get_run(info.value.run_id)
    assert ran == ["first"]
    assert outcome["run"].status == "cancelled"
    assert outcome["run"].error.message == "changed my mind"
    with pytest.raises(InvalidRunStateError):
        await wf.resume_run(info.value.run_id)


async def test_cancel_a_suspended_run(wf: AsyncPgWorkflowService) -> None:
    @wf.workflow("parked")
    async def parked(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.suspend("parked")

    with pytest.raises(WorkflowSuspendedError) as info:
        await wf.run_to_completion("parked", None)
    await wf.cancel_run(info.value.run_id)
    run = await wf.get_run(info.value.run_id)
    assert run is not None and run.status == "cancelled"
    assert run.error is not None and run.error.code == "CANCELLED"


async def test_resume_a_failed_run_retries_the_failed_step(wf: AsyncPgWorkflowService) -> None:
    state = {"broken": True, "calls": 0}

    async def maybe(_: Any) -> str:
        state["calls"] += 1
        if state["broken"]:
            raise RuntimeError("down")
        return "up"

    @wf.workflow("retry later")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> Any:
        return await ctx.do("call", maybe)

    with pytest.raises(WorkflowFailedError) as info:
        await wf.run_to_completion("retry later", None)
    state["broken"] = False
    assert await wf.resume_to_completion(info.value.run_id) == "up"
    assert state["calls"] == 2
    history = await wf.get_run_history(info.value.run_id)
    assert [h.status for h in history] == ["failed", "succeeded"]


# ------------------------------------------------------------------ bad input


async def test_unknown_workflow_name(
    wf: AsyncPgWorkflowService, admin_conn: Any, schema_name: str
) -> None:
    with pytest.raises(WorkflowNotFoundError, match="nope"):
        await wf.run_to_completion("nope", {})
    with pytest.raises(WorkflowNotFoundError, match="nope"):
        await wf.start_workflow("nope", {})
    cur = await admin_conn.execute(f'SELECT count(*) FROM "{schema_name}".workflow_runs')
    assert (await cur.fetchone())[0] == 0


async def test_input_that_is_not_json_stores_nothing(
    wf: AsyncPgWorkflowService, admin_conn: Any, schema_name: str
) -> None:
    @wf.workflow("w")
    async def w(ctx: AsyncWorkflowContext, data: Any) -> None:
        return None

    with pytest.raises(InvalidInputError, match="JSON"):
        await wf.run_to_completion("w", {"when": object()})
    with pytest.raises(InvalidInputError, match="JSON"):
        await wf.start_workflow("w", {"when": object()})
    cur = await admin_conn.execute(f'SELECT count(*) FROM "{schema_name}".workflow_runs')
    assert (await cur.fetchone())[0] == 0


async def test_step_name_that_is_not_a_string_fails_the_run(wf: AsyncPgWorkflowService) -> None:
    async def noop(_: Any) -> None:
        return None

    @wf.workflow("bad step")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.do(42, noop)  # type: ignore[arg-type]

    with pytest.raises(WorkflowFailedError, match="step name must be a str") as info:
        await wf.run_to_completion("bad step", None)
    assert await wf.get_run_steps(info.value.run_id) == []


async def test_step_result_that_is_not_json_fails_naming_the_step(
    wf: AsyncPgWorkflowService,
) -> None:
    async def weird(_: Any) -> Any:
        return {"x": {1, 2}}

    @wf.workflow("weird")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.do("make a set", weird)

    with pytest.raises(WorkflowFailedError, match="make a set") as info:
        await wf.run_to_completion("weird", None)
    steps = await wf.get_run_steps(info.value.run_id)
    assert [(s.status, s.result) for s in steps] == [("failed", None)]
    assert steps[0].error is not None and "make a set" in steps[0].error.message


async def test_step_data_and_output_that_are_not_json(wf: AsyncPgWorkflowService) -> None:
    async def noop(_: Any) -> None:
        return None

    @wf.workflow("bad data")
    async def bad_data(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.do("send", noop, {"x": object()})

    @wf.workflow("bad output")
    async def bad_output(ctx: AsyncWorkflowContext, _: Any) -> Any:
        return object()

    with pytest.raises(WorkflowFailedError, match="send") as info:
        await wf.run_to_completion("bad data", None)
    assert await wf.get_run_steps(info.value.run_id) == []
    with pytest.raises(WorkflowFailedError, match="output") as info:
        await wf.run_to_completion("bad output", None)
    run = await wf.get_run(info.value.run_id)
    assert run is not None and run.status == "failed" and run.output is None


async def test_unparsable_duration_fails_the_run(wf: AsyncPgWorkflowService) -> None:
    @wf.workflow("bad sleep")
    async def flow(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.sleep("nap", "a while")

    with pytest.raises(WorkflowFailedError, match="'a while' is not a duration"):
        await wf.run_to_completion("bad sleep", None)
    for bad in ("5 weeks", "-1s", "", True, None, float("inf"), -3):
        with pytest.raises(InvalidInputError):
            parse_duration(bad)
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2s") == 2
    assert parse_duration("5m") == 300
    assert parse_duration("1h") == 3600
    assert parse_duration("1d") == 86400
    assert parse_duration(1.5) == 1.5


async def test_registering_a_name_twice(wf: AsyncPgWorkflowService) -> None:
    @wf.workflow("once")
    async def once(ctx: AsyncWorkflowContext, _: Any) -> None:
        return None

    @wf.rpc("r")
    async def r(_: Any) -> None:
        return None

    with pytest.raises(DuplicateRegistrationError, match="once"):

        @wf.workflow("once")
        async def again(ctx: AsyncWorkflowContext, _: Any) -> None:
            return None

    with pytest.raises(DuplicateRegistrationError, match="'r'"):

        @wf.rpc("r")
        async def r2(_: Any) -> None:
            return None

    with pytest.raises(InvalidInputError):
        wf.workflow("")
    with pytest.raises(InvalidInputError):
        wf.rpc(3)  # type: ignore[arg-type]


async def test_unknown_runs(wf: AsyncPgWorkflowService) -> None:
    for run_id in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(WorkflowRunNotFoundError):
            await wf.cancel_run(run_id)
        with pytest.raises(WorkflowRunNotFoundError):
            await wf.resume_run(run_id)
        with pytest.raises(WorkflowRunNotFoundError):
            await wf.wait_for_run(run_id, timeout=1)


async def _only_run(wf: AsyncPgWorkflowService, pg_dsn: str) -> Any:
    async with AsyncPgWorkflowRunService(pg_dsn, wf.schema) as console:
        [run] = await console.list_runs()
    return run
