"""The heartbeat of inline runs: one background loop per service for all of them.

An inline run (``run_to_completion``) holds the lease of its replay job like a
worker does, so a caller that dies or is frozen loses the run to a worker after
one lease. While the caller runs it, this keeper extends the leases of every run
it holds, every third of a lease, in one statement. The loop (a task; a daemon
thread in the sync flavour) runs only while a run is held: it ends after the
last one is dropped and starts again with the next.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from pikku_pg._acompat import AEvent, StateLock, agather, aspawn, await_event
from pikku_pg._async.workflow_queue import AsyncWorkflowQueue
from pikku_pg.errors import DatabaseUnavailableError

logger = logging.getLogger("pikku_pg.workflow")


class AsyncLeaseKeeper:
    """Extends the leases of the inline runs a service is running."""

    def __init__(self, queue: AsyncWorkflowQueue, lease: float) -> None:
        self._queue = queue
        self.lease = lease
        self._tokens: set[str] = set()
        # Guards only plain state (no I/O under it), so one lock serves both flavours.
        self._lock = StateLock()
        self._wake = AEvent()
        self._loop: Any = None

    def hold(self, token: str) -> None:
        """Keep the lease ``token`` alive until :meth:`drop`."""
        with self._lock:
            self._tokens.add(token)
            if self._loop is not None:
                return
            self._wake = AEvent()
            self._loop = aspawn(self._beat, (self._wake,), name="pikku_pg inline lease heartbeat")

    def drop(self, token: str) -> None:
        """Stop extending ``token`` (the run ended, or was handed back)."""
        with self._lock:
            self._tokens.discard(token)
            if not self._tokens:
                self._wake.set()

    async def close(self) -> None:
        """Stop the loop (the service is closing)."""
        with self._lock:
            self._tokens.clear()
            self._wake.set()
            loop = self._loop
        if loop is not None:
            await agather(loop)

    async def _beat(self, wake: AEvent) -> None:
        try:
            while True:
                await await_event(wake, self.lease / 3.0)
                with self._lock:
                    wake.clear()
                    tokens = list(self._tokens)
                    if not tokens:
                        self._loop = None  # under the lock: the next hold starts a loop
                        return
                try:
                    await self._queue.extend_leases(tokens, self.lease)
                except (psycopg.Error, DatabaseUnavailableError) as exc:
                    logger.warning("cannot extend the leases of inline workflow runs: %s", exc)
        finally:
            with self._lock:
                if self._wake is wake:  # ended otherwise (cancelled): not a newer loop's
                    self._loop = None
