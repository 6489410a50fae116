"""JobService over the in-memory store: submission rules, cancel, delete, wait, events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import memory_settings, tiny_workflow

from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType, Progress
from comfyrun.core.state import Event
from comfyrun.errors import (
    Conflict,
    IdempotencyInFlight,
    IdempotencyKeyReuse,
    InvalidWorkflow,
    NotFound,
    QueueFull,
)
from comfyrun.prompt_checks import validate_prompt
from comfyrun.service import JobService, Submission
from comfyrun.store.base import Changes
from comfyrun.store.memory import MemoryStore

OBJECT_INFO: dict[str, Any] = {
    "EmptyImage": {
        "input": {
            "required": {
                "width": ["INT", {"default": 512, "min": 1, "max": 16384}],
                "height": ["INT", {"default": 512, "min": 1, "max": 16384}],
            }
        },
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "output_node": False,
    },
    "SaveImage": {
        "input": {"required": {"images": ["IMAGE"]}},
        "output": [],
        "output_node": True,
    },
}


class Files:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete(self, key: str) -> None:
        self.deleted.append(key)

    async def delete_prefix(self, prefix: str) -> int:
        self.deleted.append(prefix)
        return 1


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def files() -> Files:
    return Files()


@pytest.fixture
def service(store: MemoryStore, files: Files, tmp_path: Path) -> JobService:
    async def object_info() -> dict[str, Any]:
        return OBJECT_INFO

    return JobService(
        store, memory_settings(tmp_path, queue_max=3), files=files, object_info=object_info
    )


async def test_submit_queues_a_job_with_defaults(service: JobService) -> None:
    sub = await service.submit(Submission(workflow=tiny_workflow(), priority=5))
    assert sub.created and sub.queue_position == 0
    assert sub.job.status is JobStatus.QUEUED and sub.job.priority == 5
    assert sub.job.max_retries == service.settings.default_max_retries


@pytest.mark.parametrize(
    ("workflow", "kind"),
    [
        ({}, "prompt_no_outputs"),  # (as ComfyUI judges it)
        ({"1": {"inputs": {}}}, "invalid_prompt"),
        ({"1": {"class_type": "Nope", "inputs": {}}}, "invalid_prompt"),
        ({"2": {"class_type": "SaveImage", "inputs": {}}}, "prompt_outputs_failed_validation"),
        (
            {"2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}},
            "prompt_outputs_failed_validation",
        ),
        (
            {"1": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1}}},
            "prompt_no_outputs",
        ),
    ],
)
async def test_invalid_workflows_are_refused_with_comfy_shaped_details(
    service: JobService, store: MemoryStore, workflow: dict[str, Any], kind: str
) -> None:
    with pytest.raises(InvalidWorkflow) as err:
        await service.submit(Submission(workflow=workflow))
    assert err.value.details["error"]["type"] == kind
    assert isinstance(err.value.details["node_errors"], dict)
    assert (await store.counts()).get(JobStatus.QUEUED, 0) == 0


def test_missing_input_names_the_node_and_input() -> None:
    with pytest.raises(InvalidWorkflow) as err:
        validate_prompt({"2": {"class_type": "SaveImage", "inputs": {}}}, OBJECT_INFO)
    node = err.value.details["node_errors"]["2"]
    assert node["class_type"] == "SaveImage"
    assert node["errors"][0]["type"] == "required_input_missing"
    assert node["errors"][0]["details"] == "images"


async def test_values_are_checked_as_comfyui_checks_them(service: JobService) -> None:
    workflow = tiny_workflow()
    workflow["1"]["inputs"]["width"] = 0
    with pytest.raises(InvalidWorkflow) as err:
        await service.submit(Submission(workflow=workflow))
    assert err.value.details["error"]["type"] == "prompt_outputs_failed_validation"
    node = err.value.details["node_errors"]["1"]
    assert node["class_type"] == "EmptyImage" and node["dependent_outputs"] == ["2"]
    assert node["errors"][0]["type"] == "value_smaller_than_min"
    assert "width" in node["errors"][0]["details"]


async def test_placeholders_that_inputs_will_replace_are_left_to_the_backend(
    service: JobService,
) -> None:
    workflow = tiny_workflow()
    workflow["1"]["inputs"]["width"] = 0  # pretend an input will rewrite it at dispatch
    sub = await service.submit(Submission(workflow=workflow, inputs=({"name": "x.png"},)))
    assert sub.created


def test_without_object_info_only_the_shape_is_checked() -> None:
    validate_prompt({"1": {"class_type": "Anything", "inputs": {"x": 1}}}, None)


async def test_queue_bound(service: JobService) -> None:
    for i in range(3):
        await service.submit(Submission(workflow=tiny_workflow(i)))
    with pytest.raises(QueueFull) as err:
        await service.submit(Submission(workflow=tiny_workflow(9)))
    assert err.value.retry_after_s == service.settings.queue_full_retry_after_s


async def test_idempotent_replay_and_key_reuse(service: JobService) -> None:
    sub = Submission(workflow=tiny_workflow(), idempotency_key="k", request_hash="h1")
    first = await service.submit(sub)
    again = await service.submit(sub)
    assert again.job.id == first.job.id and not again.created
    other = Submission(workflow=tiny_workflow(1), idempotency_key="k", request_hash="h2")
    with pytest.raises(IdempotencyKeyReuse):
        await service.submit(other)


async def test_concurrent_same_key_is_in_flight(service: JobService, store: MemoryStore) -> None:
    gate = asyncio.Event()
    original = store.enqueue

    async def slow_enqueue(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await original(*args, **kwargs)

    store.enqueue = slow_enqueue  # type: ignore[method-assign]
    sub = Submission(workflow=tiny_workflow(), idempotency_key="same", request_hash="h")
    first = asyncio.create_task(service.submit(sub))
    await asyncio.sleep(0)
    with pytest.raises(IdempotencyInFlight):
        await service.submit(sub)
    gate.set()
    assert (await first).created


async def test_cancel_queued_running_and_finished(service: JobService, store: MemoryStore) -> None:
    queued = (await service.submit(Submission(workflow=tiny_workflow(1)))).job
    assert (await service.cancel(queued.id)).job.status is JobStatus.CANCELED
    assert (await service.cancel(queued.id)).job.status is JobStatus.CANCELED  # idempotent

    running = (await service.submit(Submission(workflow=tiny_workflow(2)))).job
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == running.id
    assert (await service.cancel(running.id)).job.status is JobStatus.CANCELING
    assert (await service.cancel(running.id)).job.status is JobStatus.CANCELING

    with pytest.raises(NotFound):
        await service.cancel("missing")


async def test_delete_only_finished_jobs_and_their_files(
    service: JobService, store: MemoryStore, files: Files
) -> None:
    job = (await service.submit(Submission(workflow=tiny_workflow()))).job
    await store.claim("w", 30)
    with pytest.raises(Conflict):
        await service.delete(job.id)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    await service.delete(job.id)
    assert files.deleted == [f"{job.id}/"]
    with pytest.raises(NotFound):
        await service.get(job.id)


async def test_wait_returns_when_the_job_ends(service: JobService, store: MemoryStore) -> None:
    job = (await service.submit(Submission(workflow=tiny_workflow()))).job
    waiter = asyncio.create_task(service.wait(job.id, 30))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await store.claim("w", 30)
    await store.record_progress(job.id, Progress(value=0.5))
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    view = await asyncio.wait_for(waiter, 10)
    assert view.job.status is JobStatus.SUCCEEDED


async def test_wait_times_out_with_the_current_state(service: JobService) -> None:
    job = (await service.submit(Submission(workflow=tiny_workflow()))).job
    view = await service.wait(job.id, 0.1)
    assert view.job.status is JobStatus.QUEUED


async def _collect(service: JobService, job_id: str, after: int | None) -> list[Any]:
    out = []
    async for ev in service.events(job_id, after_id=after, idle_s=0.2):
        if ev is not None:
            out.append(ev)
    return out


async def test_events_snapshot_then_live_until_terminal(
    service: JobService, store: MemoryStore
) -> None:
    job = (await service.submit(Submission(workflow=tiny_workflow()))).job
    await store.claim("w", 30)
    await store.record_progress(job.id, Progress(value=0.25, message="KSampler 5/20"))
    reader = asyncio.create_task(_collect(service, job.id, None))
    await asyncio.sleep(0.05)
    out = Output(node_id="2", name="a.png", type=OutputType.IMAGE, content_type="image/png")
    await store.add_output(job.id, out)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    events = await asyncio.wait_for(reader, 10)
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["status", "progress"]  # the snapshot
    assert events[0].data["status"] == "running"
    assert events[1].data["value"] == 0.25
    assert "output" in kinds
    assert events[-1].kind == "status" and events[-1].data["status"] == "succeeded"


async def test_events_resume_after_an_id_misses_nothing(
    service: JobService, store: MemoryStore
) -> None:
    job = (await service.submit(Submission(workflow=tiny_workflow()))).job
    await store.claim("w", 30)
    await store.record_progress(job.id, Progress(value=0.5))
    await store.transition(job.id, Event.FAIL, expect=JobStatus.RUNNING, changes=Changes())
    log = await store.events_since(job.id, 0)
    first = log[0].id
    resumed = await _collect(service, job.id, first)
    assert [e.id for e in resumed] == [e.id for e in log[1:]]
    assert resumed[-1].data["status"] == "failed"


async def test_events_of_a_finished_job_end_at_once(
    service: JobService, store: MemoryStore
) -> None:
    job = (await service.submit(Submission(workflow=tiny_workflow()))).job
    await service.cancel(job.id)
    events = await _collect(service, job.id, None)
    assert [(e.kind, e.data["status"]) for e in events] == [("status", "canceled")]


async def test_stats_and_cleanup(service: JobService, store: MemoryStore, files: Files) -> None:
    a = (await service.submit(Submission(workflow=tiny_workflow(1)))).job
    await service.submit(Submission(workflow=tiny_workflow(2)))
    await service.cancel(a.id)
    stats = await service.stats()
    assert stats.counts["queued"] == 1 and stats.counts["canceled"] == 1
    assert stats.queue_depth == 1 and stats.oldest_queued_age_s is not None
    result = await service.cleanup(max_age_hours=0)
    assert result.deleted == 1 and files.deleted == [f"{a.id}/"]
    with pytest.raises(NotFound):
        await service.get(a.id)


async def test_reset_stuck(service: JobService, store: MemoryStore) -> None:
    job = (await service.submit(Submission(workflow=tiny_workflow()))).job
    await store.claim("w", 3600)
    assert await service.reset_stuck(1.0) == []
    service._clock = lambda: 10**10  # far in the future: the job has run for ages
    requeued = await service.reset_stuck(1.0)
    assert [j.id for j in requeued] == [job.id]
    assert (await service.get(job.id)).job.status is JobStatus.QUEUED


async def test_queue_is_counted_once_a_second_far_from_the_bound(
    store: MemoryStore, tmp_path: Path
) -> None:
    calls = 0
    original = store.counts

    async def counting(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(**kwargs)

    store.counts = counting  # type: ignore[method-assign]
    service = JobService(store, memory_settings(tmp_path, queue_max=20))
    for i in range(10):
        await service.submit(Submission(workflow=tiny_workflow(i)))
    assert calls == 1  # 10 of 20: far from the bound
    for i in range(10, 20):
        await service.submit(Submission(workflow=tiny_workflow(i)))
    assert 1 < calls < 10  # counted again only as the bound came near
    with pytest.raises(QueueFull):
        await service.submit(Submission(workflow=tiny_workflow(99)))
    assert (await store.counts())[JobStatus.QUEUED] == 20


async def test_event_stream_of_a_queued_job_follows_its_queue_position(
    service: JobService, store: MemoryStore
) -> None:
    await service.submit(Submission(workflow=tiny_workflow(1)))
    second = (await service.submit(Submission(workflow=tiny_workflow(2)))).job
    stream = service.events(second.id, idle_s=0.2)
    first_event = await anext(stream)
    assert first_event is not None and first_event.data["queue_position"] == 1
    await store.claim("w", 30)  # the job ahead leaves the queue
    moved = None
    for _ in range(50):
        ev = await asyncio.wait_for(anext(stream), 10)
        if ev is not None and ev.kind == "status":
            moved = ev
            break
    assert moved is not None and moved.data == {"status": "queued", "queue_position": 0}
    await stream.aclose()


async def test_following_a_jobs_events_without_positions_does_not_read_the_job(
    service: JobService, store: MemoryStore
) -> None:
    """From a known event on (the ComfyUI socket's follow), with no position to count, a job
    whose events are there is not read: its events say all; an unknown job is still 404."""
    reads: list[str] = []
    real_get = store.get

    async def counting_get(job_id: str) -> Any:
        reads.append(job_id)
        return await real_get(job_id)

    store.get = counting_get  # type: ignore[method-assign]
    job = (await service.submit(Submission(workflow=tiny_workflow(1)))).job
    reads.clear()
    stream = service.events(job.id, after_id=0, idle_s=5, positions=False)
    first = await anext(stream)
    assert first is not None and first.data["status"] == "queued"
    await stream.aclose()
    assert reads == []
    with pytest.raises(NotFound):
        await anext(service.events("nope", after_id=0, positions=False))


async def test_an_event_stream_without_positions_never_counts_the_queue(
    service: JobService, store: MemoryStore
) -> None:
    """ComfyUI's socket has no queue positions: following a queued job for it counts none
    (a count costs what it counts), and the job's events still come."""
    counted = 0
    original = store.queue_position

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal counted
        counted += 1
        return await original(*args, **kwargs)

    store.queue_position = counting  # type: ignore[method-assign]
    await service.submit(Submission(workflow=tiny_workflow(1)))
    second = (await service.submit(Submission(workflow=tiny_workflow(2)))).job
    counted = 0  # the submissions' own answers count theirs
    for after_id in (None, 0):
        stream = service.events(second.id, after_id=after_id, idle_s=0.05, positions=False)
        first_event = await anext(stream)
        if after_id is None:
            assert first_event is not None and first_event.data["queue_position"] is None
        await asyncio.wait_for(anext(stream), 10)  # a keep-alive: no position was polled
        await stream.aclose()
    assert counted == 0
    claimed = await store.claim("w", 30)
    assert claimed is not None and claimed.id != second.id
    assert (await service.get(second.id)).queue_position == 0  # still counted where wanted
    assert counted == 1


async def test_a_wait_on_a_job_claimed_here_meanwhile_waits_for_its_runs_word(
    store: MemoryStore, files: Files, tmp_path: Path
) -> None:
    """A `?wait` begun while the job is queued follows its events in the store; once a run of
    this process holds it (its claim's event wakes the wait), the run's word ends the wait: the
    job it settled, with no terminal event read (here none is ever logged)."""
    running: set[str] = set()

    async def object_info() -> dict[str, Any]:
        return OBJECT_INFO

    service = JobService(
        store,
        memory_settings(tmp_path),
        files=files,
        object_info=object_info,
        runs_here=running.__contains__,
    )
    job = (await service.submit(Submission(workflow=tiny_workflow(1)))).job
    waiting = asyncio.ensure_future(service.wait(job.id, 10))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == job.id
    running.add(job.id)  # its run here, as the dispatcher starts it with the claim
    await asyncio.sleep(0.05)
    assert not waiting.done()
    settled = claimed.evolve(status=JobStatus.SUCCEEDED)  # told, not stored
    service.remember(settled)
    view = await asyncio.wait_for(waiting, 1)
    assert view.job == settled


async def failed_job(store: MemoryStore, job_id: str) -> Job:
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == job_id
    return await store.transition(
        job_id,
        Event.FAIL,
        expect=JobStatus.RUNNING,
        changes=Changes(error=JobError(code="node_execution_error", message="boom")),
    )


async def test_a_finished_job_runs_again_as_it_was_submitted(
    service: JobService, store: MemoryStore
) -> None:
    """`run_again` (RunPod's retry): the same id queued again with its type, params, inputs
    and options, as a new submission, its error and attempts gone."""
    await store.announce_worker("w1", ["comfy", "image"])
    sub = Submission(
        workflow={},
        type="image",
        params={"format": "webp"},
        inputs=({"name": "a.png", "data": "iVBORw0KGgo="},),
        priority=2,
        metadata={"k": "v"},
    )
    first = (await service.submit(sub)).job
    failed = await failed_job(store, first.id)
    again = (await service.run_again(failed)).job
    assert (again.id, again.type, again.params) == (first.id, "image", {"format": "webp"})
    assert (again.inputs, again.priority, again.metadata) == (sub.inputs, 2, {"k": "v"})
    assert again.status is JobStatus.QUEUED and again.attempts == 0 and again.error is None
    assert await store.get(first.id) == again


async def test_a_job_run_again_twice_at_once_runs_again_once(
    service: JobService, store: MemoryStore
) -> None:
    """Two retries of one failed job at once: one queues it again, the other is a Conflict
    (both replaced it, and it ran twice)."""
    first = (await service.submit(Submission(workflow=tiny_workflow(1)))).job
    failed = await failed_job(store, first.id)
    outcomes = await asyncio.gather(
        *(service.run_again(failed) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in outcomes if isinstance(o, BaseException)), outcomes
    queued = await store.get(first.id)
    assert queued is not None and queued.status is JobStatus.QUEUED
    statuses = [e.data.get("status") for e in await store.events_since(first.id)]
    assert statuses.count("queued") == 1  # one enqueue: the job's own, once


async def test_a_job_that_cannot_be_queued_again_is_left_as_it_was(
    service: JobService, store: MemoryStore
) -> None:
    """Checked before the old job is replaced: with the queue full, run_again raises and the
    failed job, its record and its events, stays."""
    first = (await service.submit(Submission(workflow=tiny_workflow(1)))).job
    failed = await failed_job(store, first.id)
    for seed in range(2, 5):  # the queue's bound (3) reached
        await service.submit(Submission(workflow=tiny_workflow(seed)))
    with pytest.raises(QueueFull):
        await service.run_again(failed)
    assert await store.get(first.id) == failed
    assert [e.data.get("status") for e in await store.events_since(first.id)][-1] == "failed"


async def test_a_finished_job_of_the_same_id_is_replaced_only_when_asked_and_finished(
    service: JobService, store: MemoryStore
) -> None:
    first = (await service.submit(Submission(workflow=tiny_workflow(1), job_id="p1"))).job
    again = Submission(workflow=tiny_workflow(2), job_id="p1", replace_finished=True)
    with pytest.raises(Conflict, match="still queued"):  # not finished: not replaced
        await service.submit(again)
    await failed_job(store, first.id)
    with pytest.raises(Conflict, match="already exists"):  # not asked
        await service.submit(Submission(workflow=tiny_workflow(2), job_id="p1"))
    replaced = (await service.submit(again)).job
    assert replaced.id == "p1" and replaced.status is JobStatus.QUEUED
    assert replaced.workflow == tiny_workflow(2)
