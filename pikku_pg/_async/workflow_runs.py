"""Read-only queries of workflow runs for a console (``AsyncPgWorkflowRunService``).

The module-level ``fetch_*`` functions are the reads shared with the workflow
state store, so both services answer them with the same statements.
"""

from __future__ import annotations

from typing import Any, ClassVar

from psycopg.rows import dict_row, tuple_row

from pikku_pg._async._database import AsyncDatabase
from pikku_pg._async._service import AsyncPgService
from pikku_pg._json import check_text
from pikku_pg._rows.workflow import (
    check_int,
    check_workflow_status,
    history_from_row,
    maybe_run_uuid,
    run_from_row,
    run_step_from_row,
    version_from_row,
)
from pikku_pg._sql.workflow import WORKFLOW, WorkflowQueries
from pikku_pg.errors import WorkflowRunNotFoundError
from pikku_pg.migrations import Component
from pikku_pg.models.workflow import (
    WorkflowRun,
    WorkflowRunStep,
    WorkflowStatus,
    WorkflowStepHistory,
    WorkflowVersion,
)


async def fetch_run(db: AsyncDatabase, q: WorkflowQueries, run_id: object) -> WorkflowRun | None:
    """The run ``run_id``, or None (also for text that is not a UUID)."""
    rid = maybe_run_uuid(run_id)
    if rid is None:
        return None
    row = await db.fetch_one(q.get_run, {"run_id": rid}, row_factory=dict_row, read=True)
    return None if row is None else run_from_row(row)


async def _rows_of_run(
    db: AsyncDatabase, query: bytes, run_id: object, row_factory: Any
) -> list[Any]:
    """The rows of a per-run query whose run comes back as one row of NULLs when it has
    nothing else; raises ``WorkflowRunNotFoundError`` for no row at all."""
    rid = maybe_run_uuid(run_id)
    rows = (
        []
        if rid is None
        else await db.fetch_all(query, {"run_id": rid}, row_factory=row_factory, read=True)
    )
    if not rows:
        raise WorkflowRunNotFoundError(run_id)
    return rows


async def fetch_run_steps(
    db: AsyncDatabase, q: WorkflowQueries, run_id: object
) -> list[WorkflowRunStep]:
    """The steps of a run in creation order, with attempt counts (one round trip)."""
    rows = await _rows_of_run(db, q.get_run_steps, run_id, tuple_row)
    # Column 3 is the step id: NULL on the one row of a run without steps.
    return [run_step_from_row(r) for r in rows if r[3] is not None]


async def fetch_run_history(
    db: AsyncDatabase, q: WorkflowQueries, run_id: object
) -> list[WorkflowStepHistory]:
    """Every attempt of every step of a run, oldest first (one round trip)."""
    rows = await _rows_of_run(db, q.get_run_history, run_id, dict_row)
    return [history_from_row(r) for r in rows if r["workflow_step_id"] is not None]


async def fetch_workflow_version(
    db: AsyncDatabase, q: WorkflowQueries, name: object, graph_hash: object
) -> WorkflowVersion | None:
    """The stored graph and source of a workflow version, or None."""
    params = {
        "name": check_text("workflow name", name),
        "graph_hash": check_text("graph_hash", graph_hash),
    }
    row = await db.fetch_one(q.get_version, params, row_factory=dict_row, read=True)
    return None if row is None else version_from_row(row)


class AsyncPgWorkflowRunService(AsyncPgService):
    """Read-only queries of workflow runs, steps and history (and ``delete_run``).

    ``AsyncPgWorkflowRunService(conn, schema="pikku_workflow")``; ``conn`` is a
    conninfo string, a pool or a connection (see :class:`AsyncPgService`).
    """

    components: ClassVar[tuple[Component, ...]] = (WORKFLOW,)
    default_schema: ClassVar[str] = WORKFLOW.default_schema

    def _prepare_queries(self) -> None:
        self._q = WorkflowQueries.render(self._schema)

    async def list_runs(
        self,
        *,
        workflow_name: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[WorkflowRun]:
        """Runs newest first, optionally of one workflow and/or in one status."""
        params: dict[str, Any] = {
            # Bounded like every page argument (pikku_pg._check.MAX_INT4).
            "limit": check_int("limit", limit),
            "offset": check_int("offset", offset),
        }
        if workflow_name is not None:
            params["workflow"] = check_text("workflow_name", workflow_name)
        if status is not None:
            params["status"] = check_workflow_status(status)
        filters = tuple(name for name in ("workflow", "status") if name in params)
        query = self._q.list_runs[filters]
        rows = await self._db.fetch_all(query, params, row_factory=dict_row, read=True)
        return [run_from_row(r) for r in rows]

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        """A run by id, or None."""
        return await fetch_run(self._db, self._q, run_id)

    async def get_run_steps(self, run_id: str) -> list[WorkflowRunStep]:
        """The steps of a run in the order they were created, with attempt counts.

        Raises :class:`WorkflowRunNotFoundError` for an unknown run.
        """
        return await fetch_run_steps(self._db, self._q, run_id)

    async def get_run_history(self, run_id: str) -> list[WorkflowStepHistory]:
        """Every attempt of every step, oldest first (``attempt_count`` = attempt number).

        Raises :class:`WorkflowRunNotFoundError` for an unknown run.
        """
        return await fetch_run_history(self._db, self._q, run_id)

    async def get_distinct_workflow_names(self) -> list[str]:
        """The names of the workflows that have runs, sorted."""
        rows = await self._db.fetch_all(
            self._q.distinct_workflow_names, row_factory=tuple_row, read=True
        )
        return [r[0] for r in rows]

    async def get_workflow_version(self, name: str, graph_hash: str) -> WorkflowVersion | None:
        """The graph and source stored for a workflow version, or None."""
        return await fetch_workflow_version(self._db, self._q, name, graph_hash)

    async def delete_run(self, run_id: str) -> bool:
        """Delete a run with its steps and their history; whether it existed."""
        rid = maybe_run_uuid(run_id)
        if rid is None:
            return False
        return await self._db.execute(self._q.delete_run, {"run_id": rid}) > 0
