"""Queued runs and workers: claims, leases, delayed jobs, wake-ups, graceful stop."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pikku_pg import AsyncPgWorkflowService, AsyncWorkflowContext, WorkerOptions
from pikku_pg._acompat import AEvent, agather, asleep, aspawn, await_event
from pikku_pg.errors import InvalidInputError, InvalidRunStateError, WorkflowTimeoutError

FAST = {"lease": 2.0, "poll_interval": 0.1, "shutdown_timeout": 5.0}


@pytest.fixture
def wf(wf_owned: AsyncPgWorkflowService) -> AsyncPgWorkflowService:
    """This file's tests need one form only: an owned pool."""
    return wf_owned


def _three_steps(wf: AsyncPgWorkflowService, counts: dict[tuple[str, str], int]) -> None:
    async def count(key: list[str]) -> str:
        counts[(key[0], key[1])] = counts.get((key[0], key[1]), 0) + 1
        return key[1]

    @wf.workflow("three")
    async def three(ctx: AsyncWorkflowContext, data: Any) -> list[str]:
        out = []
        for name in ("a", "b", "c"):
            out.append(await ctx.do(name, count, [ctx.run_id, name]))
        return out


async def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asleep(0.02)


async def test_queued_run_completes_with_a_background_worker(
    wf: AsyncPgWorkflowService,
) -> None:
    counts: dict[tuple[str, str], int] = {}
    _three_steps(wf, counts)
    async with wf.worker(concurrency=2, **FAST):
        run_id = await wf.start_workflow("three", {"x": 1}, wire={"type": "queue"})
        run = await wf.wait_for_run(run_id, timeout=10)
    assert run.status == "completed" and run.output == ["a", "b", "c"]
    assert run.inline is False and run.wire.type == "queue"
    assert counts == {(run_id, "a"): 1, (run_id, "b"): 1, (run_id, "c"): 1}
    assert await wf.get_run_jobs(run_id) == []


async def test_notify_wakes_an_idle_worker_at_once(wf: AsyncPgWorkflowService) -> None:
    _three_steps(wf, {})
    async with wf.worker(concurrency=1, lease=5, poll_interval=30, shutdown_timeout=5) as w:

        async def listening() -> bool:
            return w.listener_pid is not None

        await _wait_until(listening)
        await asleep(0.1)  # the executor is now idle, waiting up to 30 s
        started = time.monotonic()
        run = await wf.wait_for_run(await wf.start_workflow("three", None), timeout=5)
        assert run.status == "completed"
        assert time.monotonic() - started < 2


async def test_polling_without_listen(wf: AsyncPgWorkflowService) -> None:
    _three_steps(wf, {})
    async with wf.worker(concurrency=1, listen=False, **FAST) as w:
        run = await wf.wait_for_run(await wf.start_workflow("three", None), timeout=5)
        assert w.listener_pid is None
    assert run.status == "completed"


async def test_a_sleeping_run_holds_no_worker(wf: AsyncPgWorkflowService) -> None:
    @wf.workflow("sleeper")
    async def sleeper(ctx: AsyncWorkflowContext, _: Any) -> str:
        await ctx.sleep("nap", "600ms")
        return "awake"

    @wf.workflow("quick")
    async def quick(ctx: AsyncWorkflowContext, _: Any) -> str:
        return "done"

    async with wf.worker(concurrency=1, **FAST):
        started = time.monotonic()
        sleeping = await wf.start_workflow("sleeper", None)

        async def parked() -> bool:
            jobs = await wf.get_run_jobs(sleeping)
            return bool(jobs) and jobs[0]["status"] == "pending"

        await _wait_until(parked)
        run = await wf.wait_for_run(await wf.start_workflow("quick", None), timeout=5)
        assert run.status == "completed"
        status = (await wf.get_run(sleeping)).status  # type: ignore[union-attr]
        assert status == "running"
        assert time.monotonic() - started < 0.6
        done = await wf.wait_for_run(sleeping, timeout=5)
    assert done.status == "completed" and done.output == "awake"
    assert time.monotonic() - started >= 0.6
    history = await wf.get_run_history(sleeping)
    assert [(h.step_name, h.status) for h in history] == [("nap", "succeeded")]
    assert history[0].scheduled_at is not None


