"""SQLite: a job and its events are read on the event loop's own thread from a read-only
connection, so they answer even while the store's thread waits on a write lock; a read that
would have to wait is shipped to the store's thread instead."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from tests.support.store import new_job

from comfyrun.store.sqlite import SQLiteStore


async def test_reads_answer_while_the_stores_thread_waits_for_the_write_lock(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "q.db")
    store = SQLiteStore(path, busy_timeout_s=30)
    await store.open()
    try:
        job, _ = await store.enqueue(new_job())
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            stuck = asyncio.create_task(store.enqueue(new_job()))
            await asyncio.sleep(0.2)
            assert not stuck.done()  # the store's thread waits for the lock
            found = await asyncio.wait_for(store.get(job.id), 5)
            assert found is not None and found.id == job.id
            events = await asyncio.wait_for(store.events_since(job.id), 5)
            assert [e.data.get("status") for e in events] == ["queued"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        second, _ = await asyncio.wait_for(stuck, 10)
        assert (await store.get(second.id)) is not None  # a write just committed is seen
    finally:
        await store.close()


class _BusyReader:
    """A reader connection that finds the database busy."""

    def execute(self, *args: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")


async def test_a_busy_reader_ships_the_read_to_the_stores_thread(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    try:
        job, _ = await store.enqueue(new_job())
        store._reader = _BusyReader()  # type: ignore[assignment]
        found = await store.get(job.id)
        assert found is not None and found.id == job.id
        assert len(await store.events_since(job.id)) == 1
        store._reader = None  # close() must not close the fake
    finally:
        await store.close()
