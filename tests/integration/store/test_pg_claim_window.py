"""PostgreSQL: a claim that chooses among a window of queued jobs (ClaimChoice: model-aware
routing, a full staging set) does not lock that window. Locked (FOR UPDATE SKIP LOCKED), every
other worker's claim meanwhile skipped all of it, found nothing, and waited for the next job's
NOTIFY: a burst's last jobs waited for the idle timeout (5 s). The one chosen is taken only if
it is still queued, and a claim whose pick another claimer took first looks again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import psycopg
import pytest
from tests.integration.store.test_pg_one_statement import stores
from tests.support.store import new_job, pg_dsn

from comfyrun.core.job import COMFY, Job, JobStatus
from comfyrun.store.base import ClaimChoice
from comfyrun.store.pgstatements import Q
from comfyrun.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

T0 = 1_700_000_000.0


@asynccontextmanager
async def transaction(store: PostgresStore) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """A connection of another claimer, in a transaction left open until the block ends."""
    conn = await psycopg.AsyncConnection.connect(pg_dsn(), options=f"-c search_path={store.schema}")
    try:
        async with conn.transaction():
            yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize("query", ["claim_window", "claim_window_comfy"])
async def test_a_window_being_chosen_from_hides_no_job_from_another_claim(
    query: str,
) -> None:
    async with stores(2) as (one, other):
        jobs = [(await one.enqueue(new_job(), now=T0 + i))[0] for i in range(3)]
        async with transaction(one) as conn:
            cur = await conn.execute(Q[query], {"now": T0 + 10, "window": 32})
            assert len(await cur.fetchall()) == 3  # the window, read inside an open transaction
            claimed = await asyncio.wait_for(other.claim("w2", 30, now=T0 + 10), 5)
            assert claimed is not None and claimed.id == jobs[0].id
            typed = await asyncio.wait_for(other.claim("w2", 30, now=T0 + 10, types=[COMFY]), 5)
            assert typed is not None and typed.id == jobs[1].id


async def test_a_claim_whose_pick_another_claimer_took_first_takes_another() -> None:
    async with stores(1) as (store,):
        jobs = [(await store.enqueue(new_job(), now=T0 + i))[0] for i in range(3)]
        seen: list[list[str]] = []

        def first(candidates: Sequence[Job]) -> int:
            seen.append([c.id for c in candidates])
            return 0

        async with transaction(store) as conn:  # another claimer holds the head...
            await conn.execute(b"SELECT id FROM jobs WHERE id = %s FOR UPDATE", (jobs[0].id,))
            claim = asyncio.ensure_future(
                store.claim("w1", 30, now=T0 + 10, choice=ClaimChoice(window=8, pick=first))
            )
            await asyncio.sleep(0.3)
            assert not claim.done()  # ...and this claim, having picked it, waits for it
            await conn.execute(b"UPDATE jobs SET status = 'running' WHERE id = %s", (jobs[0].id,))
        job = await asyncio.wait_for(claim, 5)  # taken by the other: this one looks again
        assert job is not None and job.id == jobs[1].id and job.status is JobStatus.RUNNING
        assert seen == [[j.id for j in jobs], [jobs[1].id, jobs[2].id]]
