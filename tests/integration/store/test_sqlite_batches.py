"""SQLite: where a batch of store calls runs. The calls made in one turn of the event loop are
one batch; quick ones (ON_LOOP: a job or two by key) run on the loop's own thread and only the
commit, which waits for the disk, on the store's thread; a batch with any other call runs there
whole; calls from another thread's event loop are made on the store's loop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, StoreError
from comfyrun.store.sqlite import SQLiteStore
from comfyrun.store.sqlite_runner import ON_LOOP


class Statements:
    """The statements run on the store's connection, with the thread that ran each."""

    def __init__(self, store: SQLiteStore) -> None:
        self.seen: list[tuple[int, str]] = []
        conn = store._conn
        assert conn is not None
        conn.set_trace_callback(lambda sql: self.seen.append((threading.get_ident(), sql)))

    def threads_of(self, prefix: str) -> set[int]:
        return {thread for thread, sql in self.seen if sql.lstrip().upper().startswith(prefix)}

    def count(self, prefix: str) -> int:
        return sum(1 for _, sql in self.seen if sql.lstrip().upper().startswith(prefix))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_quick_calls_run_on_the_loop_and_commit_on_the_stores_thread(
    store: SQLiteStore,
) -> None:
    statements = Statements(store)
    loop_thread = threading.get_ident()
    job, created = await store.enqueue(new_job())
    assert created
    claimed = await store.claim("w1", lease_s=30)
    assert claimed is not None and claimed.id == job.id
    assert statements.threads_of("INSERT") == {loop_thread}
    assert statements.threads_of("UPDATE") == {loop_thread}
    committing = statements.threads_of("COMMIT")
    assert committing and loop_thread not in committing  # the fsync never holds the loop
    assert store._thread is not None and committing == {store._thread.ident}
    # acknowledged only once committed: another connection sees both
    seen = await store.get(job.id)
    assert seen is not None and seen.status is JobStatus.RUNNING


async def test_calls_of_one_turn_share_one_commit(store: SQLiteStore) -> None:
    statements = Statements(store)
    made = await asyncio.gather(*(store.enqueue(new_job()) for _ in range(20)))
    assert all(created for _, created in made)
    assert len({job.id for job, _ in made}) == 20
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1
    counts = await store.counts(unfinished=True)
    assert counts[JobStatus.QUEUED] == 20


async def test_a_batch_with_a_long_call_runs_on_the_stores_thread_whole(
    store: SQLiteStore,
) -> None:
    assert "list" not in ON_LOOP
    await store.enqueue(new_job())
    statements = Statements(store)
    (job, _), listed = await asyncio.gather(store.enqueue(new_job()), store.list(limit=10))
    assert store._thread is not None
    stores_thread = store._thread.ident
    assert statements.threads_of("INSERT") == {stores_thread}
    assert statements.threads_of("SELECT") == {stores_thread}
    assert statements.threads_of("COMMIT") == {stores_thread}
    assert len(listed.jobs) in (1, 2)  # before or after the enqueue: one transaction each way
    assert await store.get(job.id) is not None


async def test_a_failing_call_fails_alone_in_its_batch(store: SQLiteStore) -> None:
    job, _ = await store.enqueue(new_job())
    statements = Statements(store)
    (other, created), wrong = await asyncio.gather(
        store.enqueue(new_job()),
        store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING),  # it is queued
        return_exceptions=True,
    )
    assert isinstance(wrong, Exception) and created
    assert statements.count("COMMIT") == 1  # one batch, committed
    assert await store.get(other.id) is not None
    unchanged = await store.get(job.id)
    assert unchanged is not None and unchanged.status is JobStatus.QUEUED


