"""Models of the deployment registry."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from pikku_pg.models._base import PikkuModel


class DeploymentInfo(PikkuModel):
    """A live deployment serving a function (``{deploymentId, endpoint}``)."""

    deployment_id: str
    endpoint: str


class DeploymentConfig(PikkuModel):
    """What :meth:`start` registers: the deployment, where to reach it, what it serves."""

    deployment_id: str
    endpoint: str
    functions: list[str] = Field(default_factory=list)


class DeploymentStatus(PikkuModel):
    """A registered deployment as an operator sees it, live or stale
    (``list_deployments``)."""

    deployment_id: str
    endpoint: str
    functions: list[str]
    last_heartbeat: datetime
    created_at: datetime
    #: Whether its last heartbeat is within the TTL the list was made with.
    live: bool
    #: How long ago its last heartbeat was, by the database server's clock.
    heartbeat_age: timedelta
