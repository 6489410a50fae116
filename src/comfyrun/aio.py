"""Small asyncio helpers shared by the long-lived tasks (a client's loops, a pool's probes).

On Python 3.11 a cancel can be lost: `asyncio.wait_for` (and `asyncio.timeout`) return or
raise TimeoutError instead when what they wait for completes, or their timeout fires, in the
same turn of the loop as the cancel. A loop that ends only by being cancelled then goes on, and
whoever waits for it to end (a `close()`, a server's shutdown) waits forever. So a loop meant to
be stopped also checks a flag of its own, waits with `asyncio.wait` (which never drops a
cancel), and is stopped with `cancel_and_wait`, which does not swallow its caller's cancel.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and return once it is over. Its own cancellation ends with it; the
    caller's (when the caller is cancelled meanwhile) is raised, not swallowed."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Whether `event` was set within `timeout` seconds (None: until it is); a cancel always
    goes through."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()


def retrieved(future: asyncio.Future[Any]) -> None:
    """A done-callback that marks a background future's failure seen: one whose awaiters all
    went away (or that none awaits: whoever does reports it) is not logged as never
    retrieved."""
    if not future.cancelled():
        future.exception()


__all__ = ["cancel_and_wait", "retrieved", "wait_event"]