async def test_a_burst_of_replays_queues_one_job(wf: AsyncPgWorkflowService) -> None:
    _three_steps(wf, {})
    run_id = await wf.start_workflow("three", None)
    [job] = await wf._queue.claim("a worker", 1, 30.0)
    for _ in range(5):
        assert await wf._queue.enqueue_replay(job)
    jobs = await wf.get_run_jobs(run_id)
    assert [(j["kind"], j["status"]) for j in jobs] == [("replay", "running")]
    assert jobs[0]["rerun_at"] is not None  # one more replay once this one ends


async def test_a_dead_workers_job_is_taken_after_its_lease(wf: AsyncPgWorkflowService) -> None:
    counts: dict[tuple[str, str], int] = {}
    _three_steps(wf, counts)
    run_id = await wf.start_workflow("three", None)
    # A worker claims the job and dies: nobody acks it or extends its lease.
    claimed = await wf._queue.claim("dead worker", 1, 0.5)
    assert [j.run_id for j in claimed] == [run_id]
    started = time.monotonic()
    async with wf.worker(concurrency=1, **FAST):
        await asleep(0.2)
        assert (await wf.get_run(run_id)).status == "running"  # type: ignore[union-attr]
        jobs = await wf.get_run_jobs(run_id)
        assert jobs[0]["locked_by"] == "dead worker"
        run = await wf.wait_for_run(run_id, timeout=5)
    assert run.status == "completed"
    assert time.monotonic() - started >= 0.4
    assert set(counts.values()) == {1}


async def test_graceful_stop_hands_the_run_back(wf: AsyncPgWorkflowService) -> None:
    started = AEvent()
    release = AEvent()
    ran: list[str] = []

    async def slow(_: Any) -> str:
        ran.append("slow")
        started.set()
        await await_event(release, 5)
        return "slow done"

    async def fast(_: Any) -> str:
        ran.append("fast")
        return "fast done"

    @wf.workflow("two")
    async def two(ctx: AsyncWorkflowContext, _: Any) -> list[str]:
        return [await ctx.do("slow", slow), await ctx.do("fast", fast)]

    first = wf.worker(concurrency=1, lease=30, poll_interval=0.1, shutdown_timeout=5)
    await first.start()
    run_id = await wf.start_workflow("two", None)
    assert await await_event(started, 5)
    first.request_stop()
    release.set()
    await first.stop()
    jobs = await wf.get_run_jobs(run_id)
    assert [(j["status"], j["locked_by"]) for j in jobs] == [("pending", None)]
    assert ran == ["slow"]
    assert first.jobs_done == 0  # handed back, not done
    begun = time.monotonic()
    async with wf.worker(concurrency=1, lease=30, poll_interval=0.1, shutdown_timeout=5):
        run = await wf.wait_for_run(run_id, timeout=5)
    assert time.monotonic() - begun < 3  # not the 30 s lease
    assert run.status == "completed" and run.output == ["slow done", "fast done"]
    assert ran == ["slow", "fast"]


async def test_cancel_drops_the_pending_jobs_of_a_sleeping_run(
    wf: AsyncPgWorkflowService,
) -> None:
    @wf.workflow("long nap")
    async def long_nap(ctx: AsyncWorkflowContext, _: Any) -> None:
        await ctx.sleep("nap", "1h")

    async with wf.worker(concurrency=1, **FAST):
        run_id = await wf.start_workflow("long nap", None)

        async def sleeping() -> bool:
            steps = await wf.get_run_steps(run_id)
            jobs = await wf.get_run_jobs(run_id)
            return bool(steps) and steps[0].status == "scheduled" and jobs[0]["status"] == "pending"

        await _wait_until(sleeping)
        await wf.cancel_run(run_id, "no longer needed")
        run = await wf.get_run(run_id)
        assert run is not None and run.status == "cancelled"
        assert await wf.get_run_jobs(run_id) == []
        with pytest.raises(InvalidRunStateError):
            await wf.cancel_run(run_id)


