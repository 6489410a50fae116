"""Every store: compare-and-set transitions, the worker fence, progress and outputs."""

from __future__ import annotations

import pytest
from tests.support.store import new_job

from comfyrun.core.job import COMFY, Job, JobError, JobStatus, Output, OutputType, Progress
from comfyrun.core.state import Event
from comfyrun.errors import Conflict, IllegalTransition, NotFound
from comfyrun.store import transition
from comfyrun.store.base import Changes, ClaimNote, JobStore
from comfyrun.store.codec import output_to_dict, progress_to_dict
from comfyrun.store.memory import MemoryStore

T0 = 1_700_000_000.0


async def running(store: JobStore, worker: str = "w1", **kwargs: object) -> Job:
    await store.enqueue(new_job(**kwargs), now=T0)
    job = await store.claim(worker, 30, now=T0)
    assert job is not None
    return job


async def test_succeed_finishes_and_clears_the_lease(store: JobStore) -> None:
    job = await running(store)
    done = await store.transition(
        job.id,
        Event.SUCCEED,
        expect=JobStatus.RUNNING,
        changes=Changes(expires_at=T0 + 3600, backend="b1", prompt_id="p-1"),
        now=T0 + 5,
    )
    assert done.status is JobStatus.SUCCEEDED
    assert done.finished_at == T0 + 5
    assert done.expires_at == T0 + 3600
    assert done.lease_expires_at is None
    assert (done.backend, done.prompt_id) == ("b1", "p-1")
    assert await store.get(job.id) == done
    assert await store.get_by_prompt_id("p-1") == done
    assert await store.get_by_prompt_id("p-2") is None


async def test_fail_records_the_error(store: JobStore) -> None:
    job = await running(store)
    error = JobError(code="node_execution_error", message="boom", node_id="3", details={"x": 1})
    failed = await store.transition(
        job.id, Event.FAIL, expect=JobStatus.RUNNING, changes=Changes(error=error), now=T0 + 1
    )
    assert failed.status is JobStatus.FAILED
    assert failed.error == error
    assert (await store.get(job.id)) == failed


async def test_stale_expectation_conflicts_and_changes_nothing(store: JobStore) -> None:
    job = await running(store)
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 1)
    before = await store.get(job.id)
    events = await store.events_since(job.id)
    with pytest.raises(Conflict) as info:
        await store.transition(job.id, Event.FAIL, expect=JobStatus.RUNNING, now=T0 + 2)
    assert not isinstance(info.value, IllegalTransition)
    assert await store.get(job.id) == before
    assert await store.events_since(job.id) == events


async def test_illegal_event_raises_and_changes_nothing(store: JobStore) -> None:
    queued, _ = await store.enqueue(new_job(), now=T0)
    with pytest.raises(IllegalTransition):
        await store.transition(queued.id, Event.SUCCEED, expect=JobStatus.QUEUED)
    assert await store.get(queued.id) == queued


async def test_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        await store.transition("nope", Event.CANCEL, expect=JobStatus.QUEUED)


async def test_worker_fence(store: JobStore) -> None:
    job = await running(store, "w1")
    with pytest.raises(Conflict):
        await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING, worker_id="w2")
    done = await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING, worker_id="w1")
    assert done.status is JobStatus.SUCCEEDED


async def test_cancel_queued_running_and_finished(store: JobStore) -> None:
    queued, _ = await store.enqueue(new_job(), now=T0)
    canceled = await store.transition(queued.id, Event.CANCEL, expect=JobStatus.QUEUED, now=T0)
    assert canceled.status is JobStatus.CANCELED and canceled.finished_at == T0
    # canceling a finished job is a no-op: same job, no new event
    n = len(await store.events_since(queued.id))
    again = await store.transition(queued.id, Event.CANCEL, expect=JobStatus.CANCELED)
    assert again == canceled
    assert len(await store.events_since(queued.id)) == n

    job = await running(store)
    canceling = await store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
    assert canceling.status is JobStatus.CANCELING
    assert canceling.worker_id == "w1" and canceling.lease_expires_at is not None
    assert await store.renew(job.id, "w1", 30)
    # a failure while canceling ends canceled
    ended = await store.transition(job.id, Event.FAIL, expect=JobStatus.CANCELING)
    assert ended.status is JobStatus.CANCELED


async def test_retry_requeues_with_a_delay(store: JobStore) -> None:
    job = await running(store, max_retries=3)
    back = await store.transition(
        job.id,
        Event.RETRY,
        expect=JobStatus.RUNNING,
        changes=Changes(next_run_at=T0 + 50),
        now=T0 + 1,
    )
    assert back.status is JobStatus.QUEUED
    assert back.next_run_at == T0 + 50
    assert back.worker_id is None and back.lease_expires_at is None
    assert back.attempts == 1
    assert back.finished_at is None


