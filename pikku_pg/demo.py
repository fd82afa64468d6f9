"""The end-to-end demo behind ``python -m pikku_pg demo``.

It runs on ``DATABASE_URL`` / ``--dsn`` when given, else on an embedded server
that it starts and always stops (Ctrl-C included). It uses the sync API, the
one a script or a notebook would use, and prints what it stored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from pikku_pg._components import COMPONENTS
from pikku_pg._sync._service import PgService
from pikku_pg._sync.ai import PgAgentRunService, PgAIStorageService
from pikku_pg._sync.channel import PgChannelStore
from pikku_pg._sync.deployment import PgDeploymentService
from pikku_pg._sync.event_hub import PgEventHubService
from pikku_pg._sync.workflow import PgWorkflowService, WorkflowContext
from pikku_pg.models.channel import EventHubMessage

Printer = Callable[[str], None]


def run_demo(dsn: str | None = None, out: Printer = print) -> None:
    """Run the demo on ``dsn``, or on a fresh embedded server when ``dsn`` is None."""
    if dsn:
        out(f"Using the database at {dsn.rsplit('@', 1)[-1]}")
        _story(dsn, out)
        return
    from pikku_pg._embedded import EmbeddedPostgres

    started = time.perf_counter()
    with EmbeddedPostgres() as server:
        out(f"Started an embedded PostgreSQL in {time.perf_counter() - started:.1f} s")
        _story(server.dsn, out)
    out("Stopped the embedded PostgreSQL")


def _story(dsn: str, out: Printer) -> None:
    _init_everything(dsn, out)
    _agent_story(dsn, out)
    _workflow_story(dsn, out)
    _channels_story(dsn, out)
    _deployment_story(dsn, out)


def _section(out: Printer, title: str) -> None:
    out("")
    out(f"== {title}")


def _init_everything(dsn: str, out: Printer) -> None:
    _section(out, f"Tables of {len(COMPONENTS)} components")
    for component in COMPONENTS:
        with PgService(dsn, component.default_schema) as service:
            applied = service.init_components([component])
        versions = ", ".join(f"v{v}" for _, v in applied) or "already up to date"
        out(f"  {component.name:<11} schema {component.default_schema:<15} {versions}")


def _agent_story(dsn: str, out: Printer) -> None:
    """A conversation with a tool call that needs approval, approved, then the stored thread."""
    _section(out, "AI agent: a conversation with an approved tool call")
    call_id = f"call-{uuid.uuid4().hex[:8]}"  # tool call ids are unique database-wide
    with PgAIStorageService(dsn) as ai:
        thread = ai.create_thread("user:ada", title="Cleanup")
        ai.save_messages(
            thread.id,
            [
                {"role": "user", "content": "Delete the temp files, please."},
                {
                    "role": "assistant",
                    "content": "I need your approval first.",
                    "toolCalls": [{"id": call_id, "name": "deleteFiles", "args": {"path": "/tmp"}}],
                },
            ],
        )
        run_id = ai.create_run(
            {
                "agentName": "janitor",
                "threadId": thread.id,
                "resourceId": "user:ada",
                "status": "suspended",
                "suspendReason": "approval",
                "pendingApprovals": [
                    {
                        "type": "tool-call",
                        "toolCallId": call_id,
                        "toolName": "deleteFiles",
                        "args": {"path": "/tmp"},
                    }
                ],
            }
        )
        found = ai.find_run_by_tool_call_id(call_id)
        waiting = found.approval.tool_call_id if found else "?"
        out(f"  run {run_id[:8]} waits for approval of tool call {waiting}")
        first = ai.resolve_approval(call_id, "approved")
        again = ai.resolve_approval(call_id, "approved")
        out(f"  approved: {first} (a second approval: {again})")
        ai.save_messages(
            thread.id,
            [
                {
                    "role": "tool",
                    "toolResults": [
                        {"id": call_id, "name": "deleteFiles", "result": "3 files deleted"}
                    ],
                },
                {"role": "assistant", "content": "Done: 3 files deleted."},
            ],
        )
        ai.update_run(
            run_id,
            {
                "status": "completed",
                "pendingApprovals": [],
                "usage": {"inputTokens": 812, "outputTokens": 64, "model": "demo-model"},
            },
        )
        out(f"  thread {thread.title!r}:")
        for message in ai.get_messages(thread.id):
            calls = [f"{c.name}({c.args})" for c in message.tool_calls or []]
            results = [f"{r.name} -> {r.result}" for r in message.tool_results or []]
            out(f"    {message.role:<9} {message.content or ', '.join(calls + results)}")
    with PgAgentRunService(dsn) as console:
        for run in console.get_thread_runs(thread.id):
            tokens = f"{run.usage_input_tokens}+{run.usage_output_tokens} tokens"
            out(f"  run of {run.agent_name}: {run.status}, {tokens}")


def _workflow_story(dsn: str, out: Printer) -> None:
    """A checkout workflow whose payment step fails once, retries, then sleeps; run by a worker."""
    _section(out, "Workflow: a retried step and a durable sleep, run by a worker")
    with PgWorkflowService(dsn) as wf:
        attempts = {"charge": 0}

        @wf.rpc("payments.charge")
        def charge(data: dict[str, Any]) -> dict[str, Any]:
            attempts["charge"] += 1
            if attempts["charge"] == 1:
                raise ConnectionError("payment gateway timed out")
            return {"charged": data["amount"]}

        @wf.workflow("checkout")
        def checkout(ctx: WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
            receipt: dict[str, Any] = ctx.do(
                "charge",
                "payments.charge",
                {"amount": order["amount"]},
                retries=2,
                retry_delay="100ms",
            )
            ctx.sleep("cool-off", "200ms")  # a delayed job: no worker is held meanwhile
            ctx.do("email", lambda data: f"mailed {data['to']}", {"to": order["email"]})
            return receipt

        with wf.worker(concurrency=2, poll_interval=0.5):
            run_id = wf.start_workflow("checkout", {"amount": 42, "email": "ada@example.com"})
            run = wf.wait_for_run(run_id, timeout=30)
        out(f"  run {run_id[:8]} {run.status}: {run.output}")
        history = wf.get_run_history(run_id)
        start = history[0].created_at
        for step in history:
            offset = (step.updated_at - start).total_seconds() * 1000
            error = f"  ({step.error.message})" if step.error else ""
            line = f"{step.step_name:<9} attempt {step.attempt_count}  {step.status}{error}"
            out(f"    +{offset:5.0f} ms  {line}")


def _channels_story(dsn: str, out: Printer) -> None:
    """Two channels subscribed to a topic; a publish seen by this process's listener."""
    _section(out, "Channels: a publish to a topic reaches the subscribed channels")
    with PgChannelStore(dsn) as channels, PgEventHubService(dsn) as hub:
        channels.remove_channels(["demo-alice", "demo-bob"])  # a re-run starts clean
        channels.add_channel("demo-alice", "chat", {"room": "lobby"})
        channels.add_channel("demo-bob", "chat", {"room": "lobby"})
        channels.set_user_session("demo-alice", {"userId": "alice"})
        hub.subscribe("lobby", "demo-alice")
        hub.subscribe("lobby", "demo-bob")
        out(f"  subscribed to 'lobby': {sorted(hub.get_channel_ids_for_topic('lobby'))}")
        received: list[EventHubMessage] = []
        hub.start(received.append)
        hub.publish("lobby", {"from": "alice", "text": "hello everyone"})
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        for message in received:
            ids = sorted(message.channel_ids)
            out(f"  listener got {message.data} on {message.topic!r} for {ids}")
        channels.remove_channels(["demo-alice", "demo-bob"])


def _deployment_story(dsn: str, out: Printer) -> None:
    """A deployment registers with a heartbeat and is found by a function it serves."""
    _section(out, "Deployments: find who serves a function")
    with PgDeploymentService(dsn, heartbeat_interval=1.0, heartbeat_ttl=3.0) as registry:
        registry.start("demo-api-1", "http://127.0.0.1:4002", ["users.get", "users.list"])
        for info in registry.find_function("users.get"):
            out(f"  users.get is served by {info.deployment_id} at {info.endpoint}")