async def test_queued_rpc_steps_run_as_step_jobs(wf: AsyncPgWorkflowService) -> None:
    @wf.rpc("resize", queued=True)
    async def resize(data: dict[str, int]) -> int:
        return data["size"] // 2

    @wf.workflow("images")
    async def images(ctx: AsyncWorkflowContext, data: Any) -> list[int]:
        small = await ctx.do("small", "resize", {"size": data})
        smaller = await ctx.do("smaller", "resize", {"size": small})
        return [small, smaller]

    async with wf.worker(concurrency=2, **FAST):
        run = await wf.wait_for_run(await wf.start_workflow("images", 100), timeout=10)
    assert run.status == "completed" and run.output == [50, 25]
    history = await wf.get_run_history(run.id)
    assert [(h.step_name, h.status) for h in history] == [
        ("small", "succeeded"),
        ("smaller", "succeeded"),
    ]
    assert all(h.scheduled_at is not None for h in history)


async def test_queued_retry_waits_as_a_delayed_job(wf: AsyncPgWorkflowService) -> None:
    calls: list[float] = []

    async def flaky(_: Any) -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TimeoutError("first try times out")
        return "ok"

    @wf.workflow("retrying")
    async def retrying(ctx: AsyncWorkflowContext, _: Any) -> Any:
        return await ctx.do("call", flaky, retries=2, retry_delay="300ms")

    async with wf.worker(concurrency=1, **FAST):
        run = await wf.wait_for_run(await wf.start_workflow("retrying", None), timeout=10)
    assert run.status == "completed" and run.output == "ok"
    assert calls[1] - calls[0] >= 0.25
    history = await wf.get_run_history(run.id)
    assert [h.status for h in history] == ["failed", "succeeded"]
    assert history[0].error is not None and history[0].error.name == "TimeoutError"


async def test_queued_rpc_retries_back_off_exponentially(
    wf: AsyncPgWorkflowService, schema_name: str, admin_conn: Any
) -> None:
    """The back-off of a queued RPC step travels with its job: 10 s, then 20 s."""
    attempts: list[int] = []

    @wf.rpc("charge", queued=True)
    async def charge(_: Any) -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError(f"gateway down (attempt {len(attempts)})")
        return "charged"

    @wf.workflow("pay")
    async def pay(ctx: AsyncWorkflowContext, _: Any) -> Any:
        return await ctx.do("charge", "charge", retries=2, retry_delay="10s", backoff="exponential")

    async def step_job_delay(failures: int) -> float:
        """Once ``failures`` attempts failed: seconds until the step job is due."""

        async def waiting() -> bool:
            jobs = await wf.get_run_jobs(run_id)
            step_jobs = [j for j in jobs if j["kind"] == "step"]
            return (
                len(attempts) == failures
                and bool(step_jobs)
                and step_jobs[0]["status"] == "pending"
                and step_jobs[0]["attempts"] == failures
            )

        await _wait_until(waiting)
        cur = await admin_conn.execute(
            f'SELECT extract(epoch FROM run_at - updated_at) FROM "{schema_name}".workflow_jobs'
            " WHERE kind = 'step'"
        )
        row = await cur.fetchone()
        # Make it due now, so the test does not wait for the back-off itself.
        await admin_conn.execute(
            f"UPDATE \"{schema_name}\".workflow_jobs SET run_at = now() WHERE kind = 'step'"
        )
        return float(row[0])

    async with wf.worker(concurrency=1, **FAST):
        run_id = await wf.start_workflow("pay", None)
        assert await step_job_delay(1) == pytest.approx(10.0, abs=0.5)
        assert await step_job_delay(2) == pytest.approx(20.0, abs=0.5)
        run = await wf.wait_for_run(run_id, timeout=10)
    assert run.status == "completed" and run.output == "charged"
    assert attempts == [1, 2, 3]


