"""The dispatcher against in-process fake ComfyUI servers: every failure kind, cancel, priority,
keeping backends busy, progress. (The same scenarios over real HTTP against the emulator live in
tests/integration/dispatch.)"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from typing import Any

import pytest
from tests.support.engine import until, work
from tests.support.store import fail_the_end_once
from tests.unit.dispatch.conftest import FAST

from comfyrun.core.job import JobStatus
from comfyrun.core.placement import BackendState
from comfyrun.core.state import Event
from comfyrun.dispatch import end_commit, reconcile
from comfyrun.errors import StorageError
from comfyrun.outputs import read_all

Make = Any


async def test_a_job_succeeds_with_its_outputs_stored(make_engine: Make) -> None:
    engine = await make_engine()
    workflow = work(0.01, extra={"3": {"class_type": "ShowText", "inputs": {}}})
    job = await engine.submit(workflow, options={"return_base64": True})
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.backend == "a" and done.prompt_id
    image = next(o for o in done.outputs if o.node_id == "2")
    assert image.storage_key == f"{job.id}/2/{image.name}"
    assert image.content_type == "image/png" and image.hash and image.hash.startswith("blake3:")
    stored = await read_all(engine.storage, image.storage_key)
    assert stored == f"png:{done.prompt_id}:2".encode()
    assert image.data_base64 is not None
    text = next(o for o in done.outputs if o.node_id == "3")
    assert text.text == f"text of {done.prompt_id}"
    assert done.expires_at is not None and done.expires_at > (done.finished_at or 0)


async def test_temp_outputs_are_kept_only_on_request(make_engine: Make) -> None:
    engine = await make_engine()
    preview = {"3": {"class_type": "PreviewImage", "inputs": {}}}
    plain = await engine.wait((await engine.submit(work(extra=preview))).id)
    kept = await engine.wait(
        (await engine.submit(work(extra=preview), options={"keep_temp_outputs": True})).id
    )
    assert [o.node_id for o in plain.outputs] == ["2"]
    assert sorted(o.node_id for o in kept.outputs) == ["2", "3"]


async def test_a_rejected_workflow_fails_without_retry(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit({"1": {"class_type": "Invalid", "inputs": {}}}, max_retries=3)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED
    assert done.attempts == 1
    assert done.error is not None and done.error.code == "invalid_workflow"
    assert "1" in done.error.details["node_errors"]


async def test_a_node_error_fails_with_comfyuis_details(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit(work(extra={"3": {"class_type": "Fail"}}), max_retries=2)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED and done.attempts == 1
    error = done.error
    assert error is not None and error.code == "node_execution_error"
    assert (error.node_id, error.class_type, error.message) == ("3", "Fail", "boom")
    assert error.traceback and "RuntimeError" in error.traceback


async def test_out_of_memory_frees_the_backend_and_retries(make_engine: Make) -> None:
    engine = await make_engine()
    engine.servers["a"].oom_left = 1
    job = await engine.submit(
        work(extra={"3": {"class_type": "OOM"}}), max_retries=1, retry_delay_s=0.01
    )
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 2
    assert engine.servers["a"].freed == 1


async def test_a_node_finding_its_disk_full_is_retried(make_engine: Make) -> None:
    """ComfyUI's SaveImage on a full disk raises OSError [Errno 28]: the machine's state, not
    the workflow's fault, so retried within max_retries (a node's own error is final)."""
    engine = await make_engine()
    engine.servers["a"].disk_full_left = 1
    job = await engine.submit(
        work(extra={"3": {"class_type": "DiskFull"}}), max_retries=1, retry_delay_s=0.01
    )
    first = await engine.wait_for(job.id, lambda j: j.error is not None)
    assert first.error is not None and first.error.code == "disk_full"
    assert first.error.message == "[Errno 28] No space left on device"
    done = await engine.wait(job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2), done.error
    # without retries left it fails, saying so
    engine.servers["a"].disk_full_left = 1
    job = await engine.submit(work(extra={"3": {"class_type": "DiskFull"}}))
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED and done.error is not None
    assert (done.error.code, done.error.node_id, done.error.class_type) == (
        "disk_full",
        "3",
        "DiskFull",
    )


@pytest.mark.parametrize("full", [True, False])
async def test_outputs_that_cannot_be_stored_on_a_full_disk_are_retried(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch, full: bool
) -> None:
    """The output storage failing for a full disk is retried within max_retries; failing
    otherwise (its settings, its rights) stays final at once."""
    engine = await make_engine()
    put, failed = engine.storage.put_bytes, []

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            cause = OSError(errno.ENOSPC if full else errno.EACCES, "the disk")
            raise StorageError(f"cannot store: {cause}") from cause
        return await put(*args, **kwargs)

    monkeypatch.setattr(engine.storage, "put_bytes", failing_once)
    job = await engine.submit(work(), max_retries=1, retry_delay_s=0.01)
    done = await engine.wait(job.id)
    assert failed
    if full:
        assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2), done.error
        assert done.outputs
    else:
        assert (done.status, done.attempts) == (JobStatus.FAILED, 1)
        assert done.error is not None and done.error.code == "storage_error"


async def test_a_retry_goes_to_another_backend_as_little_loaded(make_engine: Make) -> None:
    """The job fails on `a` (out of memory) while `b` runs another; when its retry is due
    both are idle, and `a`'s turn in the rotation comes first: the retry runs on `b`."""
    engine = await make_engine(("a", "b"))
    engine.servers["a"].oom_left = 1
    failing = await engine.submit(
        work(extra={"3": {"class_type": "OOM"}}), max_retries=1, retry_delay_s=1.0
    )
    first = await engine.wait_for(failing.id, lambda j: j.backend is not None)
    assert first.backend == "a"
    other = await engine.submit(work())
    assert (await engine.wait(other.id)).backend == "b"
    waiting = await engine.store.get(failing.id)  # both idle now, the retry not due yet
    assert waiting is not None and waiting.status is JobStatus.QUEUED and waiting.attempts == 1
    done = await engine.wait(failing.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2, done.error
    assert done.backend == "b"
    assert [r.prompt_id for r in engine.servers["b"].ran][-1] == done.prompt_id


async def test_a_backend_that_stops_answering_sends_its_job_to_another(make_engine: Make) -> None:
    engine = await make_engine(("a", "b"))
    job = await engine.submit(work(3.0, steps=30), max_retries=1, retry_delay_s=0.01)
    running = await engine.wait_for(job.id, lambda j: j.status is JobStatus.RUNNING)
    first = engine.pool.get(running.backend or "") or _backend_running(engine, job.id)
    other = "b" if first.name == "a" else "a"
    engine.servers[other].ran.clear()
    # make the job short on the next attempt: the fake reads the workflow per run
    engine.servers[first.name].go_down()
    done = await engine.wait(job.id, timeout=30)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.backend == other and done.attempts == 2
    assert first.state is BackendState.UNHEALTHY


async def test_a_job_lost_with_its_backend_is_not_counted_done_there(make_engine: Make) -> None:
    """(GET /api/v2/backends said `jobs_done: 1` of a backend killed mid-job that finished
    nothing: a run counted when it ended, even when its job went back to the queue.)"""
    engine = await make_engine(("a", "b"))
    job = await engine.submit(work(3.0, steps=30), max_retries=1, retry_delay_s=0.01)
    running = await engine.wait_for(job.id, lambda j: j.status is JobStatus.RUNNING)
    first = engine.pool.get(running.backend or "") or _backend_running(engine, job.id)
    other = engine.pool.get("b" if first.name == "a" else "a")
    assert other is not None
    engine.servers[first.name].go_down()
    done = await engine.wait(job.id, timeout=30)
    assert done.status is JobStatus.SUCCEEDED and done.backend == other.name
    await until(lambda: other.jobs_done == 1)
    assert first.jobs_done == 0


async def test_a_prompt_that_could_not_be_sent_does_not_spend_an_attempt(
    make_engine: Make,
) -> None:
    """POST /prompt could not connect: the prompt never reached ComfyUI, so the job goes back
    to the queue at once, its attempt not counted, and runs (a job with no retries too)."""
    engine = await make_engine()
    engine.servers["a"].refuse_posts = 1
    job = await engine.submit(work(), max_retries=0)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 1 and done.error is None
    events = await engine.store.events_since(job.id)
    requeued = [e.data for e in events if e.kind == "status" and e.data["event"] == "requeue"]
    assert len(requeued) == 1
    assert requeued[0]["attempts"] == 0 and requeued[0]["error"]["code"] == "backend_unavailable"


async def test_a_backend_that_never_takes_the_prompt_fails_the_job_as_before(
    make_engine: Make,
) -> None:
    """Once per counted attempt: a backend whose health checks pass but that cannot be sent a
    prompt does not keep the job in the queue for ever."""
    engine = await make_engine()
    engine.servers["a"].refuse_posts = 100
    job = await engine.submit(work(), max_retries=1, retry_delay_s=0.01)
    done = await engine.wait(job.id, timeout=30)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error.code == "backend_lost"
    # two counted attempts, each after one that was not counted
    assert done.attempts == 2 and engine.servers["a"].refuse_posts == 100 - 4


async def test_a_prompt_never_answered_fails_saying_so(make_engine: Make) -> None:
    """(its error read "POST /prompt failed: ", the timeout's text empty)"""
    engine = await make_engine(settings=dataclasses.replace(FAST, submit_timeout_s=0.3))
    engine.servers["a"].hang_posts = 1
    job = await engine.submit(work(), max_retries=0)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED and done.error is not None
    assert done.error.code == "backend_lost"
    assert done.error.message.endswith("POST /prompt failed: no answer within 0.3 s")


async def test_outputs_sent_too_slowly_fail_the_attempt(make_engine: Make) -> None:
    """A backend that sends an output a byte at a time, forever, without a read ever timing
    out, held its job running (and its slot) for ever: the copy has a deadline
    (output_timeout_s), past which the attempt fails as the backend's, and is retried."""
    engine = await make_engine(settings=dataclasses.replace(FAST, output_timeout_s=0.5))
    engine.servers["a"].trickle_views = 1
    job = await engine.submit(work(), max_retries=1, retry_delay_s=0.01)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2, done.error
    events = await engine.store.events_since(job.id)
    (retried,) = [e.data for e in events if e.kind == "status" and e.data["event"] == "retry"]
    assert retried["error"]["code"] == "backend_lost"
    assert "copying the outputs took longer than 0.5 s" in retried["error"]["message"]


async def test_an_output_named_as_a_path_is_shown_by_its_stored_name(make_engine: Make) -> None:
    """A ComfyUI file name is never a path: one a backend gave as "../../x" is shown by the
    last segment of its storage key (clients save outputs by name)."""
    engine = await make_engine()
    saving = {"class_type": "SaveImage", "inputs": {"filename_prefix": "../../x", "images": []}}
    job = await engine.submit(work(extra={"3": saving}))
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    plain, pathlike = done.outputs
    assert plain.name == "out_00001_.png"  # (a plain name is shown as its backend gave it)
    assert pathlike.name == "_.._x_00002_.png" == pathlike.storage_key.rsplit("/", 1)[1]
    assert pathlike.meta["filename"] == "../../x_00002_.png"  # the backend's own reference


def _backend_running(engine: Any, job_id: str) -> Any:
    for backend in engine.pool.backends:
        if job_id in backend.jobs:
            return backend
    raise AssertionError("job not on any backend")


@pytest.mark.parametrize(("committed", "times"), [(False, 1), (True, 1), (False, 12), (True, 12)])
async def test_a_store_failing_a_while_at_the_end_does_not_undo_the_run(
    make_engine: Make,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    committed: bool,
    times: int,
) -> None:
    """The end's write failing once (a PostgreSQL connection dropped: the write lost, or
    committed with its answer lost), or many times in a row (the disk full a while, within
    the job's lease), is written again, or found written: the job succeeds on its first
    attempt, its prompt run once, no error logged. (It was a "run failed" with a traceback,
    and the job went back to the queue for an attempt more; and a store failing longer than
    the fixed retries, ~4 s, left the job running until its lease ran out.)"""
    monkeypatch.setattr(end_commit, "END_RETRY_DELAYS_S", (0.01, 0.01))
    engine = await make_engine()
    failed = fail_the_end_once(engine.store, committed=committed, times=times)
    job = await engine.submit(work(0.01))
    done = await engine.wait(job.id)
    assert failed == [Event.SUCCEED] * times
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)
    assert done.outputs
    assert [r.job_id for r in engine.servers["a"].ran] == [job.id]
    await engine.dispatcher.wait_idle()  # the run over (the store told its end first)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (await engine.store.get(job.id) or job).attempts == 1


