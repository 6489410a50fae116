"""How the SQLite store waits (mixed into SQLiteStore, store.sqlite): for a job's new events and
for new work. A commit in this process wakes its waiters at once (asyncio events set after the
commit); another process's commit is seen by polling `PRAGMA data_version` every
`cross_process_wait_s` while waiting.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from comfyrun.core.job import Job
from comfyrun.store.base import JobEvent, WorkCounts

#: Jobs queued by this process that a wait for their end may take as not ended without a look.
QUEUED_HERE_KEPT = 10_000


class SQLiteWaiting(ABC):
    """Waiting for events and work (SQLiteStore sets these)."""

    cross_process_wait_s: float
    _reader: Any
    _version: int | None
    #: per job, its waiters, each with whether it waits only for a write that may end the job
    _job_waiters: dict[str, dict[asyncio.Event, bool]]
    _work: asyncio.Event
    _work_counts: WorkCounts
    #: jobs a commit of this process made claimable, nothing of this process having written
    #: since that may end them: the data version read last before (their end by another
    #: process changes it); the newest QUEUED_HERE_KEPT
    _queued_here: OrderedDict[str, int]

    @abstractmethod
    async def _call(
        self,
        fn: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        read: bool,
    ) -> Any:
        """Run a store call in a batch (store.sqlite_runner)."""

    @abstractmethod
    async def _job(self, job_id: str) -> Job | None:
        """The store's `get`."""

    @abstractmethod
    async def _events_after(self, job_id: str, after_id: int) -> builtins.list[JobEvent]:
        """The store's `events_since` (a point read the loop answers itself where it can)."""

    async def wait_for_event(
        self,
        job_id: str,
        after_id: int,
        timeout: float,
        *,
        ending: bool = False,
        held: bool = False,
    ) -> builtins.list[JobEvent]:
        deadline = asyncio.get_running_loop().time() + timeout
        with self._waiter(job_id, ending_only=False) as woken:
            while True:
                woken.clear()
                if self._reader is not None and self._version is not None:
                    # any data version read before the events will do (see wait_for_work)
                    version = self._version
                    events = await self._events_after(job_id, after_id)
                else:
                    found: tuple[builtins.list[JobEvent], int] = await self._call(
                        _events_and_version, (job_id, after_id), {}, read=True
                    )
                    events, version = found
                    self._version = version
                if events or (ending and after_id == 0):  # (an empty log: no such job)
                    return events
                changed, _ = await self._wait(woken, deadline, version)
                if not changed:
                    return []

    def _note_queued(self, job_id: str, work: bool, ending: bool) -> None:
        """After a commit of this process that wrote `job_id`: noted when it made the job
        claimable (queued: not ended), unnoted when it may have ended it."""
        if ending:
            self._queued_here.pop(job_id, None)
        elif work and self._version is not None:
            self._queued_here[job_id] = self._version
            self._queued_here.move_to_end(job_id)
            if len(self._queued_here) > QUEUED_HERE_KEPT:
                self._queued_here.popitem(last=False)

    async def wait_for_end(
        self, job_id: str, timeout: float, *, owner: str | None = None
    ) -> Job | None:
        """The job read once, then again only when a write in this process may have ended it
        (not its claim, placement, progress, outputs or log lines) or another process wrote
        to the database; as it is at `timeout`. A job this process queued, and has written
        nothing since that may have ended it, is not read before the wait sleeps (unless the
        wait is an owner's, who must be told at once of another's job): its end by another
        process changes the data version read before it was queued (a `?wait` on a job that
        waits in the queue, and that a run of this process then takes up, reads nothing)."""
        deadline = asyncio.get_running_loop().time() + timeout
        with self._waiter(job_id, ending_only=True) as woken:
            # looked up once the waiter is in place: no write that may end it slips between
            known = self._queued_here.get(job_id) if owner is None else None
            if known is not None:
                changed, _ = await self._wait(woken, deadline, known)
                if not changed:
                    return await self._job(job_id)
            while True:
                woken.clear()
                # any data version read before the job will do (see wait_for_work)
                version = self._version
                if version is None:
                    version = await self._data_version()
                job = await self._job(job_id)
                if job is None or (owner is not None and job.owner != owner):
                    return None
                if job.terminal:
                    return job
                changed, _ = await self._wait(woken, deadline, version)
                if not changed:
                    job = await self._job(job_id)
                    return None if job is None or owner not in (None, job.owner) else job

    @contextlib.contextmanager
    def _waiter(self, job_id: str, *, ending_only: bool) -> Iterator[asyncio.Event]:
        """A waiter on `job_id`'s commits (only those that may end it, with `ending_only`),
        registered before the caller looks, so no commit slips between the look and the
        wait."""
        woken = asyncio.Event()
        waiters = self._job_waiters.setdefault(job_id, {})
        waiters[woken] = ending_only
        try:
            yield woken
        finally:
            waiters.pop(woken, None)
            if not waiters:
                self._job_waiters.pop(job_id, None)

    def work_token(self, types: Sequence[str] | None = None) -> int | None:
        return self._work_counts.token(types)

    async def wait_for_work(
        self,
        timeout: float,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
    ) -> None:
        if since is not None and since != self.work_token(types):
            return  # woken before this wait began
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            woken = self._work
            # Any data version read before now will do: another process's commit since then
            # changes it (at worst, one it changed for was already seen: a spurious wake-up).
            version = self._version if self._version is not None else await self._data_version()
            changed, _ = await self._wait(woken, deadline, version)
            if not changed or not self._work_counts.others_only(since, types):
                return
            # only work of other types came (a job another lane claims): wait on, no claim

    async def _wait(self, woken: asyncio.Event, deadline: float, version: int) -> tuple[bool, int]:
        """Until `woken` is set (a commit in this process) or another process commits (True),
        or until `deadline` (False). Returns the data version seen last."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(remaining, self.cross_process_wait_s)):
                    await woken.wait()
                return True, version
            except TimeoutError:
                pass
            current = await self._data_version()
            if current != version:
                self._work_counts.add()  # another process committed: maybe work, any type
                return True, current
        return False, version

    async def _data_version(self) -> int:
        version: int = await self._call(_data_version, (), {}, read=True)
        self._version = version
        return version


async def _data_version(store: Any) -> int:
    row = store._connection().execute("PRAGMA data_version").fetchone()
    return int(row["data_version"]) if row else 0


async def _events_and_version(
    store: Any, job_id: str, after_id: int
) -> tuple[builtins.list[JobEvent], int]:
    """A job's new events and the data version they were read at, in one trip."""
    events: builtins.list[JobEvent] = await store.events_since(job_id, after_id)
    return events, await _data_version(store)


__all__ = ["SQLiteWaiting"]
