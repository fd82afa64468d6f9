"""The replay engine: the workflow context (``do`` / ``sleep`` / ``suspend``) and its
caching rules.

A replay pass calls the workflow function from the start. Each ``ctx.do`` looks
its step up by name among the run's stored steps: a step that succeeded returns
its stored result without running again; a step that was running when its
worker died runs again as a new attempt (at-least-once); a new step is stored,
then run. What the pass cannot finish now ends it early with an internal signal:
a sleep or a retry delay (queued runs come back through a delayed replay job, so
a sleeping run holds no worker), a queued RPC step (run by a step job on any
worker), a suspension, a cancellation seen at a step boundary, or a graceful stop
of the worker.

The engine holds no SQL: it reads through the state store and writes through the
queue, whose writes are fenced by the lease of the job the pass holds (a worker's
claim, or an inline caller's own claim): once another runner has taken the run
over, every write of this one is refused and the pass stops with
:class:`~pikku_pg.errors.LeaseLostError`. Inline runs (``run_to_completion``)
sleep and wait out retry delays in the caller instead of yielding.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import psycopg

from pikku_pg._acompat import asleep
from pikku_pg._async.workflow_queue import AsyncWorkflowQueue, Job
from pikku_pg._check import quote
from pikku_pg._json import jsonb
from pikku_pg._rows.workflow import serialize_exception
from pikku_pg._workflow_rules import (
    NON_DETERMINISTIC,
    RPC_NOT_FOUND,
    SUSPENDED,
    VERSION_CONFLICT,
    backoff_delay,
    check_backoff,
    check_name,
    check_retries,
    error_record,
    exception_record,
    parse_duration,
    parse_retry_delay,
    retry_delay_text,
    stored_error_dict,
)
from pikku_pg.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    LeaseLostError,
    NonDeterminismError,
    StepExistsError,
    StepFailedError,
    WorkflowVersionConflictError,
)
from pikku_pg.models.workflow import StepStatus, WorkflowRun, WorkflowRunStep

if TYPE_CHECKING:
    from pikku_pg._async.workflow_state import AsyncWorkflowStateStore

# async flavour: coroutine functions (plain functions are accepted too);  # unasync: keep
# sync flavour: plain functions.
WorkflowFunction = Callable[..., Any]
RpcFunction = Callable[..., Any]


@dataclass(frozen=True)
class WorkflowDefinition:
    """A registered workflow: its function and the version recorded on its runs."""

    name: str
    fn: WorkflowFunction
    version: str
    source: str


@dataclass(frozen=True)
class RpcDefinition:
    """A registered RPC: a named step function; ``queued`` ones run as step jobs."""

    name: str
    fn: RpcFunction
    queued: bool


@dataclass(frozen=True)
class StepCall:
    """One ``ctx.do`` call, checked: what to run and how to retry it."""

    name: str
    #: The step function, or the name of a registered RPC.
    target: str | Callable[..., Any]
    data: Any
    retries: int
    #: As stored (``"2s"``, milliseconds as text), and in seconds.
    retry_delay: str | None
    base_delay: float
    backoff: str
    rpc_name: str | None
    #: The registered RPC (None for a callable, or an RPC name not registered here).
    rpc: RpcDefinition | None

    def queued_in(self, state: _Pass) -> bool:
        """Whether a worker runs this step as a separate step job (queued RPCs of
        queued runs; inline runs run every step in the caller)."""
        return self.rpc is not None and self.rpc.queued and not state.inline


#: How a pass can leave a run: a status it moved the run to (or found it in)...
RunEnd = Literal["completed", "failed", "suspended", "cancelled", "running"]
#: ...or no status change: no such run, the run continues later, the worker stops.
PassStop = Literal["missing", "yielded", "handed_back"]


@dataclass
class Outcome:
    """How a replay pass ended.

    ``status`` is a run status (:data:`RunEnd`) or a :data:`PassStop`:
    ``"yielded"`` (the run continues later: ``delay`` seconds, or None when a step
    job will queue the next replay), ``"handed_back"`` (the worker is stopping) or
    ``"missing"`` (the run was deleted).
    """

    status: RunEnd | PassStop
    output: Any = None
    error: dict[str, Any] | None = None
    delay: float | None = None


# Control flow of a pass: BaseException, so a workflow's ``except Exception`` does
# not swallow them.
class _Signal(BaseException):
    pass


class _Suspend(_Signal):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


class _Yield(_Signal):
    def __init__(self, delay: float | None) -> None:
        super().__init__(delay)
        self.delay = delay


class _Cancelled(_Signal):
    pass


class _HandBack(_Signal):
    pass


class _Unavailable(_Signal):
    """The database failed under the engine, or another runner took the run over
    (:class:`LeaseLostError`): the pass stops at once, the run is not failed (a
    worker retries the job; an inline caller gets the error)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# Errors of the engine's own database calls (not of step functions: those are
