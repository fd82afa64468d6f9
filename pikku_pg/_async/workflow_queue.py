"""The job queue of workflow runs (table ``workflow_jobs``) and the fenced writes.

Claims use ``FOR UPDATE SKIP LOCKED`` and set a lease; the holder's heartbeat
extends it; a job whose holder died is claimed again once its lease runs out.
Inline runs hold a lease on their replay job too. Every statement that makes a
job due also sends a NOTIFY on :attr:`channel`.

Every write of a runner (a worker's job, an inline caller) names the :class:`Job`
it holds and is applied only while that job's lease is still the current one; a
refused write raises :class:`~pikku_pg.errors.LeaseLostError`. See
:mod:`pikku_pg._sql.workflow_queue` for the rules of the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from pikku_pg._async._database import AsyncDatabase
from pikku_pg._json import check_text, jsonb
from pikku_pg._rows.workflow import (
    check_optional_text,
    check_transition,
    encode_error,
    encode_state_value,
    encode_wire,
    maybe_run_uuid,
    run_from_row,
    run_uuid,
    step_uuid,
)
from pikku_pg._rows.workflow_engine import check_backoff, notify_channel
from pikku_pg._sql.workflow_queue import queue_queries
from pikku_pg.errors import LeaseLostError, StepExistsError
from pikku_pg.models.workflow import WorkflowRun, WorkflowRunWire


@dataclass(frozen=True)
class Job:
    """A claimed job: what to run, and the lease token that proves the claim."""

    job_id: int
    run_id: str
    #: ``"replay"`` (a replay pass of the run) or ``"step"`` (one queued RPC step).
    kind: str
    step_name: str | None
    token: str
    #: How many times the job was claimed (1 on the first claim).
    attempts: int
    #: The run as it was when the job was claimed (None if it was deleted).
    run: WorkflowRun | None = None
    #: Whether the run had any step when the job was claimed.
    has_steps: bool = True
    #: A step job's retry back-off: ``"fixed"`` or ``"exponential"``.
    backoff: str = "fixed"


class _NotTaken(Exception):
    pass


def _check_lease(row: Any, job: Job) -> None:
    """Raise :class:`LeaseLostError` when a fenced statement's row says the lease is gone
    (its second column)."""
    if row is None or not row[1]:
        raise LeaseLostError(job.run_id)


class AsyncWorkflowQueue:
    """Queue operations over a service's database (no control flow: see the worker).

    Also every write the engine makes for a run (steps, attempts, run state, final
    status): the same rows as the state store's methods, fenced by the lease of the
    job the engine holds, and fused into fewer round trips where it can.
    """

    def __init__(self, db: AsyncDatabase, schema: str) -> None:
        self._db = db
        self._q = queue_queries(schema)
        #: The NOTIFY channel that wakes idle workers.
        self.channel = notify_channel(schema)

    async def start_run(
        self,
        workflow_name: str,
        input: Any,
        *,
        graph_hash: str | None,
        wire: WorkflowRunWire | Mapping[str, Any] | None,
    ) -> str:
        """Store a queued run and its first replay job (one statement); returns its id."""
        params = {
            "workflow": check_text("workflow_name", workflow_name),
            "input": jsonb(input),
            "graph_hash": check_optional_text("graph_hash", graph_hash),
            "wire": encode_wire(wire),
            "channel": self.channel,
        }
        row = await self._db.fetch_one(self._q.start_run, params, row_factory=tuple_row)
        assert row is not None
        return str(row[0])

    async def start_inline_run(
        self,
        workflow_name: str,
        input: Any,
        *,
        graph_hash: str | None,
        wire: WorkflowRunWire | Mapping[str, Any] | None,
        owner: str,
        lease: float,
        token: str | None = None,
    ) -> Job:
        """Store an inline run with its replay job claimed by ``owner`` for ``lease`` s
        (one statement), under the lease ``token`` if given; returns the claim."""
        params = {
            "workflow": check_text("workflow_name", workflow_name),
            "input": jsonb(input),
            "graph_hash": check_optional_text("graph_hash", graph_hash),
            "wire": encode_wire(wire),
            "owner": owner,
            "lease": float(lease),
            "token": token,
        }
        row = await self._db.fetch_one(self._q.start_inline_run, params, row_factory=tuple_row)
        assert row is not None
        return Job(int(row[1]), str(row[0]), "replay", None, str(row[2]), 1, has_steps=False)

    async def claim_of(self, token: str) -> Job | None:
        """The replay job claimed under the lease ``token``, or None when there is none."""
        row = await self._db.fetch_one(self._q.claim_of, {"token": token}, row_factory=tuple_row)
        if row is None:
            return None
        return Job(int(row[0]), str(row[1]), "replay", None, token, int(row[2]))

    async def adopt_run(self, run_id: str) -> bool:
        """Make a running run whose owner is gone due for any worker now.

        Returns True when it was adopted or already waits in the queue, False when the
        run is not running or somebody holds its lease.
        """
        params = {"run_id": run_uuid(run_id), "channel": self.channel}
        row = await self._db.fetch_one(self._q.adopt_run, params, row_factory=tuple_row)
        return bool(row and (row[0] or row[1]))

    async def take_over_run(
        self, run_id: str, *, owner: str, lease: float, reopen: bool = False
    ) -> Job | None:
        """Claim a running run that nobody holds for ``owner`` (an inline resume); with
        ``reopen``, first make a suspended or failed run running, in the same
        transaction.

        Returns None (and changes nothing) when the run is in no such status or
        somebody holds its lease.
        """
        rid = run_uuid(run_id)
        params = {"run_id": rid, "owner": owner, "lease": float(lease)}
        reopen_params = {"run_id": rid, "delay": 0.0, "enqueue": False, "channel": self.channel}
        try:
            async with self._db.pipeline() as conn:
                if reopen:
                    await conn.execute(self._q.reopen_run, reopen_params)
                cur = await conn.execute(self._q.take_over_run, params)
                row = await cur.fetchone()
                if row is None:
                    raise _NotTaken()  # rolls the reopen back
        except _NotTaken:
            return None
        return Job(int(row[0]), str(rid), "replay", None, str(row[1]), int(row[2]))

    async def enqueue_replay(self, job: Job, delay: float = 0.0) -> bool:
        """Queue a replay of ``job``'s running run in ``delay`` seconds (merged with a
        queued one).

        Returns False when the run is not running (nothing queued); raises
        :class:`LeaseLostError` when ``job``'s lease is gone.
        """
        params = {
            "run_id": run_uuid(job.run_id),
            "delay": float(delay),
            "channel": self.channel,
            "token": job.token,
        }
        row = await self._db.fetch_one(self._q.enqueue_replay, params, row_factory=tuple_row)
        _check_lease(row, job)
        assert row is not None
        return bool(row[0])

    async def reopen_run(self, run_id: str, *, enqueue: bool) -> bool:
        """A suspended or failed run becomes running (and gets a replay job if asked).

        Returns False when the run was in no such status.
        """
        params = {
            "run_id": run_uuid(run_id),
            "delay": 0.0,
            "enqueue": enqueue,
            "channel": self.channel,
        }
        row = await self._db.fetch_one(self._q.reopen_run, params, row_factory=tuple_row)
        return bool(row and row[0])

    async def enqueue_step(
        self, job: Job, step_name: str, delay: float = 0.0, backoff: str = "fixed"
    ) -> None:
        """Queue a job that runs one queued RPC step of ``job``'s run (with its retry
        back-off)."""
        params = {
            "run_id": run_uuid(job.run_id),
            "step_name": check_text("step_name", step_name),
            "delay": float(delay),
            "backoff": check_backoff(backoff),
            "channel": self.channel,
            "token": job.token,
        }
        row = await self._db.fetch_one(self._q.enqueue_step, params, row_factory=tuple_row)
        _check_lease(row, job)

    async def claim(self, worker: str, limit: int, lease: float) -> list[Job]:
        """Claim up to ``limit`` due jobs (or jobs whose lease ran out) for ``lease`` s."""
        params = {"worker": worker, "limit": limit, "lease": float(lease)}
        rows = await self._db.fetch_all(self._q.claim, params, row_factory=dict_row)
        return [
            Job(
                int(r["job_id"]),
                r["job_run_id"],
                r["kind"],
                r["step_name"],
                r["lease_token"],
                int(r["attempts"]),
                None if r["workflow_run_id"] is None else run_from_row(r),
                bool(r["has_steps"]),
                r["backoff"],
            )
            for r in rows
        ]

    async def extend_leases(self, tokens: Sequence[str], lease: float) -> int:
        """Extend the leases of the claims ``tokens``; returns how many still exist."""
        if not tokens:
            return 0
        params = {"tokens": list(tokens), "lease": float(lease)}
        return await self._db.execute(self._q.extend_leases, params)

    async def ack(self, job: Job) -> bool:
        """The job is done: delete it (or requeue it when a resume asked for a rerun).

        Returns False when the claim was lost (the lease ran out and another worker
        took the job).
        """
        params = {"job_id": job.job_id, "token": job.token, "channel": self.channel}
        row = await self._db.fetch_one(self._q.ack, params, row_factory=tuple_row)
        return bool(row and row[0])

    async def reschedule(self, job: Job, delay: float, error: Any = None) -> None:
        """Put the job back, due in ``delay`` seconds, with ``error`` as its last error."""
        params = {
            "job_id": job.job_id,
            "token": job.token,
            "delay": max(0.0, float(delay)),
            "error": encode_error(error),
            "channel": self.channel,
        }
        await self._db.execute(self._q.reschedule, params)

    async def release(self, tokens: Sequence[str]) -> int:
        """Hand claimed jobs back at once (graceful stop); returns how many."""
        if not tokens:
            return 0
        params = {"tokens": list(tokens), "channel": self.channel}
        row = await self._db.fetch_one(self._q.release, params, row_factory=tuple_row)
        return int(row[0]) if row else 0

    async def next_due(self) -> float | None:
        """Seconds until the next job is due or a lease runs out (None: no job)."""
        row = await self._db.fetch_one(self._q.next_due, None, row_factory=tuple_row)
        return None if row is None or row[0] is None else float(row[0])

    async def finish_run(
        self,
        job: Job,
        status: str,
        *,
        output: Any = None,
        error: Any = None,
    ) -> bool:
        """Move ``job``'s *running* run to ``status`` and ack the job, in one transaction.

        Returns False when the run was no longer running (e.g. cancelled meanwhile):
        then it is left as it is. Raises :class:`LeaseLostError` when the job's lease
        is gone (nothing is written).
        """
        params = {
            "run_id": run_uuid(job.run_id),
            "status": status,
            "output": None if output is None else jsonb(output),
            "error": encode_error(error),
            "token": job.token,
        }
        ack = {"job_id": job.job_id, "token": job.token, "channel": self.channel}
        async with self._db.pipeline() as conn:
            cur = await conn.execute(self._q.finish_run, params)
            await conn.execute(self._q.ack, ack)
            row = await cur.fetchone()
        _check_lease(row, job)
        assert row is not None
        return bool(row[0])

    async def cancel_run(self, run_id: str, error: Any) -> bool:
        """Cancel a running or suspended run and drop its pending jobs (one statement).

        Returns False when the run is in no such status (or does not exist).
        """
        rid = maybe_run_uuid(run_id)
        if rid is None:
            return False
        params = {"run_id": rid, "error": encode_error(error)}
        row = await self._db.fetch_one(self._q.cancel_run, params, row_factory=tuple_row)
        return bool(row and row[0])

    async def begin_step(
        self,
        job: Job,
        step_name: str,
        rpc_name: str | None,
        data: Any,
        *,
        retries: int | None,
        retry_delay: str | None,
        running: bool = True,
    ) -> str | None:
        """Create a step of ``job``'s run and its first attempt (``running``, or
        ``pending`` with ``running=False``) if the run is running (one statement).

        Returns the step id, or None when the run is not running (cancelled
        meanwhile). Raises :class:`StepExistsError` for a name the run already has,
        :class:`InvalidInputError` for data that is not JSON,
        :class:`LeaseLostError` when the job's lease is gone.
        """
        params = {
            "run_id": run_uuid(job.run_id),
            "step_name": check_text("step_name", step_name),
            "rpc_name": check_optional_text("rpc_name", rpc_name),
            "data": None if data is None else jsonb(data),
            "retries": retries,
            "retry_delay": retry_delay,
            "running": running,
            "token": job.token,
        }
        try:
            row = await self._db.fetch_one(self._q.begin_step, params, row_factory=tuple_row)
        except psycopg.errors.UniqueViolation:
            raise StepExistsError(job.run_id, step_name) from None
        _check_lease(row, job)
        assert row is not None
        return None if row[0] is None else str(row[0])

    async def set_step_running(self, job: Job, step_id: str) -> None:
        """The fenced :meth:`~AsyncWorkflowStateStore.set_step_running`."""
        await self._transition(job, self._q.set_step_running, step_id)

    async def set_step_scheduled(self, job: Job, step_id: str) -> None:
        """The fenced :meth:`~AsyncWorkflowStateStore.set_step_scheduled`."""
        await self._transition(job, self._q.set_step_scheduled, step_id)

    async def set_step_result(self, job: Job, step_id: str, result: Any) -> None:
        """The fenced :meth:`~AsyncWorkflowStateStore.set_step_result` (never rewrites
        a succeeded step)."""
        value = None if result is None else jsonb(result)
        await self._transition(job, self._q.set_step_result, step_id, result=value)

    async def set_step_error(self, job: Job, step_id: str, error: Any) -> None:
        """The fenced :meth:`~AsyncWorkflowStateStore.set_step_error`."""
        await self._transition(job, self._q.set_step_error, step_id, error=encode_error(error))

    async def retry_attempt(self, job: Job, step_id: str, status: str) -> int:
        """A new attempt (``pending`` or ``running``) of a step; returns its number."""
        params = {"step_id": step_uuid(step_id), "status": status, "token": job.token}
        row = await self._db.fetch_one(self._q.retry_attempt, params, row_factory=tuple_row)
        check_transition(row, step_id, job.run_id)
        assert row is not None
        return int(row[3])

    async def _transition(self, job: Job, query: bytes, step_id: str, **params: Any) -> None:
        params = {"step_id": step_uuid(step_id), "token": job.token, **params}
        row = await self._db.fetch_one(query, params, row_factory=tuple_row)
        check_transition(row, step_id, job.run_id)

    async def update_run_state(self, job: Job, name: str, value: Any) -> None:
        """Set one named value of ``job``'s run state (fenced)."""
        params = {
            "run_id": run_uuid(job.run_id),
            "name": check_text("state name", name),
            "value": encode_state_value(value),
            "token": job.token,
        }
        row = await self._db.fetch_one(self._q.update_run_state, params, row_factory=tuple_row)
        _check_lease(row, job)

    async def run_status(self, run_id: str) -> str | None:
        """The status of a run, or None when it does not exist (one cheap query)."""
        rid = maybe_run_uuid(run_id)
        if rid is None:
            return None
        row = await self._db.fetch_one(self._q.run_status, {"run_id": rid}, row_factory=tuple_row)
        return None if row is None else str(row[0])

    async def jobs_of_run(self, run_id: str) -> list[dict[str, Any]]:
        """The queued jobs of a run, for inspection (status, attempts, last error...)."""
        rid = maybe_run_uuid(run_id)
        if rid is None:
            return []
        return await self._db.fetch_all(self._q.jobs_of_run, {"run_id": rid}, row_factory=dict_row)
