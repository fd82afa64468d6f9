"""The exceptions raised by pikku-pg.

Every exception derives from :class:`PikkuPgError`, so ``except PikkuPgError``
catches everything this library raises on purpose. The database layer maps, for
every service call:

* a lost connection (server restart, failover, ``pg_terminate_backend``, network
  loss: ``psycopg.OperationalError`` without a server error, SQLSTATE class 08,
  57P01-57P03, 57P05), a serialization failure or deadlock (class 40), and a
  closed service, pool or connection, to :class:`DatabaseUnavailableError`, whose
  ``transient`` says whether trying again may succeed;
* a missing schema, table or enum type (42P01, 3F000, 42704) to
  :class:`SchemaNotInitializedError`, which says what to run.

The psycopg error is kept as ``__cause__``. Database errors that a caller can act
on (a foreign key to a missing thread, a duplicate id) are translated by the
services into these classes with the offending id in the message. Any other
psycopg error (none is expected: inputs are checked before any SQL runs) is left
as the psycopg exception it is, so that the services' own handlers still see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def quote(value: object) -> str:
    """:func:`pikku_pg._check.quote` (imported late: that module imports this one)."""
    from pikku_pg._check import quote as cut

    return cut(value)


class PikkuPgError(Exception):
    """Base class of every error raised by pikku-pg."""


class InvalidSchemaNameError(PikkuPgError, ValueError):
    """A schema name is not a plain SQL identifier of at most 63 characters."""


class InvalidInputError(PikkuPgError, ValueError):
    """A value given to a service cannot be stored (wrong type, NUL byte, too large...)."""


class InvalidArgumentTypeError(InvalidInputError, TypeError):
    """A value of the wrong kind where the type itself is the mistake (e.g. the
    connection source); also a ``TypeError``."""


class DatabaseUnavailableError(PikkuPgError, ConnectionError):
    """The database cannot be reached, or the pool or connection is closed.

    ``transient`` is True when trying again may succeed (the connection was lost,
    the server is restarting, a serialization failure or deadlock) and False when it
    cannot (the service, its pool or its borrowed connection is closed). A write that
    fails with this error may or may not have been applied.
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        self.transient = transient
        super().__init__(message)


class ServiceClosedError(DatabaseUnavailableError):
    """The service was closed and cannot run queries any more."""

    def __init__(self, message: str = "the service is closed") -> None:
        super().__init__(message, transient=False)


class SchemaNotInitializedError(PikkuPgError):
    """The service's schema, tables or types do not exist: it was never initialised.

    ``schema`` is the service's schema, ``components`` the names of its components;
    the message says how to create them (``init()`` or ``pikku-pg migrate``).
    """

    def __init__(self, schema: str, components: Sequence[str], detail: str = "") -> None:
        self.schema = schema
        self.components = tuple(components)
        options = "".join(f" --component {name}" for name in self.components)
        what = " and ".join(self.components) or "pikku-pg"
        reason = f" ({detail})" if detail else ""
        super().__init__(
            f"schema {quote(schema)} has no {what} tables{reason}: call init() on the "
            f"service, or run `pikku-pg migrate{options} --schema {schema}` "
            "(with --dsn or DATABASE_URL)"
        )


class MigrationError(PikkuPgError):
    """A schema migration failed; the transaction that ran it was rolled back."""


class ConflictError(PikkuPgError):
    """A write conflicts with what is stored (e.g. an id that belongs to another row)."""


class LockTimeoutError(PikkuPgError, TimeoutError):
    """A lock could not be taken within the requested time."""


class NotFoundError(PikkuPgError, LookupError):
    """Something looked up by id does not exist."""

    kind = "object"

    def __init__(self, ident: object, message: str | None = None) -> None:
        self.id = ident
        super().__init__(message or f"{self.kind} {quote(ident)} not found")


class ThreadNotFoundError(NotFoundError):
    """An AI conversation thread does not exist."""

    kind = "thread"


class MessageNotFoundError(NotFoundError):
    """A message (e.g. a paging cursor) does not exist in the thread."""

    kind = "message"


class RunNotFoundError(NotFoundError):
    """An agent run does not exist."""

    kind = "agent run"


class StepNotFoundError(NotFoundError):
    """A workflow step does not exist."""

    kind = "workflow step"


class ChannelNotFoundError(NotFoundError):
    """A WebSocket channel does not exist."""

    kind = "channel"


class WorkflowRunNotFoundError(NotFoundError):
    """A workflow run does not exist."""

    kind = "workflow run"


class WorkflowError(PikkuPgError):
    """Base class of the errors of the workflow engine."""


class WorkflowNotFoundError(WorkflowError, NotFoundError):
    """No workflow is registered under that name."""

    kind = "workflow"


class WorkflowVersionConflictError(WorkflowError):
    """A run was started by another version of the workflow's code."""


class NonDeterminismError(WorkflowError):
    """A replay asked for a step that differs from the one recorded under its name."""


class _RunOutcomeError(WorkflowError):
    """A run ended in a state other than completed.

    Carries the run id, the stored error (``{name, message, stack, code}``) when
    there is one, and its ``code`` (e.g. ``"RPC_NOT_FOUND"``) for callers that
    branch on it.
    """

    def __init__(
        self,
        run_id: str,
        message: str,
        *,
        error: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.error = error
        self.code = code
        super().__init__(message)


class WorkflowFailedError(_RunOutcomeError):
    """A workflow run failed."""


class WorkflowCancelledError(_RunOutcomeError):
    """A workflow run was cancelled."""


class WorkflowSuspendedError(_RunOutcomeError):
    """A workflow run is suspended until it is resumed."""


class ChannelExistsError(ConflictError):
    """``add_channel`` was given an id that another channel already has."""

    def __init__(self, channel_id: str) -> None:
        self.id = channel_id
        super().__init__(f"channel {quote(channel_id)} already exists")


class StepExistsError(ConflictError):
    """``insert_step_state`` was given a step name that the run already has."""

    def __init__(self, run_id: str, step_name: str) -> None:
        self.run_id = run_id
        self.step_name = step_name
        super().__init__(
            f"workflow run {quote(run_id)} already has a step named {quote(step_name)}"
        )


class StepFailedError(WorkflowError):
    """A workflow step failed with no retry left (raised by ``ctx.do`` in the workflow).

    ``error`` is the step's stored error ``{name, message, stack, code}``; a workflow
    that does not catch it fails with that error.
    """

    def __init__(self, step_name: str, error: dict[str, object]) -> None:
        self.step_name = step_name
        self.error = error
        super().__init__(f"step {quote(step_name)} failed: {error.get('message', '')}")


class InvalidRunStateError(WorkflowError, ConflictError):
    """A run's status does not allow the operation (e.g. resuming a completed run)."""


class DuplicateRegistrationError(WorkflowError, ConflictError):
    """A workflow or RPC name is registered twice on one service."""


class WorkflowTimeoutError(WorkflowError, TimeoutError):
    """``wait_for_run`` gave up before the run finished."""


class LeaseLostError(WorkflowError):
    """The worker or inline caller no longer holds the lease of the run it works on.

    Another runner took the run over (the lease ran out while this one was stalled, or
    the run was handed to a worker): the write was refused, and the stale holder
    stops working on the run at once.
    """

    def __init__(self, run_id: str, message: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(message or f"lost the lease of workflow run {run_id}")


class StepAlreadyCompletedError(WorkflowError, ConflictError):
    """A write would change a step that already succeeded (its result is final)."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id
        super().__init__(f"workflow step {step_id} already succeeded; its result is final")
