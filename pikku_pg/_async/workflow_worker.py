"""The worker loop: claim queued jobs, run them, keep their leases alive.

A worker runs ``concurrency`` executors (async: tasks; sync: threads), a
heartbeat that extends the leases of the jobs in hand, and (unless
``listen=False``) a listener on a dedicated connection whose NOTIFY wake-ups
make idle executors claim at once (it reconnects with back-off, see
:mod:`pikku_pg._async._listener`). Idle executors otherwise wake up every
``poll_interval`` seconds, or when the next delayed job is due. The options are
those of :class:`~pikku_pg.WorkerOptions`.

Stopping is graceful: executors finish the step in hand and hand their run back
(the job becomes due at once, so another worker takes it without waiting for the
lease to run out). Async executors still running after ``shutdown_timeout`` are
cancelled and their jobs handed back; a sync executor thread cannot be cancelled,
so its job is taken over once its lease runs out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from types import TracebackType
from typing import Any

import psycopg
from psycopg import AsyncConnection

from pikku_pg._acompat import AEvent, StateLock, agather, aspawn, await_event
from pikku_pg._async._listener import AsyncListener, ListenTarget
from pikku_pg._async.workflow_engine import AsyncReplayEngine
from pikku_pg._async.workflow_queue import AsyncWorkflowQueue, Job
from pikku_pg._rows.workflow import serialize_exception
from pikku_pg._worker_options import WorkerOptions
from pikku_pg.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    LeaseLostError,
    SchemaNotInitializedError,
)

logger = logging.getLogger("pikku_pg.workflow")

# What a worker waits out (logged, retried with back-off): the database is unreachable,
# or its schema is not initialised yet (a deploy may be running the migrations).
_OUT_OF_REACH = (psycopg.Error, DatabaseUnavailableError, SchemaNotInitializedError)


class AsyncWorkflowWorker:
    """Runs queued workflow jobs until stopped; ``async with`` runs it in the background.

    Create it with :meth:`AsyncPgWorkflowService.worker`. ``await worker.run()``
    blocks until :meth:`stop` is called (or the task is cancelled). ``listen_target``
    is where its listener connects (None: no listener, the executors poll).
    """

    def __init__(
        self,
        engine: AsyncReplayEngine,
        queue: AsyncWorkflowQueue,
        listen_target: ListenTarget | None,
        options: WorkerOptions,
    ) -> None:
        if not isinstance(options, WorkerOptions):
            kind = type(options).__name__
            raise InvalidInputError(f"options must be a WorkerOptions, not {kind}")
        self._engine = engine
        self._queue = queue
        #: The options this worker runs with (checked when they were made).
        self.options = options
        self.concurrency = options.concurrency
        self.lease = options.lease
        self.poll_interval = options.poll_interval
        self.shutdown_timeout = options.shutdown_timeout
        #: Name recorded on claimed jobs (``locked_by``).
        self.name = options.name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = False
        self._started = False
        self._stop_requested = AEvent()
        self._stopped = AEvent()
        self._executors_done = AEvent()
        self._wakeups = [AEvent() for _ in range(self.concurrency)]
        self._held: dict[str, Job] = {}
        self._held_lock = StateLock()
        self._tasks: list[Any] = []
        self._service_tasks: list[Any] = []
        #: Jobs run to the end by this worker, not counting those handed back at a stop
        #: (for tests and monitoring).
        self.jobs_done = 0
        self._listener = (
            None
            if listen_target is None
            else AsyncListener(
                listen_target,
                queue.channel,
                self._on_notifies,
                label="workflow listener",
                log=logger,
                on_listening=self.wake,  # runs queued while it was not listening
            )
        )

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the listener's connection (None when not listening)."""
        return None if self._listener is None else self._listener.pid

    @property
    def listener_reconnects(self) -> int:
        """How many times the listener connected again after losing its connection."""
        return 0 if self._listener is None else self._listener.reconnects

    # ---------------------------------------------------------------- control

    async def start(self) -> None:
        """Start the executors, the heartbeat and the listener in the background."""
        if self._started:
            return
        self._started = True
        for i in range(self.concurrency):
            self._tasks.append(aspawn(self._executor, (i,), name=f"pikku_pg workflow executor {i}"))
        self._service_tasks.append(aspawn(self._heartbeat, (), name="pikku_pg workflow heartbeat"))
        if self._listener is not None:
            self._service_tasks.append(
                aspawn(self._listener.run, (), name="pikku_pg workflow listener")
            )

    async def run(self) -> None:
        """Run until :meth:`stop` is called; stops gracefully when interrupted."""
        await self.start()
        try:
            await await_event(self._stop_requested, None)
        finally:
            await self.stop()

    def request_stop(self) -> None:
        """Ask the worker to stop (returns at once; :meth:`run` then returns)."""
        self._stopping = True
        self._stop_requested.set()
        if self._listener is not None:
            self._listener.stop()
        for event in self._wakeups:
            event.set()

    async def stop(self) -> None:
        """Stop gracefully: in-flight runs stop at their next step boundary and are
        handed back. Async executors still running after ``shutdown_timeout`` are
        cancelled and their jobs handed back; sync executor threads cannot be
        cancelled, so their leases run out instead."""
        self.request_stop()
        if self._stopped.is_set():
            return
        await agather(*self._tasks, timeout=self.shutdown_timeout)
        self._executors_done.set()
        await agather(*self._service_tasks, timeout=self.poll_interval + 5.0)
        if True:  # ASYNC
            # Executors still running were cancelled: hand their jobs back now.
            with self._held_lock:
                tokens = list(self._held)
            if tokens:
                with contextlib.suppress(psycopg.Error, DatabaseUnavailableError):
                    await self._queue.release(tokens)
        else:
            # A thread cannot be cancelled: its job keeps its lease, which runs out
            # (the heartbeat has stopped) unless the thread finishes first.
            pass
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        """Whether the worker has stopped (its jobs are finished or handed back)."""
        return self._stopped.is_set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stopping

    def wake(self) -> None:
        """Make idle executors claim now (what a NOTIFY does)."""
        for event in self._wakeups:
            event.set()

    async def __aenter__(self) -> AsyncWorkflowWorker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -------------------------------------------------------------- executors

    def _should_stop(self) -> bool:
        return self._stopping

    async def _executor(self, index: int) -> None:
        wakeup = self._wakeups[index]
        failures = 0
        while not self._stopping:
            wakeup.clear()
            try:
                jobs = await self._queue.claim(self.name, 1, self.lease)
                failures = 0
            except _OUT_OF_REACH as exc:
                failures += 1
                delay = min(self.poll_interval * failures, 5.0)
                logger.warning("workflow worker cannot claim jobs (%s); retrying", exc)
                await await_event(wakeup, delay)
                continue
            if not jobs:
                await await_event(wakeup, await self._idle_wait())
                continue
            await self._run_job(jobs[0])

    async def _idle_wait(self) -> float:
        """How long an idle executor waits: until the next due job, at most a poll."""
        try:
            due = await self._queue.next_due()
        except _OUT_OF_REACH:
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(due, 0.005))

    async def _run_job(self, job: Job) -> None:
        with self._held_lock:
            self._held[job.token] = job
        try:
            if job.kind == "replay":
                outcome = await self._engine.replay(
                    job,
                    inline=False,
                    should_stop=self._should_stop,
                    run=job.run,
                    fresh=not job.has_steps,
                )
                finished = outcome.status != "handed_back"
            else:
                finished = await self._engine.run_step_job(job, self._should_stop)
            if finished:
                self.jobs_done += 1
        except LeaseLostError:
            # Stalled past the lease (a pause, a freeze): another worker owns the run
            # now, and nothing this one wrote after losing the lease was applied.
            logger.warning(
                "workflow worker %s lost the lease of run %s (job %s) to another worker; "
                "stopped working on it",
                self.name,
                job.run_id,
                job.job_id,
            )
        except Exception as exc:
            # The database went away mid-job, or a bug: the job runs again later and
            # keeps this error for inspection.
            logger.warning("workflow job %s of run %s failed: %s", job.job_id, job.run_id, exc)
            delay = min(60.0, 0.5 * 2 ** min(job.attempts - 1, 7))
            with contextlib.suppress(psycopg.Error, DatabaseUnavailableError):
                await self._queue.reschedule(job, delay, serialize_exception(exc))
        except BaseException:
            # Cancelled at shutdown: hand the job back at once.
            with contextlib.suppress(Exception):
                await self._queue.reschedule(job, 0.0)
            raise
        finally:
            with self._held_lock:
                self._held.pop(job.token, None)

    # ---------------------------------------------------- heartbeat, wake-ups

    async def _heartbeat(self) -> None:
        """Extend the leases of the jobs in hand, every third of a lease."""
        while not self._executors_done.is_set():
            await await_event(self._executors_done, self.lease / 3.0)
            with self._held_lock:
                tokens = list(self._held)
            if tokens:
                try:
                    await self._queue.extend_leases(tokens, self.lease)
                except _OUT_OF_REACH as exc:
                    logger.warning("workflow worker cannot extend its leases: %s", exc)

    async def _on_notifies(self, conn: AsyncConnection[Any], payloads: list[str]) -> None:
        """A NOTIFY means work was queued: wake the idle executors (payloads unused)."""
        self.wake()
