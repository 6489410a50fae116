"""Fleet scheduling on emulated backends: no backend idle while a job it could run waits (a
prompt held behind a long one is taken back and run where a backend freed), priorities hold
across the fleet, and jobs go only to backends that have their models and labels."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import running_emulator, text_to_image_workflow
from tests.support.fleet import Run, Wait, history_runs, idle_while_waiting, machine_stalls

from comfyrun.config import BackendConfig
from comfyrun.core.job import Job, JobStatus

from .conftest import Engine, warm_up

Make = Callable[..., Awaitable[Engine]]

STEP_S = 0.05
#: A gap shorter than this is comfyrun's hand-over (notice, take back, resubmit) on a loaded
#: machine, not a stranded job; a stranded one waits for a whole long job (>= 2 s here).
HANDOVER_S = 1.5


def job_of(steps: int, seed: int, **kw: Any) -> dict[str, Any]:
    return text_to_image_workflow(seed=seed, steps=steps, **kw)


def urls(engine: Engine) -> dict[str, str]:
    return {name: str(emu.url).rstrip("/") for name, emu in engine.emulators.items()}


async def prompts_of(engine: Engine, job_id: str) -> list[str]:
    """The prompts any backend was given for `job_id` (queued, running or finished)."""
    found = []
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls(engine).values():
            history = (await http.get(f"{url}/history")).json()
            for pid, entry in history.items():
                if entry["prompt"][3].get("comfyrun_job_id") == job_id:
                    found.append(pid)
            queue = (await http.get(f"{url}/queue")).json()
            for item in queue["queue_running"] + queue["queue_pending"]:
                if item[3].get("comfyrun_job_id") == job_id:
                    found.append(item[1])
    return found


async def eventually(engine: Engine, job_id: str, predicate: Callable[[Job], bool]) -> Job:
    """The job once `predicate` holds, polled: a placement write appends no event to wait on."""
    async with asyncio.timeout(20):
        while True:
            job = await engine.store.get(job_id)
            if job is not None and predicate(job):
                return job
            await asyncio.sleep(0.01)


def waits(jobs: list[Job], runs: list[Run], backends: frozenset[str]) -> list[Wait]:
    started = {r.prompt_id: r.start for r in runs}
    return [Wait(j.id, j.created_at, started[str(j.prompt_id)], backends) for j in jobs]


@pytest.mark.slow
async def test_a_prompt_held_behind_a_long_job_runs_where_a_backend_frees(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b"), step_time_s=STEP_S)
    long = await engine.submit(job_of(100, 1))  # 5 s
    long_run = await eventually(engine, long.id, lambda j: j.execution_start is not None)
    short = await engine.submit(job_of(50, 2))  # 2.5 s, on the other backend
    short_run = await eventually(engine, short.id, lambda j: j.execution_start is not None)
    assert short_run.backend != long_run.backend
    moved = await engine.submit(job_of(6, 3))
    # both backends busy: held in ComfyUI's queue behind the long job, and shown queued there
    held = await eventually(engine, moved.id, lambda j: j.backend is not None)
    assert held.waiting and held.backend == long_run.backend
    assert [h.job_id for h in engine.pool.held_prompts()] == [moved.id]
    done = await engine.wait(moved.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.backend == short_run.backend  # taken back, run where the short job ended
    long_done = await engine.wait(long.id)
    assert done.finished_at is not None and long_done.finished_at is not None
    assert done.finished_at < long_done.finished_at
    assert len(await prompts_of(engine, moved.id)) == 1  # exactly once on ComfyUI
    assert engine.pool.held_prompts() == []


@pytest.mark.slow
async def test_mixed_job_lengths_leave_no_backend_idle_while_a_job_waits(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b", "c"), step_time_s=STEP_S)
    await warm_up(engine)
    steps = [60, 6, 6, 40, 10, 6, 50, 8, 6, 20, 6, 30]
    async with machine_stalls() as stalls:
        submitted = [await engine.submit(job_of(n, seed)) for seed, n in enumerate(steps)]
        jobs = [await engine.wait(j.id, timeout=60) for j in submitted]
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
    runs = await history_runs(urls(engine))
    assert len(runs) == len(jobs)  # every job ran exactly once
    # spans in which the machine ran none of this process (its emulators included) are no
    # scheduler's idle time
    jobs_waits = waits(jobs, runs, frozenset("abc"))
    report = idle_while_waiting(runs, jobs_waits, "abc", excluding=stalls.machine)
    assert report.longest_s < HANDOVER_S, (report.gaps, stalls)
    for job in jobs:  # honest timings: the wait ends when ComfyUI starts the prompt
        run = next(r for r in runs if r.prompt_id == job.prompt_id)
        assert job.execution_start is not None
        assert abs(job.execution_start - run.start) < HANDOVER_S


async def test_a_high_priority_job_is_the_next_to_start_across_the_fleet(
    make_engine: Make,
) -> None:
    engine = await make_engine(("a", "b"), step_time_s=STEP_S)
    for emu in engine.emulators.values():  # the first jobs run until the test lets them go
        emu.faults.hang = True
    first = [await engine.submit(job_of(6, seed)) for seed in (1, 2)]
    for job in first:
        await eventually(engine, job.id, lambda j: j.execution_start is not None)
    low = [await engine.submit(job_of(6, seed)) for seed in (3, 4)]
    for job in low:  # held in the backends' queues behind the running jobs
        await eventually(engine, job.id, lambda j: j.backend is not None and j.waiting)
    high = await engine.submit(job_of(6, 5), priority=10)
    # the held prompts of lower priority are taken back, the high one held in their place
    held = await eventually(engine, high.id, lambda j: j.backend is not None and j.waiting)
    for job in low:
        await eventually(engine, job.id, lambda j: j.status is JobStatus.QUEUED)
    # the other backend frees first: the high job moves there rather than wait, and only
    # then do the low ones run; the high job's backend is let go once it started
    other = next(name for name in engine.emulators if name != held.backend)
    engine.emulators[other].faults.hang = False
    await eventually(engine, high.id, lambda j: j.execution_start is not None)
    engine.emulators[str(held.backend)].faults.hang = False
    done = {j.id: await engine.wait(j.id, timeout=30) for j in [*first, *low, high]}
    assert all(j.status is JobStatus.SUCCEEDED for j in done.values())
    assert done[high.id].backend == other
    starts = {job_id: job.execution_start or 0.0 for job_id, job in done.items()}
    assert all(starts[high.id] < starts[j.id] for j in low)
    for job in [*low, high]:
        assert len(await prompts_of(engine, job.id)) == 1


SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
SMALL = {"checkpoints": [SD15], "vae": [], "loras": []}
BIG = {"checkpoints": [SD15, SDXL], "vae": [], "loras": []}


async def test_jobs_go_only_to_backends_with_their_models_and_labels(make_engine: Make) -> None:
    engine = await make_engine(
        ("small", "big"),
        per={"small": {"models": SMALL}, "big": {"models": BIG}},
        labels={"small": {"gpu": "3090", "vram_gb": 12}, "big": {"gpu": "4090", "vram_gb": 24}},
    )
    sdxl = [await engine.submit(job_of(1, seed, ckpt_name=SDXL)) for seed in range(3)]
    vram = [
        await engine.submit(
            job_of(1, 10 + seed), options={"requirements": {"vram_gb": {"min": 16}}}
        )
        for seed in range(2)
    ]
    anywhere = [await engine.submit(job_of(1, 20 + seed)) for seed in range(4)]
    nowhere = await engine.submit(job_of(1, 30), options={"requirements": {"gpu": "a100"}})
    for job in [*sdxl, *vram]:
        done = await engine.wait(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.backend == "big", done.error
    for job in anywhere:
        assert (await engine.wait(job.id)).status is JobStatus.SUCCEEDED
    failed = await engine.wait(nowhere.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.code == "no_backend_fits" and "small" in failed.error.message


async def test_a_job_no_backend_can_run_is_refused_at_submission(tmp_path: Path) -> None:
    async with (
        running_emulator(tmp_path / "s", models=SMALL) as small,
        running_emulator(tmp_path / "b", models=BIG) as big,
    ):
        backends = [
            BackendConfig(name="small", url=str(small.url), labels={"gpu": "3090"}),
            BackendConfig(name="big", url=str(big.url), labels={"gpu": "4090", "vram_gb": 24}),
        ]
        settings = memory_settings(tmp_path, backends=backends)
        async with asgi_app(settings) as (_, http, ctx):
            assert await ctx.pool.wait_ready(10.0)
            assert set(await ctx.catalog.ensure()) == {"small", "big"}  # definitions known
            ok = await http.post("/api/v2/jobs", json={"workflow": job_of(1, 1, ckpt_name=SDXL)})
            assert ok.status_code == 201, ok.text  # only "big" has it: accepted
            # SDXL is only on "big", whose labels do not meet the requirement
            body = {"workflow": job_of(1, 2, ckpt_name=SDXL), "requirements": {"gpu": "3090"}}
            refused = await http.post("/api/v2/jobs", json=body)
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "no_backend_fits"
            assert "small: no sd_xl_base_1.0.safetensors" in error["message"]
            assert "big: labels do not meet gpu" in error["message"]
            by_backend = {b["backend"]: b for b in error["details"]["backends"]}
            assert by_backend["small"]["missing_values"][0]["value"] == SDXL
            # ComfyUI's dialect: its own 400 shape
            comfy = await http.post("/prompt", json={"prompt": job_of(1, 3, ckpt_name="nope.ckpt")})
            assert comfy.status_code == 400 and "node_errors" in comfy.json()
            bad = await http.post(
                "/api/v2/jobs", json={"workflow": job_of(1, 4), "requirements": {"gpu": [1]}}
            )
            assert bad.status_code == 422
