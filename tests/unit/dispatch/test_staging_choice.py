"""The claim choice of a worker whose staging set is full (dispatch.staging): it takes no job
that must download model files first, routing's pick among the others, or no job at all."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comfyrun.backends.pool import BackendPool
from comfyrun.core.job import Job, JobStatus
from comfyrun.dispatch.run_context import RunContext
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.dispatch.staging import Staging
from comfyrun.models import ModelCache, ModelRef
from comfyrun.outputs import open_output_storage
from comfyrun.store.base import ClaimChoice
from comfyrun.store.memory import MemoryStore


class CachedOnly(ModelCache):
    """A cache that holds every file whose name starts with "cached" (nothing on disk)."""

    def find(self, ref: ModelRef) -> str | None:
        return "0" * 64 if ref.name.startswith("cached") else None


async def _nowhere(ref: ModelRef, dest: Path, progress: Any) -> None:
    raise AssertionError("nothing downloads here")


def staging(tmp_path: Path) -> Staging:
    ctx = RunContext(
        store=MemoryStore(),
        pool=BackendPool.from_specs([], lambda url: None),
        storage=open_output_storage("memory://"),
        settings=DispatchSettings(max_staging_jobs=1),
        worker_id="w",
    )
    return Staging(CachedOnly(tmp_path, _nowhere), ctx, staged=lambda job: None, changed=list)


def job(name: str | None) -> Job:
    models = [] if name is None else [{"url": f"https://h/{name}", "folder": "loras", "name": name}]
    return Job(id=name or "plain", workflow={}, status=JobStatus.QUEUED, options={"models": models})


def test_a_full_set_takes_no_job_that_must_download(tmp_path: Path) -> None:
    stage = staging(tmp_path)
    assert stage.promise() and stage.full and not stage.promise()  # one place, kept
    stage.unpromise()
    assert not stage.full
    jobs = [job("fresh.st"), job("cached.st"), job(None)]
    assert [stage.needs(j) for j in jobs] == [True, False, False]
    alone = stage.without_downloads(None, window=8)
    assert alone.window == 8 and alone.pick(jobs) == 1  # the best of those that need none
    assert alone.pick([job("fresh.st"), job("other.st")]) is None  # none: no claim at all


def test_routing_picks_among_the_jobs_that_need_no_download(tmp_path: Path) -> None:
    stage = staging(tmp_path)
    seen: list[list[str]] = []

    def last(candidates: Sequence[Job]) -> int:
        seen.append([c.id for c in candidates])
        return len(candidates) - 1

    choice = stage.without_downloads(ClaimChoice(window=4, pick=last), window=32)
    jobs = [job("cached.st"), job("fresh.st"), job(None), job("fresh2.st")]
    assert choice.window == 4 and choice.pick(jobs) == 2
    assert seen == [["cached.st", "plain"]]


def test_a_worker_s_claims_in_flight_each_get_a_place_by_default(tmp_path: Path) -> None:
    """Each claim in flight holds a staging place; one beyond them chooses among a window (on
    PostgreSQL five round trips where the head's claim is one: a fleet's jobs/s fell ~10 %).
    By default a PostgreSQL worker's claims in flight (CLAIMS_AT_ONCE) all get one."""
    from comfyrun.config import Settings
    from comfyrun.dispatch.dispatcher import CLAIMS_AT_ONCE

    assert Settings().max_staging_jobs == DispatchSettings().max_staging_jobs >= CLAIMS_AT_ONCE
    ctx = RunContext(
        store=MemoryStore(),
        pool=BackendPool.from_specs([], lambda url: None),
        storage=open_output_storage("memory://"),
        settings=DispatchSettings(),
        worker_id="w",
    )
    stage = Staging(CachedOnly(tmp_path, _nowhere), ctx, staged=lambda job: None, changed=list)
    assert all(stage.promise() for _ in range(CLAIMS_AT_ONCE))
