"""Durable workflows in PostgreSQL: :class:`AsyncPgWorkflowService`.

The service is the workflow state store plus registration, running and workers.
It wires four parts that each stand on their own: the state store
(:mod:`~pikku_pg._async.workflow_state`), the job queue
(:mod:`~pikku_pg._async.workflow_queue`), the replay engine
(:mod:`~pikku_pg._async.workflow_engine`) and the worker loop
(:mod:`~pikku_pg._async.workflow_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pikku_pg._acompat import asleep
from pikku_pg._async._database import ConnectionSource
from pikku_pg._async._listener import check_listen_conninfo, listen_target
from pikku_pg._async.workflow_engine import (
    AsyncReplayEngine,
    AsyncWorkflowContext,
    Outcome,
    RpcDefinition,
    WorkflowDefinition,
)
from pikku_pg._async.workflow_leases import AsyncLeaseKeeper
from pikku_pg._async.workflow_queue import AsyncWorkflowQueue, Job
from pikku_pg._async.workflow_state import AsyncWorkflowStateStore
from pikku_pg._async.workflow_worker import AsyncWorkflowWorker
from pikku_pg._check import check_number, check_text_list, quote
from pikku_pg._json import dumps
from pikku_pg._rows.workflow import UNKNOWN_WIRE, encode_wire
from pikku_pg._sql.workflow import WORKFLOW
from pikku_pg._sql.workflow_queue import WORKFLOW_QUEUE
from pikku_pg._worker_options import WorkerOptions, WorkerSettings
from pikku_pg._workflow_rules import (
    CANCELLED,
    check_name,
    code_source,
    code_version,
    error_record,
    positive_seconds,
    stored_error_dict,
)
from pikku_pg.errors import (
    DuplicateRegistrationError,
    InvalidInputError,
    InvalidRunStateError,
    LeaseLostError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowRunNotFoundError,
    WorkflowSuspendedError,
    WorkflowTimeoutError,
)
from pikku_pg.migrations import Component
from pikku_pg.models._base import trusted
from pikku_pg.models.workflow import RunActivity, WorkflowRun, WorkflowRunWire

if TYPE_CHECKING:
    from typing_extensions import Unpack

F = TypeVar("F", bound=Callable[..., Any])

#: What ``run_to_completion`` does with its run when the caller is cancelled.
ON_CANCEL = ("release", "cancel")

__all__ = ["AsyncPgWorkflowService", "AsyncWorkflowContext", "AsyncWorkflowWorker"]


class AsyncPgWorkflowService(AsyncWorkflowStateStore):
    """Durable workflows in PostgreSQL (schema ``pikku_workflow`` by default).

    Register workflows and RPCs with the :meth:`workflow` and :meth:`rpc`
    decorators, then run them inline (:meth:`run_to_completion`) or queued
    (:meth:`start_workflow`, processed by :meth:`run_worker` or :meth:`worker`).
    In this (async) flavour, workflow and RPC functions are ``async def``.

    ``listen_conninfo`` is where workers LISTEN for wake-ups (default: the
    service's own server); LISTEN needs a session, so behind PgBouncer in
    transaction mode point it at PostgreSQL or run workers with ``listen=False``.

    ``inline_lease`` (seconds) is the lease an inline run holds while its caller
    runs it (extended every third of it): if the caller dies or freezes, a worker
    that has the workflow registered takes the run over once the lease runs out.
    """

    components: ClassVar[tuple[Component, ...]] = (WORKFLOW, WORKFLOW_QUEUE)

    def __init__(
        self,
        conn: ConnectionSource,
        schema: str | None = None,
        *,
        connect_kwargs: Mapping[str, Any] | None = None,
        pool_kwargs: Mapping[str, Any] | None = None,
        listen_conninfo: str | None = None,
        inline_lease: float = 30.0,
    ) -> None:
        listen_conninfo = check_listen_conninfo(listen_conninfo)
        super().__init__(conn, schema, connect_kwargs=connect_kwargs, pool_kwargs=pool_kwargs)
        self._queue = AsyncWorkflowQueue(self._db, self._schema)
        self._leases = AsyncLeaseKeeper(self._queue, positive_seconds("inline_lease", inline_lease))
        #: Recorded as ``locked_by`` on the jobs of this service's inline runs.
        self._inline_owner = f"inline:{socket.gethostname()}:{os.getpid()}"
        self._workflows: dict[str, WorkflowDefinition] = {}
        self._rpcs: dict[str, RpcDefinition] = {}
        self._engine = AsyncReplayEngine(self, self._queue, self._workflows, self._rpcs)
        self._source = conn
        self._connect_kwargs = connect_kwargs
        self._listen_conninfo = listen_conninfo
        self._stored_versions: set[tuple[str, str]] = set()
        self._workers: list[AsyncWorkflowWorker] = []

    # ------------------------------------------------------------ registration

    def workflow(self, name: str, *, version: str | None = None) -> Callable[[F], F]:
        """Register ``fn(ctx, input) -> output`` as the workflow ``name``.

        Runs record the workflow's version: ``version`` or a hash of its source.
        A run recorded with another version fails with ``VERSION_CONFLICT`` rather
        than replaying different code.
        """
        check_name("workflow", name)
        if version is not None:
            check_name("version", version)

        def register(fn: F) -> F:
            _check_function(fn, f"workflow {quote(name)}")
            if name in self._workflows:
                raise DuplicateRegistrationError(f"a workflow named {quote(name)} is registered")
            self._workflows[name] = WorkflowDefinition(
                name, fn, version or code_version(fn), code_source(fn)
            )
            return fn

        return register

    def rpc(self, name: str, *, queued: bool = False) -> Callable[[F], F]:
        """Register ``fn(data) -> result`` as the RPC ``name`` (a step function).

        ``queued=True`` steps run as separate step jobs on any worker; others run
        inside the replay pass.
        """
        check_name("RPC", name)
        if not isinstance(queued, bool):
            raise InvalidInputError(f"queued must be a bool, not {type(queued).__name__}")

        def register(fn: F) -> F:
            _check_function(fn, f"RPC {quote(name)}")
            if name in self._rpcs:
                raise DuplicateRegistrationError(f"an RPC named {quote(name)} is registered")
            self._rpcs[name] = RpcDefinition(name, fn, queued)
            return fn

        return register

    def _definition(self, name: str) -> WorkflowDefinition:
        check_name("workflow", name)
        defn = self._workflows.get(name)
        if defn is None:
            raise WorkflowNotFoundError(name)
        return defn

    async def _ensure_version(self, defn: WorkflowDefinition) -> None:
        """Store the workflow's version once per service (graph: a Python function)."""
        key = (defn.name, defn.version)
        if key in self._stored_versions:
            return
        graph = {"language": "python", "function": getattr(defn.fn, "__qualname__", defn.name)}
        await self.upsert_workflow_version(defn.name, defn.version, graph, defn.source)
        self._stored_versions.add(key)

    # ----------------------------------------------------------------- running

    async def start_workflow(
        self,
        name: str,
        input: Any,
        *,
        wire: WorkflowRunWire | Mapping[str, Any] | None = None,
    ) -> str:
        """Start a queued run (a worker runs it); returns the run id.

        The run and its first job are stored in one statement, and idle workers
        are woken by NOTIFY. Raises :class:`WorkflowNotFoundError` for a name that
        is not registered here, :class:`InvalidInputError` for an input that is not
        JSON (nothing is stored).
        """
        defn = self._definition(name)
        await self._ensure_version(defn)
        return await self._queue.start_run(name, input, graph_hash=defn.version, wire=wire)

    async def run_to_completion(
        self,
        name: str,
        input: Any,
        *,
        wire: WorkflowRunWire | Mapping[str, Any] | None = None,
        on_cancel: str = "release",
    ) -> Any:
        """Run a workflow inline, in the caller, and return its output.

        Sleeps and retry delays wait in the caller. Raises
        :class:`WorkflowFailedError`, :class:`WorkflowCancelledError` or
        :class:`WorkflowSuspendedError` (each with ``run_id``; failures also carry
        ``error``, the stored error, and ``code``).

        The run holds a lease while the caller runs it (see ``inline_lease``). When
        the caller is interrupted (``KeyboardInterrupt``, or the cancelled task of an asyncio app),
        the run is handed to the workers at once (``on_cancel="release"``: any
        worker with the workflow registered continues it) or cancelled
        (``on_cancel="cancel"``); the interruption is then re-raised. When the
        caller dies or loses its connection, the lease runs out and a worker takes
        over. Raises :class:`LeaseLostError` if a worker took the run over while this
        caller was frozen past its lease (nothing it wrote after that was applied).
        """
        defn = self._definition(name)
        if on_cancel not in ON_CANCEL:
            raise InvalidInputError(
                f"on_cancel must be 'release' or 'cancel', not {quote(on_cancel)}"
            )
        text = dumps(input)  # refuses what is not JSON before anything is stored
        run_wire = WorkflowRunWire.model_validate(UNKNOWN_WIRE if wire is None else _wire(wire))
        await self._ensure_version(defn)
        token = str(uuid.uuid4())
        job: Job | None = None
        try:
            self._leases.hold(token)  # inside: starting a thread (sync) can be interrupted
            job = await self._start_inline_run(defn, input, wire, token)
            now = datetime.now(timezone.utc)
            run = trusted(
                WorkflowRun,
                id=job.run_id,
                workflow=name,
                status="running",
                input=json.loads(text),
                output=None,
                error=None,
                inline=True,
                graph_hash=defn.version,
                wire=run_wire,
                created_at=now,
                updated_at=now,
            )
            outcome = await self._engine.replay(job, inline=True, run=run, fresh=True)
        except LeaseLostError:
            raise
        except BaseException as exc:
            await self._abandon(token, job, on_cancel, exc)
            raise
        finally:
            self._leases.drop(token)
        return _result(job.run_id, outcome)

    async def _start_inline_run(
        self,
        defn: WorkflowDefinition,
        input: Any,
        wire: WorkflowRunWire | Mapping[str, Any] | None,
        token: str,
    ) -> Job:
        """Store an inline run claimed by this caller under ``token``; returns the claim.

        An interruption that lands while the statement runs must not leave a run the
        caller does not know of: in the sync flavour psycopg lets the statement end
        before the interrupt goes on, and an interrupted caller finds its claim by the
        token it chose.
        """
        store = self._queue.start_inline_run(
            defn.name,
            input,
            graph_hash=defn.version,
            wire=wire,
            owner=self._inline_owner,
            lease=self._leases.lease,
            token=token,
        )
        if True:  # ASYNC
            # A cancelled await does not stop the statement (it may wait in a batch
            # that another task sends): it runs as a task of its own, and an
            # interrupted caller waits for its end, so the claim exists or not.
            started = asyncio.ensure_future(store)
            try:
                return await asyncio.shield(started)
            except asyncio.CancelledError:
                with contextlib.suppress(BaseException):
                    await started
                raise
        else:
            return store

    async def _run_inline(self, job: Job) -> Outcome:
        """A replay pass in the caller under ``job``'s lease, kept alive meanwhile."""
        try:
            self._leases.hold(job.token)
            return await self._engine.replay(job, inline=True)
        except LeaseLostError:
            raise
        except BaseException as exc:
            await self._abandon(job.token, job, "release", exc)
            raise
        finally:
            self._leases.drop(job.token)

    async def _abandon(
        self, token: str, job: Job | None, on_cancel: str, exc: BaseException
    ) -> None:
        """The caller stopped running an inline run: hand it to the workers (or cancel it
        if the caller was interrupted and asked for that). Best effort: if the
        database is out of reach, the lease runs out instead. ``job`` is None when the
        caller was interrupted before it knew the run's id (the run may exist)."""
        interrupted = not isinstance(exc, Exception)
        with contextlib.suppress(Exception):
            if interrupted and on_cancel == "cancel" and job is None:
                job = await self._queue.job_of_token(token)
            if interrupted and on_cancel == "cancel" and job is not None:
                error = error_record(
                    "the caller of run_to_completion was interrupted",
                    code=CANCELLED,
                    name="WorkflowCancelled",
                )
                await self._queue.cancel_run(job.run_id, error)
                await self._queue.ack(job)
            else:
                await self._queue.release([token])

    async def wait_for_run(self, run_id: str, timeout: float | None = None) -> WorkflowRun:
        """Wait until a run is no longer ``running`` (completed, failed, cancelled or
        suspended) and return it. Raises :class:`WorkflowTimeoutError` after
        ``timeout`` seconds, :class:`WorkflowRunNotFoundError` for an unknown run.
        """
        if timeout is not None:  # NaN is refused (it would never time out); inf waits forever
            timeout = check_number("timeout", timeout, finite=False, min=0)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            run = await self.get_run(run_id)
            if run is None:
                raise WorkflowRunNotFoundError(run_id)
            if run.status != "running":
                return run
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkflowTimeoutError(
                        f"workflow run {run_id} is still running after {timeout} s"
                    )
                pause = min(pause, left)
            await asleep(pause)
            pause = min(pause * 1.5, 0.25)

    async def cancel_run(self, run_id: str, reason: str | None = None) -> None:
        """Cancel a running or suspended run.

        Its pending jobs are dropped at once; a pass in progress stops at its next
        step boundary. Raises :class:`WorkflowRunNotFoundError` for an unknown run,
        :class:`InvalidRunStateError` for a run that already ended.
        """
        if reason is not None and not isinstance(reason, str):
            raise InvalidInputError(f"reason must be a str, not {type(reason).__name__}")
        error = error_record(reason or "cancelled", code=CANCELLED, name="WorkflowCancelled")
        if await self._queue.cancel_run(run_id, error):
            return
        run = await self.get_run(run_id)
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        raise InvalidRunStateError(f"workflow run {run_id} is {run.status}; it cannot be cancelled")

    async def _resumable(self, run_id: str) -> WorkflowRun:
        """The run to resume, checked; a failed run's failed steps get one more attempt."""
        run = await self.get_run(run_id)
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        if run.status not in ("suspended", "failed", "running"):
            raise InvalidRunStateError(
                f"workflow run {run_id} is {run.status}; only a suspended, failed or "
                "abandoned running run can be resumed"
            )
        if run.status == "failed":
            for step in await self.get_run_steps(run_id):
                if step.status == "failed":
                    await self.create_retry_attempt(step.step_id, "pending")
        return run

    async def resume_run(self, run_id: str) -> None:
        """Resume a suspended run, retry a failed one, or hand a running run whose owner
        is gone (its caller or worker died, or was interrupted) to the workers.

        A failed run's failed steps get one more attempt. Raises
        :class:`InvalidRunStateError` for a run that is completed, cancelled or
        running under a live lease, :class:`WorkflowRunNotFoundError` for an unknown
        run.
        """
        run = await self._resumable(run_id)
        if run.status == "running":
            if not await self._queue.adopt_run(run_id):
                raise InvalidRunStateError(
                    f"workflow run {run_id} is running and its runner holds a live lease"
                )
        elif not await self._queue.reopen_run(run_id, enqueue=True):
            raise InvalidRunStateError(f"workflow run {run_id} changed status meanwhile")

    async def resume_to_completion(self, run_id: str) -> Any:
        """Like :meth:`resume_run`, but continue the run inline, in the caller, and
        return its output (or raise as :meth:`run_to_completion` does)."""
        run = await self._resumable(run_id)
        self._definition(run.workflow)  # it runs here: it must be registered here
        job = await self._queue.take_over_run(
            run_id,
            owner=self._inline_owner,
            lease=self._leases.lease,
            reopen=run.status != "running",
        )
        if job is None:
            raise InvalidRunStateError(
                f"workflow run {run_id} changed status meanwhile, or another runner holds it"
            )
        outcome = await self._run_inline(job)
        return _result(run_id, outcome)

    async def get_run_activity(self, run_ids: Sequence[str]) -> dict[str, RunActivity]:
        """What each running run of ``run_ids`` is doing now, by run id (one query):
        held by a worker or an inline caller, waiting for a worker, scheduled for
        later, or with no owner at all. Ids that name no run are left out; the
        entries of runs that are not running say nothing useful."""
        return await self._queue.run_activity(check_text_list("run_ids", run_ids))

    async def get_run_jobs(self, run_id: str) -> list[dict[str, Any]]:
        """The queued jobs of a run (kind, status, run_at, attempts, last_error...)."""
        return await self._queue.jobs_of_run(run_id)

    # ----------------------------------------------------------------- workers

    def worker(
        self, options: WorkerOptions | None = None, **overrides: Unpack[WorkerSettings]
    ) -> AsyncWorkflowWorker:
        """A worker for this service's queue; ``async with`` runs it in the background.

        Takes a :class:`WorkerOptions` and/or its fields as keyword arguments
        (``wf.worker(concurrency=8, lease=60)``), which override ``options``:
        ``concurrency`` jobs at once (tasks; threads in the sync flavour), each
        claimed for a lease of ``lease`` seconds extended while it runs. Idle workers
        wake on NOTIFY, or every ``poll_interval`` seconds with ``listen=False``
        (e.g. behind PgBouncer in transaction mode). The pool needs about
        ``concurrency + 1`` connections (the listener has its own). A bad option
        raises :class:`InvalidInputError` naming it.
        """
        chosen = WorkerOptions.combine(options, overrides)
        target = (
            listen_target(
                self._source,
                self._listen_conninfo,
                self._connect_kwargs,
                application_name="pikku_pg workflow worker",
            )
            if chosen.listen
            else None
        )
        self._workers = [w for w in self._workers if not w.stopped]
        worker = AsyncWorkflowWorker(self._engine, self._queue, target, chosen)
        self._workers.append(worker)
        return worker

    async def run_worker(
        self, options: WorkerOptions | None = None, **overrides: Unpack[WorkerSettings]
    ) -> None:
        """Process queued work until :meth:`stop_workers` is called (or interrupted),
        then stop gracefully. Takes the options of :meth:`worker`."""
        await self.worker(options, **overrides).run()

    def stop_workers(self) -> None:
        """Ask every worker of this service to stop (they finish gracefully)."""
        for worker in list(self._workers):
            worker.request_stop()

    async def close(self) -> None:
        """Stop this service's workers, then release what the service owns."""
        for worker in list(self._workers):
            await worker.stop()
        self._workers.clear()
        await self._leases.close()
        await super().close()


def _check_function(fn: object, what: str) -> None:
    if not callable(fn):
        raise InvalidInputError(f"{what} must be a function, not {type(fn).__name__}")
    if True:  # ASYNC
        pass
    else:
        if inspect.iscoroutinefunction(fn):
            raise InvalidInputError(
                f"{what} is a coroutine function; the sync service runs plain functions"
            )


def _wire(wire: WorkflowRunWire | Mapping[str, Any]) -> Any:
    encoded = encode_wire(wire)
    return None if encoded is None else encoded.obj


def _result(run_id: str, outcome: Outcome) -> Any:
    """The output of a run that ended inline, or the error that says how it ended."""
    if outcome.status == "completed":
        return outcome.output
    error = outcome.error or {}
    message = str(error.get("message", ""))
    details: dict[str, Any] = {
        "error": stored_error_dict(error) if error else None,
        "code": error.get("code"),
    }
    if outcome.status == "suspended":
        text = f"workflow run {run_id} is suspended: {message}"
        raise WorkflowSuspendedError(run_id, text, **details)
    if outcome.status == "cancelled":
        text = f"workflow run {run_id} was cancelled: {message}"
        raise WorkflowCancelledError(run_id, text, **details)
    if outcome.status == "failed":
        raise WorkflowFailedError(run_id, f"workflow run {run_id} failed: {message}", **details)
    text = f"workflow run {run_id} could not run ({outcome.status})"
    raise WorkflowFailedError(run_id, text, **details)
