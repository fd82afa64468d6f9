"""Input encoding and row mapping of the AI storage (pure functions, no I/O).

Encoding validates what the services are given (types, NUL characters, JSON) and
turns it into the bound parameters of ``pikku_pg._sql.ai``; decoding turns rows into
models without re-validating data that the database hands back. TypeScript stored
many objects as a JSON string holding JSON, and message content as raw text or JSON
text: the readers accept both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import psycopg
from pydantic import BaseModel, TypeAdapter, ValidationError

from pikku_pg._arrays import text_array, timestamp_array
from pikku_pg._check import (
    MAX_INT4,
    check_int,
    check_optional_text,
    quote,
    quote_all,
    validation_summary,
)
from pikku_pg._json import check_text, dumps, json_text, read_list, read_object
from pikku_pg.errors import ConflictError, InvalidInputError, ThreadNotFoundError
from pikku_pg.models._base import trusted
from pikku_pg.models.ai import (
    AgentCallApproval,
    AgentRunApproval,
    AgentRunInput,
    AgentRunRow,
    AgentRunState,
    AgentRunUpdate,
    AIMessage,
    AIThread,
    ContentPart,
    PendingApproval,
    ToolCall,
    ToolCallApproval,
    ToolResult,
    Usage,
)

_Model = TypeVar("_Model", bound=BaseModel)

SCOPES = ("thread", "resource")
APPROVAL_STATUSES = ("approved", "denied")
DEFAULT_PAGE = 50

_CONTENT_PARTS: TypeAdapter[list[ContentPart]] = TypeAdapter(list[ContentPart])


# --- trusted construction ---------------------------------------------------------------------


# --- validation helpers ------------------------------------------------------------------


text = check_text


def positive_int(field: str, value: object) -> int:
    """An int in ``[1, MAX_INT4]`` (a page size: ``last_n``)."""
    return check_int(field, value, min=1, max=MAX_INT4)


def non_negative_int(field: str, value: object) -> int:
    """An int in ``[0, MAX_INT4]`` (``limit``, ``offset``)."""
    return check_int(field, value, min=0, max=MAX_INT4)


def scope(value: object) -> str:
    """A working memory scope: ``thread`` or ``resource``."""
    if value not in SCOPES:
        raise InvalidInputError(f"scope must be 'thread' or 'resource', not {quote(value)}")
    return str(value)


def approval_status(value: object) -> str:
    """An approval decision: ``approved`` or ``denied``."""
    if value not in APPROVAL_STATUSES:
        raise InvalidInputError(f"status must be 'approved' or 'denied', not {quote(value)}")
    return str(value)


def json_object(field: str, value: object) -> dict[str, Any]:
    """A dict (working memory, a patch)."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{field} must be a dict, not {type(value).__name__}")
    return dict(value)


def coerce(model: type[_Model], value: object, what: str) -> _Model:
    """A model instance from a model or a dict (camelCase or snake_case keys)."""
    if isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{what} must be a {model.__name__} or a dict, not {type(value).__name__}"
        )
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid {what}: {validation_summary(exc)}") from None


