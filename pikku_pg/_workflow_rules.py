"""Pure helpers of the workflow engine: durations, code versions, error records (no I/O)."""

from __future__ import annotations

import hashlib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from pikku_pg._check import quote
from pikku_pg._rows.workflow import serialize_exception
from pikku_pg.errors import InvalidInputError, StepFailedError
from pikku_pg.models.workflow import SerializedError

_UNITS_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")

#: Error codes stored on runs, as in Pikku.
RPC_NOT_FOUND = "RPC_NOT_FOUND"
VERSION_CONFLICT = "VERSION_CONFLICT"
SUSPENDED = "SUSPENDED"
CANCELLED = "CANCELLED"
NON_DETERMINISTIC = "NON_DETERMINISTIC"
STEP_FAILED = "STEP_FAILED"


def parse_duration(value: object, field: str = "duration") -> float:
    """A duration in seconds: a number of seconds, or ``"500ms"``, ``"2s"``, ``"5m"``,
    ``"1h"``, ``"1d"``. Negative, infinite or unparsable values raise InvalidInputError.
    """
    if isinstance(value, bool):
        raise InvalidInputError(f"{field} must be seconds or a duration string, not a bool")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise InvalidInputError(
                f"{field} {quote(value)} is not a duration (expected e.g. '500ms', '2s', '5m', "
                "'1h', '1d')"
            )
        seconds = float(match.group(1)) * _UNITS_MS[match.group(2)] / 1000.0
    else:
        raise InvalidInputError(
            f"{field} must be seconds or a duration string, not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInputError(
            f"{field} must be a finite, non-negative duration, not {quote(value)}"
        )
    return seconds


def parse_retry_delay(stored: str | None) -> float:
    """A retry delay as stored in ``workflow_step.retry_delay`` (TEXT), in seconds.

    Digits are milliseconds (TypeScript's convention); otherwise a duration string.
    """
    if stored is None or stored == "":
        return 0.0
    try:
        return max(0.0, float(stored) / 1000.0)
    except ValueError:
        return parse_duration(stored, "retry_delay")


def retry_delay_text(retry_delay: object) -> str | None:
    """A ``ctx.do`` retry delay (seconds or a duration string) as stored: milliseconds."""
    if retry_delay is None:
        return None
    seconds = parse_duration(retry_delay, "retry_delay")
    ms = seconds * 1000.0
    return str(int(ms)) if ms.is_integer() else repr(ms)


def check_retries(retries: object) -> int:
    """A number of retries: None (0) or a non-negative int."""
    if retries is None:
        return 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInputError(f"retries must be a non-negative int, not {quote(retries)}")
    return retries


def backoff_delay(base: float, attempt: int, backoff: str) -> float:
    """Seconds before attempt ``attempt + 1``: fixed, or doubling per failed attempt."""
    if backoff == "exponential":
        return float(base * 2.0 ** max(0, attempt - 1))
    return base


def check_backoff(backoff: object) -> str:
    if backoff not in ("fixed", "exponential"):
        raise InvalidInputError(f"backoff must be 'fixed' or 'exponential', not {quote(backoff)}")
    return str(backoff)


def check_name(kind: str, name: object) -> str:
    """A workflow, RPC or step name: non-empty text without NUL."""
    if not isinstance(name, str):
        raise InvalidInputError(f"{kind} name must be a str, not {type(name).__name__}")
    if not name or "\x00" in name:
        raise InvalidInputError(
            f"{kind} name must be non-empty text without NUL, not {quote(name)}"
        )
    return name


def code_version(fn: Callable[..., Any]) -> str:
    """A version of a workflow's code: a hash of its source (or bytecode if none)."""
    try:
        text = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = code.co_code if code is not None else repr(fn).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def code_source(fn: Callable[..., Any]) -> str:
    """The source of a workflow function, or a placeholder when it is not available."""
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return f"# source of {getattr(fn, '__qualname__', fn)!r} is not available\n"


def error_record(
    message: str, *, code: str | None = None, name: str = "WorkflowError"
) -> dict[str, Any]:
    """An error to store on a run: ``{name, message, code}``."""
    out: dict[str, Any] = {"name": name, "message": message}
    if code is not None:
        out["code"] = code
    return out


def exception_record(exc: BaseException) -> dict[str, Any]:
    """An exception raised by a workflow, as stored on its run.

    A :class:`StepFailedError` stores the failing step's own error (its name,
    message, stack, code) so the run fails "with the step's error".
    """
    if isinstance(exc, StepFailedError):
        return dict(exc.error)
    return serialize_exception(exc)


def stored_error_dict(error: SerializedError | Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored error (model or mapping) as a plain dict."""
    if error is None:
        return {"name": "Error", "message": "unknown error"}
    if isinstance(error, SerializedError):
        return error.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dict(error)


def notify_channel(schema: str) -> str:
    """The NOTIFY channel that wakes the workers of a schema (at most 63 bytes)."""
    name = f"pikku_wf_{schema}"
    if len(name.encode()) <= 63:
        return name
    return "pikku_wf_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


def positive_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidInputError(f"{name} must be a positive number of seconds, not {quote(value)}")
    return float(value)
