"""Bad inputs to every public method of every service: a pikku_pg error, never a raw one.

Each argument of each method (and of each constructor) is replaced, one at a time, by a
bad value: lone surrogates, NUL, None, wrong types, huge or negative numbers, NaN,
infinity, huge strings, a str where a list is expected, JSON holding any of those. The
call must either succeed (the value was valid after all) or raise a ``pikku_pg.errors``
exception whose message quotes little of the input, and a call that raises must leave
every row of the schema as it was. A fixed sweep covers every (argument, value) pair;
hypothesis then generates more values (sync flavour, plus an async sample).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql as pgsql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pikku_pg import (
    AsyncPgAIStorageService,
    AsyncPgChannelStore,
    PgAgentRunService,
    PgAIStorageService,
    PgChannelStore,
    PgDeploymentService,
    PgEventHubService,
    PgEventHubStore,
    PgWorkflowRunService,
    PgWorkflowService,
    WorkflowStateStore,
)
from pikku_pg.errors import ConflictError, InvalidInputError, NotFoundError, PikkuPgError

HUGE = "x" * 100_000

#: The fixed bad values of the sweep (a few are valid for some arguments).
BAD_VALUES: list[Any] = [
    "\ud800",
    "a\udfffb",
    "x\x00y",
    None,
    5,
    -1,
    10**30,
    -(10**30),
    1.5,
    math.nan,
    math.inf,
    True,
    b"bytes",
    "abc",  # a str where a list is expected
    HUGE,
    [],
    {},
    ["\ud800"],
    [None],
    {"k\ud800": 1},
    {"k": {"n": ["\ud800"]}},
    {"k": "\x00"},
    {1: math.nan},
    object(),
]


@dataclass
class Target:
    """One method and its valid arguments; ``params`` are the paths that get bad values
    (``a.b.0`` replaces an item inside the argument ``a``)."""

    service: str
    method: str
    kwargs: Callable[[World], dict[str, Any]]
    params: tuple[str, ...] = ()
    fresh: bool = False  # call it on a service made for the call (stateful methods)

    def __post_init__(self) -> None:
        if not self.params:
            self.params = tuple(self.kwargs(_SAMPLE_WORLD))

    @property
    def name(self) -> str:
        return f"{self.service}.{self.method}"


@dataclass
class World:
    """The services under test and the ids of the rows they were given to work on."""

    dsn: str = ""
    schema: str = ""
    services: dict[str, Any] = field(default_factory=dict)
    thread: str = "t1"
    agent_run: str = ""
    run: str = ""  # a completed workflow run with one step
    scratch_run: str = ""  # a running run for the writes
    queued_run: str = ""
    step: str = ""
    scratch_step: str = ""
    counts: Callable[[], tuple[int, ...]] = lambda: ()


_SAMPLE_WORLD = World(
    agent_run="r", run="r", scratch_run="r", queued_run="r", step="s", scratch_step="s"
)


def _ai_run(w: World) -> dict[str, Any]:
    return {
        "agentName": "agent",
        "threadId": w.thread,
        "resourceId": "r1",
        "status": "running",
        "missingRpcs": ["rpc"],
        "usage": {"inputTokens": 1, "outputTokens": 2, "model": "m"},
    }


MESSAGE = {"id": "m3", "role": "user", "content": "hi"}
CALL_MESSAGE = {
    "id": "m4",
    "role": "assistant",
    "toolCalls": [{"id": "tc4", "name": "tool", "args": {"a": 1}}],
}

TARGETS: list[Target] = [
    # --- AI storage
    Target(
        "ai",
        "create_thread",
        lambda w: {"resource_id": "r1", "thread_id": None, "title": None, "metadata": {"a": 1}},
    ),
    Target("ai", "get_thread", lambda w: {"thread_id": w.thread}),
    Target("ai", "get_threads", lambda w: {"resource_id": "r1"}),
    Target("ai", "delete_thread", lambda w: {"thread_id": "no-such-thread"}),
    Target("ai", "get_messages", lambda w: {"thread_id": w.thread, "last_n": None, "cursor": None}),
    Target(
        "ai",
        "save_messages",
        lambda w: {"thread_id": w.thread, "messages": [MESSAGE, CALL_MESSAGE]},
        params=(
            "thread_id",
            "messages",
            "messages.0",
            "messages.0.id",
            "messages.0.content",
            "messages.0.role",
            "messages.1.toolCalls",
            "messages.1.toolCalls.0.args",
            "messages.1.toolCalls.0.name",
        ),
    ),
    Target("ai", "get_working_memory", lambda w: {"id": w.thread, "scope": "thread"}),
    Target(
        "ai",
        "save_working_memory",
        lambda w: {"id": w.thread, "scope": "thread", "data": {"a": 1}},
    ),
    Target(
        "ai",
        "update_working_memory",
        lambda w: {"id": w.thread, "scope": "thread", "patch": {"b": 2}},
    ),
    Target(
        "ai",
        "create_run",
        lambda w: {"run": _ai_run(w)},
        params=(
            "run",
            "run.agentName",
            "run.threadId",
            "run.resourceId",
            "run.status",
            "run.missingRpcs",
            "run.missingRpcs.0",
            "run.usage",
            "run.usage.inputTokens",
            "run.usage.model",
        ),
    ),
    Target(
        "ai",
        "update_run",
        lambda w: {"run_id": w.agent_run, "updates": {"status": "running", "errorMessage": "e"}},
        params=("run_id", "updates", "updates.status", "updates.errorMessage"),
    ),
    Target("ai", "get_run", lambda w: {"run_id": w.agent_run}),
    Target("ai", "get_runs_by_thread", lambda w: {"thread_id": w.thread}),
    Target("ai", "find_run_by_tool_call_id", lambda w: {"tool_call_id": "tc1"}),
    Target(
        "ai", "resolve_approval", lambda w: {"tool_call_id": "no-such-call", "status": "approved"}
    ),
    # --- AI console
    Target(
        "console",
        "list_threads",
        lambda w: {
            "agent_name": None,
            "resource_id": None,
            "owners": ["r1"],
            "limit": 50,
            "offset": 0,
        },
    ),
    Target("console", "get_thread", lambda w: {"thread_id": w.thread}),
    Target("console", "get_thread_messages", lambda w: {"thread_id": w.thread}),
    Target("console", "get_thread_runs", lambda w: {"thread_id": w.thread}),
    Target("console", "delete_thread", lambda w: {"thread_id": "no-such-thread"}),
    # --- channels and the event hub
    Target(
        "channels",
        "add_channel",
        lambda w: {"channel_id": "c-new", "channel_name": "chat", "opening_data": {"a": 1}},
    ),
    Target("channels", "remove_channels", lambda w: {"channel_ids": ["no-such-channel"]}),
    Target("channels", "set_user_session", lambda w: {"channel_id": "c1", "session": {"u": 1}}),
    Target("channels", "get_channel_and_session", lambda w: {"channel_id": "c1"}),
    Target("hub_store", "subscribe", lambda w: {"topic": "news", "channel_id": "c1"}),
    Target("hub_store", "unsubscribe", lambda w: {"topic": "other", "channel_id": "c1"}),
    Target("hub_store", "get_channel_ids_for_topic", lambda w: {"topic": "news"}),
    Target("hub", "publish", lambda w: {"topic": "news", "data": {"n": 1}}),
    Target("hub", "subscribe", lambda w: {"topic": "news", "channel_id": "c1"}),
    Target("hub", "release_channels", lambda w: {"channel_ids": ["no-such-channel"]}),
    Target("hub", "local_channel_ids", lambda w: {"topic": "news"}),
    # --- deployments
    Target(
        "deployments",
        "start",
        lambda w: {"deployment_id": "d1", "endpoint": "http://d1", "functions": ["f"]},
        fresh=True,
    ),
    Target("deployments", "find_function", lambda w: {"name": "f"}),
    Target(
        "deployments",
        "list_deployments",
        lambda w: {"function": "f", "live_only": False, "ttl": 30.0, "limit": 10},
    ),
    # --- workflow console
    Target(
        "runs",
        "list_runs",
        lambda w: {"workflow_name": None, "status": None, "limit": 50, "offset": 0},
    ),
    Target("runs", "get_run", lambda w: {"run_id": w.run}),
    Target("runs", "get_run_steps", lambda w: {"run_id": w.run}),
    Target("runs", "get_run_history", lambda w: {"run_id": w.run}),
    Target("runs", "get_workflow_version", lambda w: {"name": "w", "graph_hash": "h1"}),
    Target("runs", "delete_run", lambda w: {"run_id": str(uuid.UUID(int=1))}),
    # --- workflow state
    Target(
        "state",
        "create_run",
        lambda w: {
            "workflow_name": "w",
            "input": {"a": 1},
            "inline": False,
            "graph_hash": None,
            "wire": None,
        },
    ),
    Target("state", "get_run", lambda w: {"run_id": w.run}),
    Target(
        "state",
        "update_run_status",
        lambda w: {"run_id": w.scratch_run, "status": "running", "output": None, "error": None},
    ),
    Target("state", "get_run_history", lambda w: {"run_id": w.run}),
    Target(
        "state",
        "insert_step_state",
        lambda w: {
            "run_id": w.scratch_run,
            "step_name": "s-new",
            "rpc_name": None,
            "data": {"a": 1},
            "retries": None,
            "retry_delay": None,
        },
    ),
    Target("state", "get_step_state", lambda w: {"run_id": w.run, "step_name": "s1"}),
    Target("state", "find_step_state", lambda w: {"run_id": w.run, "step_name": "s1"}),
    Target("state", "get_run_steps", lambda w: {"run_id": w.run}),
    Target("state", "set_step_running", lambda w: {"step_id": w.scratch_step, "overwrite": False}),
    Target(
        "state", "set_step_scheduled", lambda w: {"step_id": w.scratch_step, "overwrite": False}
    ),
    Target(
        "state",
        "set_step_result",
        lambda w: {"step_id": w.scratch_step, "result": 1, "overwrite": False},
    ),
    Target(
        "state",
        "set_step_error",
        lambda w: {
            "step_id": w.scratch_step,
            "error": {"name": "E", "message": "m"},
            "overwrite": False,
        },
    ),
    Target(
        "state",
        "create_retry_attempt",
        lambda w: {"step_id": w.scratch_step, "status": "pending", "overwrite": False},
    ),
    Target("state", "get_completed_graph_state", lambda w: {"run_id": w.run}),
    Target("state", "get_nodes_without_steps", lambda w: {"run_id": w.run, "node_ids": ["s1"]}),
    Target("state", "get_node_results", lambda w: {"run_id": w.run, "node_ids": ["s1"]}),
    Target("state", "set_branch_taken", lambda w: {"step_id": w.scratch_step, "branch_key": "b"}),
    Target(
        "state", "update_run_state", lambda w: {"run_id": w.scratch_run, "name": "k", "value": 1}
    ),
    Target("state", "get_run_state", lambda w: {"run_id": w.run}),
    Target(
        "state",
        "upsert_workflow_version",
        lambda w: {"name": "w", "graph_hash": "h1", "graph": {"n": 1}, "source": "src"},
    ),
    Target("state", "get_workflow_version", lambda w: {"name": "w", "graph_hash": "h1"}),
    Target("state", "run_lock", lambda w: {"run_id": w.run, "timeout": 1.0}),
    Target("state", "step_lock", lambda w: {"run_id": w.run, "step_name": "s1", "timeout": 1.0}),
    # --- workflows
    Target("wf", "start_workflow", lambda w: {"name": "echo", "input": 1, "wire": None}),
    Target(
        "wf",
        "run_to_completion",
        lambda w: {"name": "echo", "input": 1, "wire": None, "on_cancel": "release"},
    ),
    Target("wf", "get_run_activity", lambda w: {"run_ids": [w.run]}),
    Target("wf", "wait_for_run", lambda w: {"run_id": w.run, "timeout": 5.0}),
    Target("wf", "cancel_run", lambda w: {"run_id": w.queued_run, "reason": "r"}),
    Target("wf", "resume_run", lambda w: {"run_id": w.run}),
    Target("wf", "get_run_jobs", lambda w: {"run_id": w.run}),
    Target("wf", "workflow", lambda w: {"name": "w2", "version": None}),
    Target("wf", "rpc", lambda w: {"name": "r2", "queued": False}),
]

#: Methods left out of the sweep (none now).
KNOWN_GAPS: tuple[str, ...] = ()

CONSTRUCTORS: dict[str, Any] = {
    "ai": PgAIStorageService,
    "console": PgAgentRunService,
    "channels": PgChannelStore,
    "hub_store": PgEventHubStore,
    "hub": PgEventHubService,
    "deployments": PgDeploymentService,
    "runs": PgWorkflowRunService,
    "state": WorkflowStateStore,
    "wf": PgWorkflowService,
}


def _constructor_kwargs(w: World) -> dict[str, Any]:
    return {"conn": w.dsn, "schema": w.schema, "connect_kwargs": None, "pool_kwargs": None}


TARGETS += [
    Target(name, "__init__", _constructor_kwargs, params=("conn", "schema", "connect_kwargs"))
    for name in CONSTRUCTORS
]
TARGETS.append(
    Target(
        "wf",
        "__init__",
        lambda w: {**_constructor_kwargs(w), "inline_lease": 30.0},
        params=("inline_lease",),
    )
)
TARGETS.append(
    Target(
        "deployments",
        "__init__",
        lambda w: {**_constructor_kwargs(w), "heartbeat_interval": 10.0, "heartbeat_ttl": 30.0},
        params=("pool_kwargs", "heartbeat_interval", "heartbeat_ttl"),
    )
)

CASES = [(target, param) for target in TARGETS for param in target.params]


def _replace(kwargs: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``kwargs`` with the item at ``path`` (``a.b.0``) set to ``value``."""
    head, *rest = path.split(".")
    if not rest:
        return {**kwargs, head: value}
    return {**kwargs, head: _replace_in(kwargs[head], rest, value)}


