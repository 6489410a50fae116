"""JobService replacing a finished job with a new one of its id (RunPod's /retry, a ComfyUI
prompt_id used again) when two API nodes share one store: each node a service of its own over
the store, as two processes over one database are (their in-process state apart)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import memory_settings, tiny_workflow
from tests.unit.api.test_service import OBJECT_INFO, Files, failed_job

from comfyrun.core.job import Job, JobStatus
from comfyrun.core.state import Event
from comfyrun.errors import Conflict
from comfyrun.service import JobService, Submission
from comfyrun.store.memory import MemoryStore


def node(store: Any, tmp_path: Path, files: Files | None = None) -> JobService:
    """An API node's service over `store`."""

    async def object_info() -> dict[str, Any]:
        return OBJECT_INFO

    return JobService(store, memory_settings(tmp_path), files=files, object_info=object_info)


class HeldReads:
    """`store`, whose next `held` reads of job `job_id` wait until let go (`read`: all of
    them made)."""

    def __init__(self, store: MemoryStore, job_id: str, held: int = 1) -> None:
        self.store, self.job_id, self.held = store, job_id, held
        self.read, self.go_on = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get(self, job_id: str) -> Job | None:
        found = await self.store.get(job_id)
        if job_id == self.job_id and self.held > 0:
            self.held -= 1
            if not self.held:
                self.read.set()
            await self.go_on.wait()
        return found


async def test_a_job_replaced_on_one_node_is_never_missing_on_another(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While node A replaces a failed job, a read of it on node B finds the failed job, then
    the new one: never none (B read 404s between A's delete and A's insert, and B knew
    nothing of A's replacement to wait for)."""
    a, b = node(store, tmp_path), node(store, tmp_path)
    first = (await a.submit(Submission(workflow=tiny_workflow(1)))).job
    failed = await failed_job(store, first.id)
    reached, go_on = asyncio.Event(), asyncio.Event()
    enqueue = store.enqueue_counted

    async def held_enqueue(*args: Any, **kwargs: Any) -> Any:
        reached.set()  # A has read the job and checked the submission: its write is next
        await go_on.wait()
        return await enqueue(*args, **kwargs)

    monkeypatch.setattr(store, "enqueue_counted", held_enqueue)
    retrying = asyncio.ensure_future(a.run_again(failed))
    await reached.wait()
    for reader in (a, b):
        assert await reader.job(first.id) == failed
    go_on.set()
    again = (await retrying).job
    assert again.status is JobStatus.QUEUED
    assert await a.job(first.id) == again  # (A forgot what it kept of the failed job)
    # B may answer what it kept of the failed job a while yet (FINISHED_TTL_S), not nothing
    assert await b.job(first.id) in (failed, again)


async def test_a_job_run_again_on_two_nodes_at_once_runs_again_once(
    store: MemoryStore, tmp_path: Path
) -> None:
    """Node B reads the failed job to replace it; node A replaces it first, and its new run
    fails too before B goes on. B is refused (Conflict): it replaced A's finished job in turn
    (it was finished, as the job B had read was), and the job ran a third time."""
    files = Files()
    held = HeldReads(store, "job-1")
    a, b = node(store, tmp_path, files), node(held, tmp_path, files)
    first = (await a.submit(Submission(workflow=tiny_workflow(1), job_id="job-1"))).job
    failed = await failed_job(store, first.id)
    on_b = asyncio.ensure_future(b.run_again(failed))
    await held.read.wait()  # B has read the failed job
    again = (await a.run_again(failed)).job
    assert files.deleted == ["job-1/"]
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == again.id
    ended = await store.transition(again.id, Event.FAIL, expect=JobStatus.RUNNING)
    held.go_on.set()
    with pytest.raises(Conflict):
        await on_b
    assert await store.get("job-1") == ended
    assert [e.data.get("status") for e in await store.events_since("job-1")] == [
        "queued",
        "running",
        "failed",
    ]
    assert files.deleted == ["job-1/"]  # B deleted nothing: A's run's files stay


async def test_a_job_replaced_on_two_nodes_at_once_is_queued_once(
    store: MemoryStore, tmp_path: Path
) -> None:
    """Two nodes read the failed job, then both replace it: one does, the other is refused,
    and only the one that replaced it deletes the old job's files."""
    files = Files()
    held = HeldReads(store, "job-1", held=0)
    a, b = node(held, tmp_path, files), node(held, tmp_path, files)
    first = (await a.submit(Submission(workflow=tiny_workflow(1), job_id="job-1"))).job
    await failed_job(store, first.id)
    held.held = 2  # the next two reads of it wait
    again = Submission(workflow=tiny_workflow(2), job_id="job-1", replace_finished=True)
    both = [asyncio.ensure_future(n.submit(again)) for n in (a, b)]
    await held.read.wait()  # both have read the failed job
    held.go_on.set()
    outcomes = await asyncio.gather(*both, return_exceptions=True)
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(won) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in outcomes if o not in won), outcomes
    assert await store.get("job-1") == won[0].job
    assert [e.data.get("status") for e in await store.events_since("job-1")] == ["queued"]
    assert files.deleted == ["job-1/"]


@pytest.fixture
async def store() -> Any:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()
