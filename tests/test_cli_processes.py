"""The command line as separate processes: the worker (sync and async modules, graceful
stop on SIGINT/SIGTERM), the demo interrupted with Ctrl-C, colour only on a terminal."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pikku_pg import (
    PgAIStorageService,
    PgWorkflowRunService,
    PgWorkflowService,
    WorkflowContext,
)

WORKFLOWS = """
import os, time
from pikku_pg import {cls}

wf = {cls}(os.environ["DATABASE_URL"], os.environ["WF_SCHEMA"])

@wf.workflow("greet", version="1")
{aio}def greet(ctx, data):
    said = {aw}ctx.do("hello", {fn}, data)
    return {{"said": said}}

@wf.workflow("slow", version="1")
{aio}def slow(ctx, data):
    {aw}ctx.do("first", {slow_fn}, data)
    {aw}ctx.do("second", {fn}, data)
    return "done"
"""

SYNC = WORKFLOWS.format(
    cls="PgWorkflowService",
    aio="",
    aw="",
    fn="lambda d: f\"hello {d['name']}\"",
    slow_fn="lambda d: time.sleep(1.0) or 'slept'",
)
ASYNC = (
    "import asyncio\n"
    + WORKFLOWS.format(
        cls="AsyncPgWorkflowService",
        aio="async ",
        aw="await ",
        fn="hello",
        slow_fn="nap",
    )
    + textwrap.dedent(
        """
        async def hello(d):
            return f"hello {d['name']}"

        async def nap(d):
            await asyncio.sleep(1.0)
            return "slept"
        """
    )
)


def _register(wf: PgWorkflowService) -> None:
    """The same workflows (same names and versions) in the test process, to start runs."""

    @wf.workflow("greet", version="1")
    def greet(ctx: WorkflowContext, data: Any) -> Any:
        raise AssertionError("runs on the worker")

    @wf.workflow("slow", version="1")
    def slow(ctx: WorkflowContext, data: Any) -> Any:
        first = ctx.do("first", lambda d: "slept", data)
        ctx.do("second", lambda d: "finished here", data)
        return first


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextlib.contextmanager
def _process(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pikku_pg", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> str:
    """Lines of stdout until one contains ``marker`` (fails after ``timeout``)."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen += line
            if marker in line:
                return seen
        elif proc.poll() is not None:
            break
    stderr = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    raise AssertionError(f"no {marker!r} in time; stdout: {seen!r}; stderr: {stderr!r}")


def _wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize(("source", "stop"), [(SYNC, signal.SIGINT), (ASYNC, signal.SIGTERM)])
def test_worker_runs_a_module_and_stops_gracefully(
    pg_dsn: str, schema_name: str, tmp_path: Path, source: str, stop: signal.Signals
) -> None:
    (tmp_path / "app_workflows.py").write_text(source)
    wf = PgWorkflowService(pg_dsn, schema_name)
    wf.init()
    _register(wf)
    args = ["--dsn", pg_dsn, "worker", "--module", "app_workflows", "--concurrency", "2"]
    args += ["--poll-interval", "0.2", "--shutdown-timeout", "10"]
    with (
        wf,
        PgWorkflowRunService(pg_dsn, schema_name) as console,
        _process(args, cwd=tmp_path, env=_env(WF_SCHEMA=schema_name)) as proc,
    ):
        ready = _read_until(proc, "Ctrl-C to stop")
        assert "workflows: greet, slow" in ready and f"schema {schema_name}" in ready
        run = wf.wait_for_run(wf.start_workflow("greet", {"name": "ada"}), timeout=15)
        assert run.status == "completed" and run.output == {"said": "hello ada"}

        # Stop while a step is in flight: it finishes, the run goes back to the queue.
        slow_id = wf.start_workflow("slow", {"name": "bob"})

        def first_step_running() -> bool:
            history = console.get_run_history(slow_id)
            return any(h.step_name == "first" and h.status == "running" for h in history)

        _wait_for(first_step_running)
        started = time.monotonic()
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert time.monotonic() - started < 10
        assert "stopping: runs in flight stop at their next step boundary" in out
        assert re.search(r"^stopped: \d+ jobs done$", out, re.M) and "Traceback" not in err

        history = [(h.step_name, h.status) for h in console.get_run_history(slow_id)]
        assert history == [("first", "succeeded")]
        assert wf.get_run(slow_id).status == "running"  # type: ignore[union-attr]
        jobs = wf.get_run_jobs(slow_id)
        assert [(j["kind"], j["status"]) for j in jobs] == [("replay", "pending")]
        # Another worker finishes it without running the first step again.
        with wf.worker(concurrency=1, poll_interval=0.1):
            done = wf.wait_for_run(slow_id, timeout=15)
        assert done.status == "completed" and done.output == "slept"
        steps = [(h.step_name, h.attempt_count) for h in console.get_run_history(slow_id)]
        assert steps == [("first", 1), ("second", 1)]