async def test_a_lone_calls_write_has_no_savepoint_and_undoes_all_it_wrote_when_it_fails(
    store: SQLiteStore,
) -> None:
    """A batch of one call: its transaction is its savepoint. The enqueue below binds its
    idempotency key, then finds its id taken: the binding must go with the failed call, and
    the store carry on with the next."""
    taken, _ = await store.enqueue(new_job())
    statements = Statements(store)
    with pytest.raises(Conflict):
        await store.enqueue(new_job(id=taken.id, idempotency_key="k"))
    assert statements.count("SAVEPOINT") == 0 and statements.count("ROLLBACK") == 1
    assert statements.count("INSERT INTO IDEMPOTENCY_KEYS") == 1  # it had written
    job, created = await store.enqueue(new_job(idempotency_key="k"))
    assert created and job.id != taken.id  # the key was bound to nothing
    assert statements.count("SAVEPOINT") == 0 and statements.count("COMMIT") == 2
    assert await store.get(job.id) is not None


async def test_a_lone_call_that_failed_having_changed_nothing_keeps_its_transaction(
    store: SQLiteStore,
) -> None:
    """A transition that finds its job moved changed no row: nothing to undo, the transaction
    is not rolled back (nor the lock let go of)."""
    job, _ = await store.enqueue(new_job())
    statements = Statements(store)
    with pytest.raises(Conflict):
        await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    assert statements.count("ROLLBACK") == 0 and statements.count("SAVEPOINT") == 0
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1
    unchanged = await store.get(job.id)
    assert unchanged is not None and unchanged.status is JobStatus.QUEUED


async def test_a_lone_call_that_survives_its_failed_write_keeps_what_it_writes_next(
    store: SQLiteStore,
) -> None:
    """A call that catches its first write's failure and writes again (as a sweep over jobs
    does): the failed write is undone, the next one commits."""
    job, _ = await store.enqueue(new_job())

    async def fails_then_writes(st: SQLiteStore, job_id: str) -> None:
        with contextlib.suppress(Conflict):
            async with st._write() as conn:
                conn.execute("UPDATE jobs SET priority = 5 WHERE id = ?", (job_id,))
                raise Conflict("not this one")
        async with st._write() as conn:
            conn.execute("UPDATE jobs SET max_retries = 7 WHERE id = ?", (job_id,))

    await store._call(fails_then_writes, (job.id,), {}, read=False)
    after = await store.get(job.id)
    assert after is not None and after.priority == 0 and after.max_retries == 7


@pytest.mark.parametrize("failing_first", [False, True])
async def test_in_a_batch_of_several_calls_a_failing_one_undoes_only_its_own_writes(
    store: SQLiteStore, failing_first: bool
) -> None:
    """The batch's first write has no savepoint (its transaction holds nothing yet), each
    later call's has one: either way a failing call's idempotency binding goes, the other's
    stays, and the batch commits once."""
    taken, _ = await store.enqueue(new_job())
    statements = Statements(store)
    good = store.enqueue(new_job(idempotency_key="k"))
    bad = store.enqueue(new_job(id=taken.id, idempotency_key="j"))
    outcomes = await asyncio.gather(
        *((bad, good) if failing_first else (good, bad)), return_exceptions=True
    )
    wrong, (other, created) = outcomes if failing_first else outcomes[::-1]
    assert created and isinstance(wrong, Conflict)
    assert statements.count("BEGIN") == 2 if failing_first else statements.count("BEGIN") == 1
    assert statements.count("SAVEPOINT") == 1 and statements.count("COMMIT") == 1
    # undone: the whole (empty but for it) transaction, begun again; or back to its savepoint
    assert statements.count("ROLLBACK TO" if not failing_first else "ROLLBACK") == 1
    again, created = await store.enqueue(new_job(idempotency_key="j"))
    assert created and again.id != taken.id  # the failed call's binding undone alone
    replay, created = await store.enqueue(new_job(idempotency_key="k"))
    assert not created and replay.id == other.id  # the other call's kept