# step failures), and the refusal of a write whose lease is gone.
_DATABASE_DOWN = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    DatabaseUnavailableError,
    LeaseLostError,
)


class _Fatal(_Signal):
    """Fails the run whatever the workflow catches (non-determinism, bad step values)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


async def invoke(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a workflow, RPC or step function of this flavour."""
    result = fn(*args)
    if True:  # ASYNC
        if inspect.isawaitable(result):
            result = await result
    else:
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise InvalidInputError(
                f"{getattr(fn, '__qualname__', fn)!r} is a coroutine function; the sync "
                "service runs plain functions (use AsyncPgWorkflowService)"  # unasync: keep
            )
    return result


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _fatal(exc: BaseException, code: str | None = None) -> _Fatal:
    record = serialize_exception(exc)
    if code is not None:
        record["code"] = code
    return _Fatal(record)


@dataclass
class _Pass:
    """What one replay pass knows: the run, its steps by name, the job whose lease
    fences its writes, how it runs."""

    run: WorkflowRun
    steps: dict[str, WorkflowRunStep]
    job: Job
    inline: bool
    should_stop: Callable[[], bool] | None
    suspend_count: int = 0
    last_check: float = field(default_factory=time.monotonic)


class AsyncWorkflowContext:
    """What a workflow function receives: durable steps, sleeps, suspension, run state.

    Step names are the cache keys: within a run, a name always means the same step.
    """

    def __init__(self, engine: AsyncReplayEngine, state: _Pass) -> None:
        self._engine = engine
        self._state = state

    @property
    def run_id(self) -> str:
        """The id of the run."""
        return self._state.run.id

    @property
    def workflow_name(self) -> str:
        """The name of the workflow being run."""
        return self._state.run.workflow

    @property
    def input(self) -> Any:
        """The input the run was started with."""
        return self._state.run.input

    async def do(
        self,
        step_name: str,
        fn_or_rpc_name: str | Callable[..., Any],
        data: Any = None,
        *,
        retries: int | None = None,
        retry_delay: float | str | None = None,
        backoff: str = "fixed",
    ) -> Any:
        """Run a step once per run and return its (stored) result.

        ``fn_or_rpc_name`` is a callable (called as ``fn(data)``) or the name of a
        registered RPC. A replay returns the stored result without running it
        again. ``retries`` more attempts follow a failure, ``retry_delay`` apart
        (seconds or ``"2s"``; ``backoff="exponential"`` doubles it per attempt).
        When no attempt is left this raises :class:`StepFailedError`. An RPC name
        that is not registered suspends the run with code ``RPC_NOT_FOUND``.
        """
        call = self._engine.step_call(
            step_name, fn_or_rpc_name, data, retries, retry_delay, backoff
        )
        try:
            return await self._engine.do_step(self._state, call)
        except _DATABASE_DOWN as exc:
            raise _Unavailable(exc) from exc

    async def sleep(self, step_name: str, duration: float | str) -> None:
        """Sleep durably: seconds, or ``"500ms"``, ``"2s"``, ``"5m"``, ``"1h"``, ``"1d"``.

        A queued run is parked (no worker held) and replayed when the time is up.
        """
        try:
            await self._engine.sleep_step(self._state, step_name, duration)
        except _DATABASE_DOWN as exc:
            raise _Unavailable(exc) from exc

    async def suspend(self, reason: str) -> None:
        """Park the run (status ``suspended``) until ``resume_run`` is called.

        After the resume, the replay passes this call and continues.
        """
        try:
            await self._engine.suspend_step(self._state, reason)
        except _DATABASE_DOWN as exc:
            raise _Unavailable(exc) from exc

    async def update_run_state(self, name: str, value: Any) -> None:
        """Set one named value of the run's state."""
        try:
            await self._engine.queue.update_run_state(self._state.job, name, value)
        except _DATABASE_DOWN as exc:
            raise _Unavailable(exc) from exc

    async def get_run_state(self) -> dict[str, Any]:
        """The run's state values by name."""
        try:
            return await self._engine.store.get_run_state(self.run_id)
        except _DATABASE_DOWN as exc:
            raise _Unavailable(exc) from exc


