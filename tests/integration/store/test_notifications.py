"""Waiters wake across store instances: PostgreSQL through LISTEN/NOTIFY (every API node),
SQLite through its bounded cross-process wait (another connection's commit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.support.store import new_job

from comfyrun.errors import StoreError
from comfyrun.store.factory import open_store
from comfyrun.store.postgres import PostgresStore
from comfyrun.store.sqlite import SQLiteStore

LONG_WAIT_S = 60.0
WOKEN_WITHIN_S = 10.0


async def test_a_second_node_sees_events_and_work(db_url: str) -> None:
    node_a, node_b = open_store(db_url), open_store(db_url)
    await node_a.open()
    await node_b.open()
    try:
        work = asyncio.create_task(node_a.wait_for_work(LONG_WAIT_S))
        await asyncio.sleep(0.1)
        token = node_a.work_token()
        job, _ = await node_b.enqueue(new_job())
        await asyncio.wait_for(work, WOKEN_WITHIN_S)
        # a claim that found nothing before is no longer trusted: the token moved too
        assert node_a.work_token() != token

        last = (await node_a.events_since(job.id))[-1].id
        waiter = asyncio.create_task(node_a.wait_for_event(job.id, last, LONG_WAIT_S))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await node_b.append_event(job.id, "log", {"line": "from b"})
        events = await asyncio.wait_for(waiter, WOKEN_WITHIN_S)
        assert [e.data for e in events] == [{"line": "from b"}]
    finally:
        await node_a.close()
        await node_b.close()


async def test_many_waiters_on_one_job_all_wake(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        job, _ = await store.enqueue(new_job())
        last = (await store.events_since(job.id))[-1].id
        waiters = [
            asyncio.create_task(store.wait_for_event(job.id, last, LONG_WAIT_S)) for _ in range(5)
        ]
        await asyncio.sleep(0.1)
        event = await store.append_event(job.id, "log", {})
        results = await asyncio.wait_for(asyncio.gather(*waiters), WOKEN_WITHIN_S)
        assert all([e.id for e in r] == [event.id] for r in results)
    finally:
        await store.close()


async def test_sqlite_in_memory_database() -> None:
    store = open_store("sqlite:///:memory:")
    assert isinstance(store, SQLiteStore)
    await store.open()
    try:
        job, _ = await store.enqueue(new_job())
        claimed = await store.claim("w", 30)
        assert claimed is not None and claimed.id == job.id
    finally:
        await store.close()


async def test_sqlite_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "missing-dir" / "jobs.db"))
    with pytest.raises(StoreError, match="unable to open"):
        await store.open()


async def test_postgres_unreachable_is_a_store_error() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=1.0)
    with pytest.raises(StoreError):
        await store.open()


async def test_store_not_open_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "x.db"))
    with pytest.raises(StoreError):
        await store.get("x")