async def test_suspend_and_resume_queued(wf: AsyncPgWorkflowService) -> None:
    @wf.workflow("approval")
    async def approval(ctx: AsyncWorkflowContext, _: Any) -> str:
        await ctx.suspend("needs approval")
        return "approved"

    async with wf.worker(concurrency=1, **FAST):
        run_id = await wf.start_workflow("approval", None)
        run = await wf.wait_for_run(run_id, timeout=5)
        assert run.status == "suspended"
        await wf.resume_run(run_id)
        try:  # already resumed: queued (changes nothing), or held by the worker
            await wf.resume_run(run_id)
        except InvalidRunStateError as exc:
            assert "live lease" in str(exc)
        assert len(await wf.get_run_jobs(run_id)) <= 1
        run = await wf.wait_for_run(run_id, timeout=5)
    assert run.status == "completed" and run.output == "approved"


async def test_many_runs_two_workers_every_step_once(pg_dsn: str, schema_name: str) -> None:
    counts: dict[tuple[str, str], int] = {}
    services = [AsyncPgWorkflowService(pg_dsn, schema_name) for _ in range(2)]
    await services[0].init()
    for service in services:
        _three_steps(service, counts)
    try:
        run_ids = [await services[0].start_workflow("three", i) for i in range(30)]
        async with (
            services[0].worker(concurrency=3, **FAST),
            services[1].worker(concurrency=3, **FAST),
        ):
            runs = [await services[0].wait_for_run(r, timeout=20) for r in run_ids]
    finally:
        for service in services:
            await service.close()
    assert {r.status for r in runs} == {"completed"}
    assert len(counts) == 90 and set(counts.values()) == {1}


async def test_a_job_whose_workflow_is_missing_keeps_its_error(
    pg_dsn: str, schema_name: str
) -> None:
    async with (
        AsyncPgWorkflowService(pg_dsn, schema_name) as starter,
        AsyncPgWorkflowService(pg_dsn, schema_name) as other,
    ):
        await starter.init()

        @starter.workflow("ghost")
        async def ghost(ctx: AsyncWorkflowContext, _: Any) -> None:
            return None

        run_id = await starter.start_workflow("ghost", None)
        async with other.worker(concurrency=1, **FAST):

            async def errored() -> bool:
                jobs = await other.get_run_jobs(run_id)
                return bool(jobs) and jobs[0]["last_error"] is not None

            await _wait_until(errored)
        jobs = await other.get_run_jobs(run_id)
        assert "not registered" in jobs[0]["last_error"]["message"]
        assert jobs[0]["status"] == "pending"


async def test_run_worker_blocks_until_stopped(wf: AsyncPgWorkflowService) -> None:
    _three_steps(wf, {})

    async def serve() -> None:
        await wf.run_worker(concurrency=1, **FAST)

    task = aspawn(serve)
    try:
        run = await wf.wait_for_run(await wf.start_workflow("three", None), timeout=5)
        assert run.status == "completed"
    finally:
        wf.stop_workers()
        await agather(task, timeout=10)


async def test_wait_for_run_times_out(wf: AsyncPgWorkflowService) -> None:
    _three_steps(wf, {})
    run_id = await wf.start_workflow("three", None)  # no worker
    with pytest.raises(WorkflowTimeoutError, match=run_id):
        await wf.wait_for_run(run_id, timeout=0.1)
    with pytest.raises(InvalidInputError):
        await wf.wait_for_run(run_id, timeout=-1)


