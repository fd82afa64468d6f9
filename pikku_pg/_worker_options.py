"""The options of a workflow worker: declared, defaulted and checked here only.

``worker(...)`` and ``run_worker(...)`` of both workflow services, the worker itself
and ``pikku-pg worker`` all take them from :class:`WorkerOptions` (pure, no I/O).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from pikku_pg._check import check_bool, check_int, check_optional_text, quote
from pikku_pg._workflow_rules import positive_seconds
from pikku_pg.errors import InvalidInputError

#: The most executors one worker runs (each sync executor is a thread).
MAX_CONCURRENCY = 1024
#: The longest lease, poll interval or shutdown timeout, in seconds (one day).
MAX_SECONDS = 86_400.0
#: The longest worker name (it is written on every job the worker claims).
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class WorkerOptions:
    """How a workflow worker runs; every field is checked when the options are made
    (:class:`~pikku_pg.errors.InvalidInputError` names the option).

    * ``concurrency``: jobs run at once (tasks; threads in the sync flavour).
    * ``lease``: seconds a claimed job is leased for, extended every third of it
      while the job runs; a worker that dies loses its jobs after one lease.
    * ``poll_interval``: seconds an idle executor waits before it looks for work
      again (NOTIFY wakes it sooner unless ``listen`` is False).
    * ``listen``: wake on NOTIFY through a dedicated connection (False behind
      PgBouncer in transaction mode, unless ``listen_conninfo`` reaches PostgreSQL).
    * ``shutdown_timeout``: seconds runs in flight get to reach a step boundary
      when the worker stops (0: hand them back at once).
    * ``name``: recorded on the jobs it claims (default: host, pid and a random part).
    """

    concurrency: int = 4
    lease: float = 30.0
    poll_interval: float = 1.0
    listen: bool = True
    shutdown_timeout: float = 30.0
    name: str | None = None

    def __post_init__(self) -> None:
        checked = {
            "concurrency": check_int("concurrency", self.concurrency, min=1, max=MAX_CONCURRENCY),
            "lease": _seconds("lease", self.lease),
            "poll_interval": _seconds("poll_interval", self.poll_interval),
            "listen": check_bool("listen", self.listen),
            "shutdown_timeout": _seconds(
                "shutdown_timeout", self.shutdown_timeout, allow_zero=True
            ),
            "name": check_optional_text("name", self.name, max_length=MAX_NAME_LENGTH),
        }
        for field, value in checked.items():
            object.__setattr__(self, field, value)  # frozen: set once, here

    @classmethod
    def combine(cls, options: WorkerOptions | None, overrides: Mapping[str, Any]) -> WorkerOptions:
        """``options`` (default: the defaults) with the keyword arguments of a call
        such as ``wf.worker(concurrency=8)`` applied, checked."""
        if options is not None and not isinstance(options, WorkerOptions):
            raise InvalidInputError(f"options must be a WorkerOptions, not {quote(options)}")
        unknown = sorted(set(overrides) - _FIELDS)
        if unknown:
            raise TypeError(f"unexpected worker option {quote(unknown[0])}")
        return dataclasses.replace(options or cls(), **overrides)


class WorkerSettings(TypedDict, total=False):
    """The fields of :class:`WorkerOptions`, as keyword arguments (for type checkers)."""

    concurrency: int
    lease: float
    poll_interval: float
    listen: bool
    shutdown_timeout: float
    name: str | None


_FIELDS = frozenset(field.name for field in dataclasses.fields(WorkerOptions))


def _seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    seconds = positive_seconds(name, value, allow_zero=allow_zero)
    if seconds > MAX_SECONDS:
        raise InvalidInputError(
            f"{name} must be at most {MAX_SECONDS:g} seconds, not {quote(value)}"
        )
    return seconds
