"""Fencing and ownership: a stale runner's writes are refused, a succeeded step is final,
an inline run always has an owner or a job a worker can claim, expired leases first."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg import sql as pgsql

from pikku_pg import AsyncPgWorkflowRunService, AsyncPgWorkflowService, AsyncWorkflowContext
from pikku_pg._acompat import AEvent, agather, asleep, aspawn, await_event
from pikku_pg.errors import (
    InvalidInputError,
    InvalidRunStateError,
    LeaseLostError,
    StepAlreadyCompletedError,
)
from tests._async.conftest import initialised

FAST = {"lease": 2.0, "poll_interval": 0.1, "shutdown_timeout": 5.0}


@pytest.fixture
async def wf(pg_dsn: str, schema_name: str) -> AsyncIterator[AsyncPgWorkflowService]:
    """An owned pool, and short inline leases (0.6 s)."""
    service = AsyncPgWorkflowService(pg_dsn, schema_name, inline_lease=0.6)
    async with initialised(service):
        yield service


async def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asleep(0.02)


async def _count(admin: AsyncConnection[Any], schema: str, table: str, where: str = "") -> int:
    cur = await admin.execute(f'SELECT count(*) FROM "{schema}".{table} {where}')
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------------ the state API


async def test_a_succeeded_step_is_final_for_the_state_api(wf: AsyncPgWorkflowService) -> None:
    run_id = await wf.create_run("w", None)
    sid = (await wf.insert_step_state(run_id, "s", None, None)).step_id
    await wf.set_step_running(sid)
    await wf.set_step_result(sid, "new owner")
    with pytest.raises(StepAlreadyCompletedError, match=sid):
        await wf.set_step_result(sid, "stale")
    for write in (
        lambda: wf.set_step_running(sid),
        lambda: wf.set_step_scheduled(sid),
        lambda: wf.set_step_error(sid, {"message": "stale"}),
        lambda: wf.create_retry_attempt(sid, "running"),
    ):
        with pytest.raises(StepAlreadyCompletedError):
            await write()
    state = await wf.get_step_state(run_id, "s")
    assert (state.status, state.result, state.attempt_count) == ("succeeded", "new owner", 1)
    history = await wf.get_run_history(run_id)
    assert [(h.status, h.result) for h in history] == [("succeeded", "new owner")]


async def test_overwrite_rewrites_a_succeeded_step_when_asked(wf: AsyncPgWorkflowService) -> None:
    run_id = await wf.create_run("w", None)
    sid = (await wf.insert_step_state(run_id, "s", None, None)).step_id
    await wf.set_step_result(sid, 1)
    await wf.set_step_result(sid, 2, overwrite=True)
    assert (await wf.get_step_state(run_id, "s")).result == 2
    retry = await wf.create_retry_attempt(sid, "running", overwrite=True)
    assert (retry.status, retry.attempt_count, retry.result) == ("running", 2, None)
    with pytest.raises(InvalidInputError, match="overwrite"):
        await wf.set_step_result(sid, 3, overwrite="yes")  # type: ignore[arg-type]


# ----------------------------------------------------------------- fenced writes


async def test_a_stale_leases_writes_are_refused(
    wf: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    @wf.workflow("w")
    async def w(ctx: AsyncWorkflowContext, _: Any) -> None:
        return None

    run_id = await wf.start_workflow("w", None)
    [stale] = await wf._queue.claim("frozen worker", 1, 0.2)
    step_id = await wf._queue.begin_step(stale, "s", None, None, retries=None, retry_delay=None)
    assert step_id is not None
    await asleep(0.3)  # the lease runs out; another worker takes the job over
    [owner] = await wf._queue.claim("new owner", 1, 30.0)
    assert owner.job_id == stale.job_id and owner.token != stale.token
    await wf._queue.set_step_result(owner, step_id, "new owner")

    history_before = await _count(admin_conn, schema_name, "workflow_step_history")
    queue = wf._queue
    for write in (
        lambda: queue.set_step_result(stale, step_id, "stale"),
        lambda: queue.set_step_error(stale, step_id, {"message": "stale"}),
        lambda: queue.set_step_running(stale, step_id),
        lambda: queue.set_step_scheduled(stale, step_id),
        lambda: queue.retry_attempt(stale, step_id, "running"),
        lambda: queue.begin_step(stale, "t", None, None, retries=None, retry_delay=None),
        lambda: queue.update_run_state(stale, "k", "stale"),
        lambda: queue.enqueue_step(stale, "s"),
        lambda: queue.enqueue_replay(stale),
        lambda: queue.finish_run(stale, "completed", output="stale"),
    ):
        with pytest.raises(LeaseLostError) as caught:
            await write()
        assert caught.value.run_id == run_id
    run = await wf.get_run(run_id)
    assert run is not None and (run.status, run.output) == ("running", None)
    assert (await wf.get_step_state(run_id, "s")).result == "new owner"
    assert await wf.get_run_state(run_id) == {}
    assert await _count(admin_conn, schema_name, "workflow_step_history") == history_before
    jobs = await wf.get_run_jobs(run_id)
    assert [(j["kind"], j["locked_by"]) for j in jobs] == [("replay", "new owner")]
    # The owner's own writes go through.
    assert await wf._queue.finish_run(owner, "completed", output="done")
    assert (await wf.get_run(run_id)).status == "completed"  # type: ignore[union-attr]


async def test_a_stalled_pass_cannot_rewrite_the_new_owners_result(
    wf: AsyncPgWorkflowService,
) -> None:
    """A pass frozen past its lease (here: a step that outlives it, with no heartbeat)
    wakes up after another worker finished the run: its result is refused, the pass
    stops with LeaseLostError, and the stored result is the one the run returned."""
    calls: list[str] = []
    stall = AEvent()

    async def pay(_: Any) -> str:
        calls.append("pay")
        if len(calls) == 1:
            await await_event(stall, 5.0)  # the stalled first attempt
            return "stale"
        return "fresh"

    @wf.workflow("pay")
    async def pay_flow(ctx: AsyncWorkflowContext, _: Any) -> Any:
        return await ctx.do("pay", pay)

    run_id = await wf.start_workflow("pay", None)
    [stale] = await wf._queue.claim("frozen worker", 1, 0.3)
    raised: list[BaseException] = []

    async def frozen_pass() -> None:
        try:
            await wf._engine.replay(stale, inline=False)
        except BaseException as exc:
            raised.append(exc)

    frozen = aspawn(frozen_pass, (), name="frozen pass")
    await _wait_until(lambda: _ready(calls))
    async with wf.worker(concurrency=1, **FAST):
        done = await wf.wait_for_run(run_id, timeout=10)
    assert (done.status, done.output) == ("completed", "fresh")
    stall.set()
    await agather(frozen)
    assert [type(e) for e in raised] == [LeaseLostError]
    state = await wf.get_step_state(run_id, "pay")
    assert (state.status, state.result, state.attempt_count) == ("succeeded", "fresh", 2)
    history = await wf.get_run_history(run_id)
    assert [h.result for h in history if h.status == "succeeded"] == ["fresh"]
    assert (await wf.get_run(run_id)).output == "fresh"  # type: ignore[union-attr]


async def _ready(calls: list[str]) -> bool:
    return bool(calls)


# --------------------------------------------------------------- inline ownership


async def test_an_inline_run_holds_a_lease_that_is_kept_alive(
    wf: AsyncPgWorkflowService,
) -> None:
    """inline_lease is 0.6 s; the step takes 1.5 s and a worker is polling: the keeper
    extends the lease, so the worker never takes the run over."""
    calls: list[int] = []

    async def slow(_: Any) -> str:
        calls.append(1)
        await asleep(1.5)
        return "done"

    @wf.workflow("slow")
    async def slow_flow(ctx: AsyncWorkflowContext, _: Any) -> Any:
        return await ctx.do("slow", slow)

    async with wf.worker(concurrency=1, **FAST) as worker:
        assert await wf.run_to_completion("slow", None) == "done"
        assert worker.jobs_done == 0
    assert calls == [1]
    [run] = await _runs(wf)
    assert (run.status, run.inline) == ("completed", True)
    assert await wf.get_run_jobs(run.id) == []


async def test_an_interrupted_inline_run_is_handed_to_the_workers(
    wf: AsyncPgWorkflowService,
) -> None:
    calls: list[str] = []

    async def step(name: str) -> str:
        calls.append(name)
        if name == "b" and calls.count("b") == 1:
            raise KeyboardInterrupt  # the caller is interrupted mid-run
        return name

    @wf.workflow("two")
    async def two(ctx: AsyncWorkflowContext, _: Any) -> list[str]:
        return [await ctx.do("a", step, "a"), await ctx.do("b", step, "b")]

    with pytest.raises(KeyboardInterrupt):
        await wf.run_to_completion("two", None)
    [run_id] = [r.id for r in await _runs(wf)]
    jobs = await wf.get_run_jobs(run_id)
    assert [(j["kind"], j["status"]) for j in jobs] == [("replay", "pending")]
    async with wf.worker(concurrency=1, **FAST):
        done = await wf.wait_for_run(run_id, timeout=10)
    assert (done.status, done.output) == ("completed", ["a", "b"])
    assert calls == ["a", "b", "b"]  # "a" was not run again


async def test_cancelled_callers_leave_no_run_without_an_owner(
    wf: AsyncPgWorkflowService,
) -> None:
    """Callers interrupted for real (async: asyncio.wait_for timeouts at varied points,
    before and inside the step; sync: a SIGINT delivered to the test's thread): every
    run is handed to the workers at once and finished exactly once."""
    executions: dict[tuple[str, str], int] = {}

    async def slow(key: list[str]) -> str:
        executions[(key[0], key[1])] = executions.get((key[0], key[1]), 0) + 1
        if key[1] == "slow":
            if True:  # ASYNC
                await asleep(0.2)
            else:
                time.sleep(0.5 if executions[(key[0], key[1])] == 1 else 0.0)
        return key[1]

    @wf.workflow("slow")
    async def slow_flow(ctx: AsyncWorkflowContext, _: Any) -> list[str]:
        return [await ctx.do(s, slow, [ctx.run_id, s]) for s in ("first", "slow", "last")]

    if True:  # ASYNC
        for i in range(12):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(wf.run_to_completion("slow", i), timeout=0.005 + i * 0.015)
    else:
        timer = threading.Timer(0.25, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                wf.run_to_completion("slow", 0)
        finally:
            timer.cancel()
    runs = await _runs(wf)
    for run in runs:  # nobody holds them: each waits for a worker, none is unowned
        jobs = await wf.get_run_jobs(run.id)
        assert [(j["kind"], j["status"]) for j in jobs] == [("replay", "pending")]
    async with wf.worker(concurrency=2, **FAST):
        done = [await wf.wait_for_run(run.id, timeout=20) for run in runs]
    assert {(r.status, tuple(r.output)) for r in done} == {("completed", ("first", "slow", "last"))}
    for run in runs:
        # At least once: an attempt interrupted before its result was stored runs
        # again (a cancellation may land on the result's write too); the steps
        # after the interruption run once.
        assert executions[(run.id, "last")] == 1
        assert executions.get((run.id, "first"), 0) in (1, 2)
        assert executions.get((run.id, "slow"), 0) in (1, 2)
        assert executions.get((run.id, "first"), 0) + executions[(run.id, "slow")] <= 3
        assert await wf.get_run_jobs(run.id) == []


async def test_on_cancel_cancel_cancels_the_interrupted_run(wf: AsyncPgWorkflowService) -> None:
    async def interrupted(_: Any) -> None:
        raise KeyboardInterrupt

    @wf.workflow("w")
    async def w(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.do("s", interrupted)

    with pytest.raises(KeyboardInterrupt):
        await wf.run_to_completion("w", None, on_cancel="cancel")
    [run] = await _runs(wf)
    assert run.status == "cancelled" and run.error is not None
    assert run.error.code == "CANCELLED"
    assert await wf.get_run_jobs(run.id) == []
    with pytest.raises(InvalidInputError, match="on_cancel"):
        await wf.run_to_completion("w", None, on_cancel="ignore")


async def test_a_dead_inline_caller_loses_the_run_to_a_worker_after_its_lease(
    wf: AsyncPgWorkflowService,
) -> None:
    """The caller is gone (its process died): nobody extends its lease, which runs out;
    a worker with the workflow registered takes the run over."""

    @wf.workflow("w")
    async def w(ctx: AsyncWorkflowContext, data: Any) -> Any:
        return await ctx.do("s", _echo, data)

    await wf._ensure_version(wf._definition("w"))
    job = await wf._queue.start_inline_run(
        "w", 7, graph_hash=wf._definition("w").version, wire=None, owner="dead", lease=0.3
    )
    started = time.monotonic()
    async with wf.worker(concurrency=1, **FAST):
        done = await wf.wait_for_run(job.run_id, timeout=10)
    assert (done.status, done.output, done.inline) == ("completed", 7, True)
    assert time.monotonic() - started < 0.3 + FAST["poll_interval"] + 1.0


async def _echo(data: Any) -> Any:
    return data


async def test_resume_run_adopts_a_running_run_whose_owner_is_gone(
    wf: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    @wf.workflow("w")
    async def w(ctx: AsyncWorkflowContext, data: Any) -> Any:
        return await ctx.do("s", _echo, data)

    # A run orphaned the old way (no job at all), and one whose caller holds a lease.
    orphan = await wf.create_run("w", 1, graph_hash=wf._definition("w").version)
    held = await wf._queue.start_inline_run(
        "w", 2, graph_hash=wf._definition("w").version, wire=None, owner="alive", lease=60
    )
    with pytest.raises(InvalidRunStateError, match="live lease"):
        await wf.resume_run(held.run_id)
    await wf.resume_run(orphan)
    await wf.resume_run(orphan)  # already queued: changes nothing
    assert len(await wf.get_run_jobs(orphan)) == 1
    async with wf.worker(concurrency=1, **FAST):
        assert (await wf.wait_for_run(orphan, timeout=10)).output == 1
    # The held run: once its owner is gone (lease expired), resume_to_completion takes it.
    await admin_conn.execute(
        f"UPDATE \"{schema_name}\".workflow_jobs SET locked_until = now() - interval '1 s'"
    )
    assert await wf.resume_to_completion(held.run_id) == 2
    assert await _count(admin_conn, schema_name, "workflow_jobs") == 0


async def test_run_activity_says_who_has_each_running_run(
    wf: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    @wf.workflow("w")
    async def w(ctx: AsyncWorkflowContext, _: Any) -> None:
        return None

    version = wf._definition("w").version
    queued = await wf.start_workflow("w", None)
    held = await wf._queue.start_inline_run(
        "w", None, graph_hash=version, wire=None, owner="caller", lease=60
    )
    expired = await wf._queue.start_inline_run(
        "w", None, graph_hash=version, wire=None, owner="dead", lease=0.01
    )
    sleeping = await wf.start_workflow("w", None)
    await admin_conn.execute(
        f"UPDATE \"{schema_name}\".workflow_jobs SET run_at = now() + interval '1 h' "
        "WHERE workflow_run_id = %s",
        (sleeping,),
    )
    unowned = await wf.create_run("w", None)
    await asleep(0.05)
    found = await wf.get_run_activity(
        [queued, held.run_id, expired.run_id, sleeping, unowned, "not-a-uuid"]
    )
    states = {run_id: (a.state, a.worker) for run_id, a in found.items()}
    assert states == {
        queued: ("waiting", None),
        held.run_id: ("running", "caller"),
        expired.run_id: ("waiting", None),
        sleeping: ("scheduled", None),
        unowned: ("unowned", None),
    }
    assert found[sleeping].due_at is not None
    assert found[expired.run_id].label == "waiting for a worker"
    with pytest.raises(InvalidInputError, match="run_ids"):
        await wf.get_run_activity(queued)  # type: ignore[arg-type]


async def test_the_fence_reads_one_job_with_statistics_that_lag(
    wf: AsyncPgWorkflowService, admin_conn: AsyncConnection[Any], schema_name: str
) -> None:
    """The fence of a step write finds its job by token alone, in generic and custom
    plans, even when the statistics still say the job table is empty (5,000 running
    jobs were claimed since the last ANALYZE)."""
    s = schema_name
    await admin_conn.execute(f'ANALYZE "{s}".workflow_jobs; ANALYZE "{s}".workflow_step')
    await admin_conn.execute(
        f'INSERT INTO "{s}".workflow_runs (workflow, status, input)'
        " SELECT 'w', 'running', '1' FROM generate_series(1, 5000)"
    )
    await admin_conn.execute(
        f'INSERT INTO "{s}".workflow_jobs (workflow_run_id, kind, status, lease_token,'
        " locked_until) SELECT workflow_run_id, 'replay', 'running', gen_random_uuid(),"
        f" now() + interval '1 hour' FROM \"{s}\".workflow_runs"
    )
    await admin_conn.execute(
        f'INSERT INTO "{s}".workflow_step (workflow_run_id, step_name, status)'
        f" SELECT workflow_run_id, 's', 'running' FROM \"{s}\".workflow_runs"
    )
    cur = await admin_conn.execute(
        f'SELECT j.lease_token::text, s.workflow_step_id::text FROM "{s}".workflow_jobs j'
        f' JOIN "{s}".workflow_step s USING (workflow_run_id) LIMIT 1'
    )
    row = await cur.fetchone()
    assert row is not None
    token, step_id = row
    query = wf._queue._q.set_step_scheduled.decode()
    query = query.replace("%(step_id)s", "$1").replace("%(token)s", "$2")
    for plans in ("force_generic_plan", "force_custom_plan"):
        await admin_conn.execute(f"SET plan_cache_mode = {plans}")
        await admin_conn.execute("DEALLOCATE ALL")
        await admin_conn.execute(f"PREPARE fenced(uuid, text) AS {query}")
        cur = await admin_conn.execute(
            pgsql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE fenced({}, {})").format(
                pgsql.Literal(step_id), pgsql.Literal(token)
            )
        )
        plan = "\n".join(r[0] for r in await cur.fetchall())
        assert "workflow_jobs_token_idx" in plan and "workflow_jobs_lease_idx" not in plan, plan
        assert "Seq Scan on workflow_jobs" not in plan, plan
    await admin_conn.execute("DEALLOCATE ALL")
    await admin_conn.execute("RESET plan_cache_mode")


# -------------------------------------------------------------------- recovery


async def test_an_expired_lease_is_claimed_before_a_backlog(wf: AsyncPgWorkflowService) -> None:
    @wf.workflow("w")
    async def w(ctx: AsyncWorkflowContext, _: Any) -> None:
        return None

    crashed = await wf.start_workflow("w", "crashed")
    [lost] = await wf._queue.claim("killed worker", 1, 0.1)
    assert lost.run_id == crashed
    for i in range(20):
        await wf.start_workflow("w", i)
    await asleep(0.2)
    [first] = await wf._queue.claim("survivor", 1, 30.0)
    assert first.run_id == crashed and first.attempts == 2


async def _runs(wf: AsyncPgWorkflowService) -> list[Any]:
    async with AsyncPgWorkflowRunService(wf._source, wf._schema) as console:
        return await console.list_runs()