async def test_a_store_failing_past_the_lease_leaves_the_job_to_its_lease(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that fails all the while the job's lease allows: the run gives up its end with
    one error line (no traceback, no further write, which would fail too) and leaves the job
    to its lease; once the store is back, the lease runs out and the next attempt (a lost
    lease counts as one) runs it."""
    monkeypatch.setattr(end_commit, "END_RETRY_DELAYS_S", (0.01, 0.05))
    settings = dataclasses.replace(FAST, lease_s=0.5, heartbeat_s=0.1, sweep_interval_s=0.1)
    engine = await make_engine(settings=settings)
    transition = engine.store.transition
    failed = fail_the_end_once(engine.store, committed=False, times=10**6)
    job = await engine.submit(work(0.01), max_retries=1)
    await until(lambda: any("could not be stored" in r.getMessage() for r in caplog.records))
    tries = len(failed)
    assert tries > 5  # written again for the lease's time, not given up after a few tries
    await asyncio.sleep(0.2)
    assert len(failed) == tries  # nothing more written
    held = await engine.store.get(job.id)
    assert held is not None and held.status is JobStatus.RUNNING and held.attempts == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, errors
    engine.store.transition = transition  # the store is back
    done = await engine.wait(job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2)


async def test_a_timeout_interrupts_then_retries_then_fails(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit(
        {"1": {"class_type": "Hang"}}, timeout_s=0.2, max_retries=1, retry_delay_s=0.01
    )
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED
    assert done.attempts == 2
    assert done.error is not None and done.error.code == "timeout"
    assert [r.status for r in engine.servers["a"].ran] == ["interrupted", "interrupted"]
    backend = engine.pool.get("a")
    assert backend is not None and backend.state is not BackendState.UNHEALTHY


async def test_a_backend_that_ignores_the_interrupt_is_taken_out_and_the_job_requeued(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b"))
    engine.servers["a"].stuck = engine.servers["b"].stuck = True
    job = await engine.submit(
        {"1": {"class_type": "Hang"}}, timeout_s=0.2, max_retries=1, retry_delay_s=5
    )
    requeued = await engine.wait_for(
        job.id, lambda j: j.status is JobStatus.QUEUED and j.attempts == 1
    )
    assert requeued.error is not None and requeued.error.code == "timeout"
    stuck = engine.pool.get(requeued.backend or "")
    assert stuck is not None and stuck.state is BackendState.UNHEALTHY
    assert "did not stop" in (stuck.last_error or "")
    # once ComfyUI finishes the stuck prompt, the backend comes back
    engine.servers[stuck.name].stuck = False
    await asyncio.sleep(0)
    await engine.wait_for(job.id, lambda j: j.status is JobStatus.QUEUED)
    await until(lambda: stuck.state in (BackendState.READY, BackendState.BUSY))


async def test_cancel_of_a_queued_job(make_engine: Make) -> None:
    engine = await make_engine(start=False)
    job = await engine.submit(work())
    canceled = await engine.store.transition(job.id, Event.CANCEL, expect=JobStatus.QUEUED)
    assert canceled.status is JobStatus.CANCELED
    await engine.dispatcher.start()
    other = await engine.wait((await engine.submit(work())).id)
    assert other.status is JobStatus.SUCCEEDED
    assert [r.job_id for r in engine.servers["a"].ran] == [other.id]


async def test_cancel_of_a_running_job_interrupts_it(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit(work(10.0, steps=100))
    await engine.wait_for(job.id, lambda j: j.progress is not None and j.progress.step is not None)
    await engine.store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
    done = await engine.wait(job.id, timeout=10)
    assert done.status is JobStatus.CANCELED
    assert engine.servers["a"].ran[0].status == "interrupted"


async def cancel_the_held_one(engine: Any, first_s: float) -> Any:
    """A job (`first_s` long) running on the backend and one held behind it in ComfyUI's queue,
    which is then canceled; the first, still running."""
    first = await engine.submit(work(first_s, steps=10), priority=1)
    second = await engine.submit(work(1.0, steps=10))
    await engine.wait_for(second.id, lambda j: j.status is JobStatus.RUNNING)
    await engine.wait_for(
        first.id, lambda j: j.progress is not None and j.progress.step is not None
    )
    await engine.store.transition(second.id, Event.CANCEL, expect=JobStatus.RUNNING)
    assert (await engine.wait(second.id, timeout=10)).status is JobStatus.CANCELED
    return first


async def test_cancel_of_the_job_waiting_in_comfyuis_queue_deletes_it_there(
    make_engine: Make,
) -> None:
    engine = await make_engine()
    first = await cancel_the_held_one(engine, 1.0)
    assert (await engine.wait(first.id)).status is JobStatus.SUCCEEDED
    assert [r.job_id for r in engine.servers["a"].ran] == [first.id]


async def test_a_cancel_of_the_job_held_in_comfyuis_queue_asks_at_once_whether_it_is_gone(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt deleted from ComfyUI's queue reports nothing: the run asks whether it is gone
    right after the deletion, not at the first poll (none comes here), and the job is
    canceled in a moment while the prompt ahead of it runs on."""
    monkeypatch.setattr(reconcile, "GONE_POLL_S", 3600.0)
    engine = await make_engine(settings=dataclasses.replace(FAST, cancel_grace_s=3600.0))
    first = await cancel_the_held_one(engine, 2.0)
    assert not (await engine.store.get(first.id) or first).terminal  # it runs on
    assert (await engine.wait(first.id)).status is JobStatus.SUCCEEDED
    assert [r.job_id for r in engine.servers["a"].ran] == [first.id]


async def test_priorities_are_respected_on_one_backend(make_engine: Make) -> None:
    engine = await make_engine(start=False)
    jobs = [await engine.submit(work(0.02), priority=p) for p in (1, 5, 3, 9, 0, 7)]
    await engine.dispatcher.start()
    for job in jobs:
        assert (await engine.wait(job.id)).status is JobStatus.SUCCEEDED
    by_priority = [j.id for j in sorted(jobs, key=lambda j: -j.priority)]
    assert [r.job_id for r in engine.servers["a"].ran] == by_priority


async def test_two_backends_are_kept_busy_with_at_most_one_extra_job_each(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b"))
    jobs = [await engine.submit(work(0.05)) for _ in range(16)]
    for job in jobs:
        assert (await engine.wait(job.id)).status is JobStatus.SUCCEEDED
    for server in engine.servers.values():
        assert server.max_pending <= 1
        assert len(server.ran) >= 4
        # while jobs remained, the next one was already waiting in ComfyUI when one ended
        assert sum(1 for r in server.ran[:-2] if r.pending_at_end) >= len(server.ran[:-2]) - 1
    assert sum(len(s.ran) for s in engine.servers.values()) == 16


async def test_progress_snapshots_are_recorded(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit(work(0.6, steps=6))
    done = await engine.wait(job.id)
    progress = [e.data for e in await engine.store.events_since(job.id) if e.kind == "progress"]
    assert len(progress) >= 2
    assert any(p.get("message", "").startswith("Work ") and p.get("steps") == 6 for p in progress)
    assert done.progress is not None and done.progress.value == 1.0


async def test_stop_without_drain_requeues_and_a_restart_follows_the_running_prompt(
    make_engine: Make,
) -> None:
    engine = await make_engine()
    job = await engine.submit(work(1.5, steps=15))
    await engine.wait_for(job.id, lambda j: j.progress is not None and j.progress.step is not None)
    await engine.dispatcher.stop()
    again = await engine.store.get(job.id)
    assert again is not None and again.status is JobStatus.QUEUED
    assert engine.servers["a"].ran[0].status == "running"  # ComfyUI keeps working on it
    await engine.dispatcher.start()
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
    assert [r.status for r in engine.servers["a"].ran] == ["success"]  # run once, not twice
    assert done.prompt_id == engine.servers["a"].ran[0].prompt_id


async def test_a_lost_lease_gives_the_job_up_without_touching_it(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit(work(10.0, steps=100))
    await engine.wait_for(job.id, lambda j: j.progress is not None and j.progress.step is not None)

    async def lost(*args: Any, **kwargs: Any) -> bool:
        return False

    engine.store.renew = lost
    await engine.dispatcher.heartbeat_once()
    await until(lambda: not engine.dispatcher.running_jobs)
    still = await engine.store.get(job.id)
    assert still is not None and still.status is JobStatus.RUNNING  # the sweeper's business now
    # the prompt is left to its next attempt, which adopts it by prompt id
    assert engine.servers["a"].ran[0].status == "running"


async def test_a_retry_follows_the_prompt_an_earlier_attempt_left_running(
    make_engine: Make,
) -> None:
    engine = await make_engine(start=False)
    job = await engine.submit(work(3.0, steps=30), max_retries=1, retry_delay_s=0.01)
    # attempt 1: a worker claims the job, submits its prompt, and dies
    claimed = await engine.store.claim("dead-worker", 0.05)
    assert claimed is not None and claimed.id == job.id
    client = engine.clients[0]
    await client.submit(job.workflow, prompt_id="p-first", extra_data={"comfyrun_job_id": job.id})
    await engine.store.append_event(
        job.id, "log", {"action": "prompt_submitted", "prompt_id": "p-first", "backend": "a"}
    )
    await asyncio.sleep(0.1)
    assert [j.id for j in await engine.store.sweep_expired_leases()] == [job.id]
    # attempt 2 finds the prompt still running on the same backend and follows it
    await engine.dispatcher.start()
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 2 and done.prompt_id == "p-first"
    assert [r.prompt_id for r in engine.servers["a"].ran] == ["p-first"]


async def test_a_retry_with_backoff_is_claimed_when_due_not_at_the_idle_timeout(
    make_engine: Make,
) -> None:
    settings = dataclasses.replace(FAST, idle_wait_s=120.0)
    engine = await make_engine(settings=settings)
    engine.servers["a"].oom_left = 1
    job = await engine.submit(
        work(extra={"3": {"class_type": "OOM"}}), max_retries=1, retry_delay_s=0.2
    )
    done = await engine.wait(job.id, timeout=30)  # far below the 120 s idle timeout
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2


async def test_an_input_that_cannot_be_fetched_fails_the_job_without_retry(
    make_engine: Make,
) -> None:
    engine = await make_engine()
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    job = await engine.submit(
        workflow, inputs=({"name": "x.png", "url": "http://127.0.0.1:9/x.png"},), max_retries=2
    )
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED and done.attempts == 1
    assert done.error is not None and done.error.code == "input_rejected", done.error
    assert engine.servers["a"].ran == []


async def test_each_transition_is_one_info_line_with_action_job_and_backend(
    make_engine: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="comfyrun.dispatch")
    engine = await make_engine()
    job = await engine.submit(work(extra={"3": {"class_type": "Fail"}}))
    await engine.wait(job.id)
    await asyncio.wait_for(engine.dispatcher.wait_idle(), 10)
    ours = [r for r in caplog.records if getattr(r, "job_id", None) == job.id]
    actions = [(r.levelname, getattr(r, "action", None), getattr(r, "backend", None)) for r in ours]
    assert ("INFO", "job_claimed", "a") in actions
    assert ("INFO", "job_fail", "a") in actions


async def test_a_prompt_that_sends_no_events_still_times_out(make_engine: Make) -> None:
    engine = await make_engine()
    engine.servers["a"].silent = True
    job = await engine.submit({"1": {"class_type": "Hang"}}, timeout_s=0.2)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error.code == "timeout"


async def test_stop_with_drain_lets_the_jobs_in_hand_finish_and_claims_no_more(
    make_engine: Make,
) -> None:
    engine = await make_engine()
    running = await engine.submit(work(0.5, steps=5), priority=1)
    await engine.wait_for(running.id, lambda j: j.status is JobStatus.RUNNING)
    await engine.dispatcher.stop(drain=True)
    late = await engine.submit(work())
    done = await engine.store.get(running.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    await asyncio.sleep(0.2)
    still = await engine.store.get(late.id)
    assert still is not None and still.status is JobStatus.QUEUED


async def test_a_job_past_its_start_deadline_fails_without_running(make_engine: Make) -> None:
    engine = await make_engine()
    late = await engine.submit(work(0.01), options={"start_by": 1.0})  # long past
    on_time = await engine.submit(work(0.01), options={"start_by": 4e9})
    late_done = await engine.wait(late.id)
    assert late_done.status is JobStatus.FAILED
    assert late_done.error is not None and late_done.error.code == "queue_timeout"
    assert late_done.prompt_id is None and not late_done.outputs
    assert (await engine.wait(on_time.id)).status is JobStatus.SUCCEEDED
    # only the job on time ever reached a ComfyUI
    assert sum(len(server.history) for server in engine.servers.values()) == 1


async def test_work_that_comes_between_an_empty_claim_and_the_wait_is_not_missed(
    make_engine: Make,
) -> None:
    """The claim loop finds nothing; a job is enqueued before it starts waiting for work. It
    must be claimed at once, not after the idle wait (here 30 s, past the test's patience)."""
    settings = dataclasses.replace(FAST, idle_wait_s=30.0)
    engine = await make_engine(settings=settings, start=False)
    real_claim = engine.store.claim
    raced: list[str] = []

    async def claim_then_enqueue(*args: Any, **kwargs: Any) -> Any:
        job = await real_claim(*args, **kwargs)
        if job is None and not raced:
            late = await engine.submit(work(0.01))  # committed after the claim found nothing
            raced.append(late.id)
        return job

    engine.store.claim = claim_then_enqueue  # type: ignore[method-assign]
    await engine.dispatcher.start()
    await until(lambda: bool(raced))
    done = await engine.wait(raced[0], timeout=10.0)
    assert done.status is JobStatus.SUCCEEDED
