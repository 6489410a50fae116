"""SQLite: a job and its events, and the unfinished jobs when they are few, are read on the
event loop's own thread from a read-only connection, so they answer even while the store's
thread waits on a write lock; a read that would have to wait (or count too many) is shipped to
the store's thread instead."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.store import sqlite as sqlite_store
from comfyrun.store.base import COMFY_CLIENT_ID
from comfyrun.store.sqlite import SQLiteStore


async def test_reads_answer_while_the_stores_thread_waits_for_the_write_lock(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "q.db")
    store = SQLiteStore(path, busy_timeout_s=30)
    await store.open()
    try:
        job, _ = await store.enqueue(new_job(metadata={COMFY_CLIENT_ID: "c1"}))
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
            counts = await asyncio.wait_for(store.counts(unfinished=True), 5)
            assert counts[JobStatus.QUEUED] == 1 and sum(counts.values()) == 1
            mine = await asyncio.wait_for(store.unfinished_for_client("c1"), 5)
            assert [j.id for j in mine] == [job.id]
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


def shipped_calls(store: SQLiteStore) -> list[str]:
    """The names of the calls `store` ships to its thread from now on."""
    shipped: list[str] = []
    real_call = store._call

    async def recording(fn: Any, *args: Any, **kwargs: Any) -> Any:
        shipped.append(fn.__name__)
        return await real_call(fn, *args, **kwargs)

    store._call = recording  # type: ignore[method-assign]
    return shipped


async def test_many_unfinished_jobs_are_counted_on_the_stores_thread(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Past LOOP_COUNT_MAX unfinished jobs the loop does not count them (it would take long):
    the count is shipped, and exact either way."""
    monkeypatch.setattr(sqlite_store, "LOOP_COUNT_MAX", 2)
    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    shipped = shipped_calls(store)

    def counted() -> list[str]:
        return [name for name in shipped if name == "counts"]

    try:
        for _ in range(2):
            await store.enqueue(new_job())
        assert (await store.counts(unfinished=True))[JobStatus.QUEUED] == 2
        assert counted() == []  # two: counted on the loop
        await store.enqueue(new_job())
        claimed = await store.claim("w1", 30)
        assert claimed is not None
        counts = await store.counts(unfinished=True)
        assert (counts[JobStatus.QUEUED], counts[JobStatus.RUNNING]) == (2, 1)
        assert counted() == ["counts"]  # three: counted on the store's thread
        assert (await store.counts())[JobStatus.QUEUED] == 2  # all statuses: always shipped
        assert counted() == ["counts", "counts"]
    finally:
        await store.close()


async def test_a_client_with_many_unfinished_jobs_has_them_read_on_the_stores_thread(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Past LOOP_ROWS_MAX a ComfyUI client's unfinished jobs are read on the store's thread,
    all of them (up to the limit asked); a limit within the bound is answered on the loop."""
    monkeypatch.setattr(sqlite_store, "LOOP_ROWS_MAX", 2)
    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    shipped = shipped_calls(store)

    def read() -> list[str]:
        return [name for name in shipped if name == "unfinished_for_client"]

    try:
        ids = [(await store.enqueue(new_job(metadata={COMFY_CLIENT_ID: "c1"})))[0].id]
        ids.append((await store.enqueue(new_job(metadata={COMFY_CLIENT_ID: "c1"})))[0].id)
        assert {j.id for j in await store.unfinished_for_client("c1")} == set(ids)
        assert await store.unfinished_for_client("nobody") == []
        assert read() == []  # two: on the loop
        ids.append((await store.enqueue(new_job(metadata={COMFY_CLIENT_ID: "c1"})))[0].id)
        assert {j.id for j in await store.unfinished_for_client("c1")} == set(ids)
        assert read() == ["unfinished_for_client"]  # three: on the store's thread
        newest = await store.unfinished_for_client("c1", limit=1)
        assert [j.id for j in newest] == [ids[-1]] and len(read()) == 1  # within the bound
    finally:
        await store.close()