def _replace_in(container: Any, path: list[str], value: Any) -> Any:
    key, *rest = path
    if isinstance(container, list):
        index = int(key)
        new_value = value if not rest else _replace_in(container[index], rest, value)
        return [*container[:index], new_value, *container[index + 1 :]]
    new_value = value if not rest else _replace_in(container[key], rest, value)
    return {**container, key: new_value}


# --- the world ---------------------------------------------------------------------------


def _make_world(dsn: str, pool: ConnectionPool[Any], schema: str) -> World:
    w = World(dsn=dsn, schema=schema)
    wf = PgWorkflowService(pool, schema)

    @wf.workflow("echo")
    def echo(ctx: Any, value: Any) -> Any:
        return value

    w.services = {
        "ai": PgAIStorageService(pool, schema),
        "console": PgAgentRunService(pool, schema),
        "channels": PgChannelStore(pool, schema),
        "hub_store": PgEventHubStore(pool, schema),
        "hub": PgEventHubService(pool, schema, listen_conninfo=dsn),
        "deployments": PgDeploymentService(pool, schema),
        "runs": PgWorkflowRunService(pool, schema),
        "state": WorkflowStateStore(pool, schema),
        "wf": wf,
    }
    for service in w.services.values():
        service.init()
    ai, state = w.services["ai"], w.services["state"]
    ai.create_thread("r1", thread_id=w.thread, title="t")
    ai.save_messages(
        w.thread,
        [
            {"id": "m1", "role": "user", "content": "hello"},
            {
                "id": "m2",
                "role": "assistant",
                "toolCalls": [{"id": "tc1", "name": "tool", "args": {}}],
            },
        ],
    )
    run = _ai_run(w)
    run["pendingApprovals"] = [
        {"type": "tool-call", "toolCallId": "tc1", "toolName": "tool", "args": {}}
    ]
    w.agent_run = ai.create_run(run)
    w.services["channels"].add_channel("c1", "chat")
    w.services["hub_store"].subscribe("news", "c1")
    w.run = state.create_run("w", {})
    w.step = state.insert_step_state(w.run, "s1", None, {}).step_id
    state.set_step_result(w.step, 1)
    state.update_run_status(w.run, "completed", 1)
    state.upsert_workflow_version("w", "h1", {}, "src")
    w.scratch_run = state.create_run("w", {})
    w.scratch_step = state.insert_step_state(w.scratch_run, "s1", None, {}).step_id
    w.queued_run = wf.start_workflow("echo", 1)
    w.counts = _row_counter(dsn, schema)
    return w


