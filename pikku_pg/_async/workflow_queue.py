"""The job queue of queued workflow runs (table ``workflow_jobs``).

Claims use ``FOR UPDATE SKIP LOCKED`` and set a lease; the worker's heartbeat
extends it; a job whose worker died is claimed again once its lease runs out.
Every statement that makes a job due also sends a NOTIFY on :attr:`channel`.
See :mod:`pikku_pg._sql.workflow_queue` for the rules of the table.
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
    encode_error,
    encode_wire,
    maybe_run_uuid,
    run_from_row,
    run_uuid,
)
from pikku_pg._rows.workflow_engine import check_backoff, notify_channel
from pikku_pg._sql.workflow_queue import queue_queries
from pikku_pg.errors import StepExistsError
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


class AsyncWorkflowQueue:
    """Queue operations over a service's database (no control flow: see the worker).

    Also the few fused statements of the engine's hot path (:meth:`begin_step`,
    :meth:`finish_run`): they write the state tables exactly as the state store
    does, in fewer round trips.
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

    async def enqueue_replay(self, run_id: str, delay: float = 0.0) -> bool:
        """Queue a replay of a running run in ``delay`` seconds (merged with a queued one).

        Returns False when the run is not running (nothing queued).
        """
        params = {"run_id": run_uuid(run_id), "delay": float(delay), "channel": self.channel}
        rows = await self._db.fetch_all(self._q.enqueue_replay, params, row_factory=tuple_row)
        return bool(rows)

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
        self, run_id: str, step_name: str, delay: float = 0.0, backoff: str = "fixed"
    ) -> None:
        """Queue a job that runs one queued RPC step of a run (with its retry back-off)."""
        params = {
            "run_id": run_uuid(run_id),
            "step_name": check_text("step_name", step_name),
            "delay": float(delay),
            "backoff": check_backoff(backoff),
            "channel": self.channel,
        }
        await self._db.execute(self._q.enqueue_step, params)

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
        run_id: str,
        status: str,
        *,
        output: Any = None,
        error: Any = None,
        job: Job | None = None,
    ) -> bool:
        """Move a *running* run to ``status`` (and ack ``job``) in one transaction.

        Returns False when the run was no longer running (e.g. cancelled meanwhile):
        then it is left as it is.
        """
        params = {
            "run_id": run_uuid(run_id),
            "status": status,
            "output": None if output is None else jsonb(output),
            "error": encode_error(error),
        }
        if job is None:
            return await self._db.execute(self._q.finish_run, params) > 0
        ack = {"job_id": job.job_id, "token": job.token, "channel": self.channel}
        async with self._db.pipeline() as conn:
            cur = await conn.execute(self._q.finish_run, params)
            await conn.execute(self._q.ack, ack)
        return cur.rowcount > 0

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
        run_id: str,
        step_name: str,
        rpc_name: str | None,
        data: Any,
        *,
        retries: int | None,
        retry_delay: str | None,
    ) -> str | None:
        """Create a step and its first attempt, already ``running``, if the run is
        running (one statement); returns the step id, or None when the run is not
        running (cancelled meanwhile). Raises :class:`StepExistsError` for a name
        the run already has, :class:`InvalidInputError` for data that is not JSON.
        """
        params = {
            "run_id": run_uuid(run_id),
            "step_name": check_text("step_name", step_name),
            "rpc_name": check_optional_text("rpc_name", rpc_name),
            "data": None if data is None else jsonb(data),
            "retries": retries,
            "retry_delay": retry_delay,
        }
        try:
            row = await self._db.fetch_one(self._q.begin_step, params, row_factory=tuple_row)
        except psycopg.errors.UniqueViolation:
            raise StepExistsError(run_id, step_name) from None
        return None if row is None else str(row[0])

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
