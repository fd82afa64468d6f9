"""Paired async/sync helpers for the few places where the two flavours differ.

Code in ``pikku_pg/_async`` uses the ``A``-prefixed names; ``scripts/unasync.py``
renames them to their plain twins when it generates ``pikku_pg/_sync``.

``StateLock`` is the same in both flavours: a threading lock for plain state (no
I/O under it) that both a background thread and the event loop may touch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import aclosing, closing
from typing import Any

ALock = asyncio.Lock
Lock = threading.Lock
StateLock = threading.Lock
AEvent = asyncio.Event
Event = threading.Event
AQueue = asyncio.Queue
Queue = queue.Queue

__all__ = [
    "AEvent",
    "ALock",
    "AQueue",
    "Event",
    "Lock",
    "Queue",
    "StateLock",
    "aclosing",
    "agather",
    "asleep",
    "aspawn",
    "await_event",
    "closing",
    "gather",
    "sleep",
    "spawn",
    "wait_event",
]


async def asleep(seconds: float) -> None:
    """Sleep without blocking the event loop."""
    await asyncio.sleep(seconds)


sleep = time.sleep


def aspawn(
    func: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...] = (), name: str = ""
) -> asyncio.Task[Any]:
    """Run a coroutine function in the background as a task."""
    return asyncio.create_task(func(*args), name=name or None)


def spawn(func: Callable[..., Any], args: tuple[Any, ...] = (), name: str = "") -> threading.Thread:
    """Run a function in the background on a daemon thread."""
    thread = threading.Thread(target=func, args=args, name=name or None, daemon=True)
    thread.start()
    return thread


async def agather(*tasks: asyncio.Task[Any], timeout: float | None = None) -> None:
    """Wait for background tasks to finish (cancelling them after ``timeout``)."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        # Let the cancelled tasks run their cleanup before the caller moves on.
        await asyncio.wait(pending)
    for task in done:
        task.result()


def gather(*threads: threading.Thread, timeout: float | None = None) -> None:
    """Wait for background threads to finish (at most ``timeout`` seconds each)."""
    for thread in threads:
        thread.join(timeout)


async def await_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        return event.is_set()
    return True


def wait_event(event: threading.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set."""
    return event.wait(timeout)
