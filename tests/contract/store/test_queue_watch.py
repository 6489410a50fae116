"""Every store: `watch_queue` tells how each job moved in the queue once its change committed
(joined: queued, created claimed or put back; started: claimed; ended), and nothing of a write
that leaves the queue as it was (a placement, progress, an output, a log line, a cancel asked
of a running job); it stops when told to. PostgreSQL tells it from its listener, as it hears
the notifications of every node, its own included."""

from __future__ import annotations

import asyncio

from tests.support.store import new_job

from comfyrun.core.batch import NewBatch
from comfyrun.core.job import JobStatus, Output, OutputType, Progress
from comfyrun.core.state import Event
from comfyrun.store.base import ClaimChoice, HandOff, JobStore, QueueMove

T0 = 1_700_000_000.0
JOINED, STARTED, ENDED = QueueMove.JOINED, QueueMove.STARTED, QueueMove.ENDED


class Heard:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.moves: list[tuple[str, QueueMove]] = []
        self.stop = store.watch_queue(lambda job_id, move: self.moves.append((job_id, move)))

    async def taken(self) -> list[tuple[str, QueueMove]]:
        """What was told of the changes made so far (a last job queued and heard of:
        PostgreSQL's notifications come in the order of their commits), and forgotten."""
        marker, _ = await self.store.enqueue(new_job(), now=T0)
        async with asyncio.timeout(10):
            while (marker.id, JOINED) not in self.moves:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await self.store.transition(marker.id, Event.CANCEL, expect=JobStatus.QUEUED)
        async with asyncio.timeout(10):
            while (marker.id, ENDED) not in self.moves:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        moves = [m for m in self.moves if m[0] != marker.id]
        self.moves.clear()
        return moves


async def test_a_jobs_moves_in_the_queue_are_told_and_nothing_else(store: JobStore) -> None:
    heard = Heard(store)
    job, _ = await store.enqueue(new_job(), now=T0)
    claimed = await store.claim("w1", 30, now=T0)
    assert claimed is not None and claimed.id == job.id
    await store.record_placement(
        job.id, "w1", backend="gpu0", prompt_id="p1", execution_started_at=T0
    )
    await store.record_progress(job.id, Progress(value=0.5, nodes_done=1, nodes_total=2))
    image = Output(node_id="9", name="a.png", type=OutputType.IMAGE, content_type="image/png")
    await store.add_output(job.id, image)
    await store.append_event(job.id, "log", {"line": "x"})
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING, worker_id="w1")
    assert await heard.taken() == [(job.id, JOINED), (job.id, STARTED), (job.id, ENDED)]

    # canceled while queued; and a running one: asked (no move), then canceled (its end)
    queued, _ = await store.enqueue(new_job(), now=T0)
    await store.transition(queued.id, Event.CANCEL, expect=JobStatus.QUEUED)
    running, _ = await store.enqueue(new_job(), now=T0)
    await store.claim("w1", 30, now=T0)
    await store.transition(running.id, Event.CANCEL, expect=JobStatus.RUNNING)
    await store.transition(running.id, Event.CANCELED, expect=JobStatus.CANCELING)
    assert await heard.taken() == [
        (queued.id, JOINED),
        (queued.id, ENDED),
        (running.id, JOINED),
        (running.id, STARTED),
        (running.id, ENDED),
    ]

    # put back to the queue (a lease lost), then failed
    again, _ = await store.enqueue(new_job(max_retries=1), now=T0)
    await store.claim("w1", 30, now=T0)
    await store.transition(again.id, Event.LEASE_LOST, expect=JobStatus.RUNNING, now=T0)
    # (a claim that chooses: PostgreSQL's general way, not its one statement)
    await store.claim("w1", 30, now=T0 + 10_000, choice=ClaimChoice(4, lambda jobs: 0))
    await store.transition(again.id, Event.FAIL, expect=JobStatus.RUNNING)
    assert await heard.taken() == [
        (again.id, JOINED),
        (again.id, STARTED),
        (again.id, JOINED),
        (again.id, STARTED),
        (again.id, ENDED),
    ]
    heard.stop()
    await store.enqueue(new_job(), now=T0)
    told = Heard(store)  # (another watcher, to know when that job was told)
    await told.taken()
    assert heard.moves == []


async def test_a_job_created_claimed_is_told_joined(store: JobStore) -> None:
    heard = Heard(store)
    handed, _ = await store.enqueue_claimed(new_job(), HandOff("w1", 30.0), now=T0)
    assert handed.status is JobStatus.RUNNING
    moves = await heard.taken()
    assert moves[0] == (handed.id, JOINED)  # (a store may tell its start besides)
    assert set(moves) <= {(handed.id, JOINED), (handed.id, STARTED)}


async def test_a_batchs_jobs_are_told_joined_and_ended_when_canceled(store: JobStore) -> None:
    heard = Heard(store)
    batch = NewBatch(workflow="t2i", version="v1")
    created = await store.create_batch(batch, [new_job(), new_job()], now=T0)
    joined = await heard.taken()
    assert joined and {move for _, move in joined} == {JOINED}  # (its jobs', or the batch's)
    _, active = await store.cancel_batch(created.id)
    assert active == []
    page = await store.batch_jobs(created.id)
    ended = await heard.taken()
    assert {(j.id, ENDED) for j in page.jobs} <= set(ended)