@pytest.mark.parametrize("kind", ["comfy", "image"])
async def test_a_claim_of_one_types_head_is_one_statement(store: SQLiteStore, kind: str) -> None:
    job, _ = await store.enqueue(new_job(type=kind, workflow={}))
    statements = Statements(store)
    claimed = await store.claim("w", lease_s=30, types=[kind])
    assert claimed is not None and claimed.id == job.id
    # the claim (its triggers traced as it) and its event: no look for the candidate first,
    # no savepoint (the batch's first write)
    assert {sql.split()[0] for _, sql in statements.seen} == {"BEGIN", "UPDATE", "INSERT", "COMMIT"}
    assert statements.count("UPDATE JOBS SET") == statements.count("UPDATE") >= 1


async def test_calls_from_another_threads_loop_are_made_on_the_stores_loop(
    store: SQLiteStore,
) -> None:
    job, _ = await store.enqueue(new_job())

    def elsewhere() -> tuple[bool, str | None]:
        async def calls() -> tuple[bool, str | None]:
            other, created = await store.enqueue(new_job())
            seen = await store.get(job.id)
            return created and (await store.get(other.id)) is not None, seen and seen.id

        return asyncio.run(calls())

    made, seen_id = await asyncio.to_thread(elsewhere)
    assert made and seen_id == job.id
    counts = await store.counts(unfinished=True)
    assert counts[JobStatus.QUEUED] == 2


async def test_calls_waiting_when_the_store_closes_fail(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "q.db"))
    await store.open()
    await store.enqueue(new_job())
    first = asyncio.ensure_future(store.enqueue(new_job()))
    await asyncio.sleep(0)
    await store.close()
    await asyncio.wait_for(asyncio.gather(first, return_exceptions=True), 5)
    assert first.done()


async def test_a_read_that_finds_the_database_locked_is_made_again_on_the_stores_thread(
    store: SQLiteStore,
) -> None:
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    async def get_by_prompt_id(_: SQLiteStore, prompt_id: str) -> str:
        ran_on.append(threading.get_ident())
        if threading.get_ident() == loop_thread:  # as SQLite says it without busy_timeout
            error = StoreError("SQLite read failed: database is locked")
            error.__cause__ = sqlite3.OperationalError("database is locked")
            raise error
        return prompt_id

    assert get_by_prompt_id.__name__ in ON_LOOP
    found = await store._call(get_by_prompt_id, ("p1",), {}, read=True)
    assert found == "p1"
    assert store._thread is not None
    assert ran_on == [loop_thread, store._thread.ident]
    job, _ = await store.enqueue(new_job())  # the store goes on as before
    assert await store.get(job.id) is not None


async def test_many_lives_at_once_with_long_calls_between(store: SQLiteStore) -> None:
    """Batches on the loop and on the store's thread, taking turns, never lose a call: 100 jobs
    enqueued, claimed and ended at once while lists and counts (whole batches on the thread)
    and reads keep coming; each ends once, with every event in order."""

    async def life(n: int) -> str:
        await store.enqueue(new_job(metadata={"n": n}))
        claimed = None
        while claimed is None:  # another life may take this job: any queued one will do
            claimed = await store.claim(f"w{n}", lease_s=30)
        await store.transition(claimed.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        return claimed.id

    async def meanwhile(stop: asyncio.Event) -> int:
        rounds = 0
        while not stop.is_set():
            await asyncio.gather(store.list(limit=5), store.counts(), store.ping())
            rounds += 1
        return rounds

    stop = asyncio.Event()
    others = asyncio.ensure_future(meanwhile(stop))
    ended = await asyncio.wait_for(asyncio.gather(*(life(n) for n in range(100))), 30)
    stop.set()
    assert await asyncio.wait_for(others, 10) > 0
    assert len(set(ended)) == 100
    counts = await store.counts()
    assert counts[JobStatus.SUCCEEDED] == 100 and counts[JobStatus.QUEUED] == 0
    for job_id in ended:
        statuses = [e.data.get("status") for e in await store.events_since(job_id)]
        assert statuses == ["queued", "running", "succeeded"]
