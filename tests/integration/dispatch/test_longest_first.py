"""Longest first on a fleet: 4 emulated backends, jobs of mixed lengths all waiting. The queue
hands them out longest first (core.queue_order), no backend sits idle while a job waits, and
the makespan is within 5 % of a greedy longest-first (LPT) schedule of the same job lengths."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

import pytest
from tests.support.emulator import text_to_image_workflow
from tests.support.fleet import (
    Wait,
    greedy_makespan,
    history_runs,
    idle_while_waiting,
    machine_stalls,
)

from comfyrun.core.job import JobStatus
from comfyrun.core.queue_order import QueueOrder, estimate_cost, head_start

from .conftest import Engine, warm_up

Make = Callable[..., Awaitable[Engine]]

STEP_S = 0.05
#: A gap shorter than this is comfyrun's hand-over on a loaded machine (notice a backend
#: freed, take a held prompt back, submit it: 0.1-0.2 s here with the emulators in-process); a
#: job stranded behind another would wait for the rest of a whole job (0.6 s to 4.8 s here).
HANDOVER_S = 0.4
#: Sampler steps: many short jobs, a few long ones (0.6 s .. 4.8 s at STEP_S).
MIX = (12, 12, 12, 16, 16, 16, 24, 32, 64, 96)


@pytest.mark.slow
async def test_a_fleet_runs_waiting_jobs_longest_first_near_the_lpt_makespan(
    make_engine: Make,
) -> None:
    backends = ("a", "b", "c", "d")
    engine = await make_engine(backends, step_time_s=STEP_S)
    await warm_up(engine)
    await engine.dispatcher.stop()  # the jobs below all wait before it claims any
    steps = list(MIX) * 2
    random.Random(7).shuffle(steps)
    submitted = []
    for seed, n in enumerate(steps):
        workflow = text_to_image_workflow(seed=seed, steps=n)
        ahead = head_start(estimate_cost(workflow), QueueOrder.LONGEST_FIRST, 60.0)
        submitted.append(await engine.submit(workflow, head_start_s=ahead))
    async with machine_stalls() as stalls:
        await engine.dispatcher.start()
        t0 = time.time()
        at_start = [(v.name, v.state.value, v.inflight) for v in engine.pool.views()]
        jobs = [await engine.wait(j.id, timeout=60) for j in submitted]
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs]
    runs = await history_runs(
        {name: str(emu.url).rstrip("/") for name, emu in engine.emulators.items()}
    )
    assert len(runs) == len(jobs)  # each job ran exactly once
    by_prompt = {r.prompt_id: r for r in runs}
    steps_of = dict(zip((j.id for j in submitted), steps, strict=True))

    # claimed longest first (started_at: this attempt's claim)
    claimed = sorted(jobs, key=lambda j: j.started_at or 0.0)
    assert [steps_of[j.id] for j in claimed] == sorted(steps, reverse=True)

    # no backend idle while a job waited (beyond the hand-over), from the dispatcher's start
    waits = [Wait(j.id, t0, by_prompt[str(j.prompt_id)].start, frozenset(backends)) for j in jobs]
    # less the spans in which the machine ran none of this process (its emulators included)
    report = idle_while_waiting(runs, waits, backends, excluding=stalls.machine)
    lengths = [r.end - r.start for r in runs]
    makespan = max(r.end for r in runs) - t0
    lpt = greedy_makespan(lengths, len(backends), longest_first=True)
    print(f"makespan {makespan:.3f} s, LPT {lpt:.3f} s, idle {report.total_s:.3f} s")
    first_claim = min(j.started_at or 0.0 for j in jobs) - t0
    first_start = min(r.start for r in runs) - t0
    assert report.longest_s < HANDOVER_S, (report.gaps, stalls, at_start, first_claim, first_start)
    assert makespan <= 1.05 * lpt, (makespan, lpt)