def _row_counter(dsn: str, schema: str) -> Callable[[], tuple[int, ...]]:
    """A function returning the row count of every table of the schema, in one query."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY 1",
                (schema,),
            )
        ]
    assert len(tables) > 5
    counts = pgsql.SQL(", ").join(
        pgsql.SQL("(SELECT count(*) FROM {}.{})").format(
            pgsql.Identifier(schema), pgsql.Identifier(t)
        )
        for t in tables
    )
    query = pgsql.SQL("SELECT ") + counts
    conn = psycopg.connect(dsn, autocommit=True)

    def count_rows() -> tuple[int, ...]:
        row = conn.execute(query).fetchone()
        assert row is not None
        return tuple(row)

    return count_rows


@pytest.fixture(scope="module")
def world(pg_dsn: str) -> Iterator[World]:
    schema = f"bad_{uuid.uuid4().hex[:12]}"
    with ConnectionPool(pg_dsn, min_size=1, max_size=4, open=True) as pool:
        w = _make_world(pg_dsn, pool, schema)
        try:
            yield w
        finally:
            for service in w.services.values():
                service.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP SCHEMA {} CASCADE").format(pgsql.Identifier(schema)))


# --- calling -----------------------------------------------------------------------------


def _invoke(w: World, target: Target, kwargs: dict[str, Any]) -> None:
    if target.method == "__init__":
        created = CONSTRUCTORS[target.service](**kwargs)
        created.close()
        return
    if target.fresh:
        pool = w.services[target.service]._db._pool
        fresh = CONSTRUCTORS[target.service](pool, w.schema)
        try:
            getattr(fresh, target.method)(**kwargs)
        finally:
            fresh.close()
        return
    result = getattr(w.services[target.service], target.method)(**kwargs)
    if isinstance(result, contextlib.AbstractContextManager):
        with result:  # run_lock / step_lock check their timeout when entered
            pass


def _problem(w: World, target: Target, param: str, bad: Any) -> str | None:
    """What went wrong when ``param`` is ``bad`` (None: a pikku_pg error or a success)."""
    kwargs = _replace(target.kwargs(w), param, bad)
    before = w.counts()
    try:
        _invoke(w, target, kwargs)
    except PikkuPgError as exc:
        if len(str(exc)) >= 600:
            return f"message of {len(str(exc))} characters: {str(exc)[:120]}"
        after = w.counts()
        if after != before:
            return f"raised {type(exc).__name__} but changed rows: {before} -> {after}"
        return None
    except Exception as exc:
        return f"raw {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:160]}"
    return None


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def test_the_valid_arguments_are_accepted(world: World) -> None:
    # Otherwise the bad values below would be refused for the wrong reason.
    refused = []
    for target in TARGETS:
        try:
            _invoke(world, target, target.kwargs(world))
        except ConflictError:
            pass  # e.g. the channel was added by an earlier call: still accepted input
        except Exception as exc:
            refused.append(f"{target.name}: {type(exc).__name__}: {str(exc)[:160]}")
    assert refused == []


def test_every_argument_refuses_every_bad_value(world: World) -> None:
    problems = []
    for target, param in CASES:
        for bad in BAD_VALUES:
            problem = _problem(world, target, param, bad)
            if problem is not None:
                problems.append(f"{target.name}({param}={_describe(bad)}): {problem}")
    assert problems == [], "\n".join(problems)


# --- generated values ------------------------------------------------------------------------

_SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_BAD_TEXT = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.text(max_size=8),
    _SURROGATE | st.just("\x00"),
    st.text(max_size=8),
)
_JSON_LEAF = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | _BAD_TEXT
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | _BAD_TEXT, children, max_size=3)
    ),
    max_leaves=8,
)
GENERATED = st.one_of(
    _BAD_TEXT,
    _JSON,
    st.integers(min_value=2**31) | st.integers(max_value=-1),
    st.floats(),
    st.lists(_BAD_TEXT, min_size=1, max_size=3),
    st.sampled_from(BAD_VALUES),
)


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=st.sampled_from(CASES), bad=GENERATED)
def test_generated_bad_values_raise_pikku_pg_errors(
    world: World, case: tuple[Target, str], bad: Any
) -> None:
    target, param = case
    assert _problem(world, target, param, bad) is None


# --- the async flavour (a sample) ------------------------------------------------------------

ASYNC_TARGETS = [t for t in TARGETS if t.service in ("ai", "channels") and not t.fresh]
ASYNC_CASES = [(t, p) for t in ASYNC_TARGETS if t.method != "__init__" for p in t.params]


@pytest.fixture(scope="module")
def async_world(world: World) -> Iterator[tuple[asyncio.AbstractEventLoop, World]]:
    loop = asyncio.new_event_loop()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(world.dsn, min_size=1, open=False)
    loop.run_until_complete(pool.open())
    services = {
        "ai": AsyncPgAIStorageService(pool, world.schema),
        "channels": AsyncPgChannelStore(pool, world.schema),
    }
    twin = World(**{**world.__dict__, "services": services})
    try:
        yield loop, twin
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


@settings(max_examples=200, deadline=None, database=None)
@given(case=st.sampled_from(ASYNC_CASES), bad=GENERATED)
def test_the_async_flavour_raises_pikku_pg_errors_too(
    async_world: tuple[asyncio.AbstractEventLoop, World], case: tuple[Target, str], bad: Any
) -> None:
    loop, w = async_world
    target, param = case
    kwargs = _replace(target.kwargs(w), param, bad)
    before = w.counts()
    try:
        loop.run_until_complete(getattr(w.services[target.service], target.method)(**kwargs))
    except PikkuPgError as exc:
        assert len(str(exc)) < 600
        assert w.counts() == before
    except Exception as exc:  # pragma: no cover - the failure message names it
        pytest.fail(f"{target.name}({param}={_describe(bad)}): raw {type(exc).__name__}: {exc}")


# --- the cases named in the issue ------------------------------------------------------------


@pytest.mark.timeout(20)
def test_nan_timeouts_are_refused_before_waiting(world: World) -> None:
    wf = world.services["wf"]
    running = wf.start_workflow("echo", 1)  # no worker: it stays running
    assert wf.get_run(running).status == "running"
    with pytest.raises(InvalidInputError, match="timeout"):
        wf.wait_for_run(running, timeout=math.nan)
    for lock in (
        wf.run_lock(running, timeout=math.nan),
        wf.step_lock(running, "s", timeout=math.nan),
    ):
        with pytest.raises(InvalidInputError, match="timeout"), lock:
            pass


def test_lone_surrogates_are_refused_naming_the_argument(world: World) -> None:
    ai = world.services["ai"]
    with pytest.raises(InvalidInputError, match="resource_id"):
        ai.create_thread("\ud800")
    with pytest.raises(InvalidInputError, match="metadata"):
        ai.create_thread("r", metadata={"deep": [{"k\udc00": 1}]})
    with pytest.raises(InvalidInputError, match="working memory"):
        ai.save_working_memory(world.thread, "thread", {"a": {"b": "\udfff"}})


def test_messages_quote_at_most_200_characters_of_input(world: World) -> None:
    ai, runs = world.services["ai"], world.services["runs"]
    with pytest.raises(NotFoundError) as raised:
        ai.get_thread("x" * 10_000_000)
    assert len(str(raised.value)) < 300 and "10000000 characters" in str(raised.value)
    with pytest.raises(InvalidInputError) as bad_status:
        runs.list_runs(status="y" * 10_000)
    assert len(str(bad_status.value)) < 400


def test_lists_of_ids_refuse_a_single_string_and_none(world: World) -> None:
    for call in (
        lambda: world.services["ai"].save_messages(world.thread, None),
        lambda: world.services["console"].list_threads(owners=5),
        lambda: world.services["console"].list_threads(owners="r1"),
        lambda: world.services["state"].get_nodes_without_steps(world.run, None),
        lambda: world.services["channels"].remove_channels("c1"),
    ):
        with pytest.raises(InvalidInputError, match="must be a list"):
            call()
    assert world.services["channels"].get_channel_and_session("c1").channel_id == "c1"


def test_page_arguments_are_bounded_before_any_sql(world: World) -> None:
    for call in (
        lambda: world.services["ai"].get_messages(world.thread, last_n=10**30),
        lambda: world.services["console"].list_threads(limit=2**31),
        lambda: world.services["console"].list_threads(offset=10**30),
        lambda: world.services["runs"].list_runs(limit=10**30),
    ):
        with pytest.raises(InvalidInputError, match="between"):
            call()


def test_constructors_check_their_connection_arguments(pg_dsn: str) -> None:
    with pytest.raises(InvalidInputError, match="conninfo") as raised:
        PgAIStorageService(None)  # type: ignore[arg-type]
    assert isinstance(raised.value, TypeError)  # also what it always was
    with pytest.raises(InvalidInputError, match="connect_kwargs must be a dict"):
        PgAIStorageService(pg_dsn, connect_kwargs=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="pool_kwargs"):
        PgAIStorageService(pg_dsn, pool_kwargs={"no_such_option": 1})
    with pytest.raises(InvalidInputError, match="conninfo"):
        PgAIStorageService("host=\ud800")
