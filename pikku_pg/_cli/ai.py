"""``threads``, ``thread ID`` and ``agent-runs THREAD_ID``: what the AI agents stored."""

from __future__ import annotations

import argparse
from typing import Any

from pikku_pg._cli._common import EXIT_OK, connect, expect_tables, positive_int
from pikku_pg._cli.output import Column, Output, compact_json, fmt_time
from pikku_pg._sync.ai import PgAgentRunService, PgAIStorageService
from pikku_pg.errors import ThreadNotFoundError
from pikku_pg.models.ai import (
    AgentCallApproval,
    AIMessage,
    ContentPart,
    DataPart,
    FilePart,
    ImagePart,
    TextPart,
)

AI_SCHEMA = "pikku_ai"
ROLE_STYLES = {"user": "bold cyan", "assistant": "bold green", "tool": "yellow", "system": "dim"}


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the AI commands on the sub-command parser."""
    threads = commands.add_parser(
        "threads", parents=[common], help="list conversation threads, most recent first"
    )
    threads.add_argument("--agent", metavar="NAME", help="only threads with a run of this agent")
    threads.add_argument("--resource", metavar="ID", help="only the threads of this resource")
    threads.add_argument(
        "--limit", type=positive_int, default=50, metavar="N", help="at most N threads (50)"
    )
    threads.add_argument("--schema", default=AI_SCHEMA, help=f"({AI_SCHEMA})")
    threads.set_defaults(run=list_threads)

    thread = commands.add_parser(
        "thread", parents=[common], help="show a thread: messages, tool calls and results"
    )
    thread.add_argument("id", metavar="ID", help="thread id")
    thread.add_argument("--schema", default=AI_SCHEMA, help=f"({AI_SCHEMA})")
    thread.set_defaults(run=show_thread)

    runs = commands.add_parser(
        "agent-runs", parents=[common], help="list the agent runs of a thread, newest first"
    )
    runs.add_argument("thread_id", metavar="THREAD_ID", help="thread id")
    runs.add_argument("--schema", default=AI_SCHEMA, help=f"({AI_SCHEMA})")
    runs.set_defaults(run=agent_runs)


def list_threads(args: argparse.Namespace, out: Output) -> int:
    with (
        connect(args) as conn,
        PgAgentRunService(conn, args.schema) as console,
        expect_tables(args.schema, "ai"),
    ):
        found = console.list_threads(
            agent_name=args.agent, resource_id=args.resource, limit=args.limit
        )
    if out.json_mode:
        out.json([t.model_dump(by_alias=True, mode="json") for t in found])
        return EXIT_OK
    out.table(
        [
            Column("id", 40),
            Column("resource", 30),
            Column("title", 40),
            Column("updated", 20),
            Column("created", 20),
        ],
        [
            [t.id, t.resource_id, t.title or "", fmt_time(t.updated_at), fmt_time(t.created_at)]
            for t in found
        ],
        empty="no threads",
    )
    return EXIT_OK


def describe_content(content: str | list[ContentPart] | None) -> str:
    """A message's content as text: text parts as they are, other parts in brackets."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append(part.text)
        elif isinstance(part, (ImagePart, FilePart)):
            where = part.url or (f"{len(part.data)} base64 chars" if part.data else "no data")
            name = part.filename if isinstance(part, FilePart) and part.filename else ""
            media = part.media_type or "?"
            parts.append(f"[{part.type} {name + ' ' if name else ''}{media}, {where}]")
        elif isinstance(part, DataPart):
            parts.append(f"[data {part.name}: {compact_json(part.data)}]")
        else:
            parts.append(f"[generative UI: {compact_json(part.spec)}]")
    return "\n".join(parts)


def message_lines(message: AIMessage) -> list[str]:
    """The lines that show one message below its role: content, tool calls, results."""
    lines = describe_content(message.content).split("\n") if message.content else []
    for call in message.tool_calls or []:
        lines.append(f"→ call {call.name}({compact_json(call.args)})  id {call.id}")
    for result in message.tool_results or []:
        lines.append(f"← result of {result.name} (id {result.id}): {result.result}")
    return lines or ["(empty)"]


def show_thread(args: argparse.Namespace, out: Output) -> int:
    with (
        connect(args) as conn,
        PgAgentRunService(conn, args.schema) as console,
        expect_tables(args.schema, "ai"),
    ):
        thread = console.get_thread(args.id)
        if thread is None:
            raise ThreadNotFoundError(args.id)
        messages = console.get_thread_messages(args.id)
    if out.json_mode:
        out.json(
            {
                "thread": thread.model_dump(by_alias=True, mode="json"),
                "messages": [m.model_dump(by_alias=True, mode="json") for m in messages],
            }
        )
        return EXIT_OK
    out.heading(f"Thread {thread.id}")
    pairs = [
        ("title", thread.title or "-"),
        ("resource", thread.resource_id),
        ("created", fmt_time(thread.created_at)),
        ("updated", fmt_time(thread.updated_at)),
        ("messages", str(len(messages))),
    ]
    if thread.metadata:
        pairs.append(("metadata", compact_json(thread.metadata)))
    out.fields(pairs)
    out.line()
    width = max([len(m.role) for m in messages] + [4])
    for message in messages:
        head = f"{fmt_time(message.created_at)}  {message.role:<{width}}  "
        lines = [line for text in message_lines(message) for line in text.split("\n")]
        out.block(head, lines, style=ROLE_STYLES.get(message.role))
    return EXIT_OK


def agent_runs(args: argparse.Namespace, out: Output) -> int:
    with (
        connect(args) as conn,
        PgAIStorageService(conn, args.schema) as ai,
        expect_tables(args.schema, "ai"),
    ):
        ai.get_thread(args.thread_id)  # ThreadNotFoundError (exit 1) for an unknown id
        runs = ai.get_runs_by_thread(args.thread_id)
    if out.json_mode:
        out.json([r.model_dump(by_alias=True, mode="json") for r in runs])
        return EXIT_OK
    rows = []
    for run in runs:
        waiting = []
        for approval in run.pending_approvals or []:
            if isinstance(approval, AgentCallApproval):
                waiting.append(f"{approval.display_tool_name} ({approval.tool_call_id})")
            else:
                waiting.append(f"{approval.tool_name} ({approval.tool_call_id})")
        why = run.error_message or ""
        if run.status == "suspended" and run.suspend_reason:
            why = f"{run.suspend_reason}: {why}" if why else run.suspend_reason
        if run.missing_rpcs:
            why = f"{why}: {', '.join(run.missing_rpcs)}" if why else ", ".join(run.missing_rpcs)
        usage = run.usage
        rows.append(
            [
                run.run_id,
                run.agent_name,
                run.status,
                why,
                "; ".join(waiting),
                f"{usage.input_tokens}+{usage.output_tokens}",
                usage.model,
                fmt_time(run.created_at),
                fmt_time(run.updated_at),
            ]
        )
    out.table(
        [
            Column("run id", 36),
            Column("agent", 24),
            Column("status", 10, status=True),
            Column("reason", 40),
            Column("waiting for approval", 40),
            Column("tokens", 16),
            Column("model", 20),
            Column("created", 20),
            Column("updated", 20),
        ],
        rows,
        empty=f"thread {args.thread_id} has no agent runs",
    )
    return EXIT_OK
