"""Models of the AI storage: threads, messages, tool calls, agent runs and approvals.

Field names are snake_case; ``model_dump(by_alias=True, mode="json")`` gives the
TypeScript ``@pikku/core`` JSON shape (``resourceId``, ``toolCalls``...), and the
models validate from either spelling.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from pikku_pg.models._base import PikkuModel

MessageRole = Literal["system", "user", "assistant", "tool"]
RunStatus = Literal["running", "suspended", "completed", "failed"]
SuspendReason = Literal["approval", "credential", "rpc-missing"]
ApprovalStatus = Literal["approved", "denied"]
MemoryScope = Literal["thread", "resource"]


def _new_id() -> str:
    return str(uuid.uuid4())


class AIThread(PikkuModel):
    """A conversation thread, owned by a resource (a user, an account...)."""

    id: str
    resource_id: str
    title: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class TextPart(PikkuModel):
    """A text content part."""

    type: Literal["text"] = "text"
    text: str


class ImagePart(PikkuModel):
    """An image content part: inline ``data`` (base64) or a ``url``."""

    type: Literal["image"] = "image"
    data: str | None = None
    url: str | None = None
    media_type: str | None = None


class FilePart(PikkuModel):
    """A file content part: inline ``data`` (base64) or a ``url``."""

    type: Literal["file"] = "file"
    data: str | None = None
    url: str | None = None
    media_type: str
    filename: str | None = None


class DataPart(PikkuModel):
    """A named structured-data content part."""

    type: Literal["data"] = "data"
    name: str
    data: Any = None


class GenerativeUIPart(PikkuModel):
    """A generative UI content part (a spec the front end renders)."""

    type: Literal["generative-ui"] = "generative-ui"
    spec: Any = None


#: One part of a message's content, discriminated on ``type``.
ContentPart = Annotated[
    TextPart | ImagePart | FilePart | DataPart | GenerativeUIPart,
    Field(discriminator="type"),
]


class ToolCall(PikkuModel):
    """A tool call requested by an assistant message."""

    id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ToolResult(PikkuModel):
    """The result of a tool call, carried by a ``tool`` message."""

    id: str
    name: str
    result: str


class AIMessage(PikkuModel):
    """A message of a thread.

    ``content`` is a string, a list of content parts or None. ``created_at`` None
    means "now" (the database's clock) when saving; it is always set when read.
    ``id`` defaults to a new UUID.
    """

    id: str = Field(default_factory=_new_id)
    role: MessageRole
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_results: list[ToolResult] | None = None
    created_at: datetime | None = None


class Usage(PikkuModel):
    """Token usage of an agent run."""

    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""


class ToolCallApproval(PikkuModel):
    """A tool call waiting for a human approval."""

    type: Literal["tool-call"] = "tool-call"
    tool_call_id: str
    tool_name: str
    args: Any = None


class AgentCallApproval(PikkuModel):
    """A call of a sub-agent waiting for a human approval."""

    type: Literal["agent-call"] = "agent-call"
    tool_call_id: str
    agent_name: str
    agent_run_id: str
    display_tool_name: str
    display_args: Any = None


#: A pending approval of a run, discriminated on ``type``.
PendingApproval = Annotated[
    ToolCallApproval | AgentCallApproval,
    Field(discriminator="type"),
]


class AgentRunState(PikkuModel):
    """The state of an agent run, with its pending approvals (None when there are none)."""

    run_id: str
    agent_name: str
    thread_id: str
    resource_id: str
    status: RunStatus
    error_message: str | None = None
    suspend_reason: SuspendReason | None = None
    missing_rpcs: list[str] | None = None
    pending_approvals: list[PendingApproval] | None = None
    usage: Usage = Field(default_factory=Usage)
    created_at: datetime
    updated_at: datetime


class AgentRunInput(PikkuModel):
    """What ``create_run`` takes: a run state without its id (the database makes it).

    ``created_at`` / ``updated_at`` None mean "now"; given ones are stored as given.
    """

    agent_name: str
    thread_id: str
    resource_id: str
    status: RunStatus = "running"
    error_message: str | None = None
    suspend_reason: SuspendReason | None = None
    missing_rpcs: list[str] | None = None
    pending_approvals: list[PendingApproval] | None = None
    usage: Usage = Field(default_factory=Usage)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AgentRunUpdate(PikkuModel):
    """What ``update_run`` takes: only the fields given change.

    ``pending_approvals`` given (even ``None`` or ``[]``) replaces the run's pending
    set; ``error_message``, ``suspend_reason`` and ``missing_rpcs`` given as None clear
    the stored value.
    """

    status: RunStatus | None = None
    error_message: str | None = None
    suspend_reason: SuspendReason | None = None
    missing_rpcs: list[str] | None = None
    pending_approvals: list[PendingApproval] | None = None
    usage: Usage | None = None


class AgentRunApproval(PikkuModel):
    """What ``find_run_by_tool_call_id`` returns: the run and the approval found."""

    run: AgentRunState
    approval: PendingApproval


class AgentRunRow(PikkuModel):
    """A run as the console lists it (flat usage columns, with its error message)."""

    run_id: str
    agent_name: str
    thread_id: str
    resource_id: str
    status: str
    error_message: str | None = None
    suspend_reason: str | None = None
    missing_rpcs: list[str] | None = None
    usage_input_tokens: int
    usage_output_tokens: int
    usage_model: str
    created_at: datetime
    updated_at: datetime
