"""The SQLite store's calls (store.sqlite): one call waiting for its batch, a call's coroutine
driven to its end without a loop, a batch the loop ran waiting for its commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from comfyrun.store.base import QueueMove


@dataclass(slots=True)
class Call:
    """One store call waiting for the store's thread."""

    fn: Callable[..., Coroutine[Any, Any, Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    read: bool
    future: asyncio.Future[Any]
    #: run on the store's thread, whatever the call (a read the loop's reader could not make)
    ship: bool = False


#: A call's outcome: (the call, whether it returned, what it returned or raised).
Outcome = tuple[Call, bool, Any]
#: What to wake once a batch committed: (job id, work, job type, ending, how it moved in the
#: queue), SQLiteStore._committed's arguments.
Wake = tuple[str, bool, str | None, bool, QueueMove | None]
#: What a batch ended with: its calls' outcomes, the waiters to wake.
Ended = tuple[list[Outcome], list[Wake]]


@dataclass(slots=True)
class Commit:
    """A batch the loop ran inside a transaction, for the store's thread to commit; each
    call's outcome and the waiters to wake are told once it has."""

    results: list[Outcome]
    wakes: list[Wake]


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


__all__ = ["Call", "Commit", "Ended", "Outcome", "Wake", "dict_row", "drive", "rollback", "settle"]
