"""How the PostgreSQL store waits for a job (mixed into PostgresStore, store.postgres): its
waiters, woken by the NOTIFYs its listener relays, and what that listener heard of the jobs
this store queued itself.

A `wait_for_end` looks at the job once it listens, and again each time a NOTIFY that may end
it arrives. For a job this store queued while its listener was LISTENing, and has heard no
such NOTIFY of since on the same listening connection, the first look is skipped: every
NOTIFY of that job goes to that connection, those relayed before the wait began were heard
(and would have made it look), those still on their way wake it. A `?wait` on an API node
(POST, then its job's end) so costs one read of the job, not three (its log before it sleeps
and when woken, then the job). Any doubt (the connection changed or was lost, the job was
queued elsewhere or long ago) means a look.

Likewise a run's cancel watch (`wait_for_event(..., held=True)`) does not look at the log of
a job this store claimed while listening as long as no NOTIFY of that job has been heard since
but its claim's own (the START or NEW flag) and those of events that change no status (the
LOGGED flag: the run's own log lines, progress, outputs): a cancel request writes a status
event, and its NOTIFY, heard during the claim's round trip or after it, means a look. On a
busy worker most runs outlast the watch's delay (`cancel_watch_after_s`), and that look was
one statement of every four or five a job cost PostgreSQL.

A wait cancelled while it reads (a run's cancel watch at the run's end) lets its statement
finish rather than cancel it on the server (`let_finish`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from comfyrun.core.job import Job, JobStatus, NewJob, may_end
from comfyrun.store.base import ClaimChoice, ClaimNote, HandOff, JobEvent, JobStamp
from comfyrun.store.pgstatements import NOT_ENDING, OneStatementWrites

T = TypeVar("T")

#: Jobs queued here that a wait may take as not ended without looking: the most recent ones.
QUEUED_HERE_KEPT = 10_000

#: Jobs claimed here, and jobs stirred (a NOTIFY but a claim's or a LOGGED one), remembered:
#: the most recent.
HELD_HERE_KEPT = 10_000


class PgWaits(OneStatementWrites):
    """Waiting for a job's events and end (PostgresStore sets up the listener)."""

    _listening: asyncio.Event
    #: per job, its waiters, each with whether it waits only for an event that may end it
    _job_waiters: dict[str, dict[asyncio.Event, bool]]
    #: counts the listener's connections, and their losses: a job queued while it was one
    #: number was heard of throughout while it still is
    _listen_epoch: int
    #: jobs queued here while listening, not heard of since as maybe ended: (epoch, owner,
    #: whether the enqueue returned having created it)
    _queued_here: OrderedDict[str, tuple[int, str | None, bool]]
    #: jobs claimed here while listening, not stirred since: the listening connection's number
    #: then
    _held_here: OrderedDict[str, int]
    #: per job stirred (a NOTIFY but a claim's or a LOGGED one), the count of such NOTIFYs
    #: (`_stirs`) then
    _stirred: OrderedDict[str, int]
    _stirs: int

    # -- what the listener heard ---------------------------------------------------------

    def _listen_changed(self) -> None:
        """The listener connected, or lost its connection: what it heard before is no
        guarantee of what comes after."""
        self._listen_epoch += 1
        self._queued_here.clear()
        self._held_here.clear()
        self._stirred.clear()

    def _heard(
        self,
        job_id: str,
        mark: str,
        *,
        claimed: bool = False,
        work: bool = False,
        logged: bool = False,
    ) -> None:
        """A NOTIFY of `job_id` arrived (`mark`: whether it may end the job; `claimed`: its
        job was claimed, or created claimed; `work`: it became claimable; `logged`: its events
        changed no status): wakes its waiters that wait for such."""
        ends = mark != NOT_ENDING
        if ends:
            self._queued_here.pop(job_id, None)
        if not (claimed or logged):
            self._held_here.pop(job_id, None)
            if not work:  # (a claim may be under way that its enqueue's NOTIFY comes after)
                self._stirs += 1
                self._stirred[job_id] = self._stirs
                self._stirred.move_to_end(job_id)
                if len(self._stirred) > HELD_HERE_KEPT:
                    self._stirred.popitem(last=False)
        for woken, ending in builtins.list(self._job_waiters.get(job_id, {}).items()):
            if ends or not ending:
                woken.set()

    def _wake_jobs(self) -> None:
        for waiters in builtins.list(self._job_waiters.values()):
            for woken in waiters:
                woken.set()

    async def enqueue(
        self, new: NewJob, *, now: float | None = None, replacing: JobStamp | None = None
    ) -> tuple[Job, bool]:
        with self._queuing(new) as queued:
            job, created = await super().enqueue(new, now=now, replacing=replacing)
            queued(job, created)
        return job, created

    async def enqueue_counted(
        self,
        new: NewJob,
        *,
        limit: int | None = None,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool, int | None]:
        with self._queuing(new) as queued:
            job, created, position = await super().enqueue_counted(
                new, limit=limit, now=now, replacing=replacing
            )
            queued(job, created)
        return job, created, position

    async def enqueue_claimed(
        self,
        new: NewJob,
        hand_off: HandOff,
        *,
        now: float | None = None,
        replacing: JobStamp | None = None,
    ) -> tuple[Job, bool]:
        with self._queuing(new) as queued, self._claiming() as claimed:
            job, created = await super().enqueue_claimed(
                new, hand_off, now=now, replacing=replacing
            )
            queued(job, created)
            if created and job.status is JobStatus.RUNNING:
                claimed(job)
        return job, created

    async def claim(
        self,
        worker_id: str,
        lease_s: float,
        *,
        now: float | None = None,
        note: ClaimNote | None = None,
        choice: ClaimChoice | None = None,
        types: Sequence[str] | None = None,
    ) -> Job | None:
        with self._claiming() as claimed:
            job = await super().claim(
                worker_id, lease_s, now=now, note=note, choice=choice, types=types
            )
            if job is not None:
                claimed(job)
        return job

    @contextlib.contextmanager
    def _claiming(self) -> Iterator[Callable[[Job], None]]:
        """Around a claim: the job it returns is taken as held here, not stirred since, only if
        the listener listened throughout, on one connection, and heard no NOTIFY of it during
        the claim's round trip but a claim's or a LOGGED one (its enqueue's, relayed late, is
        no news either); the NOTIFYs that stirred it were counted all the while."""
        if not self._listening.is_set():
            yield lambda job: None
            return
        epoch, stirs = self._listen_epoch, self._stirs

        def claimed(job: Job) -> None:
            if (
                epoch == self._listen_epoch
                and self._stirs - stirs < HELD_HERE_KEPT  # (none it heard forgotten)
                and self._stirred.get(job.id, stirs) <= stirs
            ):
                self._held_here[job.id] = epoch
                if len(self._held_here) > HELD_HERE_KEPT:
                    self._held_here.popitem(last=False)

        yield claimed

    def _quiet_since_claim(self, job_id: str) -> bool:
        """Whether the job was claimed here and its status has not changed since (its log may
        have grown), as the listener, listening throughout, tells."""
        return self._listening.is_set() and self._held_here.get(job_id) == self._listen_epoch

    @contextlib.contextmanager
    def _queuing(self, new: NewJob) -> Iterator[Callable[[Job, bool], None]]:
        """Around the enqueue of `new`: noted before its statement is sent, while listening,
        so a NOTIFY that may end it, relayed before the enqueue returns, unnotes it; taken as
        heard of throughout only once the enqueue returns having created it, on the same
        listening connection."""
        if not self._listening.is_set():
            yield lambda job, created: None
            return
        epoch = self._listen_epoch
        self._queued_here[new.id] = (epoch, new.owner, False)
        if len(self._queued_here) > QUEUED_HERE_KEPT:
            self._queued_here.popitem(last=False)

        def queued(job: Job, created: bool) -> None:
            noted = self._queued_here.get(new.id)
            if created and job.id == new.id and noted is not None and noted[0] == epoch:
                self._queued_here[new.id] = (epoch, new.owner, True)
            else:
                self._queued_here.pop(new.id, None)

        try:
            yield queued
        except BaseException:
            self._queued_here.pop(new.id, None)
            raise

    def _not_ended(self, job_id: str, owner: str | None) -> bool | None:
        """True when the job is known not to have ended (queued here, heard of since
        throughout, nothing that may end it); None when it is known to be another owner's;
        False when it must be looked at."""
        known = self._queued_here.get(job_id)
        if known is None or not known[2] or not self._listening.is_set():
            return False
        if known[0] != self._listen_epoch:
            return False
        if owner is not None and known[1] != owner:
            return None
        return True

    # -- waits -------------------------------------------------------------------------------

    async def wait_for_end(
        self, job_id: str, timeout: float, *, owner: str | None = None
    ) -> Job | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()
        waiters = self._job_waiters.setdefault(job_id, {})
        waiters[woken] = True  # before deciding whether to look, so no NOTIFY slips between
        try:
            not_ended = self._not_ended(job_id, owner)
            if not_ended is None:
                return None
            look = not not_ended
            while True:
                woken.clear()
                if look:
                    job = await let_finish(self.get(job_id))
                    if job is None or (owner is not None and job.owner != owner):
                        return None
                    if job.terminal:
                        return job
                look = True
                try:  # (asyncio.timeout: wait_for may drop a cancel on 3.11)
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        await woken.wait()
                except TimeoutError:
                    job = await let_finish(self.get(job_id))
                    return None if job is None or owner not in (None, job.owner) else job
        finally:
            waiters.pop(woken, None)
            if not waiters:
                self._job_waiters.pop(job_id, None)

    async def wait_for_event(
        self,
        job_id: str,
        after_id: int,
        timeout: float,
        *,
        ending: bool = False,
        held: bool = False,
    ) -> builtins.list[JobEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()
        waiters = self._job_waiters.setdefault(job_id, {})
        waiters[woken] = ending  # before looking, so no NOTIFY slips between look and wait
        found: builtins.list[JobEvent] = []
        try:
            while True:
                woken.clear()
                last = found[-1].id if found else after_id
                # (woken by its claim's own NOTIFY, relayed late, a held job is still quiet)
                if not (held and self._quiet_since_claim(job_id)):
                    found += await let_finish(self.events_since(job_id, last))
                remaining = deadline - loop.time()
                if remaining <= 0 or _enough(found, ending, after_id):
                    return found
                try:  # (asyncio.timeout: wait_for may drop a cancel on 3.11)
                    async with asyncio.timeout(remaining):
                        await woken.wait()
                except TimeoutError:
                    last = found[-1].id if found else after_id
                    return found + await let_finish(self.events_since(job_id, last))
        finally:
            waiters.pop(woken, None)
            if not waiters:
                self._job_waiters.pop(job_id, None)


async def let_finish(read: Coroutine[Any, Any, T]) -> T:
    """`read`, not cancelled mid-way when its waiter is: a wait is cancelled routinely (a run's
    cancel watch when the run ends, a `?wait` whose client goes), and a statement cancelled
    mid-way costs PostgreSQL a connection of its own to cancel it (a process forked for it)
    and the pooled connection a reset. The read goes on to its end, its answer dropped."""
    task = asyncio.ensure_future(read)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_dropped)
        raise


def _dropped(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed read nobody waits for is not an error


def _enough(found: builtins.list[JobEvent], ending: bool, after_id: int) -> bool:
    """Whether a `wait_for_event` has found what it waits for: any event; with `ending`, an
    event that may end the job (the others it read are returned with it), or no event at all
    of a log read from its start (no such job)."""
    if not ending:
        return bool(found)
    if not found:
        return after_id == 0
    return any(may_end(e.kind, e.data) for e in found)


__all__ = ["QUEUED_HERE_KEPT", "PgWaits"]
