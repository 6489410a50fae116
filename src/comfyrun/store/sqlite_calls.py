"""The SQLite store's calls between the event loop and its thread (store.sqlite): one call
waiting for the thread, a call's coroutine driven there without a loop, and the outcomes handed
back to each caller's loop with one wake-up per loop, then the waiters woken."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Call:
    """One store call waiting for the store's thread."""

    fn: Callable[..., Coroutine[Any, Any, Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    read: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends to its end, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a SQLite store call suspended on the store's thread")


def dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


def rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
        conn.execute("ROLLBACK")


def settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # the caller gave up (cancelled); the call ran all the same
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def deliver_all(
    results: builtins.list[tuple[Call, bool, Any]],
    wakes: builtins.list[tuple[Any, str, bool, str | None]],
) -> None:
    """Hand each call's outcome to its loop (one wake-up per loop), then wake the waiters."""
    by_loop: dict[asyncio.AbstractEventLoop, builtins.list[tuple[Call, bool, Any]]] = {}
    for item in results:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_deliver, items, wakes)
            wakes = []  # once: waiters live on the loop of the calls that woke them


def _deliver(
    items: builtins.list[tuple[Call, bool, Any]],
    wakes: builtins.list[tuple[Any, str, bool, str | None]],
) -> None:
    for call, ok, value in items:
        settle(call.future, ok, value)
    for store, job_id, work, job_type in wakes:
        store._wake(job_id, work, job_type)


__all__ = ["Call", "deliver_all", "dict_row", "drive", "rollback", "settle"]
