"""How a PostgreSQL store hears the others (mixed into PostgresStore, store.postgres): one
connection of its own LISTENs on the schema's channel and relays each NOTIFY (its payload: see
store.pgstatements.payload) to this process's waiters for work, for a job's events and end
(store.pgwaits), and to the watchers of new work and of the queue. When that connection drops,
every waiter is woken (each looks again) and it reconnects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import psycopg

from comfyrun.store.base import QueueHeard, QueueMove, QueueWatchers, WorkCounts
from comfyrun.store.pgstatements import ENDING, LOGGED, NEW, NOT_ENDING, START, WORK
from comfyrun.store.pgwaits import PgWaits

log = logging.getLogger("comfyrun.store.postgres")


class PgListening(PgWaits):
    """The listener and what it wakes (PostgresStore sets these up)."""

    dsn: str
    connect_timeout_s: float
    _listening: asyncio.Event
    _work: asyncio.Condition
    _work_counts: WorkCounts
    _work_watchers: list[Callable[[str, str | None], None]]
    _queue_watchers: QueueWatchers

    def work_token(self, types: Sequence[str] | None = None) -> int | None:
        # only while LISTENing: a notification lost with the connection must not hide work
        if not self._listening.is_set():
            return None
        return self._work_counts.token(types)

    async def wait_for_work(
        self,
        timeout: float,
        *,
        since: int | None = None,
        types: Sequence[str] | None = None,
    ) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._work:
            if since is not None and since != self.work_token(types):
                return  # woken before this wait began
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._work.wait()
                except TimeoutError:
                    return
                if not self._work_counts.others_only(since, types):
                    return
                # only work of other types came (a job another lane claims): wait on

    async def _listen(self) -> None:
        """Relay this schema's NOTIFYs to local waiters, reconnecting after failures."""
        backoff = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=int(self.connect_timeout_s)
                )
                async with conn:
                    await conn.execute(f'LISTEN "{self.channel}"'.encode())
                    self._listen_changed()
                    self._listening.set()
                    backoff = 0.5
                    await self._wake_all()  # anything sent while we were away
                    async for note in conn.notifies():
                        await self._dispatch(note.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning(
                    "store listener lost its connection: %s; reconnecting",
                    exc,
                    extra={"action": "store_listen_retry"},
                )
            self._listening.clear()
            self._listen_changed()
            await self._wake_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _dispatch(self, payload: str) -> None:
        flags, _, job_id = payload.partition("e:")
        mark = flags[:2] if flags[:2] in (ENDING, NOT_ENDING) else ""
        flags = flags[len(mark) :]
        work, new = flags.startswith(WORK), flags.startswith(NEW)
        if work or new:  # (a job created claimed: no worker to wake, its watchers told)
            job_type = flags[2:-1] if flags[1:2] == "=" and flags.endswith(";") else None
            if work:
                self._work_counts.add(job_type)
                async with self._work:
                    self._work.notify_all()
            for heard in self._work_watchers:
                try:
                    heard(job_id, job_type)
                except Exception:
                    log.exception("a watcher of new work failed")
        started = flags.startswith(START)
        logged = flags.startswith(LOGGED)
        self._heard(job_id, mark, claimed=new or started, work=work, logged=logged)
        if self._queue_watchers:  # (every node's changes, this one's included)
            if work or new:
                self._queue_watchers.tell(job_id, QueueMove.JOINED)
            elif started:
                self._queue_watchers.tell(job_id, QueueMove.STARTED)
            elif mark != NOT_ENDING:
                self._queue_watchers.tell(job_id, QueueMove.ENDED)

    def watch_queue(self, heard: QueueHeard) -> Callable[[], None]:
        return self._queue_watchers.add(heard)  # told by the listener, see _dispatch

    def watch_new_work(self, heard: Callable[[str, str | None], None]) -> Callable[[], None]:
        self._work_watchers = [*self._work_watchers, heard]

        def stop() -> None:
            self._work_watchers = [w for w in self._work_watchers if w is not heard]

        return stop

    async def _wake_all(self) -> None:
        self._work_counts.add()
        async with self._work:
            self._work.notify_all()
        self._wake_jobs()


__all__ = ["PgListening"]
