"""The demo and the command line's migrate command."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from pikku_pg.cli import main
from pikku_pg.demo import run_demo


def test_demo_tells_the_story_and_can_run_twice(pg_dsn: str) -> None:
    for _ in range(2):
        lines: list[str] = []
        run_demo(pg_dsn, out=lines.append)
        text = "\n".join(lines)
        assert "approved: True (a second approval: False)" in text
        assert "tool      deleteFiles -> 3 files deleted" in text
        assert "run of janitor: completed, 812+64 tokens" in text
        assert "for ['demo-alice', 'demo-bob']" in text
        assert "users.get is served by demo-api-1" in text
        assert "completed: {'charged': 42}" in text
        assert "charge    attempt 2  succeeded" in text


@pytest.mark.timeout(120)
def test_demo_command_on_an_embedded_server_leaves_nothing_running() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "pikku_pg", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    assert "Started an embedded PostgreSQL" in done.stdout
    assert done.stdout.rstrip().endswith("Stopped the embedded PostgreSQL")
    assert "Traceback" not in done.stderr


def test_migrate_prints_the_ddl_of_a_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--component", "deployment", "--print-sql"]) == 0
    out = capsys.readouterr().out
    assert 'CREATE TABLE IF NOT EXISTS "pikku".pikku_deployments' in out
    assert "pikku_ai" not in out


def test_migrate_applies_to_a_chosen_schema(pg_dsn: str, schema_name: str) -> None:
    args = ["--dsn", pg_dsn, "migrate", "--component", "channel", "--schema", schema_name]
    assert main(args) == 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema_name,)
        ).fetchall()
    assert ("channels",) in tables and ("channel_subscriptions",) in tables


def test_migrate_without_a_database_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["migrate"]) == 2
    assert "no database" in capsys.readouterr().err


def test_migrate_on_an_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    assert main(["--dsn", dsn, "migrate", "--component", "ai"]) == 3
    assert "127.0.0.1:1" in capsys.readouterr().err
