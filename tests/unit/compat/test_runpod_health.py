"""RunPod's GET /health counts the jobs in retry as `jobs.retried` (it said 0 always)."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import asgi_app, memory_settings
from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.store.base import Changes

T0 = 1_700_000_000.0


async def test_health_counts_the_jobs_in_retry(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, client, ctx):
        store = ctx.store
        first, _ = await store.enqueue(new_job(max_retries=2), now=T0)
        await store.enqueue(new_job(), now=T0 + 1)
        claimed = await store.claim("w", 30, now=T0 + 2)
        assert claimed is not None and claimed.id == first.id
        health = (await client.get("/v2/my-endpoint/health")).json()
        assert health["jobs"]["retried"] == 0 and health["jobs"]["inProgress"] == 1
        await store.transition(
            first.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0 + 3)
        )
        health = (await client.get("/v2/my-endpoint/health")).json()
        assert health["jobs"]["retried"] == 1 and health["jobs"]["inQueue"] == 2
        assert (await client.get("/health")).json()["jobs"]["retried"] == 1
