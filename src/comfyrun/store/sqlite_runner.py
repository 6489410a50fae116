"""How the SQLite store runs its calls (mixed into SQLiteStore, store.sqlite): in batches, one
per turn of the event loop; quick ones (ON_LOOP) on the loop's own thread with only their commit
on the store's thread, any other batch whole on the store's thread (see store.sqlite)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import queue
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any

from comfyrun.errors import StoreError
from comfyrun.store.base import QueueMove
from comfyrun.store.sqlite_calls import (
    Call,
    Commit,
    Ended,
    Outcome,
    Wake,
    drive,
    rollback,
    settle,
)
from comfyrun.store.sqlite_loop import LOOP_READS, busy
from comfyrun.store.writable import WriteHealth

#: Calls the loop runs itself, on the store's connection, when a batch holds only these: each
#: reads or writes a job or two by key (tens of microseconds). Handing them to a thread cost
#: more than running them (the GIL passed back and forth at every statement); the batch's
#: commit, which waits for the disk, still goes to the store's thread. Any other call (lists,
#: counts, housekeeping, batches of jobs: unbounded) takes its whole batch there.
ON_LOOP = frozenset(
    {
        "ping",
        "get",
        "get_by_prompt_id",
        "events_since",
        "enqueue",
        "enqueue_counted",
        "enqueue_claimed",
        "claim",
        "renew",
        "transition",
        "record_placement",
        "next_priority",
        "record_progress",
        "add_output",
        "append_event",
        "delete",
    }
)


class SQLiteRunner(ABC):
    """Running store calls in batches (SQLiteStore sets these)."""

    path: str
    max_batch: int
    busy_timeout_s: float
    _calls: queue.SimpleQueue[builtins.list[Call] | Commit | None]
    _open: bool
    _conn: sqlite3.Connection | None
    _conn_user: int | None
    _wakes: builtins.list[Wake]
    _home: asyncio.AbstractEventLoop | None
    _pending: builtins.list[Call]
    _flush_soon: bool
    _conn_busy: bool
    _reader: sqlite3.Connection | None
    _bare: bool
    write_health: WriteHealth

    @abstractmethod
    def _connect(self) -> sqlite3.Connection:
        """The store's connection, opened (on the store's thread) and brought up to date."""

    @abstractmethod
    def _wake(
        self, job_id: str, work: bool, job_type: str | None, ending: bool, moved: QueueMove | None
    ) -> None:
        """On the event loop, after a commit: wake this process's waiters (and tell the
        queue's watchers how it moved)."""

    # -- running calls: batches on the loop, commits on the store's thread ---------------

    async def _call(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        read: bool,
    ) -> Any:
        if threading.get_ident() == self._conn_user:  # a store call inside another one
            return await fn(self, *args, **kwargs)
        if not self._open:
            raise StoreError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        if loop is not self._home:  # another thread's loop: the call is made on the store's
            assert self._home is not None
            made = asyncio.run_coroutine_threadsafe(
                self._call(fn, args, kwargs, read=read), self._home
            )
            return await asyncio.wrap_future(made)
        if read and self._reader is not None and fn.__name__ in LOOP_READS:
            try:
                return drive(fn(self, *args, **kwargs))
            except StoreError as exc:
                if not busy(exc):
                    raise
                # the reader would have to wait: the store's thread reads it, waiting if need be
                future = loop.create_future()
                return await self._enqueue_call(Call(fn, args, kwargs, read, future, True))
        future = loop.create_future()
        return await self._enqueue_call(Call(fn, args, kwargs, read, future))

    def _enqueue_call(self, call: Call) -> asyncio.Future[Any]:
        self._pending.append(call)
        if not self._flush_soon and not self._conn_busy:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        return call.future

    # -- batches: statements on the loop, the commit on the store's thread ----------------

    def _flush(self) -> None:
        """On the loop: run the calls made meanwhile as one batch. Quick ones (ON_LOOP) run
        here, their commit on the store's thread; a batch with any other call, or one that
        finds the write lock taken (another process writing), goes to the thread whole."""
        self._flush_soon = False
        if self._conn_busy or not self._pending:
            return
        conn = self._conn
        if not self._open or conn is None:
            self._fail_pending()
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self._conn_busy = True  # the connection is this batch's until it is delivered
        if not all(call.fn.__name__ in ON_LOOP and not call.ship for call in batch):
            self._calls.put(batch)
            return
        writes = not all(call.read for call in batch)
        if writes:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:  # busy: the thread waits for the lock (busy_timeout)
                self._calls.put(batch)
                return
        try:
            results, wakes = self._run_calls(conn, batch)
        except BaseException:  # (each call's own errors are its outcome: this is worse)
            if writes:
                rollback(conn)
            self._delivered(_failed(batch, "SQLite failed"), [])
            raise
        if writes:
            self._calls.put(Commit(results, wakes))
            return
        # a read that would have had to wait (rare in WAL mode: another connection recovering
        # the WAL index) is made again on the store's thread, which waits; the others are told
        retry = [call for call, ok, value in results if not ok and _busy(value)]
        if not retry:
            self._delivered(results, [])
            return
        for call in retry:
            call.ship = True
        told = [outcome for outcome in results if outcome[0] not in retry]
        for call, ok, value in told:
            settle(call.future, ok, value)
        self._calls.put(retry)

    def _run_calls(self, conn: sqlite3.Connection, batch: builtins.list[Call]) -> Ended:
        """Drive each call to its end, on this thread, inside the batch's transaction (if any)."""
        results: builtins.list[Outcome] = []
        self._wakes = []
        self._conn_user = threading.get_ident()
        # the batch's first write, its transaction holding nothing yet, needs no savepoint
        self._bare = conn.in_transaction
        try:
            for call in batch:
                try:
                    results.append((call, True, drive(call.fn(self, *call.args, **call.kwargs))))
                except sqlite3.Error as exc:
                    error = StoreError(f"SQLite failed: {exc}")
                    error.__cause__ = exc
                    results.append((call, False, error))
                except Exception as exc:
                    results.append((call, False, exc))
                if not results[-1][1] and _unwritable(results[-1][2]):
                    self.write_health.failed(str(results[-1][2]))
        finally:
            self._conn_user = None
            self._bare = False
        return results, self._wakes

    def _delivered(self, results: builtins.list[Outcome], wakes: builtins.list[Wake]) -> None:
        """On the loop: a batch is over (committed, or failed); its callers get their
        outcomes, its waiters are woken, and the next batch may start."""
        self._conn_busy = False
        for call, ok, value in results:
            settle(call.future, ok, value)
        for job_id, work, job_type, ending, moved in wakes:
            self._wake(job_id, work, job_type, ending, moved)
        if self._pending and not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _serve(self, loop: asyncio.AbstractEventLoop, opened: asyncio.Future[None]) -> None:
        """The store's thread: open the connection, then commit the loop's batches and run
        whole the batches it hands over, until closed."""
        try:
            self._conn = self._connect()
        except Exception as exc:
            error = StoreError(f"cannot open SQLite database {self.path!r}: {exc}")
            loop.call_soon_threadsafe(settle, opened, False, error)
            return
        loop.call_soon_threadsafe(settle, opened, True, None)
        try:
            while True:
                item = self._calls.get()
                if item is None:
                    break
                try:
                    if isinstance(item, Commit):
                        results, wakes = self._commit(item)
                    else:
                        results, wakes = self._run_batch(item)
                except Exception as exc:  # never leaves the batch's callers waiting
                    rollback(self._conn)
                    calls = [r[0] for r in item.results] if isinstance(item, Commit) else item
                    results, wakes = _failed(calls, f"SQLite failed: {exc}"), []
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(self._delivered, results, wakes)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _fail_pending(self) -> None:
        """Calls still waiting when the store closed."""
        error = StoreError("the SQLite store is closed")
        left, self._pending = self._pending, []
        for call in left:
            settle(call.future, False, error)

    def _commit(self, done: Commit) -> Ended:
        """On the store's thread: commit a batch the loop ran (the fsync waits here)."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(conn)
            error = StoreError(f"SQLite commit failed: {exc}")
            self.write_health.failed(str(error))
            return [
                (call, False, value if not ok else error) for call, ok, value in done.results
            ], []
        if not any(not ok and _unwritable(value) for _, ok, value in done.results):
            self.write_health.ok()  # (not when a write of it failed for want of space)
        return done.results, done.wakes

    def _run_batch(self, batch: builtins.list[Call]) -> Ended:
        """On the store's thread: a whole batch, waiting for the write lock if another process
        holds it (busy_timeout)."""
        conn = self._conn
        assert conn is not None
        writes = not all(call.read for call in batch)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        try:
            if writes:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    self.write_health.failed(f"SQLite is busy: {exc}")
                    return _failed(batch, f"SQLite is busy: {exc}"), []
            results, wakes = self._run_calls(conn, batch)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")
        if writes:
            return self._commit(Commit(results, wakes))
        return results, wakes


def _busy(error: Any) -> bool:
    """A call's error that says the database was locked (it would have had to wait)."""
    return isinstance(error, StoreError) and busy(error)


#: SQLite's primary result codes that say the database cannot take writes now (not a call's
#: own fault, as a constraint it broke would be).
_CANNOT_WRITE = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN}
)


def _cannot_write(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CANNOT_WRITE


def _unwritable(error: Any) -> bool:
    """A call's error that says the database cannot take writes (_cannot_write)."""
    cause = getattr(error, "__cause__", None)
    return isinstance(cause, sqlite3.Error) and _cannot_write(cause)


def _failed(calls: builtins.list[Call], message: str) -> builtins.list[Outcome]:
    error = StoreError(message)
    return [(call, False, error) for call in calls]


__all__ = ["ON_LOOP", "SQLiteRunner"]
