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

from comfyrun.core.job import Job, JobStatus, Output, OutputType
from comfyrun.core.state import Event
from comfyrun.errors import Conflict
from comfyrun.service import JobService, Submission
from comfyrun.store.memory import MemoryStore


class PrefixFiles:
    """Stored files by key."""

    def __init__(self) -> None:
        self.stored: set[str] = set()

    async def delete(self, key: str) -> None:
        self.stored.discard(key)

    async def delete_prefix(self, prefix: str) -> int:
        gone = {key for key in self.stored if key.startswith(prefix)}
        self.stored -= gone
        return len(gone)


OLD_FILE = "job-1/9/old_00001_.png"
NEW_FILE = "job-1/9/new_00001_.png"


async def failed_with_a_file(store: MemoryStore, files: PrefixFiles, job_id: str) -> Job:
    """Job `job_id` failed, with one output file stored (OLD_FILE)."""
    files.stored.add(OLD_FILE)
    await store.add_output(
        job_id,
        Output(
            node_id="9",
            name="old_00001_.png",
            type=OutputType.IMAGE,
            content_type="image/png",
            storage_key=OLD_FILE,
        ),
    )
    return await failed_job(store, job_id)


def node(store: Any, tmp_path: Path, files: Files | PrefixFiles | None = None) -> JobService:
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
    files = PrefixFiles()
    held = HeldReads(store, "job-1")
    a, b = node(store, tmp_path, files), node(held, tmp_path, files)
    first = (await a.submit(Submission(workflow=tiny_workflow(1), job_id="job-1"))).job
    failed = await failed_with_a_file(store, files, first.id)
    on_b = asyncio.ensure_future(b.run_again(failed))
    await held.read.wait()  # B has read the failed job
    again = (await a.run_again(failed)).job
    assert files.stored == set()
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == again.id
    files.stored.add(NEW_FILE)  # A's run stored its output
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
    assert files.stored == {NEW_FILE}  # B deleted none of A's run's files


async def test_a_job_replaced_on_two_nodes_at_once_is_queued_once(
    store: MemoryStore, tmp_path: Path
) -> None:
    """Two nodes read the failed job, then both replace it: one does, the other is refused;
    the old job's files are gone."""
    files = PrefixFiles()
    held = HeldReads(store, "job-1", held=0)
    a, b = node(held, tmp_path, files), node(held, tmp_path, files)
    first = (await a.submit(Submission(workflow=tiny_workflow(1), job_id="job-1"))).job
    await failed_with_a_file(store, files, first.id)
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
    assert files.stored == set()


@pytest.fixture
async def store() -> Any:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


class RunsAtOnce:
    """`store`, whose new job is run at once, as a job handed straight to an idle backend
    is: its outputs are stored (`files.stored`) as soon as its enqueue has committed."""

    def __init__(self, store: MemoryStore, files: PrefixFiles) -> None:
        self.store, self.files = store, files

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def enqueue(self, *args: Any, **kwargs: Any) -> Any:
        done = await self.store.enqueue(*args, **kwargs)
        self.files.stored.add(NEW_FILE)
        return done

    async def enqueue_counted(self, *args: Any, **kwargs: Any) -> Any:
        done = await self.store.enqueue_counted(*args, **kwargs)
        self.files.stored.add(NEW_FILE)
        return done


async def test_the_new_run_s_outputs_outlive_the_old_job_s(
    store: MemoryStore, tmp_path: Path
) -> None:
    """The old job's files are deleted before the swap: deleted after it, they took the new
    run's with them where it stored its outputs first (a job handed straight to a backend),
    and the job succeeded without them."""
    files = PrefixFiles()
    service = node(RunsAtOnce(store, files), tmp_path, files)
    first = (await service.submit(Submission(workflow=tiny_workflow(1), job_id="job-1"))).job
    failed = await failed_with_a_file(store, files, first.id)
    again = await service.run_again(failed)
    assert again.created and again.job.status is JobStatus.QUEUED
    assert files.stored == {NEW_FILE}
