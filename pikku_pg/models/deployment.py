"""Models of the deployment registry."""

from __future__ import annotations

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