async def test_worker_arguments_are_checked(wf: AsyncPgWorkflowService) -> None:
    for kwargs in (
        {"concurrency": 0},
        {"concurrency": True},
        {"concurrency": 10**6},
        {"lease": -1},
        {"lease": 0},
        {"lease": 1e300},
        {"poll_interval": "1s"},
        {"listen": "yes"},
        {"shutdown_timeout": float("nan")},
        {"name": "a\x00b"},
        {"name": "n" * 1000},
    ):
        [option] = kwargs
        with pytest.raises(InvalidInputError, match=f"^{option} "):
            wf.worker(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match=f"^{option} "):
            await wf.run_worker(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match=f"^{option} "):
            WorkerOptions(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="options must be a WorkerOptions"):
        wf.worker({"lease": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'leese'"):
        wf.worker(leese=1)  # type: ignore[call-arg]
    assert wf._workers == []  # nothing was made


async def test_worker_options_and_keyword_overrides(wf: AsyncPgWorkflowService) -> None:
    base = WorkerOptions(concurrency=2, lease=10, name="base")
    worker = wf.worker(base, lease=20)
    assert worker.options == WorkerOptions(concurrency=2, lease=20.0, name="base")
    assert (worker.concurrency, worker.lease, worker.name) == (2, 20.0, "base")
    assert wf.worker().options == WorkerOptions()


async def test_the_listener_reconnects_after_its_backend_is_killed(
    wf: AsyncPgWorkflowService, admin_conn: Any
) -> None:
    """Killed while idle: it LISTENs again, and a NOTIFY still wakes the worker at once."""
    _three_steps(wf, {})
    async with wf.worker(concurrency=1, lease=5, poll_interval=30, shutdown_timeout=5) as w:

        async def listening() -> bool:
            return w.listener_pid is not None

        await _wait_until(listening)
        first = w.listener_pid
        await asleep(0.1)  # the executor is idle now, waiting up to 30 s
        await admin_conn.execute("SELECT pg_terminate_backend(%s)", (first,))

        async def relistening() -> bool:
            return w.listener_pid not in (None, first) and w.listener_reconnects == 1

        await _wait_until(relistening)
        await asleep(0.1)
        started = time.monotonic()
        run = await wf.wait_for_run(await wf.start_workflow("three", None), timeout=5)
        assert run.status == "completed"
        assert time.monotonic() - started < 2


async def test_workers_recover_when_their_connections_die(
    pg_dsn: str, schema_name: str, admin_conn: Any
) -> None:
    """What a server restart does to a worker: every connection dropped mid-run."""
    app = f"wf-{schema_name}"
    service = AsyncPgWorkflowService(pg_dsn, schema_name, connect_kwargs={"application_name": app})
    await service.init()
    observer = AsyncPgWorkflowService(pg_dsn, schema_name)

    async def step(name: str) -> str:
        await asleep(0.05)
        return name

    @service.workflow("slowish")
    async def slowish(ctx: AsyncWorkflowContext, _: Any) -> list[str]:
        return [await ctx.do(n, step, n) for n in ("a", "b", "c")]

    try:
        run_ids = [await service.start_workflow("slowish", i) for i in range(8)]
        async with service.worker(concurrency=4, lease=1.0, poll_interval=0.1) as w:

            async def listening() -> bool:
                return w.listener_pid is not None

            await _wait_until(listening)
            before = w.listener_pid
            await asleep(0.1)
            cur = await admin_conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (app,),
            )
            assert (await cur.fetchone())[0] >= 2
            runs = [await observer.wait_for_run(r, timeout=30) for r in run_ids]

            async def relistening() -> bool:
                return w.listener_pid is not None and w.listener_pid != before

            await _wait_until(relistening)
    finally:
        await service.close()
        await observer.close()
    assert {r.status for r in runs} == {"completed"}
    assert {tuple(r.output) for r in runs} == {("a", "b", "c")}


async def test_the_heartbeat_keeps_a_long_step_from_being_taken(
    pg_dsn: str, schema_name: str
) -> None:
    """A step longer than the lease: the lease is extended, no other worker runs it."""
    ran: list[str] = []
    services = [AsyncPgWorkflowService(pg_dsn, schema_name) for _ in range(2)]
    await services[0].init()
    for service in services:

        @service.workflow("long step", version="1")
        async def long_step(ctx: AsyncWorkflowContext, _: Any) -> str:
            async def slow(_: Any) -> str:
                ran.append("slow")
                await asleep(1.2)
                return "done"

            result: str = await ctx.do("slow", slow)
            return result

    fast = {"lease": 0.5, "poll_interval": 0.05, "shutdown_timeout": 5.0}
    try:
        async with services[0].worker(concurrency=1, **fast):
            run_id = await services[0].start_workflow("long step", None)

            async def started() -> bool:
                return bool(ran)

            await _wait_until(started)
            async with services[1].worker(concurrency=1, **fast):
                run = await services[0].wait_for_run(run_id, timeout=10)
    finally:
        for service in services:
            await service.close()
    assert run.status == "completed" and run.output == "done"
    assert ran == ["slow"]
