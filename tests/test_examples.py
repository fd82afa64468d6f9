"""Smoke tests of ``examples/`` against the test database: the notebook script, and the
Django, Flask and FastAPI apps through their own test clients, in-process."""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from pikku_pg import PgAIStorageService, PgWorkflowService

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKER_ARGS = ["--module", "examples.fastapi_app", "--poll-interval", "0.2"]


def _load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}_{uuid.uuid4().hex[:6]}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_script(
    pg_dsn: str,
    schema_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("PIKKU_SCHEMA", schema_name)
    runpy.run_path(str(EXAMPLES / "notebook.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "     user: Will it rain in Oslo tomorrow?" in out
    assert "assistant: forecast({'city': 'Oslo'})" in out
    assert "     tool: forecast -> rain, 9°C" in out
    assert "memory: {'city': 'Oslo', 'units': 'metric'}" in out
    assert "report: {'messages': 4}" in out
    assert "  count messages: succeeded (attempt 1)" in out
    assert "  cool down: succeeded (attempt 1)" in out


# ---------------------------------------------------------------------- Flask


def test_flask_app_with_a_shared_pool(pg_dsn: str, schema_name: str) -> None:
    app = _load("flask_app").create_app(pg_dsn, schema_name)
    pool = app.extensions["pikku_pool"]
    try:
        client = app.test_client()
        created = client.post("/threads", json={"resourceId": "user:ada", "title": "Hi"})
        assert created.status_code == 201
        thread_id = created.get_json()["id"]
        turn = client.post(f"/threads/{thread_id}/messages", json={"content": "hello"})
        assert turn.status_code == 201
        assert [(m["role"], m["content"]) for m in turn.get_json()] == [
            ("user", "hello"),
            ("assistant", "You said 5 characters."),
        ]
        shown = client.get(f"/threads/{thread_id}").get_json()
        assert shown["thread"]["resourceId"] == "user:ada" and len(shown["messages"]) == 2
        listed = client.get("/threads?resourceId=user:ada").get_json()
        assert [t["id"] for t in listed] == [thread_id]
        missing = client.post("/threads/nope/messages", json={"content": "x"})
        assert missing.status_code == 404 and "nope" in missing.get_json()["error"]
        assert client.get("/threads/nope").status_code == 404
        assert (
            client.post(f"/threads/{thread_id}/messages", json={"content": ""}).status_code == 400
        )
        nul = client.post(f"/threads/{thread_id}/messages", json={"content": "a\x00b"})
        assert nul.status_code == 400
        assert len(client.get(f"/threads/{thread_id}").get_json()["messages"]) == 2
        # Every request borrowed from the one pool and gave its connection back.
        stats = pool.get_stats()
        assert stats["requests_num"] >= 8 and stats["pool_available"] == stats["pool_size"]
    finally:
        pool.close()


# -------------------------------------------------------------------- FastAPI


def _wait_status(client: Any, run_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/runs/{run_id}").json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"run stayed {body['status']}"
        time.sleep(0.05)


def test_fastapi_app_starts_workflows_that_its_worker_runs(pg_dsn: str, schema_name: str) -> None:
    from fastapi.testclient import TestClient

    module = _load("fastapi_app")
    with TestClient(module.create_app(pg_dsn, schema_name)) as client:
        started = client.post("/signups", json={"email": "ada@example.com"})
        assert started.status_code == 202
        run_id = started.json()["runId"]
        done = _wait_status(client, run_id, "completed")
        assert done["output"]["accountId"].startswith("acct-")
        assert client.get(f"/runs/{uuid.uuid4()}").status_code == 404
        assert client.post("/signups", json={"mail": "x"}).status_code == 422
    with PgWorkflowService(pg_dsn, schema_name) as wf:
        steps = [(h.step_name, h.status) for h in wf.get_run_history(run_id)]
    assert steps == [
        ("create account", "succeeded"),
        ("welcome email", "succeeded"),
        ("grace period", "succeeded"),
    ]


def test_fastapi_app_with_the_worker_in_its_own_process(pg_dsn: str, schema_name: str) -> None:
    """``WORKER=0`` app, and ``pikku-pg worker --module examples.fastapi_app`` beside it."""
    from fastapi.testclient import TestClient

    module = _load("fastapi_app")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PIKKU_WORKFLOW_SCHEMA=schema_name, PYTHONUNBUFFERED="1")
    with TestClient(module.create_app(pg_dsn, schema_name, worker=False)) as client:
        run_id = client.post("/signups", json={"email": "bob@example.com"}).json()["runId"]
        time.sleep(0.3)
        assert client.get(f"/runs/{run_id}").json()["status"] == "running"  # nobody runs it
        worker = subprocess.Popen(
            [sys.executable, "-m", "pikku_pg", "--dsn", pg_dsn, "worker", *WORKER_ARGS],
            cwd=EXAMPLES.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_status(client, run_id, "completed", timeout=20)
        finally:
            worker.terminate()
            out, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err
    assert "workflows: onboard" in out and "Traceback" not in err


# --------------------------------------------------------------------- Django


@pytest.fixture(scope="module")
def django_client(pg_dsn: str) -> Iterator[Any]:
    """Django set up once for this module, on the test database."""
    os.environ["DATABASE_URL"] = pg_dsn
    os.environ["DJANGO_SETTINGS_MODULE"] = "chat_site.settings"
    sys.path.insert(0, str(EXAMPLES / "django_chat"))
    import django
    from django.test import Client

    django.setup()
    try:
        yield Client(raise_request_exception=False)
    finally:
        from django.db import connections

        connections.close_all()
        sys.path.remove(str(EXAMPLES / "django_chat"))
        os.environ.pop("DATABASE_URL", None)


def test_django_view_saves_inside_the_request_transaction(
    django_client: Any, pg_dsn: str, schema_name: str
) -> None:
    from django.test import override_settings

    with PgAIStorageService(pg_dsn, schema_name) as ai:
        ai.init()
    with override_settings(PIKKU_AI_SCHEMA=schema_name):
        post = django_client.post
        created = post(
            "/threads", json.dumps({"resourceId": "user:ada"}), content_type="application/json"
        )
        assert created.status_code == 201
        thread_id = created.json()["id"]
        turn = post(
            f"/threads/{thread_id}/turns",
            json.dumps({"content": "hi"}),
            content_type="application/json",
        )
        assert turn.status_code == 201
        assert [m["content"] for m in turn.json()["messages"]] == ["hi", "echo: hi"]

        # The view fails after saving: the request's rollback takes the turn with it.
        failed = post(
            f"/threads/{thread_id}/turns",
            json.dumps({"content": "lost", "failAfterSave": True}),
            content_type="application/json",
        )
        assert failed.status_code == 500
        shown = django_client.get(f"/threads/{thread_id}").json()
        assert [m["content"] for m in shown["messages"]] == ["hi", "echo: hi"]

        missing = post(
            "/threads/nope/turns", json.dumps({"content": "x"}), content_type="application/json"
        )
        assert missing.status_code == 404 and "'nope' not found" in missing.json()["error"]
        assert django_client.get("/threads/nope").status_code == 404
    with psycopg.connect(pg_dsn) as conn:
        count = conn.execute(
            f"SELECT count(*) FROM {schema_name}.ai_message WHERE thread_id = %s", (thread_id,)
        ).fetchone()
    assert count == (2,)
