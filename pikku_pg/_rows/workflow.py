"""Workflow rows <-> models, and the checks and encodings of workflow inputs (no I/O)."""

from __future__ import annotations

import contextlib
import json
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from psycopg.types.json import Jsonb
from pydantic import ValidationError

from pikku_pg import _check
from pikku_pg._check import MAX_INT4, check_number, check_text_list, quote, validation_summary
from pikku_pg._json import check_text, dumps, jsonb, read_object
from pikku_pg.errors import (
    InvalidInputError,
    LeaseLostError,
    StepAlreadyCompletedError,
    StepNotFoundError,
    WorkflowRunNotFoundError,
)
from pikku_pg.models._base import PikkuModel, trusted
from pikku_pg.models.workflow import (
    STEP_STATUSES,
    WORKFLOW_STATUSES,
    GraphState,
    RunActivity,
    SerializedError,
    StepState,
    WorkflowRun,
    WorkflowRunStep,
    WorkflowRunWire,
    WorkflowStepHistory,
    WorkflowVersion,
)

UNKNOWN_WIRE: dict[str, Any] = {"type": "unknown"}

# ---------------------------------------------------------------------------------
# Inputs


def _parse_uuid(value: object, field: str) -> uuid.UUID | None:
    """The UUID in ``value``, or None when it is text that is not a UUID."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a str or UUID, not {type(value).__name__}")
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def run_uuid(run_id: object) -> uuid.UUID:
    """A run id as a UUID; text that is not a UUID names no run (not found)."""
    parsed = _parse_uuid(run_id, "run_id")
    if parsed is None:
        raise WorkflowRunNotFoundError(run_id)
    return parsed


def step_uuid(step_id: object) -> uuid.UUID:
    """A step id as a UUID; text that is not a UUID names no step (not found)."""
    parsed = _parse_uuid(step_id, "step_id")
    if parsed is None:
        raise StepNotFoundError(step_id)
    return parsed


def maybe_run_uuid(run_id: object) -> uuid.UUID | None:
    """A run id as a UUID, or None for text that cannot name a run."""
    return _parse_uuid(run_id, "run_id")


def check_workflow_status(status: object) -> str:
    """A run status of ``workflow_status_enum``."""
    if status not in WORKFLOW_STATUSES:
        raise InvalidInputError(
            f"invalid workflow run status {quote(status)}; "
            f"expected one of {', '.join(WORKFLOW_STATUSES)}"
        )
    return str(status)


def check_retry_status(status: object) -> str:
    """The status of a new attempt: ``pending`` or ``running``."""
    if status not in ("pending", "running"):
        raise InvalidInputError(
            f"invalid status {quote(status)} for a retry attempt; expected 'pending' or 'running'"
        )
    return str(status)


def check_step_status(status: object) -> str:
    """A step status of ``step_status_enum``."""
    if status not in STEP_STATUSES:
        raise InvalidInputError(
            f"invalid step status {quote(status)}; expected one of {', '.join(STEP_STATUSES)}"
        )
    return str(status)


def check_int(field: str, value: object, *, minimum: int = 0, maximum: int = MAX_INT4) -> int:
    """An int (not a bool) within [minimum, maximum]."""
    return _check.check_int(field, value, min=minimum, max=maximum)


def check_bool(field: str, value: object) -> bool:
    """A bool (not merely truthy)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{field} must be a bool, not {type(value).__name__}")
    return value


def check_transition(row: Sequence[Any] | None, step_id: object, run_id: str = "") -> None:
    """Raise what a step transition's (changed, status before, lease held) row says."""
    assert row is not None
    changed, status, fenced = row[0], row[1], row[2]
    if changed:
        return
    if not fenced:
        raise LeaseLostError(run_id, f"lost the lease of workflow run {run_id}: step not written")
    if status is None:
        raise StepNotFoundError(step_id)
    raise StepAlreadyCompletedError(str(step_id))


def check_optional_text(field: str, value: object) -> str | None:
    """None, or text without NUL."""
    return _check.check_optional_text(field, value)


def encode_retry_delay(retry_delay: object) -> str | None:
    """A retry delay as TEXT: milliseconds as digits (an int) or a duration string."""
    if retry_delay is None:
        return None
    if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float, str)):
        raise InvalidInputError(
            f"retry_delay must be a number of milliseconds or a duration string, "
            f"not {type(retry_delay).__name__}"
        )
    if isinstance(retry_delay, float):
        check_number("retry_delay", retry_delay)
        retry_delay = int(retry_delay) if retry_delay.is_integer() else retry_delay
    if isinstance(retry_delay, (int, float)) and retry_delay < 0:
        raise InvalidInputError(f"retry_delay must not be negative, not {quote(retry_delay)}")
    return check_text("retry_delay", str(retry_delay), max_length=1000)