def _utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC (never as the server's time zone)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


# --- message content -----------------------------------------------------------------------


def encode_content(content: str | list[Any] | None) -> str | None:
    """The TEXT stored for a message content (read back as TypeScript does).

    None -> NULL; parts -> compact JSON; a string -> itself, unless reading it back
    would give something else (it parses as a JSON string or list), then its JSON.
    """
    if content is None:
        return None
    if isinstance(content, str):
        text("message content", content)
        head = content.lstrip()[:1]
        if head in ('"', "["):
            try:
                json.loads(content)
            except ValueError:
                return content
            return dumps(content)
        return content
    parts = [
        part.model_dump(by_alias=True, exclude_none=True, mode="json")
        if isinstance(part, BaseModel)
        else part
        for part in content
    ]
    return json_text("message content", parts)


def decode_content(stored: str | None) -> str | list[Any] | None:
    """Read a stored message content: a JSON string, content parts, or the raw text."""
    if stored is None:
        return None
    head = stored.lstrip()[:1]
    if head == '"':
        try:
            value = json.loads(stored)
        except ValueError:
            return stored
        return value if isinstance(value, str) else stored
    if head == "[":
        try:
            return list(_CONTENT_PARTS.validate_json(stored))
        except ValidationError:
            return stored
    return stored


def read_structured(value: Any) -> Any:
    """A JSONB value that TypeScript may have stored as a JSON string of an object/list."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, (dict, list)):
            return parsed
    return value


# --- threads ---------------------------------------------------------------------------------


def thread_from_row(row: Sequence[Any]) -> AIThread:
    """(id, resource_id, title, metadata, created_at, updated_at) -> AIThread."""
    return trusted(
        AIThread,
        id=row[0],
        resource_id=row[1],
        title=row[2],
        metadata=read_object(row[3]),
        created_at=row[4],
        updated_at=row[5],
    )


# --- messages --------------------------------------------------------------------------------


def encode_messages(thread_id: str, messages: Iterable[object]) -> dict[str, Any] | None:
    """Validate a batch for ``save_messages`` and build its parameters (None: nothing to save).

    Non-tool messages become rows (with their tool calls, in order); the results of
    ``tool`` messages fill in tool calls, of this batch or stored before (the last
    result given for a tool call wins).
    """
    ids: list[str] = []
    roles: list[str] = []
    contents: list[str | None] = []
    created: list[datetime | None] = []
    tc_ids: list[str] = []
    tc_message_ids: list[str] = []
    tc_names: list[str] = []
    tc_args: list[str] = []
    results: dict[str, str] = {}
    seen_messages: set[str] = set()
    for raw in messages:
        message = coerce(AIMessage, raw, "message")
        if message.role == "tool":
            for result in message.tool_results or ():
                results[text("tool result id", result.id)] = text(
                    f"result of tool call {quote(result.id)}", result.result
                )
            continue
        message_id = text("message id", message.id)
        if message_id in seen_messages:
            raise InvalidInputError(f"message id {quote(message_id)} appears twice in the batch")
        seen_messages.add(message_id)
        ids.append(message_id)
        roles.append(message.role)
        contents.append(encode_content(message.content))
        created.append(_utc(message.created_at))
        for call in message.tool_calls or ():
            tc_ids.append(text("tool call id", call.id))
            tc_message_ids.append(message_id)
            tc_names.append(text(f"name of tool call {quote(call.id)}", call.name))
            tc_args.append(json_text(f"args of tool call {quote(call.id)}", call.args))
    if len(set(tc_ids)) != len(tc_ids):
        raise InvalidInputError("a tool call id appears twice in the batch")
    if not ids and not results:
        return None
    batch_results = [results.get(tc_id) for tc_id in tc_ids]
    return {
        "thread_id": thread_id,
        "ids": text_array(ids),
        "roles": text_array(roles),
        "contents": text_array(contents),
        "created": timestamp_array(created),
        "tc_ids": text_array(tc_ids),
        "tc_message_ids": text_array(tc_message_ids),
        "tc_names": text_array(tc_names),
        "tc_args": text_array(tc_args),
        "tc_results": text_array(batch_results),
        # Every result also goes to the UPDATE, which only sees tool calls stored before
        # this statement (e.g. those of a message of the batch that is already stored).
        "result_ids": text_array(results),
        "result_values": text_array(results.values()),
    }


def messages_from_rows(rows: Iterable[Sequence[Any]]) -> list[AIMessage]:
    """(id, role, content, created_at, tool_calls) rows -> messages.

    An assistant message whose tool calls have results is followed by a ``tool``
    message ``tool-results-<id>`` carrying them (the TypeScript contract). A row of
    NULLs (a cursor with nothing before it) is skipped.
    """
    messages: list[AIMessage] = []
    for message_id, role, content, created_at, calls in rows:
        if message_id is None:
            continue
        tool_calls = (
            [trusted(ToolCall, id=c[0], name=c[1], args=read_structured(c[2])) for c in calls]
            if calls
            else None
        )
        messages.append(
            trusted(
                AIMessage,
                id=message_id,
                role=role,
                content=decode_content(content),
                tool_calls=tool_calls,
                tool_results=None,
                created_at=created_at,
            )
        )
        if not calls:
            continue
        done = [
            trusted(ToolResult, id=c[0], name=c[1], result=c[3]) for c in calls if c[3] is not None
        ]
        if done:
            messages.append(
                trusted(
                    AIMessage,
                    id=f"tool-results-{message_id}",
                    role="tool",
                    content=None,
                    tool_calls=None,
                    tool_results=done,
                    created_at=created_at,
                )
            )
    return messages


# --- working memory ----------------------------------------------------------------------------


def read_memory(value: Any) -> dict[str, Any] | None:
    """Working memory as stored (an object, or TypeScript's JSON string of one)."""
    return read_object(value)


# --- runs ----------------------------------------------------------------------------------------


def encode_approvals(approvals: Sequence[object] | None) -> dict[str, Any]:
    """Parameters of the ``approvals`` CTE (parallel arrays)."""
    a_ids: list[str] = []
    a_types: list[str] = []
    a_agent_run_ids: list[str | None] = []
    a_display_names: list[str | None] = []
    a_display_args: list[str | None] = []
    for raw in approvals or ():
        approval: ToolCallApproval | AgentCallApproval
        if isinstance(raw, (ToolCallApproval, AgentCallApproval)):
            approval = raw
        elif isinstance(raw, Mapping) and raw.get("type") == "agent-call":
            approval = coerce(AgentCallApproval, raw, "pending approval")
        elif isinstance(raw, Mapping) and raw.get("type") == "tool-call":
            approval = coerce(ToolCallApproval, raw, "pending approval")
        else:
            kind = raw.get("type") if isinstance(raw, Mapping) else type(raw).__name__
            raise InvalidInputError(
                f"a pending approval must be of type 'tool-call' or 'agent-call', not {quote(kind)}"
            )
        a_ids.append(text("approval tool call id", approval.tool_call_id))
        a_types.append(approval.type)
        if isinstance(approval, AgentCallApproval):
            a_agent_run_ids.append(text("approval agent run id", approval.agent_run_id))
            a_display_names.append(text("approval display tool name", approval.display_tool_name))
            a_display_args.append(json_text("approval display args", approval.display_args))
        else:
            a_agent_run_ids.append(None)
            a_display_names.append(None)
            a_display_args.append(None)
    if len(set(a_ids)) != len(a_ids):
        raise InvalidInputError("a tool call appears twice in the pending approvals")
    return {
        "a_ids": text_array(a_ids),
        "a_types": text_array(a_types),
        "a_agent_run_ids": text_array(a_agent_run_ids),
        "a_display_names": text_array(a_display_names),
        "a_display_args": text_array(a_display_args),
    }


def _usage(usage: Usage) -> dict[str, Any]:
    for field in ("input_tokens", "output_tokens"):
        value = getattr(usage, field)
        if not -(2**31) <= value < 2**31:
            raise InvalidInputError(f"usage.{field} does not fit in an integer column: {value}")
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "model": text("usage.model", usage.model),
    }


def _missing_rpcs(value: list[str] | None) -> str | None:
    if value is None:
        return None
    for name in value:
        text("missing_rpcs item", name)
    return json_text("missing_rpcs", value)


def encode_new_run(raw: object) -> dict[str, Any]:
    """Validate a ``create_run`` input and build its parameters."""
    if isinstance(raw, AgentRunState):
        raw = raw.model_dump(exclude={"run_id"})
    run = coerce(AgentRunInput, raw, "run")
    params = {
        "agent_name": text("agent_name", run.agent_name),
        "thread_id": text("thread_id", run.thread_id),
        "resource_id": text("resource_id", run.resource_id),
        "status": run.status,
        "error_message": check_optional_text("error_message", run.error_message),
        "suspend_reason": run.suspend_reason,
        "missing_rpcs": _missing_rpcs(run.missing_rpcs),
        "created_at": _utc(run.created_at),
        "updated_at": _utc(run.updated_at),
    }
    params.update(_usage(run.usage))
    params.update(encode_approvals(run.pending_approvals))
    return params


def encode_run_update(run_id: str, raw: object) -> dict[str, Any]:
    """Validate an ``update_run`` input: flags say which fields were given."""
    # Keys present with None count as given (they clear): pydantic keeps them in fields_set.
    update = coerce(AgentRunUpdate, raw, "run update")
    given = update.model_fields_set
    if "status" in given and update.status is None:
        raise InvalidInputError("status cannot be None")
    if "usage" in given and update.usage is None:
        raise InvalidInputError("usage cannot be None")
    params: dict[str, Any] = {
        "run_id": run_id,
        "set_status": "status" in given,
        "status": update.status,
        "set_error_message": "error_message" in given,
        "error_message": check_optional_text("error_message", update.error_message),
        "set_suspend_reason": "suspend_reason" in given,
        "suspend_reason": update.suspend_reason,
        "set_missing_rpcs": "missing_rpcs" in given,
        "missing_rpcs": _missing_rpcs(update.missing_rpcs),
        "set_usage": "usage" in given,
        "input_tokens": None,
        "output_tokens": None,
        "model": None,
        "set_approvals": "pending_approvals" in given,
    }
    if update.usage is not None:
        params.update(_usage(update.usage))
    params.update(encode_approvals(update.pending_approvals))
    return params


def given_run_fields(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The run fields an ``update_run`` changes (besides approvals), in a fixed order."""
    return tuple(
        f
        for f in ("status", "error_message", "suspend_reason", "missing_rpcs", "usage")
        if params[f"set_{f}"]
    )


def _approval(item: Sequence[Any]) -> ToolCallApproval | AgentCallApproval:
    """[id, type, tool_name, args, agent_run_id, display_tool_name, display_args] -> approval."""
    if item[1] == "agent-call":
        return trusted(
            AgentCallApproval,
            type="agent-call",
            tool_call_id=item[0],
            agent_name=item[2],
            agent_run_id=item[4],
            display_tool_name=item[5],
            display_args=read_structured(item[6]),
        )
    return trusted(
        ToolCallApproval,
        type="tool-call",
        tool_call_id=item[0],
        tool_name=item[2],
        args=read_structured(item[3]),
    )


def _run_fields(row: Sequence[Any]) -> dict[str, Any]:
    """The fields that both forms of a ``_RUN_COLUMNS`` row share."""
    return {
        "run_id": row[0],
        "agent_name": row[1],
        "thread_id": row[2],
        "resource_id": row[3],
        "status": row[4],
        "error_message": row[5],
        "suspend_reason": row[6],
        "missing_rpcs": read_list(row[7]),
        "created_at": row[11],
        "updated_at": row[12],
    }


def run_from_row(row: Sequence[Any]) -> AgentRunState:
    """A ``_RUN_COLUMNS`` row plus its approvals array -> AgentRunState."""
    approvals = row[13]
    return trusted(
        AgentRunState,
        **_run_fields(row),
        pending_approvals=[_approval(a) for a in approvals] if approvals else None,
        usage=trusted(Usage, input_tokens=row[8], output_tokens=row[9], model=row[10]),
    )


def found_approval(row: Sequence[Any], tool_call_id: str) -> AgentRunApproval:
    """The run of a pending tool call and that approval."""
    run = run_from_row(row)
    approval: PendingApproval = next(
        a for a in run.pending_approvals or () if a.tool_call_id == tool_call_id
    )
    return trusted(AgentRunApproval, run=run, approval=approval)


def run_row_from_row(row: Sequence[Any]) -> AgentRunRow:
    """A ``_RUN_COLUMNS`` row -> AgentRunRow (the console's flat form)."""
    return trusted(
        AgentRunRow,
        **_run_fields(row),
        usage_input_tokens=row[8],
        usage_output_tokens=row[9],
        usage_model=row[10],
    )


# --- database errors -----------------------------------------------------------------------------


@contextmanager
def translate_errors(what: str, thread_id: str | None = None) -> Iterator[None]:
    """Turn the database errors a caller can act on into ``pikku_pg.errors``."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        detail = exc.diag.message_detail or str(exc)
        raise ConflictError(f"{what}: an id is already stored elsewhere ({detail})") from None
    except psycopg.errors.ForeignKeyViolation as exc:
        if thread_id is not None and "ai_threads" in (exc.diag.message_detail or str(exc)):
            raise ThreadNotFoundError(thread_id) from None
        raise ConflictError(f"{what}: {exc.diag.message_primary or exc}") from None


# --- verdicts of the checked writes ---------------------------------------------------------


def new_id() -> str:
    """A new UUID as text (thread and message ids the caller did not give)."""
    return str(uuid.uuid4())


def check_missing_tool_calls(missing_ids: list[str] | None) -> None:
    """Raise for approvals naming tool calls that are not stored in the run's thread."""
    if missing_ids:
        raise InvalidInputError(
            f"no tool call {quote_all(missing_ids)} in the run's thread "
            "(save the message with the tool call first)"
        )


def check_save_verdict(thread_id: str, row: Sequence[Any]) -> None:
    """Raise for a ``save_messages`` that wrote nothing because a check failed."""
    thread_found, foreign_ids, missing_ids = row[0], row[1], row[2]
    if not thread_found:
        raise ThreadNotFoundError(thread_id)
    if foreign_ids:
        raise ConflictError(
            f"message id {quote_all(foreign_ids)} is already stored in another thread"
        )
    if missing_ids:
        raise InvalidInputError(
            f"tool result for unknown tool call {quote_all(missing_ids)} "
            f"(no such tool call in thread {quote(thread_id)} nor in the batch)"
        )


def check_create_run_verdict(thread_id: str, row: Sequence[Any]) -> str:
    """The new run id, or raise for a ``create_run`` that wrote nothing."""
    if not row[0]:
        raise ThreadNotFoundError(thread_id)
    check_missing_tool_calls(row[1])
    run_id = row[2]
    assert isinstance(run_id, str)
    return run_id
