"""A backend comfyrun gave up on that comes back: its prompts of jobs that moved on are stopped
there before it takes new work; a person's prompts and those of jobs still its own are not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from tests.support.emulator import image_workflow, running_emulator
from tests.support.engine import until

from comfyrun.backends import control
from comfyrun.backends.health import HealthSettings
from comfyrun.comfy.client import ComfyClient
from comfyrun.core.job import JobStatus, NewJob
from comfyrun.core.placement import BackendState
from comfyrun.core.state import Event
from comfyrun.dispatch.reconcile import prompt_note
from comfyrun.dispatch.stale_prompts import JOB_ID_KEY, clear_stale_prompts
from comfyrun.store.factory import open_store

Make = Any

#: a frozen backend is found down within about a second
FAST = HealthSettings(interval_s=0.1, timeout_s=0.5, failure_threshold=2, down_interval_s=0.1)


def _of_job(entries: list[Any], job_id: str) -> list[Any]:
    return [e for e in entries if e[3].get(JOB_ID_KEY) == job_id]


async def test_a_frozen_backend_that_comes_back_stops_the_prompts_of_jobs_that_moved(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b"), health=FAST)
    a, b = engine.emulators["a"], engine.emulators["b"]
    pool = engine.pool
    control.drain(pool, pool.get("b"))  # both jobs go to a first
    a.faults.hang = True  # the first prompt stops at its next node until interrupted
    first = await engine.submit(image_workflow(color=1), max_retries=1, retry_delay_s=0.05)
    second = await engine.submit(image_workflow(color=2), max_retries=1, retry_delay_s=0.05)
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        # a person's prompt, from the ComfyUI editor on that machine, behind comfyrun's
        answer = await http.post("/prompt", json={"prompt": image_workflow(color=3)})
        theirs = answer.json()["prompt_id"]
        await until(lambda: [len(q) for q in a.queue.current()] == [1, 2])
        running, pending = a.queue.current()
        [p_first] = [i[1] for i in _of_job(running, first.id)]
        [p_second] = [i[1] for i in _of_job(pending, second.id)]

        a.faults.frozen = True  # mid-prompt: no answer to probes, nothing on its websocket
        for job in (first, second):  # given up on with their backend: back in the queue
            await engine.wait_for(job.id, lambda j: j.status is JobStatus.QUEUED)
        control.resume(pool, pool.get("b"))
        for job in (first, second):
            done = await engine.wait(job.id)
            assert done.status is JobStatus.SUCCEEDED and done.backend == "b", done.error
        assert pool.get("a").is_down

        a.faults.frozen = False
        await until(lambda: p_first in a.queue.history)  # interrupted, not run to its end
        status = a.queue.history[p_first]["status"]
        assert status["status_str"] == "error"
        assert status["messages"][-1][0] == "execution_interrupted"
        running, pending = a.queue.current()
        assert [i[1] for i in running] == [theirs]  # the person's prompt: untouched, it runs
        assert pending == [] and p_second not in a.queue.history  # deleted unstarted
        await until(lambda: pool.get("a").base_state is BackendState.READY)
        assert pool.get("a").stale_prompts_stopped == 2
        a.faults.hang = False
        await until(lambda: theirs in a.queue.history)
        assert a.queue.history[theirs]["status"]["status_str"] == "success"
    # each job ran to its end once: on b
    for job in (first, second):
        assert len(_of_job([e["prompt"] for e in b.queue.history.values()], job.id)) == 1
        assert not [
            e
            for e in _of_job([e["prompt"] for e in a.queue.history.values()], job.id)
            if a.queue.history[e[1]]["status"]["status_str"] == "success"
        ]


async def test_prompts_of_jobs_still_on_the_backend_and_unknown_jobs_are_left(
    tmp_path: Path,
) -> None:
    store = open_store("memory://")
    await store.open()
    async with running_emulator(tmp_path, step_time_s=0.0) as emu:
        emu.faults.hang = True
        client = ComfyClient(emu.url, timeout=5.0, websocket=False)
        await client.start()
        try:
            jobs = {}
            for name in ("moved", "ended", "ours", "ours_queued"):
                jobs[name], _ = await store.enqueue(NewJob(workflow=image_workflow()))
            await store.transition(jobs["ended"].id, Event.CANCEL, expect=JobStatus.QUEUED)
            prompts = {name: f"p-{name}" for name in jobs}
            for name, job in jobs.items():
                await store.append_event(job.id, "log", prompt_note(1, "a", prompts[name]))
            # "moved": a later attempt noted a prompt on another backend
            await store.append_event(jobs["moved"].id, "log", prompt_note(2, "b", "p-moved-2"))
            order = ["ours", "moved", "ended", "ours_queued"]
            for name in order:
                await client.submit(
                    image_workflow(color=len(name)),
                    prompt_id=prompts[name],
                    extra_data={JOB_ID_KEY: jobs[name].id},
                )
            await client.submit(image_workflow(color=9), prompt_id="p-person")
            await client.submit(
                image_workflow(color=8), prompt_id="p-other", extra_data={JOB_ID_KEY: "unknown"}
            )
            await until(lambda: emu.queue.running_ids() == ["p-ours"])

            found = await clear_stale_prompts(client, store, "a", timeout_s=5.0)

            assert [i.prompt_id for i in found.pending] == ["p-moved", "p-ended"]
            assert found.running == ()
            running, pending = emu.queue.current()
            assert [i[1] for i in running] == ["p-ours"]
            # (ComfyUI lists its queue in its heap's order, which depends on when its worker
            # took the running prompt: its frontend sorts it by number, as here)
            in_order = sorted(pending, key=lambda i: i[0])
            assert [i[1] for i in in_order] == ["p-ours_queued", "p-person", "p-other"]

            # the running prompt of a job that moved on is interrupted, by its id
            await store.append_event(jobs["ours"].id, "log", prompt_note(2, "b", "p-ours-2"))
            found = await clear_stale_prompts(client, store, "a", timeout_s=5.0)
            assert [i.prompt_id for i in found.running] == ["p-ours"] and not found.pending
            await until(lambda: "p-ours" in emu.queue.history)
            status = emu.queue.history["p-ours"]["status"]
            assert status["messages"][-1][0] == "execution_interrupted"
        finally:
            await client.close()
            await store.close()