def encode_wire(wire: WorkflowRunWire | Mapping[str, Any] | None) -> Jsonb | None:
    """A run's wire as JSONB in the TypeScript shape (None stays NULL)."""
    if wire is None:
        return None
    if not isinstance(wire, WorkflowRunWire):
        if not isinstance(wire, Mapping):
            raise InvalidInputError(
                f"wire must be a WorkflowRunWire or a mapping, not {type(wire).__name__}"
            )
        try:
            wire = WorkflowRunWire.model_validate(wire)
        except ValidationError as exc:
            raise InvalidInputError(f"invalid wire: {validation_summary(exc)}") from None
    return jsonb(wire.model_dump(by_alias=True, exclude_none=True, mode="json"))


def serialize_exception(exc: BaseException) -> dict[str, Any]:
    """An exception as ``{name, message, stack, code}`` (code when it has one)."""
    out: dict[str, Any] = {
        "name": type(exc).__name__,
        "message": str(exc),
        "stack": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    code = getattr(exc, "code", None)
    if code is not None and not isinstance(code, bool):
        out["code"] = str(code)
    return out


def encode_error(
    error: BaseException | SerializedError | Mapping[str, Any] | None,
) -> Jsonb | None:
    """An error as JSONB ``{name, message, stack, code}`` (None stays NULL)."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        return jsonb(serialize_exception(error))
    if not isinstance(error, SerializedError):
        if not isinstance(error, Mapping):
            raise InvalidInputError(
                "error must be an exception, a SerializedError or a mapping, "
                f"not {type(error).__name__}"
            )
        try:
            error = SerializedError.model_validate(error)
        except ValidationError as exc:
            raise InvalidInputError(f"invalid error: {validation_summary(exc)}") from None
    return jsonb(error.model_dump(by_alias=True, exclude_none=True, mode="json"))


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def encode_state_value(value: Any) -> Jsonb:
    """A run-state value as JSONB.

    TypeScript 0.12.1 stores each run-state value as a JSON *string* holding the
    value's JSON, and our reader decodes such strings. We store the value itself,
    except a string that would decode into something else (``"5"``, ``"[1]"``):
    that one is stored as its JSON text, so it reads back unchanged.
    """
    if isinstance(value, str) and _parses_as_json(value):
        value = dumps(value)
    return jsonb(value)


def decode_state(state: Any) -> dict[str, Any]:
    """A run's state object, with TypeScript's JSON-string values decoded."""
    obj = read_object(state)
    if obj is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in obj.items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[name] = value
    return out


def node_names(node_ids: Iterable[object]) -> list[str]:
    """A list of graph node ids (step names), each checked as text."""
    return check_text_list("node_ids", node_ids, item="node id")


# ---------------------------------------------------------------------------------
# Rows -> models (rows we read are trusted: models are constructed, not validated)

_M = TypeVar("_M", bound=PikkuModel)


_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def load_json(text: str | None) -> Any:
    """Parse the text of a JSONB value (SQL NULL -> None).

    PostgreSQL prints JSONB as one complete value, so the decoder's scanner is
    called directly, skipping the checks ``json.loads`` makes for arbitrary text.
    """
    if text is None:
        return None
    value, end = _scan_once(text, 0)
    if end != len(text):  # never for jsonb output; be safe anyway
        return json.loads(text)
    return value


def read_error(text: str | None) -> SerializedError | None:
    """A stored error object (or a JSON string of one, as TypeScript may write)."""
    if text is None:
        return None
    obj = read_object(load_json(text))
    if obj is None:
        return None
    try:
        return SerializedError.model_validate(obj)
    except ValidationError:
        return SerializedError.model_validate({**obj, "message": str(obj.get("message", ""))})


def read_wire(text: str | None) -> WorkflowRunWire:
    """A stored wire; a missing one reads as ``{"type": "unknown"}`` (as in TypeScript)."""
    obj = read_object(load_json(text))
    if not obj or not isinstance(obj.get("type"), str):
        obj = {**(obj or {}), **UNKNOWN_WIRE}
    try:
        return WorkflowRunWire.model_validate(obj)
    except ValidationError:
        return WorkflowRunWire.model_validate(UNKNOWN_WIRE)


def run_activity_from_row(row: Sequence[Any]) -> RunActivity:
    """A row of RUN_ACTIVITY: (run id, job status, run_at, locked_by, lease live)."""
    run_id, status, run_at, locked_by, live = row
    if status is None:
        return trusted(RunActivity, run_id=run_id, state="unowned", worker=None, due_at=None)
    if status == "running" and live:
        return trusted(RunActivity, run_id=run_id, state="running", worker=locked_by, due_at=None)
    if status == "pending" and run_at > datetime.now(timezone.utc):
        return trusted(RunActivity, run_id=run_id, state="scheduled", worker=None, due_at=run_at)
    return trusted(RunActivity, run_id=run_id, state="waiting", worker=None, due_at=None)


def run_from_row(row: Mapping[str, Any]) -> WorkflowRun:
    """A ``workflow_runs`` row."""
    return trusted(
        WorkflowRun,
        **{
            "id": str(row["workflow_run_id"]),
            "workflow": row["workflow"],
            "status": row["status"],
            "input": load_json(row["input"]),
            "output": load_json(row["output"]),
            "error": read_error(row["error"]),
            "inline": row["inline"],
            "graph_hash": row["graph_hash"],
            "wire": read_wire(row["wire"]),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        },
    )


def _step_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`StepState` fields of a step row (attempt timestamps unset)."""
    error = row["error"]
    retries = row["retries"]
    return {
        "step_id": str(row["workflow_step_id"]),
        "status": row["status"],
        "result": load_json(row["result"]),
        "error": None if error is None else read_error(error),
        "attempt_count": int(row["attempt_count"]),
        "retries": None if retries is None else int(retries),
        "retry_delay": row["retry_delay"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "child_run_id": None,
        "running_at": None,
        "scheduled_at": None,
        "succeeded_at": None,
        "failed_at": None,
    }


def step_state_from_row(row: Mapping[str, Any]) -> StepState:
    """A step row with its ``attempt_count``."""
    return trusted(StepState, **_step_values(row))


def run_step_from_row(row: Sequence[Any]) -> WorkflowRunStep:
    """A ``GET_RUN_STEPS`` row (a tuple, in that statement's column order)."""
    (name, rpc, data, step_id, status, result, error, retries, delay, created, updated, n) = row
    return trusted(
        WorkflowRunStep,
        **{
            "step_id": step_id,
            "status": status,
            "result": load_json(result),
            "error": None if error is None else read_error(error),
            "attempt_count": int(n) or 1,
            "retries": retries,
            "retry_delay": delay,
            "created_at": created,
            "updated_at": updated,
            "child_run_id": None,
            "running_at": None,
            "scheduled_at": None,
            "succeeded_at": None,
            "failed_at": None,
            "step_name": name,
            "rpc_name": rpc,
            "data": load_json(data),
        },
    )


def history_from_row(row: Mapping[str, Any]) -> WorkflowStepHistory:
    """One attempt of ``get_run_history``; its ``updated_at`` is its latest timestamp."""
    stamps = {
        "running_at": row["running_at"],
        "scheduled_at": row["scheduled_at"],
        "succeeded_at": row["succeeded_at"],
        "failed_at": row["failed_at"],
    }
    created = row["created_at"]
    values = _step_values({**row, "updated_at": created})
    values.update(stamps)
    values["updated_at"] = max([created, *(t for t in stamps.values() if t is not None)])
    values["step_name"] = row["step_name"]
    return trusted(WorkflowStepHistory, **values)


def graph_state_from_rows(rows: Sequence[Mapping[str, Any]]) -> GraphState:
    """Completed nodes, nodes failed with no retry left, and the branches taken."""
    completed: list[str] = []
    failed: list[str] = []
    branches: dict[str, str] = {}
    for row in rows:
        name = row["step_name"]
        if name is None:
            continue
        if row["status"] == "succeeded":
            completed.append(name)
            if row["branch_taken"]:
                branches[name] = row["branch_taken"]
        elif int(row["attempt_count"]) >= (row["retries"] or 0) + 1:
            failed.append(name)
    return trusted(
        GraphState,
        **{"completed_node_ids": completed, "failed_node_ids": failed, "branch_keys": branches},
    )


def version_from_row(row: Mapping[str, Any]) -> WorkflowVersion:
    """A ``workflow_versions`` row."""
    return trusted(WorkflowVersion, **{"graph": row["graph"], "source": row["source"]})