async def test_a_requeue_may_give_its_attempt_back(store: JobStore) -> None:
    """An attempt whose prompt never reached ComfyUI does not count: back in the queue, the
    job has the attempts it had before that claim (and the status event says so)."""
    job = await running(store)
    assert job.attempts == 1
    back = await store.transition(
        job.id,
        Event.REQUEUE,
        expect=JobStatus.RUNNING,
        changes=Changes(uncount_attempt=True, backend="gpu0"),
        now=T0 + 1,
    )
    assert back.status is JobStatus.QUEUED and back.attempts == 0
    assert back.next_run_at == T0 + 1 and back.worker_id is None
    assert await store.get(job.id) == back
    last = (await store.events_since(job.id))[-1]
    assert (last.data["status"], last.data["attempts"]) == ("queued", 0)
    again = await store.claim("w2", 30, now=T0 + 2)
    assert again is not None and again.id == job.id and again.attempts == 1
    # only a requeue gives it back: a job that ends keeps its count
    done = await store.transition(
        job.id,
        Event.FAIL,
        expect=JobStatus.RUNNING,
        changes=Changes(uncount_attempt=True),
        now=T0 + 3,
    )
    assert done.attempts == 1


async def test_status_events_are_logged(store: JobStore) -> None:
    job = await running(store)
    await store.transition(
        job.id,
        Event.FAIL,
        expect=JobStatus.RUNNING,
        changes=Changes(error=JobError(code="x", message="m"), extra={"backend": "b"}),
    )
    events = await store.events_since(job.id)
    statuses = [(e.kind, e.data["status"], e.data["previous"]) for e in events]
    assert statuses == [
        ("status", "queued", None),
        ("status", "running", "queued"),
        ("status", "failed", "running"),
    ]
    last = events[-1].data
    assert last["error"]["code"] == "x" and last["backend"] == "b" and last["event"] == "fail"


async def test_progress_is_stored_and_logged(store: JobStore) -> None:
    job = await running(store)
    progress = Progress(value=0.5, nodes_done=1, nodes_total=2, current_node="3", step=5, steps=10)
    await store.record_progress(job.id, progress)
    stored = await store.get(job.id)
    assert stored is not None and stored.progress == progress
    last = (await store.events_since(job.id))[-1]
    assert last.kind == "progress" and last.data == progress_to_dict(progress)
    with pytest.raises(NotFound):
        await store.record_progress("nope", progress)


async def test_outputs_are_appended_in_order(store: JobStore) -> None:
    job = await running(store)
    first = Output(
        node_id="9",
        name="a.png",
        type=OutputType.IMAGE,
        content_type="image/png",
        size_bytes=10,
        hash="blake3:00",
        meta={"subfolder": "", "type": "output"},
    )
    second = Output(
        node_id="9", name="b.txt", type=OutputType.TEXT, content_type="text/plain", text="hi"
    )
    await store.add_output(job.id, first)
    after = await store.add_output(job.id, second)
    assert after.outputs == (first, second)
    stored = await store.get(job.id)
    assert stored is not None and stored.outputs == (first, second)
    kinds = [(e.kind, e.data) for e in await store.events_since(job.id) if e.kind == "output"]
    assert kinds == [("output", output_to_dict(first)), ("output", output_to_dict(second))]
    with pytest.raises(NotFound):
        await store.add_output("nope", first)


async def test_outputs_survive_a_later_transition(store: JobStore) -> None:
    job = await running(store)
    out = Output(node_id="9", name="a.png", type=OutputType.IMAGE, content_type="image/png")
    await store.add_output(job.id, out)
    done = await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    assert done.outputs == (out,)


async def test_success_after_a_failed_attempt_clears_the_error(store: JobStore) -> None:
    job = await running(store, max_retries=2)
    error = JobError(code="backend_lost", message="gone")
    back = await store.transition(
        job.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(error=error), now=T0
    )
    assert back.error == error  # visible while it waits to run again
    again = await store.claim("w2", 30, now=T0 + 10)
    assert again is not None and again.error == error
    done = await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
    assert done.error is None and (await store.get(job.id)) == done
    logged = [e.data.get("error") for e in await store.events_since(job.id)]
    assert {"code": "backend_lost"}.items() <= (logged[2] or {}).items()


def _image(name: str) -> Output:
    return Output(
        node_id="9",
        name=name,
        type=OutputType.IMAGE,
        content_type="image/png",
        size_bytes=3,
        storage_key=f"k/{name}",
    )


@pytest.mark.parametrize("names", [("a.png",), ("a.png", "b.png"), ("a.png", "b.png", "c.png")])
async def test_outputs_commit_with_the_final_state(store: JobStore, names: tuple[str, ...]) -> None:
    job = await running(store)
    outputs = tuple(_image(name) for name in names)
    done = await store.transition(
        job.id,
        Event.SUCCEED,
        expect=JobStatus.RUNNING,
        changes=Changes(outputs=outputs),
        now=T0 + 1,
        worker_id="w1",
    )
    assert done.status is JobStatus.SUCCEEDED
    assert done.outputs == outputs
    assert await store.get(job.id) == done
    kinds = [
        (e.kind, e.data.get("name"), e.data.get("status")) for e in await store.events_since(job.id)
    ]
    assert kinds[-len(names) - 1 :] == [
        *(("output", name, None) for name in names),
        ("status", None, "succeeded"),
    ]


