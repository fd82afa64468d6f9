"""The components a database can hold, and the schema each lives in by default."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pikku_pg.migrations import Component


@dataclass(frozen=True)
class ComponentInfo:
    """Where a component's migrations are defined and its default schema."""

    name: str
    module: str
    default_schema: str

    def load(self) -> Component:
        """The component, with its migrations."""
        component = importlib.import_module(self.module).COMPONENT
        assert isinstance(component, Component)
        return component


#: Every component of the library, in the order the demo and ``migrate`` apply them.
COMPONENTS: tuple[ComponentInfo, ...] = (
    ComponentInfo("ai", "pikku_pg._sql.ai", "pikku_ai"),
    ComponentInfo("workflow", "pikku_pg._sql.workflow", "pikku_workflow"),
    ComponentInfo("workflow_queue", "pikku_pg._sql.workflow_queue", "pikku_workflow"),
    ComponentInfo("channel", "pikku_pg._sql.channel", "pikku"),
    ComponentInfo("deployment", "pikku_pg._sql.deployment", "pikku"),
)


def component_names() -> list[str]:
    """The names accepted by ``migrate --component``."""
    return [info.name for info in COMPONENTS]
