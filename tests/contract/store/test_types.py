"""Every store: job types and params round-trip, a claim takes only the types it is given, and
the worker registry says which types live workers serve."""

from __future__ import annotations

from collections.abc import Sequence

from tests.support.store import new_job

from comfyrun.core.job import JobStatus
from comfyrun.store.base import JobStore

T0 = 1_700_000_000.0


async def test_type_and_params_round_trip(store: JobStore) -> None:
    queued, _ = await store.enqueue(
        new_job(workflow={}, type="image", params={"format": "webp", "quality": 85}), now=T0
    )
    assert queued.type == "image"
    stored = await store.get(queued.id)
    assert stored is not None
    assert stored.type == "image"
    assert stored.params == {"format": "webp", "quality": 85}


async def test_a_job_is_comfy_by_default(store: JobStore) -> None:
    queued, _ = await store.enqueue(new_job(), now=T0)
    stored = await store.get(queued.id)
    assert stored is not None and stored.type == "comfy" and stored.params == {}


async def test_claim_takes_only_the_given_types_in_claim_order(store: JobStore) -> None:
    comfy_high, _ = await store.enqueue(new_job(priority=9), now=T0)
    image_old, _ = await store.enqueue(new_job(type="image", workflow={}), now=T0 + 1)
    video, _ = await store.enqueue(new_job(type="ffmpeg", workflow={}, priority=1), now=T0 + 2)
    image_new, _ = await store.enqueue(new_job(type="image", workflow={}), now=T0 + 3)
    taken = []
    while (job := await store.claim("w", 30, now=T0 + 10, types=["image", "ffmpeg"])) is not None:
        assert job.status is JobStatus.RUNNING
        taken.append(job.id)
    assert taken == [video.id, image_old.id, image_new.id]
    left = await store.get(comfy_high.id)
    assert left is not None and left.status is JobStatus.QUEUED
    assert await store.claim("w", 30, now=T0 + 10, types=["nothing"]) is None
    anything = await store.claim("w", 30, now=T0 + 10)  # no types: any type
    assert anything is not None and anything.id == comfy_high.id


async def test_a_claim_of_comfy_jobs_alone_takes_them_in_claim_order(store: JobStore) -> None:
    image, _ = await store.enqueue(new_job(type="image", workflow={}, priority=9), now=T0)
    low, _ = await store.enqueue(new_job(priority=0), now=T0 + 1)
    high, _ = await store.enqueue(new_job(priority=5), now=T0 + 2)
    taken = []
    while (job := await store.claim("w", 30, now=T0 + 5, types=["comfy"])) is not None:
        assert job.type == "comfy" and job.workflow == new_job().workflow
        assert job.status is JobStatus.RUNNING and job.attempts == 1 and job.worker_id == "w"
        taken.append(job.id)
    assert taken == [high.id, low.id]
    left = await store.get(image.id)
    assert left is not None and left.status is JobStatus.QUEUED
    assert await store.claim("w", 30, now=T0 + 5, types=["image"]) == await store.get(image.id)


async def test_claim_by_type_skips_a_deep_queue_of_other_types(store: JobStore) -> None:
    for i in range(50):
        await store.enqueue(new_job(priority=5), now=T0 + i)
    wanted, _ = await store.enqueue(new_job(type="image", workflow={}), now=T0 + 100)
    job = await store.claim("w", 30, now=T0 + 200, types=["image"])
    assert job is not None and job.id == wanted.id


async def test_served_types_are_those_of_workers_seen_lately(store: JobStore) -> None:
    assert await store.served_types(since=T0) == set()
    await store.announce_worker("w1", ["comfy", "image"], now=T0)
    await store.announce_worker("w2", ["ffmpeg"], now=T0 + 50)
    assert await store.served_types(since=T0) == {"comfy", "image", "ffmpeg"}
    assert await store.served_types(since=T0 + 10) == {"ffmpeg"}  # w1 went quiet
    await store.announce_worker("w1", ["image"], now=T0 + 60)  # refreshed, fewer types
    assert await store.served_types(since=T0 + 10) == {"image", "ffmpeg"}
    await store.retire_worker("w2")
    assert await store.served_types(since=T0) == {"image"}
    await store.retire_worker("w2")  # retiring twice is harmless


async def test_next_priority_among_types(store: JobStore) -> None:
    await store.enqueue(new_job(priority=1), now=T0)
    await store.enqueue(new_job(type="image", workflow={}, priority=7), now=T0)
    await store.enqueue(new_job(type="ffmpeg", workflow={}, priority=3), now=T0)
    assert await store.next_priority(now=T0 + 1) == 7
    assert await store.next_priority(now=T0 + 1, types=["comfy"]) == 1
    assert await store.next_priority(now=T0 + 1, types=["comfy", "ffmpeg"]) == 3
    assert await store.next_priority(now=T0 + 1, types=["other"]) is None


async def test_a_choice_sees_only_the_claimed_types(store: JobStore) -> None:
    from comfyrun.store.base import ClaimChoice

    await store.enqueue(new_job(priority=9), now=T0)
    first, _ = await store.enqueue(new_job(type="image", workflow={}), now=T0 + 1)
    video, _ = await store.enqueue(new_job(type="ffmpeg", workflow={}), now=T0 + 2)
    last, _ = await store.enqueue(new_job(type="image", workflow={}), now=T0 + 3)
    seen: list[list[str]] = []

    def pick_last(candidates: object) -> int:
        assert isinstance(candidates, Sequence)
        seen.append([j.id for j in candidates])
        return len(candidates) - 1

    choice = ClaimChoice(window=2, pick=pick_last)
    job = await store.claim("w", 30, now=T0 + 10, choice=choice, types=["image", "ffmpeg"])
    assert job is not None and job.id == video.id  # the second of the first two, in order
    assert seen == [[first.id, video.id]]
    job = await store.claim("w", 30, now=T0 + 10, choice=choice, types=["image"])
    assert job is not None and job.id == last.id
