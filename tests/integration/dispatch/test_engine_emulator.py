"""The engine end to end over real HTTP and websockets against emulated ComfyUI servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.emulator import image_workflow, text_to_image_workflow

from comfyrun.comfy.client import ComfyClient
from comfyrun.comfy.emulator.faults import NodeFault
from comfyrun.comfy.errors import ComfyHTTPError
from comfyrun.core.job import JobStatus
from comfyrun.core.pipeline import MAX_PIPELINE, Pace
from comfyrun.core.placement import BackendState
from comfyrun.core.state import Event
from comfyrun.outputs import read_all

Make = Any


async def test_success_stores_the_outputs(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit(image_workflow(color=123, prefix="ok"))
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert [o.node_id for o in done.outputs] == ["3"]  # the PreviewImage (temp) is not kept
    output = done.outputs[0]
    assert output.storage_key == f"{job.id}/3/{output.name}"
    assert output.content_type == "image/png" and output.size_bytes
    emulator: Any = engine.emulators["a"]
    on_disk = await asyncio.to_thread(Path(emulator.config.output_dir, output.name).read_bytes)
    assert await read_all(engine.storage, output.storage_key) == on_disk
    assert done.backend == "a" and done.prompt_id


async def test_keep_temp_outputs_keeps_the_preview(make_engine: Make) -> None:
    engine = await make_engine()
    job = await engine.submit(image_workflow(color=7), options={"keep_temp_outputs": True})
    done = await engine.wait(job.id)
    assert sorted(o.node_id for o in done.outputs) == ["3", "4"]
    assert {o.meta["type"] for o in done.outputs} == {"output", "temp"}


async def test_a_workflow_comfyui_rejects_fails_without_retry(make_engine: Make) -> None:
    engine = await make_engine()
    workflow = text_to_image_workflow(ckpt_name="no-such-model.safetensors")
    job = await engine.submit(workflow, max_retries=2)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.FAILED and done.attempts == 1
    assert done.error is not None and done.error.code == "invalid_workflow"
    assert "1" in done.error.details["node_errors"]


async def test_a_node_error_carries_comfyuis_details(make_engine: Make) -> None:
    engine = await make_engine()
    engine.emulators["a"].faults.fail_class_types["ImageInvert"] = NodeFault(
        "ValueError", "bad pixels"
    )
    done = await engine.wait((await engine.submit(image_workflow(color=5), max_retries=2)).id)
    assert done.status is JobStatus.FAILED and done.attempts == 1
    error = done.error
    assert error is not None and error.code == "node_execution_error"
    assert (error.node_id, error.class_type) == ("2", "ImageInvert")
    assert "bad pixels" in error.message
    assert error.details["exception_type"] == "ValueError"


async def test_out_of_memory_frees_memory_then_the_retry_succeeds(make_engine: Make) -> None:
    engine = await make_engine()
    faults = engine.emulators["a"].faults
    faults.fail_class_types["ImageInvert"] = NodeFault.oom()
    engine.on_free = faults.clear  # freeing memory is what makes the retry fit
    job = await engine.submit(image_workflow(color=9), max_retries=1, retry_delay_s=0.05)
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 2
    assert sum(c.freed for c in engine.clients) == 1


async def test_a_backend_that_goes_away_has_its_job_retried_on_another(make_engine: Make) -> None:
    engine = await make_engine(("a", "b"), step_time_s=0.1)
    job = await engine.submit(text_to_image_workflow(steps=30), max_retries=1, retry_delay_s=0.05)
    await engine.wait_for(job.id, lambda j: j.progress is not None and j.progress.step is not None)
    first = next(b for b in engine.pool.backends if job.id in b.jobs)
    await engine.emulators[first.name].stop()
    done = await engine.wait(job.id, timeout=60)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 2 and done.backend != first.name
    assert first.state is BackendState.UNHEALTHY


async def test_a_timeout_interrupts_and_requeues(make_engine: Make) -> None:
    engine = await make_engine()
    emu = engine.emulators["a"]
    emu.faults.hang = True
    interrupt = emu.interrupt

    def interrupt_and_stop_hanging(prompt_id: str | None = None) -> None:
        # the hang ends with the interrupt that frees the first attempt, before the retry can
        # be sent (a test setting it later could lose that race on a loaded machine)
        emu.faults.hang = False
        interrupt(prompt_id)

    emu.interrupt = interrupt_and_stop_hanging  # type: ignore[method-assign]
    job = await engine.submit(
        image_workflow(color=11), timeout_s=0.5, max_retries=1, retry_delay_s=0.05
    )
    requeued = await engine.wait_for(
        job.id, lambda j: j.status is JobStatus.QUEUED and j.attempts == 1
    )
    assert requeued.error is not None and requeued.error.code == "timeout"
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2


async def test_cancel_a_queued_job(make_engine: Make) -> None:
    engine = await make_engine(start=False)
    job = await engine.submit(image_workflow())
    await engine.store.transition(job.id, Event.CANCEL, expect=JobStatus.QUEUED)
    await engine.dispatcher.start()
    later = await engine.wait((await engine.submit(image_workflow(color=1))).id)
    assert later.status is JobStatus.SUCCEEDED
    assert (await engine.store.get(job.id)).status is JobStatus.CANCELED


async def test_cancel_a_running_job(make_engine: Make) -> None:
    engine = await make_engine(step_time_s=0.1)
    job = await engine.submit(text_to_image_workflow(steps=100))
    await engine.wait_for(job.id, lambda j: j.progress is not None and j.progress.step is not None)
    await engine.store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
    done = await engine.wait(job.id, timeout=15)
    assert done.status is JobStatus.CANCELED
    assert done.outputs == ()


async def test_priorities_on_one_backend(make_engine: Make) -> None:
    engine = await make_engine(start=False, step_time_s=0.01)
    jobs = [
        await engine.submit(text_to_image_workflow(seed=p, steps=2), priority=p)
        for p in (2, 8, 5, 0, 9, 4)
    ]
    await engine.dispatcher.start()
    done = [await engine.wait(j.id) for j in jobs]
    assert all(j.status is JobStatus.SUCCEEDED for j in done)
    by_start = [j.priority for j in sorted(done, key=lambda j: j.started_at or 0)]
    assert by_start == sorted(by_start, reverse=True)


async def test_two_backends_kept_busy_with_at_most_one_extra_job_each(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each backend's depth at its floor, the configured 2: core.pipeline raises it while
    # comfyrun's round trip to the next prompt outlasts a prompt's run, which on a loaded
    # machine these 60 ms prompts can (a CI run held 3 on one backend); its own tests are
    # tests/unit/core/test_pipeline.py and the pool's
    monkeypatch.setattr(Pace, "depth", lambda self, floor, cap=MAX_PIPELINE: floor)
    engine = await make_engine(("a", "b"), step_time_s=0.02)
    most: dict[str, int] = {}

    def watch() -> None:
        # prompts in ComfyUI (running or held in its queue); a job whose prompt ComfyUI finished
        # and whose outputs are being collected no longer counts
        for backend in engine.pool.backends:
            most[backend.name] = max(most.get(backend.name, 0), backend.inflight)

    engine.pool.add_listener(watch)
    jobs = [await engine.submit(text_to_image_workflow(seed=i, steps=3)) for i in range(12)]
    done = [await engine.wait(j.id) for j in jobs]
    assert all(j.status is JobStatus.SUCCEEDED for j in done)
    assert most == {"a": 2, "b": 2}
    per_backend = {name: sum(1 for j in done if j.backend == name) for name in ("a", "b")}
    assert min(per_backend.values()) >= 3, per_backend


async def test_progress_snapshots_follow_the_sampler(make_engine: Make) -> None:
    engine = await make_engine(step_time_s=0.05)
    job = await engine.submit(text_to_image_workflow(steps=10))
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED
    snapshots = [e.data for e in await engine.store.events_since(job.id) if e.kind == "progress"]
    sampler = [s for s in snapshots if s.get("current_node_class") == "KSampler" and s.get("steps")]
    assert sampler and sampler[-1]["message"].startswith("KSampler ")
    assert sampler[-1]["steps"] == 10
    values = [s["value"] for s in snapshots]
    assert values == sorted(values)
    assert done.progress is not None and done.progress.value == 1.0


async def test_sampler_previews_become_throttled_preview_events(make_engine: Make) -> None:
    engine = await make_engine(step_time_s=0.06, preview_method="latent2rgb")
    job = await engine.submit(text_to_image_workflow(steps=8))
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED
    previews = [e.data for e in await engine.store.events_since(job.id) if e.kind == "preview"]
    assert 1 <= len(previews) <= 8
    assert previews[-1]["content_type"].startswith("image/")
    assert base64.b64decode(previews[-1]["data_base64"])[:2] == b"\xff\xd8"  # a JPEG


async def test_a_dropped_websocket_mid_job_is_recovered_without_a_retry(make_engine: Make) -> None:
    engine = await make_engine()
    engine.emulators["a"].faults.drop_ws_class_types.add("ImageInvert")
    first = await engine.submit(image_workflow(color=21))
    done = await engine.wait(first.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.attempts == 1 and len(done.outputs) == 1
    engine.emulators["a"].faults.clear()
    after = await engine.wait((await engine.submit(image_workflow(color=22))).id)
    assert after.status is JobStatus.SUCCEEDED and after.backend == "a"


async def test_a_restarted_worker_follows_the_prompt_its_predecessor_left(
    make_engine: Make,
) -> None:
    engine = await make_engine(step_time_s=0.05)
    job = await engine.submit(text_to_image_workflow(steps=30))
    await engine.wait_for(job.id, lambda j: j.progress is not None and j.progress.step is not None)
    await engine.dispatcher.stop()  # the prompt keeps running in ComfyUI
    assert (await engine.store.get(job.id)).status is JobStatus.QUEUED
    await engine.dispatcher.start()
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
    async with httpx.AsyncClient(base_url=str(engine.emulators["a"].url), trust_env=False) as http:
        history = (await http.get("/history")).json()
    assert list(history) == [done.prompt_id]  # ComfyUI ran the workflow once
    assert len(done.outputs) == 1


async def test_an_output_file_gone_from_comfyui_runs_its_prompt_anew_once(
    make_engine: Make,
) -> None:
    """A prompt ComfyUI answers from its cache names the file an identical earlier prompt
    saved; with that file gone from its folder (cleared by hand, or by a cron job), the job
    runs once more with its saving nodes made new to ComfyUI's cache (an input ComfyUI
    ignores), and succeeds with a file saved anew; the backend, which answered, stays in
    service throughout."""
    engine = await make_engine(("a",))
    emulator = engine.emulators["a"]
    graph = image_workflow(color=0x112233)
    first = await engine.wait((await engine.submit(graph)).id)
    assert first.status is JobStatus.SUCCEEDED
    for path in emulator.config.output_dir.rglob("*.png"):
        path.unlink()
    again = await engine.wait((await engine.submit(graph)).id)
    assert again.status is JobStatus.SUCCEEDED and again.attempts == 1, again.error
    saved = emulator.config.output_dir / again.outputs[0].name
    assert saved.is_file()  # saved anew in ComfyUI's folder
    key = again.outputs[0].storage_key
    assert key is not None and await read_all(engine.storage, key)
    prompts = [
        item
        for item in emulator.queue.history.values()
        if item["prompt"][3].get("comfyrun_job_id") == again.id
    ]
    assert len(prompts) == 2
    cached, anew = (p["status"]["messages"][1][1]["nodes"] for p in prompts)
    assert cached == ["1", "2", "3", "4"] and anew == ["1", "2"]  # the saving nodes ran
    assert "comfyrun_recache" in prompts[1]["prompt"][2]["3"]["inputs"]
    [backend] = engine.pool.views()
    assert backend.state is BackendState.READY


async def test_an_output_still_missing_after_the_new_run_fails_its_job_once(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(("a",))

    @contextlib.asynccontextmanager
    async def gone(self: Any, ref: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise ComfyHTTPError("GET /view answered 404", status=404)
        yield None  # (a generator)

    monkeypatch.setattr(ComfyClient, "view", gone)
    job = await engine.wait((await engine.submit(image_workflow(color=1), max_retries=3)).id)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert job.error is not None and job.error.code == "output_missing"
    assert "cache" in job.error.message and job.error.details == {"nodes": ["3", "4"]}
    [backend] = engine.pool.views()
    assert backend.state is BackendState.READY


async def test_a_success_ends_its_job_while_comfyui_still_unloads_its_models(
    make_engine: Make,
) -> None:
    """A ComfyUI started with --disable-smart-memory unloads every model after a prompt's
    `execution_success`, before it writes the prompt's history and sends `executing` null. The
    job succeeds as ComfyUI says so (every output was told by then), not seconds later; its
    backend stays the job's until ComfyUI has finished the prompt, and is free after."""
    unload_s = 3.0
    engine = await make_engine(disable_smart_memory=True, unload_s=unload_s)
    emulator: Any = engine.emulators["a"]
    backend = engine.pool.get("a")
    assert backend is not None
    bound, freed = asyncio.Event(), asyncio.Event()

    def changed() -> None:  # the backend taken by the job, then given back
        if backend.jobs:
            bound.set()
        elif bound.is_set():
            freed.set()

    engine.pool.add_listener(changed)
    job = await engine.submit(text_to_image_workflow(seed=11, prefix="dsm"))
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert [o.node_id for o in done.outputs] == ["7"] and done.prompt_id
    # ComfyUI is still unloading: no history yet, and the backend is still the job's
    assert done.prompt_id not in emulator.queue.history
    assert backend.jobs == {job.id} and not freed.is_set()
    await asyncio.wait_for(freed.wait(), unload_s + 10)
    assert done.prompt_id in emulator.queue.history
    assert backend.executed == 0 and backend.jobs_done == 1


async def test_a_cancel_ends_its_job_while_comfyui_still_unloads_its_models(
    make_engine: Make,
) -> None:
    """So does a cancel: the job is canceled as ComfyUI tells the prompt interrupted, not once
    ComfyUI (--disable-smart-memory) has unloaded its models; the backend is the job's until
    then."""
    engine = await make_engine(step_time_s=0.05, disable_smart_memory=True, unload_s=3.0)
    emulator: Any = engine.emulators["a"]
    backend = engine.pool.get("a")
    assert backend is not None
    job = await engine.submit(text_to_image_workflow(steps=100))
    await engine.wait_for(job.id, lambda j: j.progress is not None and j.progress.step is not None)
    await engine.store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
    done = await engine.wait(job.id, timeout=15)
    assert done.status is JobStatus.CANCELED and done.prompt_id
    assert done.prompt_id not in emulator.queue.history  # still unloading
    assert backend.jobs == {job.id}
