"""The queue_order / queue_aging_s settings: the service gives each job its head start from the
workflow's estimated cost, so the store claims waiting jobs longest first (or FIFO)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.support.api import memory_settings
from tests.support.emulator import text_to_image_workflow

from comfyrun.config import Settings
from comfyrun.core.queue_order import QueueOrder, estimate_cost, head_start
from comfyrun.service import JobService, Submission
from comfyrun.store.memory import MemoryStore

T0 = 1_700_000_000.0


def test_the_default_is_longest_first_and_fifo_can_be_chosen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    default = memory_settings(tmp_path)
    assert default.queue_order is QueueOrder.LONGEST_FIRST and default.queue_aging_s == 60.0
    monkeypatch.setenv("COMFYRUN_QUEUE_ORDER", "fifo")
    monkeypatch.setenv("COMFYRUN_QUEUE_AGING_S", "5")
    chosen = Settings()
    assert chosen.queue_order is QueueOrder.FIFO and chosen.queue_aging_s == 5.0
    with pytest.raises(ValidationError):
        memory_settings(tmp_path, queue_order="shortest_first")
    with pytest.raises(ValidationError):
        memory_settings(tmp_path, queue_aging_s=-1)


@pytest.mark.parametrize("order", list(QueueOrder))
async def test_jobs_waiting_together_are_claimed_in_the_configured_order(
    tmp_path: Path, order: QueueOrder
) -> None:
    ticks = iter(T0 + i for i in range(10))
    async with MemoryStore() as store:
        service = JobService(
            store, memory_settings(tmp_path, queue_order=order), clock=lambda: next(ticks)
        )
        steps = [4, 40, 10]
        workflows = [text_to_image_workflow(seed=i, steps=n, size=512) for i, n in enumerate(steps)]
        jobs = [(await service.submit(Submission(workflow=wf))).job for wf in workflows]
        for job, workflow in zip(jobs, workflows, strict=True):
            ahead = head_start(estimate_cost(workflow), order, 60.0)
            assert job.rank_at == pytest.approx(job.created_at - ahead)
        claimed = []
        while (job := await store.claim("w", 30, now=T0 + 20)) is not None:
            claimed.append(job.id)
        by_steps = dict(zip(steps, (j.id for j in jobs), strict=True))
        if order is QueueOrder.FIFO:
            assert claimed == [j.id for j in jobs]
        else:
            assert claimed == [by_steps[40], by_steps[10], by_steps[4]]
