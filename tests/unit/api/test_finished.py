"""The finished jobs kept at hand, and the runs' word to the waits on them (no store)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from comfyrun import finished as finished_module
from comfyrun.core.job import Job, JobStatus
from comfyrun.finished import FinishedJobs


def job(job_id: str, status: JobStatus = JobStatus.SUCCEEDED, owner: str | None = None) -> Job:
    return Job(id=job_id, workflow={}, status=status, owner=owner)


def test_finished_jobs_are_kept_for_their_owner_until_forgotten_or_crowded_out(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(finished_module, "FINISHED_KEPT", 2)
    kept = FinishedJobs()
    kept.remember(job("running", JobStatus.RUNNING))  # not finished: not kept
    assert not kept.holds("running")
    kept.remember(job("a", owner="alice"))
    assert kept.kept("a") == job("a", owner="alice")
    assert kept.kept("a", "alice") is not None and kept.kept("a", "bob") is None
    kept.forget("a")
    assert not kept.holds("a")
    for name in ("b", "c", "d"):
        kept.remember(job(name))
    assert [kept.holds(n) for n in ("b", "c", "d")] == [False, True, True]


def test_large_workflows_are_kept_fewer(monkeypatch: Any) -> None:
    """The kept jobs hold at most FINISHED_NODES workflow nodes (a job counts its nodes, at
    least one); the newest is kept however large."""
    monkeypatch.setattr(finished_module, "FINISHED_NODES", 10)

    def sized(job_id: str, nodes: int) -> Job:
        flow = {str(n): {"class_type": "X", "inputs": {}} for n in range(nodes)}
        return Job(id=job_id, workflow=flow, status=JobStatus.SUCCEEDED)

    kept = FinishedJobs()
    for name in ("a", "b", "c"):
        kept.remember(sized(name, 4))
    assert [kept.holds(n) for n in "abc"] == [False, True, True]  # 12 nodes > 10
    kept.remember(sized("c", 4))  # remembered again: counted once
    kept.remember(job("tiny"))  # no nodes: weighs one
    assert [kept.holds(n) for n in ("b", "c", "tiny")] == [True, True, True]
    kept.remember(sized("huge", 50))
    assert kept.holds("huge") and not any(kept.holds(n) for n in ("b", "c", "tiny"))
    kept.forget("huge")
    for name in "defgh":
        kept.remember(job(name))
    assert all(kept.holds(n) for n in "defgh")


async def test_a_wait_ends_on_the_runs_word_or_leaves_it_to_the_store() -> None:
    running = {"j"}
    kept = FinishedJobs(running.__contains__)
    deadline = time.monotonic() + 5
    waiting = asyncio.ensure_future(kept.wait("j", deadline))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    kept.remember(job("j"))  # the run settled it
    assert await asyncio.wait_for(waiting, 1) == job("j")
    # given back: the run is over without a settled job, the wait leaves it to the store
    running.add("k")
    waiting = asyncio.ensure_future(kept.wait("k", deadline))
    await asyncio.sleep(0.01)
    running.discard("k")
    kept.run_over("k")
    assert await asyncio.wait_for(waiting, 1) is None
    # no run here, no worker here, or no time left: None at once
    assert await kept.wait("elsewhere", deadline) is None
    assert await FinishedJobs().wait("j2", deadline) is None
    running.add("late")
    assert await kept.wait("late", time.monotonic()) is None


async def test_taken_returns_when_a_run_here_takes_the_job_up_or_it_is_kept_finished() -> None:
    running: set[str] = set()
    kept = FinishedJobs(running.__contains__)
    running.add("now")
    await asyncio.wait_for(kept.taken("now"), 1)  # held already: at once

    later = asyncio.create_task(kept.taken("later"))
    await asyncio.sleep(0.01)
    kept.run_started("later")  # told, but no run holds it (yet): waits on
    await asyncio.sleep(0.01)
    assert not later.done()
    running.add("later")
    kept.run_started("later")
    await asyncio.wait_for(later, 1)

    ended = asyncio.create_task(kept.taken("ended"))
    await asyncio.sleep(0.01)
    kept.remember(job("ended"))  # settled (by a run here that just ended, say)
    await asyncio.wait_for(ended, 1)
    assert kept._waiting == {}  # no waiter left behind


async def test_a_taken_wait_cancelled_leaves_no_waiter() -> None:
    kept = FinishedJobs(lambda job_id: False)
    waiting = asyncio.create_task(kept.taken("x"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert kept._waiting == {}


async def test_a_job_kept_finished_for_another_owner_is_not_taken_for_this_one() -> None:
    kept = FinishedJobs(lambda job_id: False)
    kept.remember(job("x", owner="alice"))
    bobs = asyncio.create_task(kept.taken("x", "bob"))
    await asyncio.sleep(0.01)
    assert not bobs.done()  # bob's wait goes on: the store tells him there is no such job
    await asyncio.wait_for(kept.taken("x", "alice"), 1)
    bobs.cancel()
    await asyncio.gather(bobs, return_exceptions=True)
