"""Every store: a finished job replaced by a new one of its id (`enqueue(..., replacing=stamp)`:
RunPod's /retry, a ComfyUI prompt_id used again) in one transaction, only while it is as it was
read; of two replacements at once, on one store or on two sharing a database, one wins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.contract.store.test_tenancy import a_key
from tests.support.store import (
    drop_schema,
    new_job,
    new_schema_name,
    pg_dsn,
    require_pg,
    store_of,
    store_url,
)

from comfyrun.core.job import Job, JobStatus
from comfyrun.core.state import Event
from comfyrun.core.tenancy import Quota
from comfyrun.errors import Conflict, QuotaExceeded
from comfyrun.store.base import HandOff, JobStamp, JobStore
from comfyrun.store.factory import open_store

T0 = 1_700_000_000.0
OLD = {"1": {"class_type": "KSampler", "inputs": {"seed": 1}}}
NEW = {"1": {"class_type": "KSampler", "inputs": {"seed": 2}}}
HAND = HandOff("w9", 30.0)


async def finished(store: JobStore, job_id: str = "p-1", **fields: Any) -> Job:
    """A job of `job_id` run once and failed, with a log line among its events."""
    await store.enqueue(new_job(id=job_id, workflow=OLD, **fields), now=T0)
    claimed = await store.claim("w1", 30, now=T0 + 1)
    assert claimed is not None and claimed.id == job_id
    await store.append_event(job_id, "log", {"line": "loading"})
    return await store.transition(job_id, Event.FAIL, expect=JobStatus.RUNNING, now=T0 + 2)


Enqueue = Callable[[JobStore, JobStamp | None], Awaitable[Job]]


async def plain(store: JobStore, stamp: JobStamp | None) -> Job:
    job, created = await store.enqueue(new_job(id="p-1", workflow=NEW), now=T0 + 5, replacing=stamp)
    assert created
    return job


async def counted(store: JobStore, stamp: JobStamp | None) -> Job:
    job, created, position = await store.enqueue_counted(
        new_job(id="p-1", workflow=NEW), now=T0 + 5, replacing=stamp
    )
    assert created and position == 0
    return job


async def claimed(store: JobStore, stamp: JobStamp | None) -> Job:
    job, created = await store.enqueue_claimed(
        new_job(id="p-1", workflow=NEW), HAND, now=T0 + 5, replacing=stamp
    )
    assert created and job.status is JobStatus.RUNNING  # nothing else queued: handed off
    return job


@pytest.mark.parametrize("enqueue", [plain, counted, claimed], ids=lambda f: f.__name__)
async def test_a_finished_job_is_replaced_by_the_new_one_in_one_call(
    store: JobStore, enqueue: Enqueue
) -> None:
    failed = await finished(store)
    job = await enqueue(store, JobStamp.of(failed))
    assert (job.id, job.workflow, job.created_at, job.error) == ("p-1", NEW, T0 + 5, None)
    assert await store.get("p-1") == job
    # the old job's events went with it: the log is the new job's alone
    statuses = [(e.kind, e.data.get("status")) for e in await store.events_since("p-1")]
    expected = [("status", "queued")]
    if job.status is JobStatus.RUNNING:
        expected.append(("status", "running"))
    assert statuses == expected
    counts = await store.counts()
    assert counts.get(JobStatus.FAILED, 0) == 0
    assert counts.get(job.status) == 1


async def test_a_replace_is_refused_while_the_job_is_not_finished(store: JobStore) -> None:
    queued, _ = await store.enqueue(new_job(id="p-1", workflow=OLD), now=T0)
    with pytest.raises(Conflict, match="still queued"):
        await plain(store, JobStamp.of(queued))
    running = await store.claim("w1", 30, now=T0 + 1)
    assert running is not None
    with pytest.raises(Conflict, match="still running"):
        await plain(store, JobStamp.of(running))
    assert await store.get("p-1") == running
    assert [e.data.get("status") for e in await store.events_since("p-1")] == [
        "queued",
        "running",
    ]


async def test_a_replace_is_refused_when_the_job_changed_since_it_was_read(
    store: JobStore,
) -> None:
    failed = await finished(store)
    stamp = JobStamp.of(failed)
    # replaced by another request first: the second, with what it had read, is refused
    first = await plain(store, stamp)
    with pytest.raises(Conflict, match="changed since it was read"):
        await plain(store, stamp)
    assert await store.get("p-1") == first
    assert [e.data.get("status") for e in await store.events_since("p-1")] == ["queued"]
    # the job that replaced it ran and failed too: still not the job that was read
    await store.claim("w1", 30, now=T0 + 6)
    again = await store.transition("p-1", Event.FAIL, expect=JobStatus.RUNNING, now=T0 + 7)
    with pytest.raises(Conflict, match="changed since it was read"):
        await plain(store, stamp)
    assert await store.get("p-1") == again
    # expired meanwhile (its status changed), or deleted: refused, nothing stored
    expiring = await finished(store, "p-2")
    await store.transition("p-2", Event.EXPIRE, expect=JobStatus.FAILED, now=T0 + 8)
    with pytest.raises(Conflict):
        await store.enqueue(new_job(id="p-2"), now=T0 + 9, replacing=JobStamp.of(expiring))
    expired = await store.get("p-2")
    assert expired is not None and expired.status is JobStatus.EXPIRED
    gone = await finished(store, "p-3")
    await store.delete("p-3")
    with pytest.raises(Conflict):
        await store.enqueue(new_job(id="p-3"), now=T0 + 9, replacing=JobStamp.of(gone))
    assert await store.get("p-3") is None


async def test_a_replacement_the_quota_refuses_leaves_the_old_job(store: JobStore) -> None:
    key = await a_key(store, Quota(max_queued=1))
    failed = await finished(store, owner=key.id)
    await store.enqueue(new_job(owner=key.id), now=T0 + 3)  # the key's one queued job
    events = await store.events_since("p-1")
    with pytest.raises(QuotaExceeded):
        await store.enqueue(
            new_job(id="p-1", owner=key.id), now=T0 + 5, replacing=JobStamp.of(failed)
        )
    assert await store.get("p-1") == failed
    assert await store.events_since("p-1") == events


async def test_of_replacements_at_once_one_wins(store: JobStore) -> None:
    failed = await finished(store)
    stamp = JobStamp.of(failed)
    outcomes = await asyncio.gather(
        *(plain(store, stamp) for _ in range(5)), return_exceptions=True
    )
    won = [o for o in outcomes if isinstance(o, Job)]
    assert len(won) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, Job)), outcomes
    assert await store.get("p-1") == won[0]
    assert [e.data.get("status") for e in await store.events_since("p-1")] == ["queued"]


# -- two stores on one database: two API nodes ---------------------------------------------


@asynccontextmanager
async def two_nodes(kind: str, tmp_path: Path) -> AsyncIterator[tuple[JobStore, JobStore]]:
    """Two stores (their own connections, pools, threads) on one database."""
    schema = None
    if kind == "postgres":
        require_pg()
        schema = new_schema_name()
    url = store_url(kind, tmp_path, schema)
    a, b = open_store(url), open_store(url)
    await a.open()
    try:
        await b.open()
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()
        if schema is not None:
            drop_schema(schema)


NODES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize("kind", NODES)
async def test_two_nodes_replacing_one_job_at_once_queue_it_once(kind: str, tmp_path: Path) -> None:
    async with two_nodes(kind, tmp_path) as (a, b):
        for n in range(5):
            job_id = f"p-{n}"
            failed = await finished(a, job_id)
            stamp = JobStamp.of(failed)
            outcomes = await asyncio.gather(
                *(
                    node.enqueue(new_job(id=job_id, workflow=NEW), now=T0 + 5, replacing=stamp)
                    for node in (a, b)
                ),
                return_exceptions=True,
            )
            won = [o for o in outcomes if isinstance(o, tuple)]
            assert len(won) == 1, outcomes
            assert all(isinstance(o, Conflict) for o in outcomes if o not in won), outcomes
            for node in (a, b):
                assert await node.get(job_id) == won[0][0]
                statuses = [e.data.get("status") for e in await node.events_since(job_id)]
                assert statuses == ["queued"]
            await a.transition(job_id, Event.CANCEL, expect=JobStatus.QUEUED, now=T0 + 6)


@pytest.mark.postgres
async def test_two_nodes_replacing_one_job_at_once_on_postgres_both_waiting(
    tmp_path: Path,
) -> None:
    """Both replacements reach the job's row while a third transaction holds it: both wait on
    its lock, and once it is let go, one replaces the job and the other finds the row it read
    gone (no second job, no error but Conflict)."""
    async with two_nodes("postgres", tmp_path) as (a, b):
        failed = await finished(a)
        stamp = JobStamp.of(failed)
        schema = a.schema
        connect = psycopg.AsyncConnection.connect
        async with (
            await connect(pg_dsn()) as holder,
            await connect(pg_dsn(), autocommit=True) as watcher,
        ):
            await holder.execute(f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', ["p-1"])
            racing = [
                asyncio.ensure_future(
                    node.enqueue(new_job(id="p-1", workflow=NEW), now=T0 + 5, replacing=stamp)
                )
                for node in (a, b)
            ]
            try:
                await waiting_on_the_row(watcher, 2)
                assert not any(r.done() for r in racing)
            finally:
                await holder.rollback()  # the row let go: both go on at once
                outcomes = await asyncio.gather(*racing, return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, tuple)]
    assert len(won) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in outcomes if o not in won), outcomes


async def waiting_on_the_row(conn: psycopg.AsyncConnection[Any], n: int) -> None:
    """Until `n` deletes of replaced jobs wait for a row lock (at most 10 s). `conn`: in
    autocommit (a transaction reads pg_stat_activity once, its snapshot kept)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s",
            ["%DELETE FROM jobs%attempts%"],
        )
        row = await cur.fetchone()
        if row is not None and row[0] >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{n} replacements never waited on the job's row")


