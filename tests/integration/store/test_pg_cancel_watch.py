"""PostgreSQL: a run's cancel watch on a job its worker's store claimed, listening throughout,
does not read the job's log before a NOTIFY says its status may have changed (log lines,
progress and outputs say they change none; on a busy worker that read was one statement of
every four or five a job cost); a cancel heard at any moment, during the claim's own round
trip included, still ends the watch, and any doubt (the listener lost, a NOTIFY that does not
say) means a read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from tests.support.engine import until
from tests.support.store import kill_listeners, new_job, pg_api_and_worker

from comfyrun.core.job import Job, JobStatus, Progress
from comfyrun.core.state import Event
from comfyrun.dispatch.cancel import watch_cancel_requested
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.store.base import ClaimChoice, ClaimNote, HandOff
from comfyrun.store.pgstatements import NOT_ENDING, OneStatementWrites
from comfyrun.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

#: The watch's own timeout, long: a watch that ends did so because it heard the cancel.
SETTINGS = DispatchSettings(idle_wait_s=60.0)
WOKEN_WITHIN_S = 10.0


class Nodes:
    """An API node's store and a worker's (its reads of job logs counted), on one schema."""

    def __init__(self, api: PostgresStore, worker: PostgresStore) -> None:
        self.api, self.worker = api, worker
        self.reads: list[tuple[str, int]] = []
        real_since = worker.events_since

        async def events_since(job_id: str, after_id: int = 0) -> list[object]:
            self.reads.append((job_id, after_id))
            return list(await real_since(job_id, after_id))

        worker.events_since = events_since  # type: ignore[method-assign,assignment]

    async def claimed(self) -> Job:
        job, _ = await self.api.enqueue(new_job())
        claimed = await self.worker.claim("w", 30)
        assert claimed is not None and claimed.id == job.id
        return claimed

    async def cancel(self, job: Job) -> None:
        canceling = await self.api.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
        assert canceling.status is JobStatus.CANCELING

    def watch(self, job: Job) -> asyncio.Task[None]:
        return asyncio.create_task(watch_cancel_requested(self.worker, job.id, SETTINGS))


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    async with pg_api_and_worker() as (api, worker):
        yield Nodes(api, worker)


async def test_a_watch_reads_nothing_until_its_job_s_status_changes(nodes: Nodes) -> None:
    job = await nodes.claimed()
    watch = nodes.watch(job)
    await asyncio.sleep(0.3)  # the claim's own NOTIFY heard meanwhile: no news
    assert not watch.done() and nodes.reads == []
    # the run's own log lines, progress and outputs, and another node's log line: no status
    await nodes.worker.append_event(job.id, "log", {"line": "not a cancel"})
    await nodes.worker.record_progress(job.id, Progress(value=0.5))
    await nodes.api.append_event(job.id, "log", {"line": "nor this"})
    await asyncio.sleep(0.3)
    assert not watch.done() and nodes.reads == []
    await nodes.cancel(job)
    await asyncio.wait_for(watch, WOKEN_WITHIN_S)
    assert nodes.reads == [(job.id, 0)]


async def test_a_notify_of_an_older_node_without_the_logged_flag_makes_a_watch_read(
    nodes: Nodes,
) -> None:
    """A NOTIFY that does not say its events change no status may be a cancel's: looked at."""
    job = await nodes.claimed()
    watch = nodes.watch(job)
    await asyncio.sleep(0.1)
    nodes.worker._heard(job.id, NOT_ENDING)  # as an older node's log line is relayed
    # woken, it reads the log, and goes on watching from it
    await until(lambda: len(nodes.reads) >= 2, timeout=WOKEN_WITHIN_S)
    await asyncio.sleep(0.1)
    assert not watch.done() and nodes.reads[0] == (job.id, 0)
    await nodes.cancel(job)
    await asyncio.wait_for(watch, WOKEN_WITHIN_S)


async def test_a_cancel_before_the_watch_ends_it_at_once(nodes: Nodes) -> None:
    job = await nodes.claimed()
    await nodes.cancel(job)
    await asyncio.wait_for(nodes.watch(job), WOKEN_WITHIN_S)
    assert nodes.reads[0] == (job.id, 0)


async def test_a_cancel_heard_while_the_claim_returns_is_not_lost(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's cancel commits, and the worker's listener relays it, after the claim
    committed and before the claim has returned to its caller: the watch reads the log at
    once, and ends (it would otherwise wait for news that came already)."""
    real = OneStatementWrites.claim
    api = nodes.api

    async def claim(
        self: OneStatementWrites,
        worker_id: str,
        lease_s: float,
        *,
        now: float | None = None,
        note: ClaimNote | None = None,
        choice: ClaimChoice | None = None,
        types: Sequence[str] | None = None,
    ) -> Job | None:
        job = await real(self, worker_id, lease_s, now=now, note=note, choice=choice, types=types)
        assert job is not None and isinstance(self, PostgresStore)
        stirs = self._stirs
        await api.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING)
        await until(lambda: self._stirred.get(job.id, 0) > stirs, timeout=WOKEN_WITHIN_S)
        return job

    monkeypatch.setattr(OneStatementWrites, "claim", claim)
    job = await nodes.claimed()
    await asyncio.wait_for(nodes.watch(job), WOKEN_WITHIN_S)
    assert nodes.reads == [(job.id, 0)]


async def test_after_the_listener_is_lost_a_watch_reads(nodes: Nodes) -> None:
    job = await nodes.claimed()
    assert kill_listeners(nodes.worker.channel) >= 1
    await asyncio.sleep(0.2)
    await asyncio.wait_for(nodes.worker._listening.wait(), WOKEN_WITHIN_S)
    watch = nodes.watch(job)
    # a cancel may have been sent while it was away: it looks
    await until(lambda: bool(nodes.reads), timeout=WOKEN_WITHIN_S)
    assert not watch.done()
    await nodes.cancel(job)
    await asyncio.wait_for(watch, WOKEN_WITHIN_S)


async def test_a_job_created_claimed_here_is_watched_without_a_read(nodes: Nodes) -> None:
    """A job handed off as it is queued (enqueue_claimed: `serve` on PostgreSQL)."""
    job, created = await nodes.worker.enqueue_claimed(new_job(), HandOff("w", 30))
    assert created and job.status is JobStatus.RUNNING
    watch = nodes.watch(job)
    await asyncio.sleep(0.3)
    assert not watch.done() and nodes.reads == []
    await nodes.cancel(job)
    await asyncio.wait_for(watch, WOKEN_WITHIN_S)
