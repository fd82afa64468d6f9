"""The ``pikku-pg`` command line, run in-process against the test database.

Listing and showing what the services stored (tables and ``--json``), cancel and
resume, and each expected failure: unknown ids (exit 1), usage errors (exit 2),
an unreachable database (exit 3, in bounded time), a worker module that does
not import (exit 2). Worker processes, Ctrl-C and terminals are in
``test_cli_processes.py``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pikku_pg import (
    PgAIStorageService,
    PgDeploymentService,
    PgWorkflowService,
    WorkflowContext,
)
from pikku_pg.cli import main
from pikku_pg.errors import WorkflowFailedError, WorkflowSuspendedError
from pikku_pg.models.workflow import WORKFLOW_STATUSES


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(pg_dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Run ``pikku-pg --dsn <test db> ARGS --schema <test schema>``."""

    def run(*args: str, schema: bool = True, dsn: str | None = pg_dsn) -> Result:
        capsys.readouterr()
        argv = (["--dsn", dsn] if dsn else []) + list(args)
        if schema:
            argv += ["--schema", schema_name]
        code = main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return Result(code, out, err)

    yield run


@dataclass
class Stored:
    thread_id: str
    call_id: str
    agent_run_id: str
    completed: str
    failed: str
    suspended: str
    queued: str


@pytest.fixture
def stored(pg_dsn: str, schema_name: str) -> Iterator[Stored]:
    """A conversation with a tool call, an agent run waiting for approval, workflow runs
    in several states and two deployments (one live, one stale), all in one schema."""
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    with PgAIStorageService(pg_dsn, schema_name) as ai:
        ai.init()
        thread = ai.create_thread("user:ada", title="Cleanup", metadata={"plan": "pro"})
        ai.create_thread("user:bob", title="Other")
        ai.save_messages(
            thread.id,
            [
                {"role": "user", "content": "Delete the temp files\nplease."},
                {
                    "role": "assistant",
                    "content": "I need your approval first.",
                    "toolCalls": [{"id": call_id, "name": "deleteFiles", "args": {"path": "/tmp"}}],
                },
                {
                    "role": "tool",
                    "toolResults": [{"id": call_id, "name": "deleteFiles", "result": "3 deleted"}],
                },
                {"role": "assistant", "content": "Evil \x1b[31mred\x1b[0m [bold]markup[/bold]"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look at this"},
                        {
                            "type": "image",
                            "url": "https://x.test/cat.png",
                            "mediaType": "image/png",
                        },
                        {"type": "data", "name": "order", "data": {"n": 1}},
                    ],
                },
            ],
        )
        agent_run_id = ai.create_run(
            {
                "agentName": "janitor",
                "threadId": thread.id,
                "resourceId": "user:ada",
                "status": "suspended",
                "suspendReason": "approval",
                "pendingApprovals": [
                    {"type": "tool-call", "toolCallId": call_id, "toolName": "deleteFiles"}
                ],
                "usage": {"inputTokens": 10, "outputTokens": 5, "model": "m1"},
            }
        )
    attempts: list[int] = []

    def flaky(data: Any) -> dict[str, bool]:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("smtp down")
        return {"sent": True}

    def broken(data: Any) -> None:
        raise ValueError("no such account")

    with PgWorkflowService(pg_dsn, schema_name) as wf:
        wf.init()

        @wf.workflow("onboard", version="1")
        def onboard(ctx: WorkflowContext, data: Any) -> dict[str, int]:
            ctx.do("create user", lambda d: {"id": 7}, data)
            ctx.do("welcome", flaky, data, retries=1, retry_delay="10ms")
            ctx.sleep("cool off", "30ms")
            return {"id": 7}

        @wf.workflow("doomed", version="1")
        def doomed(ctx: WorkflowContext, data: Any) -> None:
            ctx.do("charge", broken, data)

        @wf.workflow("parked", version="1")
        def parked(ctx: WorkflowContext, data: Any) -> str:
            ctx.suspend("needs a human")
            return "done"

        wf.run_to_completion("onboard", {"email": "ada@example.com"})
        with contextlib.suppress(WorkflowFailedError):
            wf.run_to_completion("doomed", None)
        with contextlib.suppress(WorkflowSuspendedError):
            wf.run_to_completion("parked", None)
        queued = wf.start_workflow("onboard", {"email": "later@example.com"})
        ids = {r.workflow + r.status: r.id for r in wf_runs(pg_dsn, schema_name)}
    with PgDeploymentService(pg_dsn, schema_name) as deployments:
        deployments.init()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema_name}.pikku_deployments"
            " (deployment_id, endpoint, functions, last_heartbeat) VALUES"
            " ('api-1', 'http://10.0.0.1', ARRAY['users.get', 'users.list'], now()),"
            " ('api-0', 'http://10.0.0.0', ARRAY['users.get'], now() - interval '10 minutes'),"
            " ('jobs-1', 'http://10.0.0.2', ARRAY['jobs.run'], now())"
        )
    yield Stored(
        thread.id,
        call_id,
        agent_run_id,
        ids["onboardcompleted"],
        ids["doomedfailed"],
        ids["parkedsuspended"],
        queued,
    )


