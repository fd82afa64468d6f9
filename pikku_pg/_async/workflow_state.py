"""The workflow state store: runs, steps, step history, run state, versions, locks.

:class:`AsyncWorkflowStateStore` holds the storage operations of a durable
workflow engine (the public state methods of TypeScript's ``PgWorkflowService``).
:class:`AsyncPgWorkflowService` is the service users create; the engine builds on
the store and talks to the database only through these methods.

Every step transition changes the step row and its current history row in one
statement, so a crash never leaves them disagreeing. A succeeded step is final:
these methods refuse to change it unless asked explicitly (``overwrite=True``).
The engine does not write through them: its writes are fenced by its lease (see
:mod:`pikku_pg._async.workflow_queue`), so a runner that lost its lease changes
nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import psycopg
from psycopg.rows import dict_row, tuple_row

from pikku_pg._async._service import AsyncPgService
from pikku_pg._async.locks import advisory_lock, check_timeout
from pikku_pg._async.workflow_runs import (
    fetch_run,
    fetch_run_history,
    fetch_run_steps,
    fetch_workflow_version,
)
from pikku_pg._check import quote
from pikku_pg._json import check_text, jsonb
from pikku_pg._rows.workflow import (
    check_bool,
    check_int,
    check_optional_text,
    check_retry_status,
    check_transition,
    check_workflow_status,
    decode_state,
    encode_error,
    encode_retry_delay,
    encode_state_value,
    encode_wire,
    graph_state_from_rows,
    maybe_run_uuid,
    node_names,
    run_uuid,
    step_state_from_row,
    step_uuid,
)
from pikku_pg._sql.workflow import WORKFLOW, WorkflowQueries
from pikku_pg.errors import (
    InvalidInputError,
    StepExistsError,
    StepNotFoundError,
    WorkflowRunNotFoundError,
)
from pikku_pg.migrations import Component
from pikku_pg.models.workflow import (
    GraphState,
    SerializedError,
    StepState,
    WorkflowRun,
    WorkflowRunStep,
    WorkflowRunWire,
    WorkflowStatus,
    WorkflowStepHistory,
    WorkflowVersion,
)

ErrorInput = BaseException | SerializedError | Mapping[str, Any]


class AsyncWorkflowStateStore(AsyncPgService):
    """Storage operations of workflow runs and steps, in schema ``pikku_workflow``.

    Ids are database UUIDs returned as ``str``; methods accept ``str`` or
    ``uuid.UUID``. Text that is not a UUID names nothing: getters return None and
    other methods raise the not-found error of what they look up.
    """

    components: ClassVar[tuple[Component, ...]] = (WORKFLOW,)
    default_schema: ClassVar[str] = WORKFLOW.default_schema

    def _prepare_queries(self) -> None:
        self._q = WorkflowQueries.render(self._schema)

    # ------------------------------------------------------------------ runs

    async def create_run(
        self,
        workflow_name: str,
        input: Any,
        *,
        inline: bool = False,
        graph_hash: str | None = None,
        wire: WorkflowRunWire | Mapping[str, Any] | None = None,
    ) -> str:
        """Store a new run in status ``running``; returns its id (a database UUID).

        A ``wire`` of None is stored as NULL and reads as ``{"type": "unknown"}``.
        """
        if not isinstance(inline, bool):
            raise InvalidInputError(f"inline must be a bool, not {type(inline).__name__}")
        params = {
            "workflow": check_text("workflow_name", workflow_name),
            "input": jsonb(input),
            "inline": inline,
            "graph_hash": check_optional_text("graph_hash", graph_hash),
            "wire": encode_wire(wire),
        }
        row = await self._db.fetch_one(self._q.create_run, params, row_factory=tuple_row)
        assert row is not None
        return str(row[0])

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        """A run by id, or None."""
        return await fetch_run(self._db, self._q, run_id)

    async def update_run_status(
        self,
        run_id: str,
        status: WorkflowStatus,
        output: Any = None,
        error: ErrorInput | None = None,
    ) -> None:
        """Set a run's status, output and error (each call replaces all three).

        ``output`` is stored as given (``0``, ``False``, ``""`` and ``[]`` included);
        None stores NULL. ``error`` may be an exception (serialized as ``{name,
        message, stack, code}``), a :class:`SerializedError` or a mapping.
        """
        rid = run_uuid(run_id)
        params = {
            "run_id": rid,
            "status": check_workflow_status(status),
            "output": None if output is None else jsonb(output),
            "error": encode_error(error),
        }
        if await self._db.execute(self._q.update_run_status, params) == 0:
            raise WorkflowRunNotFoundError(run_id)

    async def get_run_history(self, run_id: str) -> list[WorkflowStepHistory]:
        """Every attempt of every step of a run, oldest first.

        ``attempt_count`` of an entry is the attempt's number; the ``running_at``,
        ``scheduled_at``, ``succeeded_at`` and ``failed_at`` stamps are those of
        that attempt. Raises :class:`WorkflowRunNotFoundError` for an unknown run.
        """
        return await fetch_run_history(self._db, self._q, run_id)

    # ----------------------------------------------------------------- steps

    async def insert_step_state(
        self,
        run_id: str,
        step_name: str,
        rpc_name: str | None,
        data: Any,
        *,
        retries: int | None = None,
        retry_delay: int | float | str | None = None,
    ) -> StepState:
        """Create a step with its first attempt (status ``pending``), in one statement.

        ``retry_delay`` is milliseconds (a number) or a duration string, stored as
        text. Raises :class:`StepExistsError` if the run already has ``step_name``,
        :class:`WorkflowRunNotFoundError` if the run does not exist.
        """
        rid = run_uuid(run_id)
        params = {
            "run_id": rid,
            "step_name": check_text("step_name", step_name),
            "rpc_name": check_optional_text("rpc_name", rpc_name),
            "data": None if data is None else jsonb(data),
            "retries": None if retries is None else check_int("retries", retries),
            "retry_delay": encode_retry_delay(retry_delay),
        }
        try:
            row = await self._db.fetch_one(self._q.insert_step_state, params, row_factory=dict_row)
        except psycopg.errors.UniqueViolation:
            raise StepExistsError(str(rid), step_name) from None
        except psycopg.errors.ForeignKeyViolation:
            raise WorkflowRunNotFoundError(run_id) from None
        assert row is not None
        return step_state_from_row(row)

    async def get_step_state(self, run_id: str, step_name: str) -> StepState:
        """The state of a step of a run; raises :class:`StepNotFoundError` if missing."""
        state = await self.find_step_state(run_id, step_name)
        if state is None:
            raise StepNotFoundError(
                (run_id, step_name),
                f"workflow run {quote(run_id)} has no step named {quote(step_name)}",
            )
        return state

    async def find_step_state(self, run_id: str, step_name: str) -> StepState | None:
        """The state of a step of a run, or None when the run has no such step."""
        check_text("step_name", step_name)
        rid = maybe_run_uuid(run_id)
        if rid is None:
            return None
        row = await self._db.fetch_one(
            self._q.get_step_state,
            {"run_id": rid, "step_name": step_name},
            row_factory=dict_row,
            read=True,
        )
        return None if row is None else step_state_from_row(row)

    async def get_run_steps(self, run_id: str) -> list[WorkflowRunStep]:
        """Every step of a run (creation order) with its current state, in one query.

        What a replay needs to know up front. Raises
        :class:`WorkflowRunNotFoundError` for an unknown run.
        """
        return await fetch_run_steps(self._db, self._q, run_id)

    async def _transition(self, query: bytes, step_id: str, overwrite: bool, **params: Any) -> None:
        sid = step_uuid(step_id)
        params = {"step_id": sid, "overwrite": check_bool("overwrite", overwrite), **params}
        row = await self._db.fetch_one(query, params, row_factory=tuple_row)
        check_transition(row, step_id)

    async def set_step_running(self, step_id: str, *, overwrite: bool = False) -> None:
        """Mark a step and its current attempt ``running`` (stamps ``running_at``).

        A step that succeeded is final: every transition of it raises
        :class:`StepAlreadyCompletedError` unless ``overwrite=True`` asks for it.
        """
        await self._transition(self._q.set_step_running, step_id, overwrite)

    async def set_step_scheduled(self, step_id: str, *, overwrite: bool = False) -> None:
        """Mark a step and its current attempt ``scheduled`` (stamps ``scheduled_at``)."""
        await self._transition(self._q.set_step_scheduled, step_id, overwrite)

    async def set_step_result(self, step_id: str, result: Any, *, overwrite: bool = False) -> None:
        """Mark a step and its current attempt ``succeeded`` with ``result`` (None allowed).

        A step that already succeeded keeps its result: this raises
        :class:`StepAlreadyCompletedError` unless ``overwrite=True``.
        """
        value = None if result is None else jsonb(result)
        await self._transition(self._q.set_step_result, step_id, overwrite, result=value)

    async def set_step_error(
        self, step_id: str, error: ErrorInput, *, overwrite: bool = False
    ) -> None:
        """Mark a step and its current attempt ``failed`` with the serialized ``error``."""
        if error is None:
            raise InvalidInputError("error must not be None")
        await self._transition(
            self._q.set_step_error, step_id, overwrite, error=encode_error(error)
        )

    async def create_retry_attempt(
        self, step_id: str, status: str = "pending", *, overwrite: bool = False
    ) -> StepState:
        """Start a new attempt of a step (``pending`` or ``running``); returns its state.

        The step's result and error are cleared and ``attempt_count`` grows by one.
        One pipelined transaction (one round trip). A step that succeeded raises
        :class:`StepAlreadyCompletedError` unless ``overwrite=True``.
        """
        sid = step_uuid(step_id)
        params = {
            "step_id": sid,
            "status": check_retry_status(status),
            "overwrite": check_bool("overwrite", overwrite),
        }
        async with self._db.pipeline() as conn:
            retry = await conn.execute(self._q.retry_attempt, params)
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._q.step_state_by_id, params)
            check_transition(await retry.fetchone(), step_id)
            row = await cur.fetchone()
        if row is None:
            raise StepNotFoundError(step_id)
        return step_state_from_row(row)

    # ------------------------------------------------------------ graph runs

    async def get_completed_graph_state(self, run_id: str) -> GraphState:
        """Nodes that succeeded, nodes that failed with no retry left, branches taken."""
        rows = await self._run_rows(self._q.completed_graph_state, run_id, {})
        return graph_state_from_rows([r for r in rows if r["step_name"] is not None])

    async def get_nodes_without_steps(self, run_id: str, node_ids: Iterable[str]) -> list[str]:
        """The node ids (in the given order) that have no step in the run yet."""
        names = node_names(node_ids)
        if not names:
            return []
        rows = await self._run_rows(self._q.existing_step_names, run_id, {"names": names})
        existing = {r["step_name"] for r in rows}
        return [n for n in names if n not in existing]

    async def get_node_results(self, run_id: str, node_ids: Iterable[str]) -> dict[str, Any]:
        """The results of the given nodes that succeeded, by node id."""
        names = node_names(node_ids)
        if not names:
            return {}
        rows = await self._run_rows(self._q.node_results, run_id, {"names": names})
        return {r["step_name"]: r["result"] for r in rows if r["step_name"] is not None}

    async def _run_rows(
        self, query: bytes, run_id: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Rows of a query that starts from the run; no row: the run does not exist."""
        rid = maybe_run_uuid(run_id)
        rows = (
            []
            if rid is None
            else await self._db.fetch_all(
                query, {"run_id": rid, **params}, row_factory=dict_row, read=True
            )
        )
        if not rows:
            raise WorkflowRunNotFoundError(run_id)
        return rows

    async def set_branch_taken(self, step_id: str, branch_key: str) -> None:
        """Record which branch a graph node took."""
        sid = step_uuid(step_id)
        params = {"step_id": sid, "branch": check_text("branch_key", branch_key)}
        if await self._db.execute(self._q.set_branch_taken, params) == 0:
            raise StepNotFoundError(step_id)

    async def update_run_state(self, run_id: str, name: str, value: Any) -> None:
        """Set one named value of a run's state (other names are untouched).

        Concurrent writers of different names lose nothing; any name works (dots
        and quotes are not paths).
        """
        rid = run_uuid(run_id)
        params = {
            "run_id": rid,
            "name": check_text("state name", name),
            "value": encode_state_value(value),
        }
        if await self._db.execute(self._q.update_run_state, params) == 0:
            raise WorkflowRunNotFoundError(run_id)

    async def get_run_state(self, run_id: str) -> dict[str, Any]:
        """A run's state values by name (TypeScript's JSON-string values decoded)."""
        rid = run_uuid(run_id)
        row = await self._db.fetch_one(
            self._q.get_run_state, {"run_id": rid}, row_factory=tuple_row, read=True
        )
        if row is None:
            raise WorkflowRunNotFoundError(run_id)
        return decode_state(row[0])

    # -------------------------------------------------------------- versions

    async def upsert_workflow_version(
        self, name: str, graph_hash: str, graph: Any, source: str
    ) -> bool:
        """Store a workflow version once; a second upsert of the pair changes nothing.

        Returns whether this call stored it.
        """
        params = {
            "name": check_text("workflow name", name),
            "graph_hash": check_text("graph_hash", graph_hash),
            "graph": jsonb(graph),
            "source": check_text("source", source),
        }
        return await self._db.execute(self._q.upsert_version, params) > 0

    async def get_workflow_version(self, name: str, graph_hash: str) -> WorkflowVersion | None:
        """The graph and source stored for a workflow version, or None."""
        return await fetch_workflow_version(self._db, self._q, name, graph_hash)

    # ----------------------------------------------------------------- locks

    def run_lock(
        self, run_id: str, *, timeout: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold an exclusive lock on a run for a block: ``async with wf.run_lock(run_id):``.

        ``timeout`` (seconds) bounds the wait and raises :class:`LockTimeoutError`;
        ``0`` does not wait; None waits as long as it takes. The lock is not
        re-entrant: taking it again inside the block waits for itself (on a pool).

        The lock is a PostgreSQL session advisory lock keyed with 64 bits
        (``hashtextextended`` of the schema, ``run`` and the run id). On a pool it
        lives on a connection checked out for the block and left idle (never idle
        in a transaction); the block's own calls use other connections, so the
        pool needs a connection per lock held plus one. It is released when the
        block ends, also on an exception, and by the server when its connection
        dies (process killed, network lost, ``pg_terminate_backend``). On a single
        borrowed connection the lock belongs to that connection's session: tasks
        sharing the connection do not exclude each other, other sessions are.

        Behind PgBouncer in *transaction* pooling mode, session locks do not work:
        between transactions PgBouncer may give the server connection holding the
        lock to another client, and the unlock may run on a different server
        connection, so the lock can stay held and exclude nobody. Give the service
        that takes locks a direct or session-pooled conninfo (the rest of the
        service's calls are fine in transaction mode with
        ``connect_kwargs={"prepare_threshold": None}``).
        """
        key = f"pikku_pg:{self._schema}:workflow:run:{run_uuid(run_id)}"
        return self._lock(key, timeout, f"workflow run {quote(run_id)}")

    def step_lock(
        self, run_id: str, step_name: str, *, timeout: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold an exclusive lock on one step of a run (see :meth:`run_lock`)."""
        rid = run_uuid(run_id)
        check_text("step_name", step_name)
        key = f"pikku_pg:{self._schema}:workflow:step:{rid}:{step_name}"
        return self._lock(key, timeout, f"step {quote(step_name)} of workflow run {quote(run_id)}")

    @asynccontextmanager
    async def _lock(self, key: str, timeout: float | None, what: str) -> AsyncIterator[None]:
        async with advisory_lock(
            self._db,
            key,
            timeout=check_timeout(timeout),
            what=what,
            # One borrowed connection serves every call, so a lock cannot keep it.
            shared_connection=self._db.single_connection,
        ):
            yield
