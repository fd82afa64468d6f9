"""Input checks and row mapping of the deployment registry (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from pikku_pg._check import check_list, check_number, validation_summary
from pikku_pg._json import check_text
from pikku_pg.errors import InvalidInputError
from pikku_pg.models._base import trusted
from pikku_pg.models.deployment import DeploymentConfig, DeploymentInfo

#: Longest deployment id we write: it is the primary key (btree entries stay under
#: ~2,700 bytes; 255 characters of up to 4 UTF-8 bytes fit).
MAX_DEPLOYMENT_ID_LENGTH = 255


def check_seconds(name: str, value: object) -> float:
    """A positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = check_number(name, value, finite=False)  # refuses NaN and too large ints
    if not 0 < seconds < math.inf:
        raise InvalidInputError(f"{name} must be a positive number of seconds, not {seconds:g}")
    return seconds


def check_function_name(value: object) -> str:
    """A function name: a non-empty str without NUL."""
    name = check_text("function name", value)
    if not name:
        raise InvalidInputError("function name must not be empty")
    return name


def deployment_input(
    deployment: str | DeploymentConfig | Mapping[str, Any],
    endpoint: object,
    functions: object,
) -> tuple[str, str, list[str]]:
    """(deployment_id, endpoint, functions) from arguments or a model/dict."""
    if isinstance(deployment, (DeploymentConfig, Mapping)):
        if endpoint is not None or functions is not None:
            raise InvalidInputError(
                "pass either a deployment config (model or dict) or "
                "deployment_id, endpoint, functions"
            )
        try:
            config = (
                deployment
                if isinstance(deployment, DeploymentConfig)
                else DeploymentConfig.model_validate(deployment)
            )
        except ValidationError as exc:
            raise InvalidInputError(
                f"invalid deployment config: {validation_summary(exc)}"
            ) from exc
        deployment, endpoint, functions = config.deployment_id, config.endpoint, config.functions
    deployment_id = check_text("deployment_id", deployment, max_length=MAX_DEPLOYMENT_ID_LENGTH)
    if not deployment_id:
        raise InvalidInputError("deployment_id must not be empty")
    url = check_text("endpoint", endpoint)
    if functions is None:
        functions = []
    names = [check_function_name(f) for f in check_list("functions", functions, of="str")]
    return deployment_id, url, list(dict.fromkeys(names))


def deployment_from_row(row: tuple[Any, ...]) -> DeploymentInfo:
    """A ``(deployment_id, endpoint)`` row."""
    return trusted(DeploymentInfo, deployment_id=row[0], endpoint=row[1])