class AsyncReplayEngine:
    """Runs replay passes and queued step jobs over a state store and a queue."""

    #: Seconds between two checks for a cancellation of the run at the boundaries
    #: that do not store a new step (a new step is only stored while the run runs).
    cancel_check_interval: float = 0.0

    def __init__(
        self,
        store: AsyncWorkflowStateStore,
        queue: AsyncWorkflowQueue,
        workflows: Mapping[str, WorkflowDefinition],
        rpcs: Mapping[str, RpcDefinition],
    ) -> None:
        self.store = store
        self.queue = queue
        self._workflows = workflows
        self._rpcs = rpcs

    # ------------------------------------------------------------------ passes

    async def replay(
        self,
        job: Job,
        *,
        inline: bool,
        should_stop: Callable[[], bool] | None = None,
        run: WorkflowRun | None = None,
        fresh: bool = False,
    ) -> Outcome:
        """Run one replay pass of ``job``'s run and record how it ended.

        ``job``: the claimed replay job (acked, or rescheduled for a sleep); its
        lease fences every write of the pass. ``run`` and ``fresh`` (a run just
        created, so without steps) save round trips. Raises
        :class:`LeaseLostError` when another runner took the run over.
        """
        run_id = job.run_id
        if run is None:
            run = await self.store.get_run(run_id)
        if run is None or run.status != "running":
            await self.queue.ack(job)
            if run is None:
                return Outcome("missing")
            return Outcome(run.status, run.output, stored_error_dict(run.error))
        workflow = self._workflows.get(run.workflow)
        if workflow is None:
            # Not deployed on this process: another worker (or a later deploy) runs it.
            await self.queue.reschedule(
                job, 5.0, error_record(f"workflow {quote(run.workflow)} is not registered here")
            )
            return Outcome("yielded", delay=5.0)
        if run.graph_hash is not None and run.graph_hash != workflow.version:
            exc = WorkflowVersionConflictError(
                f"run {run.id} was started by version {run.graph_hash} of workflow "
                f"{quote(run.workflow)}; the registered code is version {workflow.version}"
            )
            error = serialize_exception(exc)
            error["code"] = VERSION_CONFLICT
            return await self._settle(Outcome("failed", error=error), job, inline)
        steps = {} if fresh else {s.step_name: s for s in await self.store.get_run_steps(run.id)}
        state = _Pass(run, steps, job, inline, should_stop)
        outcome = await self._run_pass(workflow, state)
        return await self._settle(outcome, job, inline)

    async def _run_pass(self, workflow: WorkflowDefinition, state: _Pass) -> Outcome:
        """Call the workflow function from the start; how it stopped, as an outcome."""
        ctx = AsyncWorkflowContext(self, state)
        try:
            output = await invoke(workflow.fn, ctx, state.run.input)
        except _Suspend as sig:
            return Outcome("suspended", error=sig.error)
        except _Yield as sig:
            return Outcome("yielded", delay=sig.delay)
        except _Cancelled:
            return Outcome("cancelled")
        except _HandBack:
            return Outcome("handed_back")
        except _Fatal as sig:
            return Outcome("failed", error=sig.error)
        except _Unavailable as sig:
            raise sig.error from None
        except Exception as exc:
            return Outcome("failed", error=exception_record(exc))
        try:
            jsonb(output)
        except InvalidInputError as exc:
            message = f"the workflow output cannot be stored: {exc}"
            return Outcome("failed", error=error_record(message, name="InvalidInputError"))
        return Outcome("completed", output=output)

    async def _settle(self, outcome: Outcome, job: Job, inline: bool) -> Outcome:
        """Store how a pass ended (run status, job ack or reschedule)."""
        if outcome.status in ("completed", "failed", "suspended"):
            done = await self.queue.finish_run(
                job, outcome.status, output=outcome.output, error=outcome.error
            )
            if not done:  # cancelled (or finished) meanwhile: that status stands
                run = await self.store.get_run(job.run_id)
                if run is not None:
                    return Outcome(run.status, run.output, stored_error_dict(run.error))
            return outcome
        if outcome.status == "yielded" and outcome.delay is not None:
            await self.queue.reschedule(job, outcome.delay)
        elif outcome.status == "handed_back":
            await self.queue.reschedule(job, 0.0)
        else:  # cancelled, or waiting for a step job that queues the next replay
            await self.queue.ack(job)
        if outcome.status == "cancelled" and inline:
            run = await self.store.get_run(job.run_id)
            if run is not None and run.error is not None:
                outcome.error = stored_error_dict(run.error)
        return outcome

    # ------------------------------------------------------------- boundaries

    async def _boundary(self, state: _Pass, *, check_db: bool = True) -> None:
        """Before a step runs: stop for a graceful worker stop or a cancellation."""
        if state.should_stop is not None and state.should_stop():
            raise _HandBack()
        if not check_db:
            return
        now = time.monotonic()
        if now - state.last_check >= self.cancel_check_interval:
            state.last_check = now
            if await self.queue.run_status(state.run.id) != "running":
                raise _Cancelled()

    # ------------------------------------------------------------------ steps

    def step_call(
        self,
        step_name: str,
        target: str | Callable[..., Any],
        data: Any,
        retries: int | None,
        retry_delay: float | str | None,
        backoff: str,
    ) -> StepCall:
        """A ``ctx.do`` call, checked (bad values raise InvalidInputError)."""
        name = check_name("step", step_name)
        rpc_name: str | None = None
        if isinstance(target, str):
            rpc_name = check_name("RPC", target)
        elif not callable(target):
            raise InvalidInputError(
                f"step {quote(name)}: expected a callable or an RPC name, "
                f"not {type(target).__name__}"
            )
        delay_text = retry_delay_text(retry_delay)
        return StepCall(
            name=name,
            target=target,
            data=data,
            retries=check_retries(retries),
            retry_delay=delay_text,
            base_delay=parse_retry_delay(delay_text),
            backoff=check_backoff(backoff),
            rpc_name=rpc_name,
            rpc=None if rpc_name is None else self._rpcs.get(rpc_name),
        )

    async def do_step(self, state: _Pass, call: StepCall) -> Any:
        """One ``ctx.do``: the stored result of a step that succeeded, or the step run
        now, its failures retried, its result stored.

        The machine, per step: *new* (stored as running, or pending for a queued
        RPC) → attempts (each failure recorded, then a retry now, after a delay, or
        :class:`StepFailedError` when none is left) → *succeeded* (final). A step
        found *running* or *failed* (its runner died, or the retry was not recorded)
        gets a new attempt; one found *scheduled* waits out its retry delay first.
        """
        step = self._resolve(state, call)
        if step is not None and step.status == "succeeded":
            return step.result
        status: StepStatus | Literal["started"]
        if step is None:
            await self._boundary(state, check_db=False)
            step_id = await self._create(state, call)
            attempt, data = 1, call.data
            status = "pending" if call.queued_in(state) else "started"
        else:
            await self._boundary(state)
            step_id, attempt, data, status = (
                step.step_id,
                step.attempt_count,
                step.data,
                step.status,
            )
        if call.queued_in(state):
            if status == "pending":
                await self.queue.set_step_scheduled(state.job, step_id)
            # Idempotent: one job per step; the step job queues the next replay.
            await self.queue.enqueue_step(state.job, call.name, backoff=call.backoff)
            raise _Yield(None)
        attempt = await self._start_attempt(state, call, step, step_id, attempt, status)
        return await self._attempts(state, call, step_id, attempt, data)

    def _resolve(self, state: _Pass, call: StepCall) -> WorkflowRunStep | None:
        """The step stored under the call's name (None: a new step).

        Raises for a replay that asks for another step than the one recorded, a
        step with no attempt left, or an RPC that is not registered (unless the
        step already succeeded: its stored result stands).
        """
        step = state.steps.get(call.name)
        if step is not None:
            if step.rpc_name != call.rpc_name:
                raise _fatal(
                    NonDeterminismError(
                        f"step {quote(call.name)} of run {state.run.id} was recorded with "
                        f"{_describe(step.rpc_name)}, but the workflow now asks for "
                        f"{_describe(call.rpc_name)}: the code changed under a running run"
                    ),
                    NON_DETERMINISTIC,
                )
            if step.status == "succeeded":
                return step
            if step.status == "failed" and step.attempt_count >= 1 + (step.retries or 0):
                raise StepFailedError(call.name, stored_error_dict(step.error))
        if call.rpc_name is not None and call.rpc is None:
            raise _Suspend(
                error_record(
                    f"step {quote(call.name)}: no RPC named {quote(call.rpc_name)} is registered "
                    "(deploy it, then resume the run)",
                    code=RPC_NOT_FOUND,
                    name="RpcNotFoundError",
                )
            )
        return step

    async def _create(self, state: _Pass, call: StepCall) -> str:
        """Store a new step (running, or pending for a queued RPC); returns its id."""
        try:
            # Checks the run is still running, under the pass's lease.
            step_id = await self.queue.begin_step(
                state.job,
                call.name,
                call.rpc_name,
                call.data,
                retries=call.retries,
                retry_delay=call.retry_delay,
                running=not call.queued_in(state),
            )
        except InvalidInputError as exc:
            raise _Fatal(
                error_record(f"step {quote(call.name)}: {exc}", name="InvalidInputError")
            ) from None
        except StepExistsError as exc:
            # Another pass stored it meanwhile: stop this pass; the job runs again
            # with the stored steps.
            raise _Unavailable(exc) from None
        if step_id is None:
            raise _Cancelled()
        return step_id

    async def _start_attempt(
        self,
        state: _Pass,
        call: StepCall,
        step: WorkflowRunStep | None,
        step_id: str,
        attempt: int,
        status: StepStatus | Literal["started"],
    ) -> int:
        """Make the step's current attempt the running one; returns its number."""
        if status == "started":  # just created, already running
            return attempt
        if status == "scheduled":
            # A retry waiting for its delay: run it once the delay is over.
            assert step is not None
            wait = backoff_delay(call.base_delay, attempt - 1, call.backoff)
            remaining = (step.updated_at.timestamp() + wait) - _utcnow().timestamp()
            if remaining > 0:
                if not state.inline:
                    raise _Yield(remaining)
                await asleep(remaining)
        elif status in ("running", "failed"):
            # Running: its runner died mid-attempt. Failed: the retry was not
            # recorded yet. Either way: a new attempt.
            return await self.queue.retry_attempt(state.job, step_id, "running")
        await self.queue.set_step_running(state.job, step_id)
        return attempt

    async def _attempts(
        self, state: _Pass, call: StepCall, step_id: str, attempt: int, data: Any
    ) -> Any:
        """Run the step's attempts from ``attempt`` on; returns the stored result."""
        fn: Callable[..., Any] = call.rpc.fn if call.rpc is not None else call.target  # type: ignore[assignment]
        while True:
            try:
                result = await invoke(fn, data)
            except Exception as exc:
                if not await self._record_failure(state.job, step_id, exc, attempt, call.retries):
                    raise StepFailedError(call.name, serialize_exception(exc)) from exc
                wait = backoff_delay(call.base_delay, attempt, call.backoff)
                if wait > 0 and not state.inline:
                    await self._park_retry(state.job, step_id)
                    raise _Yield(wait) from None
                if wait > 0:
                    await asleep(wait)
                await self._boundary(state)
                attempt = await self.queue.retry_attempt(state.job, step_id, "running")
                continue
            await self._store_result(state.job, step_id, call.name, result)
            return result

    async def _record_failure(
        self, job: Job, step_id: str, exc: Exception, attempt: int, retries: int | None
    ) -> bool:
        """Store a failed attempt; returns whether another attempt is left."""
        await self.queue.set_step_error(job, step_id, exc)
        return attempt < 1 + (retries or 0)

    async def _park_retry(self, job: Job, step_id: str) -> None:
        """A retry that waits for its delay: a new pending attempt, scheduled."""
        await self.queue.retry_attempt(job, step_id, "pending")
        await self.queue.set_step_scheduled(job, step_id)

    async def _store_result(self, job: Job, step_id: str, name: str, result: Any) -> None:
        """Store a step's result; one that cannot be stored fails the run."""
        try:
            await self.queue.set_step_result(job, step_id, result)
        except InvalidInputError as exc:
            error = error_record(
                f"step {quote(name)} returned a value that cannot be stored: {exc}",
                name="InvalidInputError",
            )
            await self.queue.set_step_error(job, step_id, error)
            raise _Fatal(error) from None

    async def sleep_step(self, state: _Pass, step_name: str, duration: float | str) -> None:
        name = check_name("step", step_name)
        seconds = parse_duration(duration)
        step = state.steps.get(name)
        if step is not None:
            if step.rpc_name is not None:
                raise _fatal(
                    NonDeterminismError(
                        f"step {quote(name)} of run {state.run.id} was recorded with "
                        f"{_describe(step.rpc_name)}, but the workflow now sleeps there"
                    ),
                    NON_DETERMINISTIC,
                )
            if step.status == "succeeded":
                return
        await self._boundary(state)
        if step is None or step.status != "scheduled":
            if step is None:
                created = await self._insert_step(state, name, {"sleepMs": seconds * 1000.0})
                step_id = created
            else:
                step_id = step.step_id
            await self.queue.set_step_scheduled(state.job, step_id)
            remaining = seconds
        else:
            step_id = step.step_id
            remaining = step.updated_at.timestamp() + seconds - _utcnow().timestamp()
        if remaining > 0:
            if not state.inline:
                raise _Yield(remaining)
            await asleep(remaining)
        await self.queue.set_step_running(state.job, step_id)
        await self.queue.set_step_result(state.job, step_id, None)

    async def suspend_step(self, state: _Pass, reason: str) -> None:
        if not isinstance(reason, str):
            raise InvalidInputError(f"reason must be a str, not {type(reason).__name__}")
        state.suspend_count += 1
        name = f"$suspend:{state.suspend_count}"
        step = state.steps.get(name)
        if step is not None:
            if step.status != "succeeded":
                # This pass runs because the run was resumed.
                await self.queue.set_step_running(state.job, step.step_id)
                await self.queue.set_step_result(state.job, step.step_id, None)
            return
        await self._boundary(state)
        await self._insert_step(state, name, {"reason": reason})
        raise _Suspend(error_record(reason, code=SUSPENDED, name="WorkflowSuspended"))

    async def _insert_step(self, state: _Pass, name: str, data: Any) -> str:
        """Store a new pending step of the pass's run (a sleep, a suspension)."""
        step_id = await self.queue.begin_step(
            state.job, name, None, data, retries=None, retry_delay=None, running=False
        )
        if step_id is None:
            raise _Cancelled()
        return step_id

    # -------------------------------------------------------------- step jobs

    async def run_step_job(self, job: Job, should_stop: Callable[[], bool] | None = None) -> bool:
        """Run one queued RPC step, then queue a replay of its run.

        Returns False if the job was handed back unrun (``should_stop``), True otherwise.
        """
        assert job.step_name is not None
        if await self.queue.run_status(job.run_id) != "running":
            await self.queue.ack(job)
            return True
        steps = await self.store.get_run_steps(job.run_id)
        step = next((s for s in steps if s.step_name == job.step_name), None)
        rpc = None if step is None or step.rpc_name is None else self._rpcs.get(step.rpc_name)
        if (
            step is None
            or step.status == "succeeded"
            # Missing here: the replay finds it missing and suspends with RPC_NOT_FOUND.
            or rpc is None
            or (step.status == "failed" and step.attempt_count >= 1 + (step.retries or 0))
        ):
            await self.queue.enqueue_replay(job)
            await self.queue.ack(job)
            return True
        if should_stop is not None and should_stop():
            await self.queue.reschedule(job, 0.0)
            return False
        if step.status in ("running", "failed"):
            attempt = await self.queue.retry_attempt(job, step.step_id, "running")
        else:
            attempt = step.attempt_count
            await self.queue.set_step_running(job, step.step_id)
        try:
            result = await invoke(rpc.fn, step.data)
        except Exception as exc:
            if await self._record_failure(job, step.step_id, exc, attempt, step.retries):
                await self._park_retry(job, step.step_id)
                delay = backoff_delay(parse_retry_delay(step.retry_delay), attempt, job.backoff)
                await self.queue.reschedule(job, delay)
                return True
        else:
            # A result that cannot be stored is recorded as the step's error: the
            # replay then fails the run.
            with contextlib.suppress(_Fatal):
                await self._store_result(job, step.step_id, job.step_name, result)
        await self.queue.enqueue_replay(job)
        await self.queue.ack(job)
        return True


def _describe(rpc_name: str | None) -> str:
    return "an inline function" if rpc_name is None else f"RPC {quote(rpc_name)}"