async def test_outputs_of_the_final_state_follow_those_added_before(store: JobStore) -> None:
    job = await running(store)
    early = _image("early.png")
    await store.add_output(job.id, early)
    done = await store.transition(
        job.id,
        Event.SUCCEED,
        expect=JobStatus.RUNNING,
        changes=Changes(outputs=(_image("last.png"),)),
    )
    assert [o.name for o in done.outputs] == ["early.png", "last.png"]
    assert await store.get(job.id) == done


async def test_a_refused_final_state_commits_none_of_its_outputs(store: JobStore) -> None:
    job = await running(store)
    events = await store.events_since(job.id)
    with pytest.raises(Conflict):
        await store.transition(
            job.id,
            Event.SUCCEED,
            expect=JobStatus.RUNNING,
            changes=Changes(outputs=(_image("a.png"),)),
            now=T0 + 1,
            worker_id="another-worker",
        )
    after = await store.get(job.id)
    assert after is not None and after.outputs == () and after.status is JobStatus.RUNNING
    assert await store.events_since(job.id) == events


@pytest.mark.parametrize("types", [None, (COMFY,), ("comfy", "upscale")])
async def test_a_claim_note_lands_in_the_claims_transaction(
    store: JobStore, types: tuple[str, ...] | None
) -> None:
    await store.enqueue(new_job(), now=T0)
    note = ClaimNote("log", {"action": "prompt_submitted", "prompt_id": "p-9", "attempt": 1})

    job = await store.claim("w1", 30, now=T0, note=note, types=types)
    assert job is not None and job.attempts == 1
    events = await store.events_since(job.id)
    assert [(e.kind, e.data) for e in events[-2:]] == [
        ("status", transition.claim_event(job)),
        ("log", {"action": "prompt_submitted", "prompt_id": "p-9", "attempt": 1}),
    ]
    assert events[-1].id > events[-2].id
    assert await store.claim("w1", 30, now=T0, note=note, types=types) is None
    # a later attempt's claim logs its status event alone
    await store.transition(job.id, Event.REQUEUE, expect=JobStatus.RUNNING, now=T0 + 1)
    again = await store.claim("w2", 30, now=T0 + 2, note=note, types=types)
    assert again is not None and again.attempts == 2 and again.worker_id == "w2"
    last = (await store.events_since(job.id, events[-1].id))[-1]
    assert (last.kind, last.data) == ("status", transition.claim_event(again))
    assert last.data["attempts"] == 2


async def test_a_final_state_may_carry_the_execution_start(store: JobStore) -> None:
    job = await running(store)
    done = await store.transition(
        job.id,
        Event.SUCCEED,
        expect=JobStatus.RUNNING,
        changes=Changes(execution_started_at=T0 + 0.5),
        now=T0 + 1,
    )
    assert done.execution_started_at == T0 + 0.5
    assert await store.get(job.id) == done
    again = await running(store)
    kept = await store.transition(again.id, Event.FAIL, expect=JobStatus.RUNNING, now=T0 + 2)
    assert kept.execution_started_at is None  # nothing given: the column is left as it is


async def test_a_run_s_end_holding_nul_is_stored(store: JobStore) -> None:
    """What a backend produced may hold NUL (a node's text, an error's message): the end is
    stored all the same, a store that can keep no NUL (PostgreSQL) writing U+FFFD for it (it
    failed the run's end there, as if the data were the request's fault)."""
    text = Output(
        node_id="9", name="t", type=OutputType.TEXT, content_type="text/plain", text="a\x00b"
    )
    job = await running(store)
    done = await store.transition(
        job.id, Event.SUCCEED, expect=JobStatus.RUNNING, changes=Changes(outputs=(text,))
    )
    assert done.outputs[0].text in ("a\x00b", "a\ufffdb")
    failing = await running(store, max_retries=0)
    error = JobError(code="node_execution_error", message="bad \x00 text", details={"k\x00": 1})
    failed = await store.transition(
        failing.id, Event.FAIL, expect=JobStatus.RUNNING, changes=Changes(error=error)
    )
    assert failed.error is not None and failed.error.message in ("bad \x00 text", "bad \ufffd text")
    assert (await store.get(failed.id)) == failed


async def test_a_run_s_end_holding_a_lone_surrogate_is_stored(store: JobStore) -> None:
    """Text decoded with surrogateescape (a file name of undecodable bytes) in what a run
    produced: stored (a SQL store writing U+FFFD for it: the standard library wrote the
    surrogate's escape, read back as a string no answer could encode)."""
    job = await running(store, max_retries=0)
    error = JobError(code="handler_error", message="no file caf\udce9.png")
    failed = await store.transition(
        job.id, Event.FAIL, expect=JobStatus.RUNNING, changes=Changes(error=error)
    )
    stored = await store.get(failed.id)
    assert stored is not None and stored.error is not None
    if isinstance(store, MemoryStore):  # (it keeps the objects it is given)
        assert stored.error.message == "no file caf\udce9.png"
    else:
        assert stored.error.message == "no file caf\ufffd.png"
