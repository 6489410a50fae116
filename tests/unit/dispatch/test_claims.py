"""How the dispatcher claims: while claims find jobs, one for each free slot at once (not each
waiting for the last's commit); after a claim that finds nothing, one at a time; a claim in
flight when the dispatcher stops gives its job back to the queue."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from tests.support.engine import until, work
from tests.unit.dispatch.conftest import FAST

from comfyrun.core.job import Job, JobStatus
from comfyrun.dispatch.dispatcher import CLAIMS_AT_ONCE

Make = Any

#: No idle wake-up during a test: the claim loop claims only when work comes or a slot frees
#: (an idle timeout's pass would make a claim more, that finds nothing).
QUIET = dataclasses.replace(FAST, idle_wait_s=60.0)


class Claims:
    """The store's `claim`, counted: calls, the most in flight at once, what each found. Each
    claim takes `delay_s` before the store's (a commit's wait), and once the store's answered,
    waits for `held` when set (a claim made, not yet told)."""

    def __init__(self, engine: Any, delay_s: float = 0.02) -> None:
        self.found: list[str | None] = []
        self.in_flight = 0
        self.most = 0
        self.held: asyncio.Event | None = None
        self.answered = asyncio.Event()
        claim = engine.store.claim

        async def counted(*args: Any, **kwargs: Any) -> Job | None:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await asyncio.sleep(delay_s)
                job: Job | None = await claim(*args, **kwargs)
                self.found.append(job.id if job is not None else None)
                self.answered.set()
                if self.held is not None:
                    await self.held.wait()
                return job
            finally:
                self.in_flight -= 1

        engine.store.claim = counted

    @property
    def calls(self) -> int:
        return len(self.found)


async def submitted(engine: Any, n: int, seconds: float = 0.2) -> list[Job]:
    return [await engine.submit(work(seconds)) for _ in range(n)]


async def test_jobs_waiting_for_free_backends_are_claimed_together(make_engine: Make) -> None:
    engine = await make_engine(("a", "b", "c", "d"), QUIET, start=False)
    claims = Claims(engine)
    jobs = await submitted(engine, 7)
    await engine.dispatcher.start()
    done = [await engine.wait(job.id) for job in jobs]
    assert all(j.status is JobStatus.SUCCEEDED for j in done), [j.error for j in done]
    assert 2 <= claims.most <= CLAIMS_AT_ONCE  # claims overlapped, as many as may (memory)
    # in claim order, and each of the first four on a backend of its own: a claim made beside
    # others (which reserved rooms too) is placed as if they had not been made
    assert [f for f in claims.found if f is not None][:7] == [j.id for j in jobs]
    assert sorted(j.backend or "" for j in done[:4]) == ["a", "b", "c", "d"]


async def test_on_sqlite_more_claims_are_in_flight_their_commit_shared(
    make_engine: Make, tmp_path: Path
) -> None:
    """SQLite commits the claims made meanwhile in one transaction: a fleet with more free
    slots than CLAIMS_AT_ONCE claims for all of them at once (a fleet of short prompts has
    several a backend, core.pipeline); each job still runs once, in claim order."""
    names = tuple("abcdefgh")
    engine = await make_engine(names, QUIET, start=False, store_url=f"sqlite:///{tmp_path}/q.db")
    claims = Claims(engine)
    jobs = await submitted(engine, 16)
    await engine.dispatcher.start()
    done = [await engine.wait(job.id) for job in jobs]
    assert all(j.status is JobStatus.SUCCEEDED and j.attempts == 1 for j in done)
    assert claims.most > CLAIMS_AT_ONCE
    assert [f for f in claims.found if f is not None][:16] == [j.id for j in jobs]


async def test_a_lone_job_costs_one_claim_and_one_that_finds_nothing(make_engine: Make) -> None:
    engine = await make_engine(("a", "b", "c", "d"), QUIET)
    claims = Claims(engine)
    for _ in range(4):
        before = claims.calls
        job = await engine.submit(work(0.05))
        assert (await engine.wait(job.id)).status is JobStatus.SUCCEEDED
        await until(lambda: claims.calls >= before + 2)  # noqa: B023 (awaited here)
        await asyncio.sleep(0.1)  # nothing more comes
        assert claims.found[before:] == [job.id, None]
        assert claims.most == 1


async def test_a_claim_that_finds_nothing_narrows_claiming_to_one(make_engine: Make) -> None:
    engine = await make_engine(("a", "b", "c", "d"), QUIET, start=False)
    claims = Claims(engine)
    jobs = await submitted(engine, 5, seconds=0.3)  # the fifth waits behind four running
    await engine.dispatcher.start()
    for job in jobs:
        await engine.wait(job.id)
    calls, most = claims.calls, claims.most
    assert most >= 2
    claims.most = 0
    later = await submitted(engine, 1, seconds=0.05)
    await engine.wait(later[0].id)
    await asyncio.sleep(0.1)
    assert claims.most == 1  # after the queue ran dry, one claim at a time
    assert claims.calls - calls == 2


async def test_a_claim_in_flight_when_the_dispatcher_stops_puts_its_job_back(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a",), QUIET, start=False)
    claims = Claims(engine)
    claims.held = asyncio.Event()
    job = (await submitted(engine, 1))[0]
    await engine.dispatcher.start()
    await asyncio.wait_for(claims.answered.wait(), 5)  # claimed in the store, not yet told
    assert (await engine.store.get(job.id)).status is JobStatus.RUNNING
    stopping = asyncio.ensure_future(engine.dispatcher.stop())
    await asyncio.sleep(0.05)
    claims.held.set()
    await asyncio.wait_for(stopping, 10)
    back = await engine.store.get(job.id)
    assert back is not None and back.status is JobStatus.QUEUED  # not left running, leased
    assert engine.servers["a"].ran == []


async def test_work_that_comes_while_a_claim_that_finds_nothing_is_in_flight_is_claimed_at_once(
    make_engine: Make,
) -> None:
    """The claim loop passes when new work comes; a pass finds one claim in flight (after a
    claim that found nothing, one at a time) and starts none. That claim, made before the work
    came, then finds nothing: the loop must pass again, not wait for the next wake-up (the
    last jobs of a burst waited for the idle timeout, 5 s, on PostgreSQL)."""
    engine = await make_engine(("a",), QUIET, start=False)
    claims = Claims(engine)
    gate = claims.held = asyncio.Event()
    await engine.dispatcher.start()
    await asyncio.wait_for(claims.answered.wait(), 5)  # the empty queue's claim, not yet told
    assert claims.found == [None]
    claims.held = None  # the claims after it are told at once
    job = (await submitted(engine, 1, seconds=0.05))[0]
    await asyncio.sleep(0.1)
    assert claims.calls == 1  # the loop woke for the job, and found that claim in flight
    gate.set()
    loop = asyncio.get_running_loop()
    told = loop.time()
    assert (await asyncio.wait_for(engine.wait(job.id), 10)).status is JobStatus.SUCCEEDED
    assert loop.time() - told < 2  # not QUIET's idle timeout (60 s)