# -- a failure between the removal and the insert ----------------------------------------


def failing_insert(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store's next inserts of a job row fail (as a full disk or a dropped connection
    would), after the replaced job's removal in the same transaction; the ids tried."""
    tried: list[str] = []
    insert = store._insert_job

    async def failing(conn: Any, row: dict[str, Any]) -> bool:
        if row["id"] == "p-1":
            tried.append(row["id"])
            assert await store._one(conn, "get", {"id": "p-1"}) is None  # (deleted by now)
            raise RuntimeError("the disk is full")
        result: bool = await insert(conn, row)
        return result

    monkeypatch.setattr(store, "_insert_job", failing)
    return tried


SQL = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize("kind", SQL)
@pytest.mark.parametrize("alone", [True, False], ids=["alone", "after-another-write"])
async def test_a_failure_between_the_removal_and_the_insert_leaves_the_old_job(
    kind: str, alone: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal and the insert are one transaction: an insert that fails after the old job
    was deleted rolls the deletion back (SQLite: the batch's transaction begun again when the
    call was its first write, the call's savepoint undone when another write came first in
    the batch, which stays)."""
    async with store_of(kind, tmp_path) as store:
        failed = await finished(store)
        events = await store.events_since("p-1")
        tried = failing_insert(store, monkeypatch)
        replacing = store.enqueue(new_job(id="p-1"), now=T0 + 5, replacing=JobStamp.of(failed))
        if alone:
            outcomes = await asyncio.gather(replacing, return_exceptions=True)
        else:
            other = store.enqueue(new_job(id="other"), now=T0 + 5)
            outcomes = await asyncio.gather(other, replacing, return_exceptions=True)
            assert isinstance(outcomes[0], tuple) and outcomes[0][1]
            assert await store.get("other") == outcomes[0][0]
        assert tried == ["p-1"]
        assert isinstance(outcomes[-1], RuntimeError), outcomes
        assert await store.get("p-1") == failed
        assert await store.events_since("p-1") == events
        assert (await store.counts()).get(JobStatus.FAILED) == 1
        monkeypatch.undo()  # the store works on: the job can be replaced now
        job, created = await store.enqueue(
            new_job(id="p-1", workflow=NEW), now=T0 + 6, replacing=JobStamp.of(failed)
        )
        assert created and await store.get("p-1") == job
