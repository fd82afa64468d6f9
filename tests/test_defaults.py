"""Defaults declared once: each component's schema, which its services and the CLI
read, and the worker options (checked the same way wherever they come from)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import pikku_pg
from pikku_pg._cli import build_parser
from pikku_pg._components import COMPONENTS, component_names
from pikku_pg._worker_options import MAX_CONCURRENCY, MAX_SECONDS, WorkerOptions
from pikku_pg.errors import InvalidInputError

SERVICES = [
    pikku_pg.AsyncPgAIStorageService,
    pikku_pg.AsyncPgAgentRunService,
    pikku_pg.AsyncPgChannelStore,
    pikku_pg.AsyncPgEventHubStore,
    pikku_pg.AsyncPgEventHubService,
    pikku_pg.AsyncPgDeploymentService,
    pikku_pg.AsyncPgWorkflowService,
    pikku_pg.AsyncPgWorkflowRunService,
    pikku_pg.PgAIStorageService,
    pikku_pg.PgAgentRunService,
    pikku_pg.PgChannelStore,
    pikku_pg.PgEventHubStore,
    pikku_pg.PgEventHubService,
    pikku_pg.PgDeploymentService,
    pikku_pg.PgWorkflowService,
    pikku_pg.PgWorkflowRunService,
]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.__name__)
def test_a_services_default_schema_is_its_components(service: Any) -> None:
    assert {c.default_schema for c in service.components} == {service.default_schema}
    assert all(c in COMPONENTS for c in service.components)  # the registry's own objects


def test_the_component_registry() -> None:
    assert component_names() == ["ai", "workflow", "workflow_queue", "channel", "deployment"]
    schemas = {c.name: c.default_schema for c in COMPONENTS}
    assert schemas["ai"] == "pikku_ai" and schemas["deployment"] == "pikku"
    assert schemas["workflow"] == schemas["workflow_queue"] == "pikku_workflow"


def test_the_cli_takes_its_defaults_from_the_library() -> None:
    parser = build_parser()
    deployments = parser.parse_args(["deployments"])
    assert deployments.schema == pikku_pg.PgDeploymentService.default_schema
    assert deployments.ttl == 30.0
    worker = parser.parse_args(["worker"])
    options = WorkerOptions()
    assert (worker.concurrency, worker.lease, worker.poll_interval) == (
        options.concurrency,
        options.lease,
        options.poll_interval,
    )
    assert (worker.shutdown_timeout, worker.name, not worker.no_listen) == (
        options.shutdown_timeout,
        options.name,
        options.listen,
    )


def test_worker_options_are_frozen_and_checked_on_replace() -> None:
    options = WorkerOptions(concurrency=2, lease=5)
    assert (options.concurrency, options.lease, options.poll_interval) == (2, 5.0, 1.0)
    assert isinstance(options.lease, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.lease = 1.0  # type: ignore[misc]
    with pytest.raises(InvalidInputError, match="^lease "):
        dataclasses.replace(options, lease=float("inf"))
    assert WorkerOptions.combine(options, {"lease": 7}) == WorkerOptions(concurrency=2, lease=7)
    assert WorkerOptions.combine(None, {}) == WorkerOptions()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("concurrency", MAX_CONCURRENCY + 1, "between 1 and 1024"),
        ("concurrency", 2.0, "must be an int"),
        ("lease", MAX_SECONDS * 2, "at most 86400 seconds"),
        ("lease", None, "must be a number"),
        ("poll_interval", float("-inf"), "positive number of seconds"),
        ("shutdown_timeout", -0.1, "positive number of seconds"),
        ("listen", 1, "must be a bool"),
        ("name", 42, "must be a str"),
        ("name", "x" + "\ud800", "surrogate"),
    ],
)
def test_worker_options_refuse_bad_values_naming_the_option(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field} .*{message}") as caught:
        WorkerOptions(**{field: value})
    assert len(str(caught.value)) < 300


def test_worker_options_allow_a_zero_shutdown_timeout() -> None:
    assert WorkerOptions(shutdown_timeout=0).shutdown_timeout == 0.0
