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
from comfyrun.store import sqlite_loop
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


async def test_counts_are_read_on_the_loop_from_the_counts_the_triggers_keep(
    tmp_path: Path,
) -> None:
    """Every count (all statuses or the unfinished ones, the fleet's or a key's) is read on the
    loop's thread from job_counts, never shipped, and is the count of the jobs themselves
    through enqueues, claims, ends, an owner's jobs and deletions; the reader busy, shipped."""
    import sqlite3
    from dataclasses import replace

    from comfyrun.core.state import Event

    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    shipped = shipped_calls(store)
    scanned = sqlite3.connect(tmp_path / "q.db")

    def truth(owner: str | None = None) -> dict[JobStatus, int]:
        where, args = ("WHERE owner = ?", (owner,)) if owner else ("", ())
        rows = scanned.execute(f"SELECT status, count(*) FROM jobs {where} GROUP BY status", args)
        got = dict.fromkeys(JobStatus, 0)
        got.update({JobStatus(s): n for s, n in rows})
        return got

    async def agree() -> None:
        for owner in (None, "key_a", "key_b"):
            want = truth(owner)
            assert await store.counts(owner=owner) == want, owner
            unfinished = await store.counts(unfinished=True, owner=owner)
            assert {s: n for s, n in unfinished.items() if n} == {
                s: n
                for s, n in want.items()
                if n and s in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELING)
            }

    try:
        ids = [(await store.enqueue(new_job()))[0].id for _ in range(5)]
        for _ in range(3):
            await store.enqueue(replace(new_job(), owner="key_a"))
        await agree()
        for _ in range(4):
            assert await store.claim("w1", 30) is not None
        await agree()
        page = await store.list(statuses=[JobStatus.RUNNING])
        running = [j.id for j in page.jobs if not j.owner]
        await store.transition(running[0], Event.SUCCEED, expect=JobStatus.RUNNING)
        await store.transition(running[1], Event.FAIL, expect=JobStatus.RUNNING)
        await agree()
        await store.delete(running[0])
        await store.delete(ids[-1])
        await agree()
        assert truth()[JobStatus.QUEUED] + truth()[JobStatus.RUNNING] > 0
        assert "counts" not in shipped  # every count above was read on the loop
        store._reader = _BusyReader()  # type: ignore[assignment]
        assert await store.counts() == truth()
        assert shipped.count("counts") == 1
        store._reader = None  # close() must not close the fake
    finally:
        scanned.close()
        await store.close()


async def test_a_client_with_many_unfinished_jobs_has_them_read_on_the_stores_thread(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Past LOOP_ROWS_MAX a ComfyUI client's unfinished jobs are read on the store's thread,
    all of them (up to the limit asked); a limit within the bound is answered on the loop."""
    monkeypatch.setattr(sqlite_loop, "LOOP_ROWS_MAX", 2)
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


async def test_a_queued_jobs_position_is_counted_on_the_loop_when_that_is_quick(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A job at hand near either end of the queue is counted on the loop's thread; one whose
    count would take more than LOOP_POSITION_STEPS is counted on the store's thread instead.
    The answers are the same either way."""
    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    shipped = shipped_calls(store)
    try:
        jobs = [(await store.enqueue(new_job(), now=100.0 + i))[0] for i in range(600)]
        now = 1000.0
        exact = {i: await store.queue_position(jobs[i].id, now=now) for i in (0, 1, 300, 598, 599)}
        assert exact == {0: 0, 1: 1, 300: 300, 598: 598, 599: 599}
        assert shipped.count("queue_position") == 5  # no job at hand: shipped
        for i in (0, 1, 598, 599):  # near an end: on the loop
            got = await store.queue_position(jobs[i].id, now=now, limit=1000, job=jobs[i])
            assert got == exact[i]
        assert shipped.count("queue_position") == 5
        got = await store.queue_position(jobs[300].id, now=now, limit=1000, job=jobs[300])
        assert got == exact[300]  # the middle of the queue: 300 ahead, 300 behind
        assert shipped.count("queue_position") == 6  # counting it there passed the budget
        monkeypatch.setattr(sqlite_loop, "LOOP_POSITION_STEPS", 1_000_000)
        got = await store.queue_position(jobs[300].id, now=now, limit=1000, job=jobs[300])
        assert got == 300 and shipped.count("queue_position") == 6
        claimed = await store.claim("w", 30, now=now)
        assert claimed is not None
        assert await store.queue_position(claimed.id, job=claimed) is None  # not queued
        assert await store.queue_position(jobs[599].id, now=now, limit=5, job=jobs[599]) == 5
    finally:
        await store.close()