def wf_runs(dsn: str, schema: str) -> list[Any]:
    from pikku_pg import PgWorkflowRunService

    with PgWorkflowRunService(dsn, schema) as runs:
        return runs.list_runs(limit=100)


# ------------------------------------------------------------------------- AI


def test_threads_lists_filters_and_prints_json(cli: Any, stored: Stored) -> None:
    table = cli("threads")
    assert table.code == 0
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "RESOURCE", "TITLE", "UPDATED", "CREATED"]
    assert len(rows) == 2 and stored.thread_id in table.out and "\x1b" not in table.out

    by_agent = cli("threads", "--agent", "janitor", "--json").json()
    assert [t["id"] for t in by_agent] == [stored.thread_id]
    assert by_agent[0]["resourceId"] == "user:ada" and by_agent[0]["metadata"] == {"plan": "pro"}
    assert [t["title"] for t in cli("threads", "--resource", "user:bob", "--json").json()] == [
        "Other"
    ]
    assert len(cli("threads", "--limit", "1", "--json").json()) == 1
    assert cli("threads", "--agent", "nobody").out.strip() == "no threads"


def test_thread_shows_messages_tool_calls_and_results(cli: Any, stored: Stored) -> None:
    shown = cli("thread", stored.thread_id)
    assert shown.code == 0
    text = shown.out
    assert f"Thread {stored.thread_id}" in text and "title     Cleanup" in text
    assert 'metadata  {"plan":"pro"}' in text
    assert f'→ call deleteFiles({{"path":"/tmp"}})  id {stored.call_id}' in text
    assert f"← result of deleteFiles (id {stored.call_id}): 3 deleted" in text
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if "Delete the temp files" in line)
    # A multi-line message continues under its first line.
    assert lines[first + 1].strip() == "please."
    assert lines[first + 1].index("please.") == lines[first].index("Delete")
    # Stored text never reaches the terminal as escape sequences.
    assert "\x1b" not in text and "Evil \\x1b[31mred\\x1b[0m [bold]markup[/bold]" in text
    # Content parts: text as it is, other parts described in brackets, one per line.
    parts = lines[next(i for i, line in enumerate(lines) if "look at this" in line) :]
    assert parts[1].strip() == "[image image/png, https://x.test/cat.png]"
    assert parts[2].strip() == '[data order: {"n":1}]'

    data = cli("thread", stored.thread_id, "--json").json()
    assert data["thread"]["id"] == stored.thread_id
    roles = [m["role"] for m in data["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert data["messages"][4]["content"][1]["mediaType"] == "image/png"
    assert data["messages"][1]["toolCalls"][0]["args"] == {"path": "/tmp"}


def test_agent_runs_of_a_thread(cli: Any, stored: Stored) -> None:
    table = cli("agent-runs", stored.thread_id)
    assert table.code == 0
    row = next(line for line in table.out.splitlines() if stored.agent_run_id in line)
    assert "janitor" in row and "suspended" in row and "approval" in row
    assert f"deleteFiles ({stored.call_id})" in row and "10+5" in row and "m1" in row
    runs = cli("agent-runs", stored.thread_id, "--json").json()
    assert [r["runId"] for r in runs] == [stored.agent_run_id]
    assert runs[0]["pendingApprovals"][0]["toolCallId"] == stored.call_id


# ------------------------------------------------------------------ workflows


def test_runs_lists_and_filters(cli: Any, stored: Stored) -> None:
    table = cli("runs")
    assert table.code == 0
    assert all(
        i in table.out for i in (stored.completed, stored.failed, stored.suspended, stored.queued)
    )
    failed_row = next(line for line in table.out.splitlines() if stored.failed in line)
    assert "doomed" in failed_row and "failed" in failed_row and "no such account" in failed_row
    queued_row = next(line for line in table.out.splitlines() if stored.queued in line)
    assert "waiting for a worker" in queued_row  # nobody runs it now

    onboard = cli("runs", "--workflow", "onboard", "--json").json()
    assert {r["id"] for r in onboard} == {stored.completed, stored.queued}
    assert [r["id"] for r in cli("runs", "--status", "suspended", "--json").json()] == [
        stored.suspended
    ]
    both = cli("runs", "--workflow", "onboard", "--status", "running", "--json").json()
    assert [r["id"] for r in both] == [stored.queued]
    assert len(cli("runs", "--limit", "2", "--json").json()) == 2


def test_run_shows_a_timeline_of_attempts(cli: Any, stored: Stored) -> None:
    shown = cli("run", stored.completed)
    assert shown.code == 0
    text = shown.out
    assert f"Workflow run {stored.completed}" in text
    assert "status      completed" in text and 'output      {"id":7}' in text
    rows = [line.split() for line in text.splitlines()]
    welcome = [r for r in rows if r[:1] == ["welcome"]]
    assert [(r[1], r[2]) for r in welcome] == [("1", "failed"), ("2", "succeeded")]
    assert "RuntimeError: smtp down" in text
    sleep = next(line for line in text.splitlines() if line.startswith("cool off"))
    waited = sleep.split()[5:7]  # "cool off 1 succeeded 12:00:00.000 <waited> <unit>"
    assert waited[1] in ("ms", "s") and (waited[1] == "s" or float(waited[0]) >= 25)

    data = cli("run", stored.completed, "--json").json()
    assert data["run"]["status"] == "completed"
    assert [(h["stepName"], h["status"]) for h in data["history"]] == [
        ("create user", "succeeded"),
        ("welcome", "failed"),
        ("welcome", "succeeded"),
        ("cool off", "succeeded"),
    ]
    queued = cli("run", stored.queued, "--json").json()
    assert [(j["kind"], j["status"]) for j in queued["jobs"]] == [("replay", "pending")]
    assert (queued["run"]["status"], queued["run"]["activity"]) == ("running", "waiting")
    assert "activity" not in data["run"]  # only running runs have one
    shown_queued = cli("run", stored.queued).out
    assert "Queued jobs" in shown_queued and "status      waiting for a worker" in shown_queued
    failed = cli("run", stored.failed).out
    assert "ValueError: no such account" in failed and "status      failed" in failed


def test_cancel_and_resume(cli: Any, stored: Stored, pg_dsn: str, schema_name: str) -> None:
    done = cli("cancel", stored.queued, "--reason", "customer left")
    assert (done.code, done.out.strip()) == (0, f"workflow run {stored.queued} is cancelled")
    run = cli("run", stored.queued, "--json").json()["run"]
    assert run["status"] == "cancelled" and run["error"]["message"] == "customer left"
    again = cli("cancel", stored.queued)
    assert again.code == 2 and "cannot be cancelled" in again.err
    assert again.err.count("\n") == 1

    resumed = cli("resume", stored.suspended, "--json")
    assert resumed.code == 0 and resumed.json() == {"id": stored.suspended, "status": "running"}
    assert cli("run", stored.suspended, "--json").json()["jobs"][0]["kind"] == "replay"
    finished = cli("resume", stored.completed)
    assert (
        finished.code == 2 and "only a suspended, failed or abandoned running run" in finished.err
    )


# ---------------------------------------------------------------- deployments


def test_deployments_live_stale_and_by_function(cli: Any, stored: Stored) -> None:
    table = cli("deployments")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split()[:3] == ["DEPLOYMENT", "ENDPOINT", "STATE"]
    # Live ones first, then by last heartbeat (api-1 and jobs-1 beat at the same instant).
    assert [line.split()[0] for line in lines[1:]] == ["api-1", "jobs-1", "api-0"]
    stale = next(line for line in lines if line.startswith("api-0"))
    assert "stale" in stale and "10m" in stale
    serving = cli("deployments", "--function", "users.get", "--json").json()
    assert {d["deploymentId"]: d["live"] for d in serving} == {"api-1": True, "api-0": False}
    assert serving[0]["functions"] == ["users.get", "users.list"]
    live = cli("deployments", "--function", "users.get", "--live", "--json").json()
    assert [d["deploymentId"] for d in live] == ["api-1"]
    nobody = cli("deployments", "--function", "nope")
    assert nobody.code == 0 and nobody.out.strip() == "no deployments serve 'nope'"


# ---------------------------------------------------------------- migrate


def test_migrate_json_then_up_to_date(cli: Any, schema_name: str) -> None:
    first = cli("migrate", "--component", "deployment", "--json")
    assert first.code == 0
    assert first.json() == [{"component": "deployment", "schema": schema_name, "applied": [1, 2]}]
    again = cli("migrate", "--component", "deployment")
    assert again.out.strip() == f"deployment in schema {schema_name}: already up to date"


def test_options_after_the_command_name(
    pg_dsn: str, schema_name: str, stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["threads", "--dsn", pg_dsn, "--schema", schema_name, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


# ------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("thread", "thread"),
        ("agent-runs", "thread"),
        ("run", "workflow run"),
        ("cancel", "workflow run"),
        ("resume", "workflow run"),
    ],
)
@pytest.mark.parametrize("ident", ["0b9c3c0e-8e0f-4a47-9a55-1f0e0e0e0e0e", "no-such-id"])
def test_unknown_ids_exit_1(cli: Any, stored: Stored, command: str, kind: str, ident: str) -> None:
    result = cli(command, ident)
    assert result.code == 1
    assert result.err == f"pikku-pg: {kind} '{ident}' not found\n"
    assert result.out == ""


def test_bad_status_exits_2_listing_the_valid_ones(cli: Any) -> None:
    result = cli("runs", "--status", "done")
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and "invalid choice: 'done'" in result.err
    assert all(f"'{status}'" in result.err for status in WORKFLOW_STATUSES)


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--limit", "0"],
        ["threads", "--limit", "many"],
        ["nonsense"],
        ["deployments", "--ttl", "-1"],
    ],
)
def test_usage_errors_exit_2_in_one_line(cli: Any, args: list[str]) -> None:
    result = cli(*args, schema=False)
    assert result.code == 2 and result.err.count("\n") == 1 and result.err.startswith("pikku-pg")


