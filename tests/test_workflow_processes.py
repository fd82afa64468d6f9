"""A run lock held by a process that is killed (SIGKILL) is released by the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from pikku_pg import PgWorkflowService
from pikku_pg.errors import LockTimeoutError

HOLDER = """
import sys, time
from pikku_pg import PgWorkflowService
with PgWorkflowService(sys.argv[1], sys.argv[2]) as wf:
    with wf.run_lock(sys.argv[3]):
        print("locked", flush=True)
        time.sleep(60)
"""


def test_killed_process_releases_run_lock(pg_dsn: str, schema_name: str) -> None:
    run_id = str(uuid.uuid4())
    with PgWorkflowService(pg_dsn, schema_name) as wf:
        wf.init()
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, pg_dsn, schema_name, run_id],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "locked"
            with pytest.raises(LockTimeoutError), wf.run_lock(run_id, timeout=0.1):
                pass
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            started = time.monotonic()
            with wf.run_lock(run_id, timeout=10):
                waited = time.monotonic() - started
            assert waited < 5
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
