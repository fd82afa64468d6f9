"""FastAPI (async): a lifespan that opens an ``AsyncConnectionPool``, an endpoint that
starts a durable workflow, and a worker running beside the app.

Run it::

    pip install fastapi uvicorn
    DATABASE_URL=postgresql://localhost/app uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/signups -H 'content-type: application/json' \\
         -d '{"email": "ada@example.com"}'            # -> {"runId": "..."}
    curl localhost:8000/runs/<runId>                  # -> status, output
    pikku-pg run <runId>                              # the step timeline

The worker runs inside the app process (``WORKER=1``, the default). To run the
workers as separate processes instead (scale them apart from the web tier), start
the app with ``WORKER=0`` and run, as many times as you like::

    DATABASE_URL=... pikku-pg worker --module examples.fastapi_app

which finds :func:`workflow_service` below.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from pikku_pg import AsyncPgWorkflowService, AsyncWorkflowContext
from pikku_pg.errors import WorkflowRunNotFoundError


def build_workflows(conn: Any, schema: str | None = None) -> AsyncPgWorkflowService:
    """The workflow service with this app's workflows and RPCs registered on it."""
    wf = AsyncPgWorkflowService(conn, schema)

    @wf.rpc("email.send")
    async def send_email(data: dict[str, Any]) -> dict[str, Any]:
        # A real app calls its mail provider here; a failure is retried (see below).
        return {"to": data["to"], "queued": True}

    @wf.workflow("onboard", version="1")
    async def onboard(ctx: AsyncWorkflowContext, data: dict[str, Any]) -> dict[str, Any]:
        account = await ctx.do("create account", _create_account, data)
        await ctx.do(
            "welcome email", "email.send", {"to": account["email"]}, retries=3, retry_delay="1s"
        )
        await ctx.sleep("grace period", "100ms")  # durable: survives restarts
        return {"accountId": account["id"]}

    return wf


async def _create_account(data: dict[str, Any]) -> dict[str, Any]:
    # A random id is fine: the step's result is stored, and a replay reuses it.
    return {"id": f"acct-{uuid.uuid4().hex[:8]}", "email": data["email"]}


def workflow_service() -> AsyncPgWorkflowService:
    """For ``pikku-pg worker --module examples.fastapi_app``: the workflows, on
    ``$DATABASE_URL`` (schema ``$PIKKU_WORKFLOW_SCHEMA`` or ``pikku_workflow``)."""
    return build_workflows(os.environ["DATABASE_URL"], os.environ.get("PIKKU_WORKFLOW_SCHEMA"))


class Signup(BaseModel):
    email: str


def create_app(
    conninfo: str | None = None, schema: str | None = None, *, worker: bool | None = None
) -> FastAPI:
    """The app. ``worker`` (default: ``$WORKER`` != "0") runs a worker in this process."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            conninfo or os.environ["DATABASE_URL"],
            min_size=1,
            max_size=8,  # a worker needs about concurrency + 1 connections
            kwargs={"autocommit": True},
            open=False,
        )
        await pool.open(wait=True, timeout=10)
        try:
            wf = build_workflows(pool, schema or os.environ.get("PIKKU_WORKFLOW_SCHEMA"))
            await wf.init()
            app.state.wf = wf
            run_worker = worker if worker is not None else os.environ.get("WORKER") != "0"
            if run_worker:
                # Stopped gracefully at shutdown: runs in flight stop at a step boundary
                # and go back to the queue for the next worker.
                async with wf.worker(concurrency=4, shutdown_timeout=10):
                    yield
            else:
                yield
            await wf.close()
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/signups", status_code=202)
    async def signup(body: Signup, request: Request) -> dict[str, str]:
        wf: AsyncPgWorkflowService = request.app.state.wf
        run_id = await wf.start_workflow("onboard", body.model_dump(), wire={"type": "http"})
        return {"runId": run_id}

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        wf: AsyncPgWorkflowService = request.app.state.wf
        run = await wf.get_run(run_id)
        if run is None:
            raise HTTPException(404, str(WorkflowRunNotFoundError(run_id)))
        return run.model_dump(by_alias=True, mode="json", include={"id", "status", "output"})

    return app


app = create_app()
