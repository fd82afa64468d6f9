"""Models of workflow runs, steps and versions (TypeScript ``@pikku/core`` shapes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict

from pikku_pg.models._base import PikkuModel

WorkflowStatus = Literal["running", "suspended", "completed", "failed", "cancelled"]
"""Status of a workflow run (``workflow_status_enum``)."""

StepStatus = Literal["pending", "running", "scheduled", "succeeded", "failed", "suspended"]
"""Status of a workflow step (``step_status_enum``)."""

WORKFLOW_STATUSES: tuple[str, ...] = ("running", "suspended", "completed", "failed", "cancelled")
STEP_STATUSES: tuple[str, ...] = (
    "pending",
    "running",
    "scheduled",
    "succeeded",
    "failed",
    "suspended",
)


class SerializedError(PikkuModel):
    """An error as stored: ``{name, message, stack, code}`` plus any extra fields."""

    model_config = ConfigDict(extra="allow")

    message: str
    name: str | None = None
    stack: str | None = None
    code: str | None = None


class WorkflowRunWire(PikkuModel):
    """How a run was started (``{type: "http", id: ...}``); extra fields are kept."""

    model_config = ConfigDict(extra="allow")

    type: str
    id: str | None = None
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    pikku_user_id: str | None = None


class WorkflowRun(PikkuModel):
    """A workflow run (``workflow_runs`` row)."""

    id: str
    workflow: str
    status: WorkflowStatus
    input: Any = None
    output: Any = None
    error: SerializedError | None = None
    inline: bool | None = None
    graph_hash: str | None = None
    #: ``{"type": "unknown"}`` when the run was stored without a wire.
    wire: WorkflowRunWire
    created_at: datetime
    updated_at: datetime


RunActivityState = Literal["running", "waiting", "scheduled", "unowned"]
"""What a ``running`` run is doing now (see :class:`RunActivity`)."""


class RunActivity(PikkuModel):
    """Who has a ``running`` run now (beyond TypeScript: from the job queue).

    ``state`` is ``"running"`` (a worker or an inline caller holds a live lease:
    ``worker`` names it), ``"waiting"`` (waiting for a worker: its job is due, or
    its holder's lease ran out), ``"scheduled"`` (a sleep or a retry delay: due at
    ``due_at``) or ``"unowned"`` (no job at all: a run stored without the engine's
    queue, e.g. by another runner; ``resume_run`` hands it to the workers).
    """

    run_id: str
    state: RunActivityState
    worker: str | None = None
    due_at: datetime | None = None

    @property
    def label(self) -> str:
        """A short human description, for consoles."""
        if self.state == "running":
            return "running"
        if self.state == "scheduled":
            return "scheduled"
        return "waiting for a worker" if self.state == "waiting" else "no owner"


class StepState(PikkuModel):
    """The state of a step: its current attempt and how many attempts it has had."""

    step_id: str
    status: StepStatus
    result: Any = None
    error: SerializedError | None = None
    #: Number of attempts (history rows) so far, starting at 1.
    attempt_count: int
    retries: int | None = None
    #: As stored (TEXT): milliseconds as digits, or a duration such as ``"2s"``.
    retry_delay: str | None = None
    created_at: datetime
    updated_at: datetime
    child_run_id: str | None = None
    running_at: datetime | None = None
    scheduled_at: datetime | None = None
    succeeded_at: datetime | None = None
    failed_at: datetime | None = None


class WorkflowStepHistory(StepState):
    """One attempt of a step (a ``workflow_step_history`` row) with its step name.

    ``attempt_count`` is the attempt's number (1 for the first attempt).
    """

    step_name: str


class WorkflowRunStep(StepState):
    """A step of a run as the console shows it: with its RPC name and input data."""

    step_name: str
    rpc_name: str | None = None
    data: Any = None


class GraphState(PikkuModel):
    """What a graph workflow has finished: succeeded and exhausted nodes, branches."""

    completed_node_ids: list[str]
    failed_node_ids: list[str]
    branch_keys: dict[str, str]


class WorkflowVersion(PikkuModel):
    """A stored workflow graph version."""

    graph: Any = None
    source: str
