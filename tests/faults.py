"""Fault injection for the workflow engine: child processes, audit tables, the counts.

* Child processes (``spawn``): workers and inline callers, run as
  ``python -m tests.faults '<json config>'`` from the repository root. Their step
  function (:class:`Recorder`) records every execution in the table ``executions``
  before it runs (run, step, attempt, pid and the token it returns), so the tests
  count executions in the database, not in the engine's own bookkeeping.
* Audit triggers (``install_audit``): every write to a run, a step or a step history
  row lands in ``writes`` with the writer (its ``application_name``, ``fault:<pid>``)
  and whether that writer held the run's job at that moment. A write by a runner that
  no longer held the run is a stale write that the fencing let through.
* :class:`OrphanWatch` samples runs left ``running`` with neither a live lease nor a
  pending job; :func:`audit` computes the counts every fault test asserts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pikku_pg.errors import PikkuPgError

ROOT = Path(__file__).resolve().parent.parent
#: The steps of the workflow "three", in order; "slow" is the one faults hit.
STEPS = ("first", "slow", "last")
WORKFLOW_STEPS = {"three": STEPS, "one": ("only",)}

# The attempt is read from the step's history: the engine stores the attempt before
# it calls the step function.
RECORD_EXECUTION = """\
INSERT INTO {schema}.executions (run_id, step, attempt, pid, token)
SELECT %(run)s::uuid, %(step)s, (
  SELECT count(*) FROM {schema}.workflow_step_history h
  JOIN {schema}.workflow_step s USING (workflow_step_id)
  WHERE s.workflow_run_id = %(run)s::uuid AND s.step_name = %(step)s
), %(pid)s, %(token)s
"""

AUDIT_DDL = """\
CREATE TABLE {schema}.executions (
  run_id UUID, step TEXT, attempt INT, pid INT, token TEXT,
  at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE {schema}.writes (
  tbl TEXT, run_id UUID, step_name TEXT, old_status TEXT, new_status TEXT,
  old_result JSONB, new_result JSONB, writer TEXT, holder_ok BOOLEAN,
  at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
-- Whether the writing connection's process holds a running job of the run: workers
-- are named "<host>:<pid>:<id>", inline callers "inline:<host>:<pid>".
CREATE FUNCTION {schema}.writer_holds(run UUID) RETURNS BOOLEAN LANGUAGE sql AS $$
  SELECT current_setting('application_name') LIKE 'fault:%' AND EXISTS (
    SELECT FROM {schema}.workflow_jobs j
    WHERE j.workflow_run_id = run AND j.status = 'running'
      AND j.locked_by ~ (':' || split_part(current_setting('application_name'), ':', 2)
                         || '(:|$)'))
$$;
CREATE FUNCTION {schema}.audit_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {schema}.writes VALUES ('run', NEW.workflow_run_id, NULL, OLD.status::text,
    NEW.status::text, OLD.output, NEW.output, current_setting('application_name'),
    {schema}.writer_holds(NEW.workflow_run_id));
  RETURN NULL;
END $$;
CREATE FUNCTION {schema}.audit_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {schema}.writes VALUES ('step', NEW.workflow_run_id, NEW.step_name,
    CASE WHEN TG_OP = 'UPDATE' THEN OLD.status::text END, NEW.status::text,
    CASE WHEN TG_OP = 'UPDATE' THEN OLD.result END, NEW.result,
    current_setting('application_name'), {schema}.writer_holds(NEW.workflow_run_id));
  RETURN NULL;
END $$;
CREATE FUNCTION {schema}.audit_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {schema}.writes
  SELECT 'history', s.workflow_run_id, s.step_name,
    CASE WHEN TG_OP = 'UPDATE' THEN OLD.status::text END, NEW.status::text,
    CASE WHEN TG_OP = 'UPDATE' THEN OLD.result END, NEW.result,
    current_setting('application_name'), {schema}.writer_holds(s.workflow_run_id)
  FROM {schema}.workflow_step s WHERE s.workflow_step_id = NEW.workflow_step_id;
  RETURN NULL;
END $$;
CREATE TRIGGER audit_run AFTER UPDATE ON {schema}.workflow_runs
  FOR EACH ROW EXECUTE FUNCTION {schema}.audit_run();
CREATE TRIGGER audit_step AFTER INSERT OR UPDATE ON {schema}.workflow_step
  FOR EACH ROW EXECUTE FUNCTION {schema}.audit_step();
CREATE TRIGGER audit_history AFTER INSERT OR UPDATE ON {schema}.workflow_step_history
  FOR EACH ROW EXECUTE FUNCTION {schema}.audit_history();
"""

# Runs left running that nobody holds and that wait in no queue.
ORPHANS = """\
SELECT r.workflow_run_id::text FROM {schema}.workflow_runs r
WHERE r.status = 'running' AND NOT EXISTS (
  SELECT FROM {schema}.workflow_jobs j
  WHERE j.workflow_run_id = r.workflow_run_id
    AND (j.status = 'pending' OR j.locked_until >= now()))
"""


def render(template: str, schema: str) -> sql.Composed:
    """A statement of this module for ``schema``."""
    return sql.SQL(template).format(schema=sql.Identifier(schema))


def writer_name(pid: int | None = None) -> str:
    """The ``application_name`` of the writing connections of process ``pid``."""
    return f"fault:{os.getpid() if pid is None else pid}"


def service_kwargs() -> dict[str, Any]:
    """Keyword arguments of a workflow service whose writes the audit attributes to this
    process (the worker's listener takes the same name)."""
    return {"connect_kwargs": {"application_name": writer_name()}}


def install_audit(dsn: str, schema: str) -> None:
    """Create the audit tables and triggers in an initialised workflow schema."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(render(AUDIT_DDL, schema))


# ------------------------------------------------------------------ step function


class Recorder:
    """The step function of the fault workflows (sync flavour).

    Records the execution, then returns a token unique to it. The step "slow" sleeps
    ``slow`` seconds (or what the run's input asks, see :func:`step_data`), or
    (``hang``) until the process is killed; with ``announce`` it prints
    ``slow <run id>`` first; with ``interrupt_after`` it sends SIGINT to its own
    process that many seconds after it started.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        slow: float = 0.2,
        hang: bool = False,
        announce: bool = False,
        interrupt_after: float | None = None,
    ) -> None:
        self._dsn = dsn
        self._query = render(RECORD_EXECUTION, schema)
        self._local = threading.local()
        self.slow, self.hang, self.announce = slow, hang, announce
        self.interrupt_after = interrupt_after

    def __call__(self, data: dict[str, Any]) -> str:
        token = f"{data['step']}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._record({**data, "pid": os.getpid(), "token": token})
        if data["step"] == "slow":
            self._slow_part(data["run"], float(data.get("slow", self.slow)))
        return token

    def _slow_part(self, run_id: str, seconds: float) -> None:
        if self.announce:
            print(f"slow {run_id}", flush=True)
        if self.interrupt_after is not None:
            timer = threading.Timer(self.interrupt_after, os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
        time.sleep(3600 if self.hang else seconds)

    def _record(self, params: dict[str, Any]) -> None:
        # Its own connection, named apart from the engine's (a fault test that kills the
        # engine's connections must not fail the step); reconnects after a restart.
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = getattr(self._local, "conn", None)
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self._dsn, autocommit=True, application_name=f"audit:{os.getpid()}"
                    )
                    self._local.conn = conn
                conn.execute(self._query, params)
                return
            except psycopg.OperationalError:
                self._local.conn = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class AsyncRecorder:
    """:class:`Recorder` for the async service (the test process's inline callers)."""

    def __init__(self, dsn: str, schema: str, *, slow: float = 0.2) -> None:
        self._dsn = dsn
        self._query = render(RECORD_EXECUTION, schema)
        self.slow = slow

    async def __call__(self, data: dict[str, Any]) -> str:
        import asyncio

        token = f"{data['step']}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        params = {**data, "pid": os.getpid(), "token": token}
        async with await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, application_name=f"audit:{os.getpid()}"
        ) as conn:
            await conn.execute(self._query, params)
        if data["step"] == "slow":
            await asyncio.sleep(float(data.get("slow", self.slow)))
        return token


def step_data(ctx: Any, step: str) -> dict[str, Any]:
    """A step's data: its run and name, and the seconds the step "slow" takes when the
    run's input names them (``{"slow": 3.0}``)."""
    data: dict[str, Any] = {"run": ctx.run_id, "step": step}
    if isinstance(ctx.input, dict) and "slow" in ctx.input:
        data["slow"] = ctx.input["slow"]
    return data


def register(wf: Any, record: Any) -> None:
    """Register the fault workflows on a sync service: "three" (first, slow, last) and
    "one" (a single fast step). ``record`` is the step function (a :class:`Recorder`;
    None on a service that only starts runs)."""

    @wf.workflow("three", version="1")
    def three(ctx: Any, _: Any) -> list[str]:
        return [ctx.do(s, record, step_data(ctx, s)) for s in STEPS]

    @wf.workflow("one", version="1")
    def one(ctx: Any, _: Any) -> list[str]:
        return [ctx.do("only", record, step_data(ctx, "only"))]


def register_async(wf: Any, record: Any) -> None:
    """:func:`register` for an async service (the same names and versions)."""

    @wf.workflow("three", version="1")
    async def three(ctx: Any, _: Any) -> list[str]:
        return [await ctx.do(s, record, step_data(ctx, s)) for s in STEPS]


# ------------------------------------------------------------------ child processes


class Child:
    """A worker or inline-caller child process: its stdout lines are read by a thread
    (so waits are bounded), its stderr goes to a file."""

    def __init__(self, proc: subprocess.Popen[str], stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put("")  # end of output

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = 30.0) -> str:
        """The next line the child prints ("" once it exited)."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"child {self.pid} printed nothing in {timeout} s") from None

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 15.0) -> int:
        """Stop gracefully (SIGINT), killing it when it does not stop in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def spawn(tmp: Path, **config: Any) -> Child:
    """Start a child (see :func:`child_main` for ``config``); returns once it is ready."""
    tmp.mkdir(parents=True, exist_ok=True)
    stderr_path = tmp / f"child-{uuid.uuid4().hex[:8]}.stderr"
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults", json.dumps(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    child = Child(proc, stderr_path)
    assert child.line() == "ready", child.stderr
    return child


@contextlib.contextmanager
def children(tmp: Path, count: int, **config: Any) -> Iterator[list[Child]]:
    """``count`` children with the same config, stopped (gracefully) at the end."""
    started: list[Child] = []
    try:
        for _ in range(count):
            started.append(spawn(tmp, **config))
        yield started
    finally:
        for child in started:
            child.stop()


def tracebacks(child: Child) -> list[str]:
    """The tracebacks a child printed on stderr (raw errors that escaped)."""
    text = child.stderr
    return [part[:2000] for part in text.split("Traceback (most recent call last)")[1:]]


def child_main(config: dict[str, Any]) -> None:
    """A child process. ``config``: ``dsn``, ``schema``, ``role`` ("worker" or "inline"),
    :class:`Recorder` options (``slow``, ``hang``, ``announce``, ``interrupt_after``);
    workers: ``lease``, ``poll``, ``concurrency``; inline callers: ``inline_lease``,
    ``on_cancel``, ``runs`` (how many "three" runs, one after the other),
    ``interrupt_within`` and ``seed`` (see :func:`_run_inline`)."""
    from pikku_pg._sync.workflow import PgWorkflowService

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    dsn, schema = config["dsn"], config["schema"]
    options = {k: config[k] for k in ("slow", "hang", "announce", "interrupt_after") if k in config}
    record = Recorder(dsn, schema, **options)
    wf = PgWorkflowService(
        dsn, schema, inline_lease=config.get("inline_lease", 30.0), **service_kwargs()
    )
    register(wf, record)
    print("ready", flush=True)
    with wf:
        if config["role"] == "worker":
            with contextlib.suppress(KeyboardInterrupt):
                wf.run_worker(
                    concurrency=config.get("concurrency", 2),
                    lease=config["lease"],
                    poll_interval=config["poll"],
                    shutdown_timeout=5,
                )
            return
        _run_inline(wf, config)


def _run_inline(wf: Any, config: dict[str, Any]) -> None:
    """Run "three" inline ``runs`` times (with ``input``), printing how each call ended;
    with ``interrupt_within``, SIGINT lands at a random moment of the first that many
    seconds of each call (which must outlast them: the step "slow" sees to that)."""
    rng = random.Random(config.get("seed", 0))
    for _ in range(config.get("runs", 1)):
        timer = None
        if "interrupt_within" in config:
            delay = rng.uniform(0.0, config["interrupt_within"])
            timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
        try:
            if timer is not None:
                timer.start()  # inside the try: the signal may land while it starts
            wf.run_to_completion(
                "three", config.get("input"), on_cancel=config.get("on_cancel", "release")
            )
            print("completed", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        except PikkuPgError as exc:
            print(f"raised {type(exc).__name__}", flush=True)
        if timer is not None:
            timer.join()
            time.sleep(0.01)  # a late signal lands here, not in the next call


# ------------------------------------------------------------------ watching, counting


class OrphanWatch:
    """Samples (in a thread) the runs left running with neither a live lease nor a
    pending job; ``longest`` is the longest time one run stayed so (seconds)."""

    def __init__(self, dsn: str, schema: str, interval: float = 0.1) -> None:
        self._dsn = dsn
        self._query = render(ORPHANS, schema)
        self._interval = interval
        self._since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.longest = 0.0
        self.samples = 0

    def __enter__(self) -> OrphanWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.wait(self._interval):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=2)
                rows = conn.execute(self._query).fetchall()
            except psycopg.Error:
                conn = None  # the server restarts: keep the stretches open
                continue
            self._sample({r[0] for r in rows}, time.monotonic())
        if conn is not None:
            conn.close()

    def _sample(self, orphans: set[str], now: float) -> None:
        self.samples += 1
        self._since = {run: self._since.get(run, now) for run in orphans}
        for since in self._since.values():
            self.longest = max(self.longest, now - since)


@dataclass
class Audit:
    """What a fault test counts, from the database (each must be 0 unless said)."""

    runs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # not in an allowed final status
    completed_twice: int = 0
    rewritten: list[str] = field(default_factory=list)
    stale_writes: list[str] = field(default_factory=list)
    orphans: int = 0
    executions: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def re_executed(self) -> int:
        """Step executions beyond the first (at-least-once after a fault)."""
        return sum(len(v) - 1 for v in self.executions.values())

    def assert_clean(self) -> None:
        """The counts every scenario requires to be 0."""
        assert self.runs > 0
        assert self.lost == [], self.lost[:5]
        assert self.completed_twice == 0
        assert self.rewritten == [], self.rewritten[:5]
        assert self.stale_writes == [], self.stale_writes[:5]
        assert self.orphans == 0


def audit(dsn: str, schema: str, allowed: tuple[str, ...] = ("completed",)) -> Audit:
    """Count, in the database, what went wrong (see :class:`Audit`)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = _Queries(conn, schema)
        result = Audit()
        runs = q.all(
            "SELECT workflow_run_id::text, workflow, status::text, output FROM {s}.workflow_runs"
        )
        result.runs = len(runs)
        result.statuses = Counter(r[2] for r in runs)
        result.lost = [f"{r[0]} {r[2]}" for r in runs if r[2] not in allowed]
        result.completed_twice = q.one(
            "SELECT count(*) FROM (SELECT run_id FROM {s}.writes WHERE tbl = 'run'"
            " AND (new_status = 'completed' OR old_status = 'completed')"
            " GROUP BY run_id HAVING count(*) > 1) x"
        )
        result.rewritten = _rewritten(q, runs)
        result.stale_writes = [
            f"{r[0]} {r[1]} {r[2]} {r[3]}->{r[4]} by {r[5]}"
            for r in q.all(
                "SELECT tbl, run_id, step_name, old_status, new_status, writer FROM {s}.writes"
                " WHERE NOT holder_ok ORDER BY at"
            )
        ]
        result.orphans = len(q.all(ORPHANS))
        for run_id, step, pid, attempt in q.all(
            "SELECT run_id::text, step, pid, attempt FROM {s}.executions ORDER BY at"
        ):
            result.executions.setdefault((run_id, step), []).append((pid, attempt))
        return result


def _rewritten(q: _Queries, runs: list[tuple[Any, ...]]) -> list[str]:
    """Succeeded steps written again, completed runs whose output differs from their
    stored step results, steps with other than one succeeded history row."""
    found = [
        f"{r[0]} {r[1]} {r[2]}: {r[3]} -> {r[4]} by {r[5]}"
        for r in q.all(
            "SELECT tbl, run_id, step_name, old_result, new_result, writer FROM {s}.writes"
            " WHERE tbl IN ('step', 'history') AND old_status = 'succeeded'"
        )
    ]
    stored = {
        (r[0], r[1]): (r[2], r[3])
        for r in q.all(
            "SELECT s.workflow_run_id::text, s.step_name, s.result,"
            " (SELECT count(*) FROM {s}.workflow_step_history h"
            "  WHERE h.workflow_step_id = s.workflow_step_id AND h.status = 'succeeded')"
            " FROM {s}.workflow_step s"
        )
    }
    for run_id, workflow, status, output in runs:
        if status != "completed":
            continue
        names = WORKFLOW_STEPS[workflow]
        if output != [stored.get((run_id, n), (None, 0))[0] for n in names]:
            found.append(f"{run_id}: output {output} differs from its steps")
        found += [
            f"{run_id} {n}: {stored.get((run_id, n), (None, 0))[1]} succeeded history rows"
            for n in names
            if stored.get((run_id, n), (None, 0))[1] != 1
        ]
    return found


class _Queries:
    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self._conn, self._schema = conn, schema

    def all(self, query: str) -> list[tuple[Any, ...]]:
        text = query.replace("{s}", "{schema}")
        return self._conn.execute(render(text, self._schema)).fetchall()

    def one(self, query: str) -> int:
        rows = self.all(query)
        return int(rows[0][0])


def wait_until_settled(dsn: str, schema: str, timeout: float) -> float:
    """Wait (over fresh connections, so across restarts) until no run is running;
    returns the seconds waited."""
    started = time.monotonic()
    query = render("SELECT count(*) FROM {schema}.workflow_runs WHERE status = 'running'", schema)
    left = -1
    while time.monotonic() - started < timeout:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute(query).fetchone()
            left = int(row[0]) if row else -1
        except psycopg.OperationalError:
            left = -1  # the server restarts
        if left == 0:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{left} runs still running after {timeout} s")


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
