"""AI agent storage: conversations (threads, messages, tool calls, working memory),
agent run state with approvals, and the read-only console queries.

Thin I/O flow only: SQL is in ``pikku_pg._sql.ai``, encoding and row mapping in
``pikku_pg._rows.ai``. Every call is one statement (one round trip on an owned
pool), so every write is atomic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from psycopg.rows import tuple_row

from pikku_pg._arrays import EMPTY_ARRAY
from pikku_pg._async._service import AsyncPgService
from pikku_pg._check import check_list, check_optional_text, check_text_list, quote
from pikku_pg._json import json_text, read_object
from pikku_pg._rows import ai as rows
from pikku_pg._sql import ai as q
from pikku_pg._sql.ai import AIQueries
from pikku_pg.errors import (
    MessageNotFoundError,
    RunNotFoundError,
    ThreadNotFoundError,
)
from pikku_pg.migrations import Component
from pikku_pg.models._base import trusted
from pikku_pg.models.ai import (
    AgentRunApproval,
    AgentRunInput,
    AgentRunRow,
    AgentRunState,
    AgentRunUpdate,
    AIMessage,
    AIThread,
)


class AsyncPgAIStorageService(AsyncPgService):
    """Conversation store and run-state store of Pikku AI agents (TypeScript
    ``PgAIStorageService``); one object serves both roles.

    ``conn`` is a conninfo string, an ``AsyncConnectionPool`` or an
    ``AsyncConnection``; the tables live in ``schema`` (default ``pikku_ai``).
    Call :meth:`init` once to create or upgrade them.
    """

    components: ClassVar[tuple[Component, ...]] = (q.COMPONENT,)
    default_schema: ClassVar[str] = q.COMPONENT.default_schema

    def _prepare_queries(self) -> None:
        self._q = AIQueries.render(self._schema)

    # --- threads -------------------------------------------------------------------------

    async def create_thread(
        self,
        resource_id: str,
        *,
        thread_id: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AIThread:
        """Create a thread for ``resource_id`` (a new UUID id unless ``thread_id`` is given).

        Raises ``ConflictError`` if ``thread_id`` is taken.
        """
        new_id = rows.text("thread_id", thread_id) if thread_id is not None else rows.new_id()
        meta = None if metadata is None else rows.json_object("metadata", metadata)
        params = (
            new_id,
            rows.text("resource_id", resource_id),
            check_optional_text("title", title),
            None if meta is None else json_text("metadata", meta),
        )
        with rows.translate_errors(f"create_thread({quote(new_id)})"):
            row = await self._db.fetch_one(self._q.create_thread, params, row_factory=tuple_row)
        assert row is not None
        return trusted(
            AIThread,
            id=new_id,
            resource_id=resource_id,
            title=title,
            metadata=meta,
            created_at=row[0],
            updated_at=row[1],
        )

    async def get_thread(self, thread_id: str) -> AIThread:
        """The thread ``thread_id``; raises ``ThreadNotFoundError`` if there is none."""
        row = await self._db.fetch_one(
            self._q.get_thread,
            (rows.text("thread_id", thread_id),),
            row_factory=tuple_row,
            read=True,
        )
        if row is None:
            raise ThreadNotFoundError(thread_id)
        return rows.thread_from_row(row)

    async def get_threads(self, resource_id: str) -> list[AIThread]:
        """The threads of ``resource_id``, most recently updated first."""
        found = await self._db.fetch_all(
            self._q.get_threads,
            (rows.text("resource_id", resource_id),),
            row_factory=tuple_row,
            read=True,
        )
        return [rows.thread_from_row(row) for row in found]

    async def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with its messages, tool calls, runs and thread-scoped memory.

        Deleting a thread that does not exist does nothing.
        """
        await self._db.execute(
            self._q.delete_thread, {"thread_id": rows.text("thread_id", thread_id)}
        )

    # --- messages --------------------------------------------------------------------------

    async def get_messages(
        self, thread_id: str, *, last_n: int | None = None, cursor: str | None = None
    ) -> list[AIMessage]:
        """Messages of a thread, oldest first.

        ``last_n``: only the newest N. ``cursor``: a message id of this thread; returns
        up to ``last_n`` (default 50) messages just before it (raises
        ``MessageNotFoundError`` if the cursor is not a message of this thread). An
        assistant message whose tool calls have results is followed by a ``tool``
        message ``tool-results-<message id>`` carrying them.
        """
        params: dict[str, Any] = {
            "thread_id": rows.text("thread_id", thread_id),
            "limit": None if last_n is None else rows.positive_int("last_n", last_n),
        }
        if cursor is None:
            found = await self._db.fetch_all(
                self._q.get_messages, params, row_factory=tuple_row, read=True
            )
            return rows.messages_from_rows(found)
        params["cursor"] = rows.text("cursor", cursor)
        if params["limit"] is None:
            params["limit"] = rows.DEFAULT_PAGE
        found = await self._db.fetch_all(
            self._q.get_messages_before, params, row_factory=tuple_row, read=True
        )
        if not found:
            raise MessageNotFoundError(
                cursor,
                f"cursor message {quote(cursor)} is not a message of thread {quote(thread_id)}",
            )
        return rows.messages_from_rows(found)

    async def save_messages(
        self, thread_id: str, messages: Sequence[AIMessage | Mapping[str, Any]]
    ) -> None:
        """Store a batch of messages in one transaction (one round trip).

        Non-tool messages become rows with their tool calls, in the order given; the
        results of ``tool`` messages fill in their tool calls (of this batch or stored
        before); the thread's ``updated_at`` moves. A message id already stored in
        this thread is skipped, so a retried save is a no-op.

        Raises ``ThreadNotFoundError`` (unknown thread), ``ConflictError`` (a message
        id stored in another thread), ``InvalidInputError`` (a tool result whose tool
        call does not exist in this thread, bad values). Nothing is written on error.
        """
        tid = rows.text("thread_id", thread_id)
        params = rows.encode_messages(tid, check_list("messages", messages, of="messages"))
        if params is None:
            return
        with rows.translate_errors(f"save_messages({quote(tid)})", tid):
            row = await self._db.fetch_one(self._q.save_messages, params, row_factory=tuple_row)
        assert row is not None
        rows.check_save_verdict(tid, row)

    # --- working memory ----------------------------------------------------------------------

    async def get_working_memory(self, id: str, scope: str) -> dict[str, Any] | None:
        """The working memory of a thread or resource (``scope``), or None."""
        row = await self._db.fetch_one(
            self._q.get_working_memory,
            (rows.text("id", id), rows.scope(scope)),
            row_factory=tuple_row,
            read=True,
        )
        return None if row is None else read_object(row[0])

    async def save_working_memory(self, id: str, scope: str, data: Mapping[str, Any]) -> None:
        """Replace the working memory of a thread or resource."""
        encoded = json_text("working memory", rows.json_object("data", data))
        await self._db.execute(
            self._q.save_working_memory, (rows.text("id", id), rows.scope(scope), encoded)
        )

    async def update_working_memory(
        self, id: str, scope: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Shallow-merge ``patch`` into the working memory, atomically; returns the result.

        One statement under the row lock: concurrent patches all land.
        """
        params = {
            "id": rows.text("id", id),
            "scope": rows.scope(scope),
            "patch": json_text("working memory patch", rows.json_object("patch", patch)),
        }
        row = await self._db.fetch_one(self._q.update_working_memory, params, row_factory=tuple_row)
        assert row is not None
        return read_object(row[0]) or {}

    # --- runs ----------------------------------------------------------------------------------

    async def create_run(self, run: AgentRunInput | AgentRunState | Mapping[str, Any]) -> str:
        """Store a new agent run with its pending approvals; returns its (database-made) id.

        Raises ``ThreadNotFoundError`` for an unknown thread and ``InvalidInputError``
        for an approval whose tool call is not stored in the run's thread.
        """
        params = rows.encode_new_run(run)
        plain = params["a_ids"] == EMPTY_ARRAY
        query = self._q.create_run_plain if plain else self._q.create_run
        with rows.translate_errors("create_run", params["thread_id"]):
            row = await self._db.fetch_one(query, params, row_factory=tuple_row)
        assert row is not None
        if plain:
            return str(row[0])
        return rows.check_create_run_verdict(params["thread_id"], row)

    async def update_run(self, run_id: str, updates: AgentRunUpdate | Mapping[str, Any]) -> None:
        """Change the fields given in ``updates``; ``pending_approvals`` replaces the set.

        Raises ``RunNotFoundError`` for an unknown run and ``InvalidInputError`` for an
        approval whose tool call is not stored in the run's thread.
        """
        params = rows.encode_run_update(rows.text("run_id", run_id), updates)
        if not params["set_approvals"]:
            query = self._q.update_run_plain[rows.given_run_fields(params)]
            if await self._db.execute(query, params) == 0:
                raise RunNotFoundError(run_id)
            return
        with rows.translate_errors(f"update_run({quote(run_id)})"):
            row = await self._db.fetch_one(self._q.update_run, params, row_factory=tuple_row)
        assert row is not None
        if not row[0]:
            raise RunNotFoundError(run_id)
        rows.check_missing_tool_calls(row[1])

    async def get_run(self, run_id: str) -> AgentRunState | None:
        """The run with its pending approvals, or None."""
        row = await self._db.fetch_one(
            self._q.get_run, (rows.text("run_id", run_id),), row_factory=tuple_row, read=True
        )
        return None if row is None else rows.run_from_row(row)

    async def get_runs_by_thread(self, thread_id: str) -> list[AgentRunState]:
        """The runs of a thread, newest first, with their pending approvals (one query)."""
        found = await self._db.fetch_all(
            self._q.get_runs_by_thread,
            {"thread_id": rows.text("thread_id", thread_id)},
            row_factory=tuple_row,
            read=True,
        )
        return [rows.run_from_row(row) for row in found]

    async def find_run_by_tool_call_id(self, tool_call_id: str) -> AgentRunApproval | None:
        """The run waiting for approval of ``tool_call_id`` and that approval, or None."""
        row = await self._db.fetch_one(
            self._q.find_run_by_tool_call_id,
            (rows.text("tool_call_id", tool_call_id),),
            row_factory=tuple_row,
            read=True,
        )
        return None if row is None else rows.found_approval(row, tool_call_id)

    async def resolve_approval(self, tool_call_id: str, status: str) -> bool:
        """Mark a pending approval ``approved`` or ``denied``.

        A compare-and-set: returns True if it changed a pending approval, False if the
        tool call was not pending (unknown, or already resolved). Of two concurrent
        calls for one tool call exactly one gets True.
        """
        params = (rows.approval_status(status), rows.text("tool_call_id", tool_call_id))
        return await self._db.execute(self._q.resolve_approval, params) == 1


class AsyncPgAgentRunService(AsyncPgService):
    """Read-only queries of the AI tables for a console (TypeScript ``PgAgentRunService``),
    plus ``delete_thread``."""

    components: ClassVar[tuple[Component, ...]] = (q.COMPONENT,)
    default_schema: ClassVar[str] = q.COMPONENT.default_schema

    def _prepare_queries(self) -> None:
        self._q = AIQueries.render(self._schema)

    async def list_threads(
        self,
        *,
        agent_name: str | None = None,
        resource_id: str | None = None,
        owners: Sequence[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[AIThread]:
        """Threads, most recently updated first.

        ``agent_name``: only threads with a run of that agent. ``resource_id``: only
        that resource's threads. ``owners``: only threads whose resource id equals an
        owner or starts with ``owner:`` (an empty list matches nothing; ``%`` and
        ``_`` are plain characters).
        """
        params: dict[str, Any] = {
            "limit": rows.non_negative_int("limit", limit),
            "offset": rows.non_negative_int("offset", offset),
        }
        if agent_name is not None:
            params["agent_name"] = rows.text("agent_name", agent_name)
        if resource_id is not None:
            params["resource_id"] = rows.text("resource_id", resource_id)
        if owners is not None:
            params["owners"] = check_text_list("owners", owners, item="owner")
            if not params["owners"]:
                return []
        filters = tuple(name for name in ("agent_name", "resource_id", "owners") if name in params)
        found = await self._db.fetch_all(
            self._q.list_threads[filters], params, row_factory=tuple_row, read=True
        )
        return [rows.thread_from_row(row) for row in found]

    async def get_thread(self, thread_id: str) -> AIThread | None:
        """The thread, or None."""
        row = await self._db.fetch_one(
            self._q.get_thread,
            (rows.text("thread_id", thread_id),),
            row_factory=tuple_row,
            read=True,
        )
        return None if row is None else rows.thread_from_row(row)

    async def get_thread_messages(self, thread_id: str) -> list[AIMessage]:
        """All messages of a thread, oldest first (same mapping as ``get_messages``)."""
        found = await self._db.fetch_all(
            self._q.get_messages,
            {"thread_id": rows.text("thread_id", thread_id), "limit": None},
            row_factory=tuple_row,
            read=True,
        )
        return rows.messages_from_rows(found)

    async def get_thread_runs(self, thread_id: str) -> list[AgentRunRow]:
        """The runs of a thread, newest first, with their error messages."""
        found = await self._db.fetch_all(
            self._q.get_thread_runs,
            (rows.text("thread_id", thread_id),),
            row_factory=tuple_row,
            read=True,
        )
        return [rows.run_row_from_row(row) for row in found]

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete a thread and everything in it; returns whether it existed."""
        deleted = await self._db.execute(
            self._q.delete_thread, {"thread_id": rows.text("thread_id", thread_id)}
        )
        return deleted > 0

    async def get_distinct_agent_names(self) -> list[str]:
        """The names of the agents that have runs, sorted."""
        found = await self._db.fetch_all(
            self._q.distinct_agent_names, None, row_factory=tuple_row, read=True
        )
        return [row[0] for row in found]