def test_invalid_schema_name_exits_2(cli: Any) -> None:
    result = cli("runs", "--schema", "bad; drop", schema=False)
    assert result.code == 2 and "schema" in result.err and result.err.count("\n") == 1


def test_no_database_exits_2(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = cli("threads", dsn=None)
    assert result.code == 2 and "no database: pass --dsn or set DATABASE_URL" in result.err


def test_database_url_is_the_default_dsn(
    pg_dsn: str, schema_name: str, stored: Stored, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    result = cli("runs", "--json", dsn=None)
    assert result.code == 0 and len(result.json()) == 4


def test_schema_without_tables_exits_1_naming_the_fix(cli: Any, pg_dsn: str) -> None:
    result = cli("threads")  # the test schema was never migrated
    assert result.code == 1
    assert "has no ai tables: run `pikku-pg migrate --component ai --schema" in result.err
    assert cli("runs").code == 1 and cli("deployments").code == 1
    cancel = cli("cancel", str(uuid.uuid4()))
    assert cancel.code == 1
    assert "`pikku-pg migrate --component workflow --component workflow_queue --schema" in (
        cancel.err
    )


def test_refused_connection_exits_3_at_once(cli: Any) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = cli("runs", dsn=f"postgresql://nobody@127.0.0.1:{port}/none")
    assert result.code == 3 and time.monotonic() - started < 5
    assert result.err.startswith(f"pikku-pg: cannot connect to PostgreSQL at 127.0.0.1:{port}")
    assert result.err.count("\n") == 1


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.mark.parametrize(
    ("options", "limit"), [(["--connect-timeout", "2"], 4.5), ([], 7.5)], ids=["2s", "default"]
)
def test_hung_server_exits_3_within_the_connect_timeout(
    cli: Any, options: list[str], limit: float
) -> None:
    with silent_server() as port:
        started = time.monotonic()
        result = cli(*options, "threads", dsn=f"postgresql://x@127.0.0.1:{port}/db")
        took = time.monotonic() - started
    assert result.code == 3 and took < limit
    assert "cannot connect to PostgreSQL at 127.0.0.1" in result.err and "timeout" in result.err


def test_unreachable_database_for_migrate_and_cancel(cli: Any) -> None:
    with silent_server() as port:
        dsn = f"postgresql://x@127.0.0.1:{port}/db?connect_timeout=2"
        started = time.monotonic()
        assert cli("migrate", dsn=dsn).code == 3
        assert cli("cancel", str(uuid.uuid4()), dsn=dsn).code == 3
        assert time.monotonic() - started < 9


# ------------------------------------------------------------ worker module


def test_worker_on_an_unreachable_database_exits_3(cli: Any, modules: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (modules / "cli_mod_down.py").write_text(
        "from pikku_pg import PgWorkflowService\n"
        f"wf = PgWorkflowService('postgresql://x@127.0.0.1:{port}/db',"
        " connect_kwargs={'connect_timeout': 2})\n"
    )
    started = time.monotonic()
    result = cli("worker", "--module", "cli_mod_down", schema=False)
    assert result.code == 3 and time.monotonic() - started < 10
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}" in result.err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lease", "nan", "lease must be a positive number of seconds, not nan"),
        ("--poll-interval", "0", "poll_interval must be a positive number of seconds"),
        ("--shutdown-timeout", "1e9", "shutdown_timeout must be at most 86400 seconds"),
        ("--concurrency", "0", "concurrency must be between 1 and 1024, not 0"),
        ("--name", "n" * 300, "name is 300 characters; at most 255"),
    ],
)
def test_worker_options_are_checked_before_the_import(
    cli: Any, modules: Path, option: str, value: str, message: str
) -> None:
    (modules / "cli_mod_never.py").write_text("raise RuntimeError('imported')\n")
    result = cli("worker", "--module", "cli_mod_never", option, value, schema=False)
    assert result.code == 2 and result.out == ""
    assert result.err.startswith(f"pikku-pg: {message}") and result.err.count("\n") == 1


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for throw-away worker modules (forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("cli_mod_"):
            del sys.modules[name]


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        (None, ["--module", "cli_mod_missing"], "No module named 'cli_mod_missing'"),
        ("import cli_mod_nothing_here\n", ["--module", "cli_mod_a"], "No module named"),
        ("def broken(:\n", ["--module", "cli_mod_a"], "SyntaxError"),
        ("raise RuntimeError('boom at import')\n", ["--module", "cli_mod_a"], "boom at import"),
        ("x = 1\n", ["--module", "cli_mod_a"], "no workflow service in cli_mod_a"),
        ("wf = 42\n", ["--module", "cli_mod_a"], "cli_mod_a:wf is a int"),
        ("x = 1\n", ["--service", "cli_mod_a:svc"], "has no attribute 'svc'"),
        ("x = 1\n", ["--service", "cli_mod_a"], "--service must be MODULE:ATTR"),
        ("def wf():\n    raise KeyError('cfg')\n", ["--module", "cli_mod_a"], "KeyError"),
        ("x = 1\n", [], "worker needs --module"),
    ],
)
def test_worker_module_errors_exit_2(
    cli: Any, modules: Path, source: str | None, args: list[str], message: str
) -> None:
    if source is not None:
        (modules / "cli_mod_a.py").write_text(source)
    result = cli("worker", *args, schema=False)
    assert result.code == 2 and message in result.err
    assert result.err.count("\n") == 1 and result.out == ""
