"""The worker loop: claim queued jobs, run them, keep their leases alive.

A worker runs ``concurrency`` executors (async: tasks; sync: threads), a
heartbeat that extends the leases of the jobs in hand, and (unless
``listen=False``) a listener on a dedicated connection whose NOTIFY wake-ups
make idle executors claim at once. Idle executors otherwise wake up every
``poll_interval`` seconds, or when the next delayed job is due.

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
import threading
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from pikku_pg._acompat import AEvent, agather, aspawn, await_event
from pikku_pg._async.workflow_engine import AsyncReplayEngine
from pikku_pg._async.workflow_queue import AsyncWorkflowQueue, Job
from pikku_pg._check import quote
from pikku_pg._rows.workflow import serialize_exception
from pikku_pg._rows.workflow_engine import positive_seconds
from pikku_pg.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    LeaseLostError,
    SchemaNotInitializedError,
)

if TYPE_CHECKING:
    from pikku_pg._async._database import ConnectionSource

logger = logging.getLogger("pikku_pg.workflow")

# What a worker waits out (logged, retried with back-off): the database is unreachable,
# or its schema is not initialised yet (a deploy may be running the migrations).
_OUT_OF_REACH = (psycopg.Error, DatabaseUnavailableError, SchemaNotInitializedError)

_LISTENER_KWARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "connect_timeout": 10,
    "application_name": "pikku_pg workflow worker",
}


def listener_target(
    conn: ConnectionSource,
    listen_conninfo: str | None,
    connect_kwargs: Mapping[str, Any] | None,
) -> tuple[str, dict[str, Any]]:
    """Where a worker's listener connects: (conninfo, connection keyword arguments)."""
    kwargs = dict(_LISTENER_KWARGS)
    if listen_conninfo is not None:
        return listen_conninfo, kwargs
    if isinstance(conn, str):
        extra = {k: v for k, v in (connect_kwargs or {}).items() if k != "autocommit"}
        return conn, {**kwargs, **extra}
    if isinstance(conn, AsyncConnectionPool):
        if not isinstance(conn.conninfo, str) or not isinstance(conn.kwargs, (dict, type(None))):
            raise InvalidInputError("the pool computes its conninfo: pass listen_conninfo")
        extra = {k: v for k, v in (conn.kwargs or {}).items() if k != "autocommit"}
        return conn.conninfo, {**kwargs, **extra}
    password = conn.pgconn.password
    params = {"password": password.decode()} if password else {}
    return make_conninfo(conn.info.dsn, **params), kwargs


class AsyncWorkflowWorker:
    """Runs queued workflow jobs until stopped; ``async with`` runs it in the background.

    Create it with :meth:`AsyncPgWorkflowService.worker`. ``await worker.run()``
    blocks until :meth:`stop` is called (or the task is cancelled).
    """

    def __init__(
        self,
        engine: AsyncReplayEngine,
        queue: AsyncWorkflowQueue,
        listen_target: tuple[str, dict[str, Any]] | None,
        *,
        concurrency: int = 4,
        lease: float = 30.0,
        poll_interval: float = 1.0,
        shutdown_timeout: float = 30.0,
        name: str | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInputError(f"concurrency must be a positive int, not {quote(concurrency)}")
        self._engine = engine
        self._queue = queue
        self._listen_target = listen_target
        self.concurrency = concurrency
        self.lease = positive_seconds("lease", lease)
        self.poll_interval = positive_seconds("poll_interval", poll_interval)
        self.shutdown_timeout = positive_seconds(
            "shutdown_timeout", shutdown_timeout, allow_zero=True
        )
        #: Name recorded on claimed jobs (``locked_by``).
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = False
        self._started = False
        self._stop_requested = AEvent()
        self._stopped = AEvent()
        self._executors_done = AEvent()
        self._wakeups = [AEvent() for _ in range(concurrency)]
        self._held: dict[str, Job] = {}
        self._held_lock = threading.Lock()
        self._tasks: list[Any] = []
        self._service_tasks: list[Any] = []
        #: Jobs run to the end by this worker, not counting those handed back at a stop
        #: (for tests and monitoring).
        self.jobs_done = 0
        self.listener_pid: int | None = None

    # ---------------------------------------------------------------- control

    async def start(self) -> None:
        """Start the executors, the heartbeat and the listener in the background."""
        if self._started:
            return
        self._started = True
        for i in range(self.concurrency):
            self._tasks.append(aspawn(self._executor, (i,), name=f"pikku_pg workflow executor {i}"))
        self._service_tasks.append(aspawn(self._heartbeat, (), name="pikku_pg workflow heartbeat"))
        if self._listen_target is not None:
            self._service_tasks.append(aspawn(self._listen, (), name="pikku_pg workflow listener"))

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

    # ------------------------------------------------------ heartbeat, listen

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

    async def _listen(self) -> None:
        """Wake idle executors on NOTIFY; reconnect when the connection drops."""
        assert self._listen_target is not None
        conninfo, kwargs = self._listen_target
        delay = 0.1
        while not self._stopping:
            try:
                conn = await AsyncConnection.connect(conninfo, autocommit=True, **kwargs)
            except psycopg.Error as exc:
                logger.warning("workflow listener cannot connect (%s); retrying", exc)
                await await_event(self._stop_requested, delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            try:
                await conn.execute(
                    pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self._queue.channel))
                )
                self.listener_pid = conn.info.backend_pid
                self.wake()  # anything queued while we were not listening
                while not self._stopping:
                    async for _ in conn.notifies(timeout=0.25):
                        self.wake()
            except psycopg.Error as exc:
                if not self._stopping:
                    logger.warning("workflow listener lost its connection (%s)", exc)
            finally:
                self.listener_pid = None
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
