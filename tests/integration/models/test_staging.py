"""Staging (dispatch.staging): a job whose model files are not in the cache downloads them with
no backend held. Its one backend runs other work meanwhile; the staging set is capped; a cancel
ends a staging job at once; its lease is renewed however long the download takes.

One fake backend that sees the model cache, a real cache and downloader, and a model server
whose answers wait while its `gate` is cleared (a download held under the test's control)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import FakeClient, FakeServer, until, work
from tests.support.model_server import Fault, ModelServer, model_server
from tests.unit.dispatch.conftest import FAST, HEALTH, Engine

from comfyrun.backends.pool import BackendPool, BackendSpec
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.dispatch import Dispatcher, DispatchSettings
from comfyrun.dispatch.inputs import make_input_placer
from comfyrun.dispatch.models import with_models
from comfyrun.dispatch.staging import Staging
from comfyrun.models import DownloadLimits, ModelCache, make_downloader
from comfyrun.outputs import open_output_storage
from comfyrun.store.factory import open_store

FILES = {"x": b"x-weights" * 1000, "y": b"y-weights" * 1000}


@dataclasses.dataclass
class Rig:
    engine: Engine
    server: ModelServer
    cache: ModelCache
    backend: FakeServer

    @property
    def staging(self) -> Staging:
        staging = self.engine.dispatcher.staging
        assert staging is not None
        return staging

    def models(self, name: str) -> dict[str, Any]:
        loras = [{"url": f"{self.server.url}/{name}", "folder": "loras", "name": f"{name}.st"}]
        return {"models": loras}


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    stack: list[Rig] = []

    async def make(settings: DispatchSettings = FAST) -> Rig:
        server_cm = model_server(dict(FILES))
        server = await server_cm.__aenter__()
        server.gate.clear()  # every download waits until the test sets it
        cleanups.append(server_cm)
        store = open_store("memory://")
        await store.open()
        storage = open_output_storage("memory://")
        backend = FakeServer(name="a")
        pool = BackendPool.from_specs(
            [BackendSpec(name="a", url="fake://a", sees_model_cache=True)],
            lambda url: FakeClient(backend),
            health=HEALTH,
        )
        await pool.start()
        assert await pool.wait_ready(5.0)
        cache = ModelCache(
            tmp_path / "models", make_downloader(DownloadLimits(fetch_allow=("127.0.0.1",)))
        )
        cache.open()
        dispatcher = Dispatcher(
            store,
            pool,
            storage,
            settings,
            worker_id="w1",
            place_inputs=with_models(make_input_placer(), cache, store, interval_s=0.0),
            models=cache,
        )
        engine = Engine(store, storage, pool, dispatcher, {"a": backend})
        rig = Rig(engine, server, cache, backend)
        stack.append(rig)
        await dispatcher.start()
        return rig

    cleanups: list[Any] = []
    yield make
    for rig in stack:
        rig.server.gate.set()
        await rig.engine.dispatcher.stop()
        await rig.engine.pool.stop()
        await rig.backend.stop()
        await rig.engine.store.close()
    for cm in cleanups:
        await cm.__aexit__(None, None, None)


async def test_a_job_without_models_runs_on_the_only_backend_while_another_downloads(
    make_rig: Callable[..., Any],
) -> None:
    """(The job that downloaded held the backend, for up to an hour, while the other waited.)"""
    rig = await make_rig()
    engine = rig.engine
    downloading = await engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)  # its download is held
    other = await engine.wait((await engine.submit(work())).id)
    assert other.status is JobStatus.SUCCEEDED and other.backend == "a"
    staging = await engine.store.get(downloading.id)
    assert staging is not None and staging.status is JobStatus.RUNNING
    assert downloading.id in rig.staging and engine.dispatcher.running(downloading.id)
    assert [r.job_id for r in rig.backend.ran] == [other.id]
    rig.server.gate.set()
    done = await engine.wait(downloading.id)
    assert done.status is JobStatus.SUCCEEDED and done.backend == "a"
    assert done.attempts == 1 and rig.server.hits["x"] == 1
    kinds = [e.kind for e in await engine.store.events_since(downloading.id)]
    assert "model_download" in kinds
    # neither the staging's pin nor the run's outlives the run
    await until(lambda: [m.in_use for m in rig.cache.list()] == [0])
    await until(lambda: len(rig.staging) == 0)


async def test_the_staging_set_is_capped_and_jobs_without_downloads_are_still_claimed(
    make_rig: Callable[..., Any],
) -> None:
    rig = await make_rig(dataclasses.replace(FAST, max_staging_jobs=1))
    engine = rig.engine
    first = await engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)
    second = await engine.submit(work(), options=rig.models("y"))  # ahead of `plain` in line
    plain = await engine.wait((await engine.submit(work())).id)
    assert plain.status is JobStatus.SUCCEEDED
    # the set is full: the job that must download was passed over, left queued, unclaimed
    waiting = await engine.store.get(second.id)
    assert waiting is not None and waiting.status is JobStatus.QUEUED and waiting.attempts == 0
    assert len(rig.staging) == 1 and rig.server.hits["y"] == 0
    rig.server.gate.set()
    for job in (first, second):
        done = await engine.wait(job.id)
        assert done.status is JobStatus.SUCCEEDED and done.attempts == 1


async def test_a_cancel_while_staging_ends_the_job_at_once_and_frees_its_place(
    make_rig: Callable[..., Any],
) -> None:
    rig = await make_rig(dataclasses.replace(FAST, max_staging_jobs=1))
    engine = rig.engine
    job = await engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)
    await engine.store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
    canceled = await engine.wait(job.id, timeout=5)
    assert canceled.status is JobStatus.CANCELED
    assert rig.backend.ran == [] and rig.cache.list() == []
    # its place in the set is free: the next job that must download is staged
    after = await engine.submit(work(), options=rig.models("y"))
    await until(lambda: after.id in rig.staging and rig.server.hits["y"] == 1)
    assert job.id not in rig.staging
    rig.server.gate.set()
    assert (await engine.wait(after.id)).status is JobStatus.SUCCEEDED


async def test_a_download_that_fails_while_staging_fails_the_job_as_before(
    make_rig: Callable[..., Any],
) -> None:
    """A 404 (answered once the backend ran other work meanwhile): `input_rejected`, not
    retried, as before; the job never held the backend, and left the set."""
    rig = await make_rig(dataclasses.replace(FAST, max_staging_jobs=1))
    engine = rig.engine
    rig.server.fail("x", Fault(status=404))
    job = await engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)
    other = await engine.wait((await engine.submit(work())).id)
    assert other.status is JobStatus.SUCCEEDED
    rig.server.gate.set()
    failed = await engine.wait(job.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    assert failed.error is not None and failed.error.code == "input_rejected"
    assert "404" in failed.error.message
    assert [r.job_id for r in rig.backend.ran] == [other.id]  # never sent to the backend
    await until(lambda: len(rig.staging) == 0)


async def test_a_long_staging_keeps_its_lease(make_rig: Callable[..., Any]) -> None:
    """Leases of half a second, swept every 0.1 s: a staging job's lease is renewed by the
    heartbeat (else the sweeper would put it back in the queue)."""
    short = dataclasses.replace(FAST, lease_s=0.5, heartbeat_s=0.1, sweep_interval_s=0.1)
    rig = await make_rig(short)
    engine = rig.engine
    job = await engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)
    claimed = await engine.store.get(job.id)
    assert claimed is not None and claimed.lease_expires_at is not None
    first_lease = claimed.lease_expires_at

    # a lease twice as long as the one claimed is twice renewed (or the job was swept)
    while True:
        held = await engine.store.get(job.id)
        assert held is not None
        if (
            held.status is not JobStatus.RUNNING
            or (held.lease_expires_at or 0) > first_lease + 2 * short.lease_s
        ):
            break
        await asyncio.sleep(0.02)  # (a lease renewed tells no event to wait on)
    assert held.status is JobStatus.RUNNING and held.attempts == 1 and held.worker_id == "w1"
    rig.server.gate.set()
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1


async def test_a_job_whose_files_are_cached_skips_staging(
    make_rig: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    rig = await make_rig()
    rig.server.gate.set()
    first = await rig.engine.wait((await rig.engine.submit(work(), options=rig.models("x"))).id)
    assert first.status is JobStatus.SUCCEEDED
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfyrun.dispatch.staging"):
        again = await rig.engine.wait((await rig.engine.submit(work(), options=rig.models("x"))).id)
    assert again.status is JobStatus.SUCCEEDED and rig.server.hits["x"] == 1
    assert [r for r in caplog.records if r.name == "comfyrun.dispatch.staging"] == []


async def test_a_hand_off_whose_enqueue_did_not_commit_stops_its_staging_without_a_write(
    make_rig: Callable[..., Any],
) -> None:
    """(dispatch.handoff: a job started before its enqueue committed, and the commit failed.)
    Its download stops and nothing is written for it: the job does not exist."""
    rig = await make_rig()
    engine = rig.engine
    job = await engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)
    assert job.id in rig.staging
    events = len(await engine.store.events_since(job.id))
    await engine.dispatcher.withdraw_unstored(job.id)
    await until(lambda: job.id not in rig.staging)
    assert rig.cache.list() == [] and len(rig.cache._flights) == 0
    assert len(await engine.store.events_since(job.id)) == events


async def test_a_staged_job_takes_the_next_free_room_before_a_job_claimed_after_it(
    make_rig: Callable[..., Any],
) -> None:
    """The backend runs one prompt and holds one behind it; a job whose files came in
    meanwhile waits, parked, and takes the next room before a job queued after that (not
    starved). (Which of the two prompts reaches ComfyUI first is a race: the staged job's run
    pins its files first.)"""
    rig = await make_rig()
    engine = rig.engine
    started: list[str] = []
    engine.dispatcher.ctx.run_started.append(started.append)
    backend = engine.pool.get("a")
    assert backend is not None
    long = await engine.submit(work(seconds=60, steps=1200))  # (an interrupt stops a step)
    await until(lambda: len(rig.backend.ran) == 1)
    staged = await engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)
    held = await engine.submit(work())
    await until(lambda: backend.inflight == 2)  # held behind the long one: no room left
    rig.server.gate.set()
    await until(lambda: staged.id in engine.dispatcher._parked)
    later = await engine.submit(work())
    await engine.store.transition(long.id, Event.CANCEL, expect=JobStatus.RUNNING)
    for job in (held, staged, later):
        assert (await engine.wait(job.id)).status is JobStatus.SUCCEEDED
    names = {long.id: "long", held.id: "held", staged.id: "staged", later.id: "later"}
    # (the staged job's run is told started as it starts staging, and again once placed)
    assert [names[j] for j in started] == ["long", "staged", "held", "staged", "later"]


async def test_a_staging_job_claimed_again_after_its_lease_ran_out_stages_once(
    make_rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lease not renewed (the store failing, say) and swept, the job is queued again and
    this worker claims it again: the stale staging gives way to the new one; one run."""
    short = dataclasses.replace(FAST, lease_s=0.5, heartbeat_s=0.1, sweep_interval_s=0.1)
    rig = await make_rig(short)
    engine = rig.engine

    renew = rig.staging.renew

    async def renewed_from_the_second_attempt() -> None:
        stage = rig.staging._stages.get(job.id)
        if stage is None or stage.job.attempts > 1:
            await renew()

    monkeypatch.setattr(rig.staging, "renew", renewed_from_the_second_attempt)
    job = await engine.submit(work(), options=rig.models("x"), max_retries=1, retry_delay_s=0.0)
    await asyncio.wait_for(rig.server.requested.wait(), 10)
    again = await engine.wait_for(job.id, lambda j: j.attempts == 2)
    assert again.status is JobStatus.RUNNING
    await until(lambda: job.id in rig.staging)
    rig.server.gate.set()
    done = await engine.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
    await until(lambda: len(rig.staging) == 0 and not engine.dispatcher.running(job.id))
    assert [r.job_id for r in rig.backend.ran] == [job.id]
    assert job.id not in engine.dispatcher._parked
    assert [m.in_use for m in rig.cache.list()] == [0]


async def test_the_staging_set_is_a_gauge_in_the_metrics(make_rig: Callable[..., Any]) -> None:
    from prometheus_client.exposition import generate_latest

    from comfyrun.api.routes.metrics import JobMetrics

    rig = await make_rig()
    metrics = JobMetrics()

    def gauge() -> str:
        metrics.observe_staging(rig.engine.dispatcher)
        text = generate_latest(metrics.registry).decode()
        return next(line for line in text.splitlines() if line.startswith("comfyrun_model_stag"))

    assert gauge() == "comfyrun_model_staging_jobs 0.0"
    job = await rig.engine.submit(work(), options=rig.models("x"))
    await asyncio.wait_for(rig.server.requested.wait(), 10)  # its download is held
    assert job.id in rig.staging and gauge() == "comfyrun_model_staging_jobs 1.0"
    rig.server.gate.set()
    assert (await rig.engine.wait(job.id)).status is JobStatus.SUCCEEDED
    await until(lambda: len(rig.staging) == 0)
    assert gauge() == "comfyrun_model_staging_jobs 0.0"
    metrics.observe_staging(None)  # an API node: no dispatcher
    assert "comfyrun_model_staging_jobs 0.0" in generate_latest(metrics.registry).decode()