def _processes_in(directory: str) -> list[int]:
    """Pids of processes whose working directory or command line is inside ``directory``
    (PostgreSQL's processes run in their data directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            if cwd.startswith(directory) or directory in cmdline:
                found.append(int(entry))
    return found


@pytest.mark.timeout(90)
@pytest.mark.parametrize("target", ["process", "terminal group"])
def test_demo_interrupted_with_ctrl_c_leaves_no_server(target: str) -> None:
    """SIGINT to the demo process, or (as Ctrl-C in a terminal does) to its whole
    process group, PostgreSQL's processes included."""
    tmp = tempfile.mkdtemp(prefix="pkdemo-", dir="/tmp")  # the server's data dir goes here
    try:
        with _process(["demo"], env=_env(TMPDIR=tmp), start_new_session=True) as proc:
            _read_until(proc, "Started an embedded PostgreSQL", timeout=60)
            assert _processes_in(tmp), "the embedded server should be running"
            if target == "process":
                proc.send_signal(signal.SIGINT)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=45)
        assert proc.returncode == 130, (out, err)
        assert err.strip().splitlines()[-1] == "pikku-pg: interrupted"
        assert "Traceback" not in err
        _wait_for(lambda: not _processes_in(tmp), timeout=15)
        assert not [p for p in Path(tmp).iterdir() if p.name.startswith("pikku-pg-")]
    finally:
        for pid in _processes_in(tmp):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def _run_on_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run the command with stdout on a pseudo-terminal; returns what it printed."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pikku_pg", *args],
            stdout=follower,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(30) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal(pg_dsn: str, schema_name: str) -> None:
    with PgWorkflowService(pg_dsn, schema_name) as wf:
        wf.init()

        @wf.workflow("hello", version="1")
        def hello(ctx: WorkflowContext, data: Any) -> str:
            return "hi"

        run_id = wf.start_workflow("hello", None)
    args = ["--dsn", pg_dsn, "runs", "--schema", schema_name]
    on_tty = _run_on_terminal(args, _env(TERM="xterm-256color", NO_COLOR=""))
    assert run_id in on_tty and "\x1b[" in on_tty  # coloured by rich
    plain_tty = _run_on_terminal(args, _env(TERM="xterm-256color", NO_COLOR="1"))
    assert run_id in plain_tty and "\x1b[" not in plain_tty
    # A run and a thread on a terminal: stored text shows escaped, never as markup.
    with PgAIStorageService(pg_dsn, schema_name) as ai:
        ai.init()
        thread = ai.create_thread("user:eve")
        ai.save_messages(thread.id, [{"role": "user", "content": "\x1b[31mred [bold]x[/bold]"}])
    term = _env(TERM="xterm-256color", NO_COLOR="")
    shown = _run_on_terminal(["--dsn", pg_dsn, "run", run_id, "--schema", schema_name], term)
    assert f"Workflow run {run_id}" in shown and "\x1b[" in shown
    chat = _run_on_terminal(["--dsn", pg_dsn, "thread", thread.id, "--schema", schema_name], term)
    assert "\\x1b[31mred [bold]x[/bold]" in chat and "\x1b[31mred" not in chat
    piped = subprocess.run(
        [sys.executable, "-m", "pikku_pg", *args],
        capture_output=True,
        text=True,
        env=_env(TERM="xterm-256color"),
        timeout=30,
    )
    assert piped.returncode == 0 and run_id in piped.stdout and "\x1b[" not in piped.stdout


def test_a_second_ctrl_c_quits_at_once_and_the_run_is_taken_over(
    pg_dsn: str, schema_name: str, tmp_path: Path
) -> None:
    (tmp_path / "app_workflows.py").write_text(SYNC.replace("time.sleep(1.0)", "time.sleep(3.0)"))
    wf = PgWorkflowService(pg_dsn, schema_name)
    wf.init()
    _register(wf)
    args = ["--dsn", pg_dsn, "worker", "--module", "app_workflows", "--lease", "1"]
    args += ["--poll-interval", "0.2", "--shutdown-timeout", "30"]
    with (
        wf,
        PgWorkflowRunService(pg_dsn, schema_name) as console,
        _process(args, cwd=tmp_path, env=_env(WF_SCHEMA=schema_name)) as proc,
    ):
        _read_until(proc, "Ctrl-C to stop")
        slow_id = wf.start_workflow("slow", None)
        _wait_for(lambda: any(h.status == "running" for h in console.get_run_history(slow_id)))
        proc.send_signal(signal.SIGINT)
        _read_until(proc, "stopping:")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 130 and time.monotonic() - started < 2
        assert "quitting now" in out and "Traceback" not in err
        # Its lease (1 s) runs out: another worker takes the run over and finishes it.
        with wf.worker(concurrency=1, poll_interval=0.2):
            assert wf.wait_for_run(slow_id, timeout=20).status == "completed"
