"""pikku-pg: Pikku's PostgreSQL storage services for Python, sync and async."""

from __future__ import annotations

from pikku_pg import errors, models
from pikku_pg._async.ai import AsyncPgAgentRunService, AsyncPgAIStorageService
from pikku_pg._async.channel import AsyncPgChannelStore, AsyncPgEventHubStore
from pikku_pg._async.deployment import AsyncPgDeploymentService
from pikku_pg._async.event_hub import AsyncPgEventHubService
from pikku_pg._async.workflow import (
    AsyncPgWorkflowService,
    AsyncWorkflowContext,
    AsyncWorkflowWorker,
)
from pikku_pg._async.workflow_runs import AsyncPgWorkflowRunService
from pikku_pg._async.workflow_state import AsyncWorkflowStateStore
from pikku_pg._schema import validate_schema_name
from pikku_pg._sync.ai import PgAgentRunService, PgAIStorageService
from pikku_pg._sync.channel import PgChannelStore, PgEventHubStore
from pikku_pg._sync.deployment import PgDeploymentService
from pikku_pg._sync.event_hub import PgEventHubService
from pikku_pg._sync.workflow import PgWorkflowService, WorkflowContext, WorkflowWorker
from pikku_pg._sync.workflow_runs import PgWorkflowRunService
from pikku_pg._sync.workflow_state import WorkflowStateStore
from pikku_pg._worker_options import WorkerOptions

__version__ = "0.1.0"

__all__ = [
    "AsyncPgAIStorageService",
    "AsyncPgAgentRunService",
    "AsyncPgChannelStore",
    "AsyncPgDeploymentService",
    "AsyncPgEventHubService",
    "AsyncPgEventHubStore",
    "AsyncPgWorkflowRunService",
    "AsyncPgWorkflowService",
    "AsyncWorkflowContext",
    "AsyncWorkflowStateStore",
    "AsyncWorkflowWorker",
    "PgAIStorageService",
    "PgAgentRunService",
    "PgChannelStore",
    "PgDeploymentService",
    "PgEventHubService",
    "PgEventHubStore",
    "PgWorkflowRunService",
    "PgWorkflowService",
    "WorkerOptions",
    "WorkflowContext",
    "WorkflowStateStore",
    "WorkflowWorker",
    "__version__",
    "errors",
    "models",
    "validate_schema_name",
]
