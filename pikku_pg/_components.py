"""The components a database can hold (each knows its default schema)."""

from __future__ import annotations

from pikku_pg._sql import ai, channel, deployment, workflow, workflow_queue
from pikku_pg.migrations import Component

#: Every component of the library, in the order the demo and ``migrate`` apply them
#: (the workflow queue references the workflow tables, so it comes after them).
COMPONENTS: tuple[Component, ...] = (
    ai.COMPONENT,
    workflow.WORKFLOW,
    workflow_queue.WORKFLOW_QUEUE,
    channel.COMPONENT,
    deployment.COMPONENT,
)


def component_names() -> list[str]:
    """The names accepted by ``migrate --component``."""
    return [component.name for component in COMPONENTS]
