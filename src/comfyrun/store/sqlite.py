"""The SQLite JobStore (`sqlite:///path.db`), in WAL mode, with a thread of its own.

One connection, used by one thread at a time. Every store call (the whole of `enqueue`,
`claim`, `transition`, … as written once in `SQLStore`) is one unit of a batch: the calls made
in one turn of the event loop run together in one `BEGIN IMMEDIATE` transaction, each write
inside a savepoint of its own (a failing call rolls back alone; a batch's first write needs
none: store.sqlite_statements), and commit once: under load
many calls share one fsync (group commit), and an idle store still answers each call with one
commit. No call is acknowledged before the commit that holds it: `synchronous=FULL` (the
default) makes it survive a power cut, any setting a process crash.

Where a batch runs (store.sqlite_runner, mixed in): the calls of a job's life (ON_LOOP: a
job or two by key, tens of microseconds each) run on the event loop's own thread, and only the
commit, which waits for the disk, on the store's thread; the loop starts the next batch once
that commit is told. Run on a thread of their own, those statements cost more than they do:
every statement let go of the GIL and took it back from the loop (~14 % of a busy `serve`'s
CPU went to those hand-overs, in futex waits and wake-ups). A batch holding any other call
(lists, counts, housekeeping, whole batches of jobs: unbounded) runs whole on the store's
thread, as does one that finds the write lock taken by another process (the loop never waits
for it: busy_timeout is 0 there, set around such a batch on the thread). Calls from another
thread's event loop are made on the store's loop.

How a call runs: the shared code is `async def` over `_one`/`_all`/`_run`, which here return
without ever suspending, so each call's coroutine is driven to its end with a single
`send(None)`. A store call made from inside another (the sweeper's `transition`s) runs inline.

Waking waiters (store.sqlite_wait, mixed in): SQLite has no notifications. Inside one process, every commit wakes the
waiters of that job (and, when a job became claimable, `wait_for_work`) at once. Across processes
sharing the file, a waiter also wakes every `cross_process_wait_s` (0.5 s by default), checks
`PRAGMA data_version` (which changes only when another connection commits) and looks again
only if it did: a short bounded wait, not a query per tick.

Reads on the loop (store.sqlite_loop, mixed in): what is quick to read — a job, its events, the
kept counts, a queued job's position near either end of the queue — is read on a read-only
connection of the event loop's own, not shipped to the thread.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import inspect
import json
import logging
import queue
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from comfyrun.core.job import JSON, Job
from comfyrun.errors import InvalidRequest, StoreError
from comfyrun.store.base import JobEvent, QueueHeard, QueueMove, QueueWatchers, WorkCounts
from comfyrun.store.migrate import migrate_sqlite
from comfyrun.store.sqlbatches import SQLBatches
from comfyrun.store.sqlcatalogs import SQLCatalogs
from comfyrun.store.sqlclaims import SQLClaims
from comfyrun.store.sqlevents import SQLEvents
from comfyrun.store.sqlite_calls import Call, Commit, Wake, dict_row
from comfyrun.store.sqlite_loop import SQLiteLoopReads, open_reader
from comfyrun.store.sqlite_runner import SQLiteRunner
from comfyrun.store.sqlite_statements import SQLiteStatements
from comfyrun.store.sqlite_wait import SQLiteWaiting
from comfyrun.store.sqlprobe import SQLWriteProbe
from comfyrun.store.sqlreads import SQLReads
from comfyrun.store.sqlretrying import SQLRetryCounts
from comfyrun.store.sqlstore import SQLStore
from comfyrun.store.sqltenancy import SQLTenancy
from comfyrun.store.sqlworkers import SQLWorkers
from comfyrun.store.writable import WriteHealth

log = logging.getLogger(__name__)


#: Store calls that only read: a batch of these alone runs outside any transaction.
READS = frozenset(
    {
        "ping",
        "events_since",
        "get",
        "get_by_prompt_id",
        "unfinished_for_client",
        "list",
        "stamps",
        "get_many",
        "queue",
        "queue_position",
        "counts",
        "finished_since",
        "oldest_queued_at",
        "get_batch",
        "open_batches",
        "batch_counts",
        "batch_jobs",
        "catalogs",
        "catalog_stamps",
        "get_api_key",
        "api_key_by_hash",
        "list_api_keys",
        "deliveries",
        "delivery_counts",
        "served_types",
        "retrying",
    }
)
#: Calls that stay on the event loop (they wait, or manage the thread, or choose where they run).
LOCAL = frozenset(
    {
        "open",
        "close",
        "wait_for_event",
        "wait_for_end",
        "wait_for_work",
        "counts",
        "unfinished_for_client",
        "queue_position",
        "can_commit",
    }
)


class SQLiteStore(SQLiteRunner, SQLiteLoopReads, SQLiteWaiting, SQLiteStatements, SQLStore):
    """A JobStore in one SQLite file (or `:memory:`, private to this store)."""

    #: Claims a dispatcher may have in flight at once (dispatch.dispatcher): those made while a
    #: commit is under way are committed together in the next one.
    claims_at_once = 16

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_s: float = 30.0,
        cross_process_wait_s: float = 0.5,
        synchronous: str = "FULL",
        max_batch: int = 512,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise InvalidRequest(
                "synchronous is OFF, NORMAL, FULL or EXTRA", details={"synchronous": synchronous}
            )
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout_s = busy_timeout_s
        self.cross_process_wait_s = cross_process_wait_s
        self.max_batch = max_batch
        self._calls: queue.SimpleQueue[builtins.list[Call] | Commit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._open = False
        # the one connection: used by one thread at a time (the loop's, the store's)
        self._conn: sqlite3.Connection | None = None
        self._conn_user: int | None = None  # the thread running a batch's calls now
        self._wakes: list[Wake] = []
        self._bare = False  # the next write is its batch's first (see _write)
        # owned by the event loop (the one that opened the store)
        self._home: asyncio.AbstractEventLoop | None = None
        self._pending: list[Call] = []  # calls made since the last batch began
        self._flush_soon = False  # a batch of them is to start at the loop's next turn
        self._conn_busy = False  # a batch holds the connection (running, or committing)
        self._job_waiters: dict[str, dict[asyncio.Event, bool]] = {}
        self._work = asyncio.Event()
        self._work_counts = WorkCounts()  # see work_token
        self._version: int | None = None  # the last `PRAGMA data_version` read
        self._queued_here: OrderedDict[str, int] = OrderedDict()  # see SQLiteWaiting
        self._reader: sqlite3.Connection | None = None  # LOOP_READS, on the loop's thread
        self._loop_thread_id: int | None = None
        self._queue_watchers = QueueWatchers()
        self.write_health = WriteHealth()  # noted at each commit (store.sqlite_runner)

    # -- life --------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._open:
            return
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._calls = queue.SimpleQueue()
        self._home, self._pending, self._flush_soon, self._conn_busy = loop, [], False, False
        thread = threading.Thread(
            target=self._serve, args=(loop, opened), name="comfyrun-sqlite", daemon=True
        )
        thread.start()
        try:
            await opened
        except BaseException:
            await asyncio.to_thread(thread.join)
            raise
        self._thread = thread
        self._open = True
        self.write_health.ok()  # its migrations committed
        if _is_file(self.path):
            with contextlib.suppress(sqlite3.Error):
                self._reader = await asyncio.to_thread(open_reader, self.path)
                self._loop_thread_id = threading.get_ident()

    async def close(self) -> None:
        if not self._open or self._thread is None:
            return
        self._open = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        self._calls.put(None)  # after the batch it may be running (delivered as it ends)
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join)
        self._fail_pending()

    # -- reads that choose where they run (more in store.sqlite_loop) -----------------------

    async def _events_after(self, job_id: str, after_id: int) -> builtins.list[JobEvent]:
        return await self.events_since(job_id, after_id)

    def _connect(self) -> sqlite3.Connection:
        # used by the loop's thread (a batch's calls) and the store's (its commit), in turn
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged enqueue survives a power cut, not only a process crash.
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            migrate_sqlite(conn)  # (an index it builds sorts in temporary files, not memory)
            # each call's savepoint keeps the pages it changes in a sub-journal, which past
            # 64 KiB went to a temporary file (created, written, removed: a few per job under
            # load); it only ever undoes one call (a few dozen pages), so memory holds it
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.row_factory = dict_row
            # the loop never waits for the write lock: a batch that finds it taken goes to the
            # store's thread, which waits (busy_timeout, set around that batch)
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _job(self, job_id: str) -> Job | None:
        return await self.get(job_id)

    def watch_queue(self, heard: QueueHeard) -> Callable[[], None]:
        return self._queue_watchers.add(heard)  # told as each write's batch commits

    def _wake(
        self, job_id: str, work: bool, job_type: str | None, ending: bool, moved: QueueMove | None
    ) -> None:
        """On the event loop, after the commit: wake this process's waiters (those that wait
        for the job's end only when the write may have ended it), and tell the queue's
        watchers how the job moved."""
        if moved is not None and self._queue_watchers:
            self._queue_watchers.tell(job_id, moved)
        for woken, ending_only in builtins.list(self._job_waiters.get(job_id, {}).items()):
            if ending or not ending_only:
                woken.set()
        self._note_queued(job_id, work, ending)
        if work:
            self._work_counts.add(job_type)
            event, self._work = self._work, asyncio.Event()
            event.set()

    # -- plumbing for the shared SQL code (runs on the store's thread) -----------------------

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        me = threading.get_ident()
        if self._conn is not None and me == self._conn_user:
            return self._conn
        if self._reader is not None and me == self._loop_thread_id:
            return self._reader  # LOOP_READS only: it cannot write
        raise StoreError("the SQLite store is not open")

    async def _lock_key(self, conn: sqlite3.Connection, key: JSON) -> None:
        return None  # BEGIN IMMEDIATE already holds the database's one write lock

    def _decided(self, decided: Callable[[Job, bool], None], job: Job, created: bool) -> None:
        loop = self._home  # every call is made on it
        if loop is not None:  # said at once, long before the batch commits
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(decided, job, created)

    async def _committed(
        self,
        job_id: str,
        *,
        work: bool = False,
        job_type: str | None = None,
        ending: bool = True,
        moved: QueueMove | None = None,
    ) -> None:
        # woken once the batch committed
        self._wakes.append((job_id, work, job_type, ending, moved))

    _no_limit = -1

    @staticmethod
    def _text_list(values: builtins.list[str]) -> Any:
        return json.dumps(values)  # read back with json_each()


def _shipped(name: str, fn: Callable[..., Coroutine[Any, Any, Any]]) -> Any:
    read = name in READS

    @functools.wraps(fn)
    async def call(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        return await self._call(fn, args, kwargs, read=read)

    return call


# Every public store call of the shared SQL code runs on the store's thread, whole.
_SHARED = {
    **vars(SQLReads),
    **vars(SQLTenancy),
    **vars(SQLWorkers),
    **vars(SQLBatches),
    **vars(SQLCatalogs),
    **vars(SQLWriteProbe),
    **vars(SQLRetryCounts),
    **vars(SQLClaims),
    **vars(SQLEvents),
    **vars(SQLStore),
}
for _name, _fn in list(_SHARED.items()):
    if _name.startswith("_") or _name in LOCAL or not inspect.iscoroutinefunction(_fn):
        continue
    setattr(SQLiteStore, _name, _shipped(_name, _fn))


def _is_file(path: str) -> bool:
    """A database other connections can open too (not a private in-memory one)."""
    return path != "" and ":memory:" not in path and "mode=memory" not in path


__all__ = ["SQLiteStore"]
