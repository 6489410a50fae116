"""Every store: enqueue stores the whole job; idempotency keys dedupe for 24 h."""

from __future__ import annotations

import contextlib

import pytest
from tests.support.store import new_job

from comfyrun.core.job import JobStatus, request_fingerprint
from comfyrun.errors import Conflict, IdempotencyKeyReuse, InvalidRequest
from comfyrun.store.base import JobStore
from comfyrun.store.idempotency import IDEMPOTENCY_TTL_S

T0 = 1_700_000_000.0


async def test_enqueue_stores_every_field(store: JobStore) -> None:
    new = new_job(
        priority=3,
        inputs=({"name": "image", "url": "https://example.com/a.png"},),
        options={"return_base64": True, "webhook": {"url": "http://h/x"}},
        metadata={"user": "ann", "tags": ["a", "b"], "n": 1.5},
        owner="team-a",
        max_retries=2,
        retry_delay_s=0.5,
        timeout_s=60.0,
    )
    job, created = await store.enqueue(new, now=T0)
    assert created
    assert job.id == new.id
    assert job.status is JobStatus.QUEUED
    assert job.created_at == T0
    assert job.next_run_at == T0
    assert job.attempts == 0
    stored = await store.get(new.id)
    assert stored == job
    assert stored.workflow == new.workflow
    assert stored.inputs == new.inputs
    assert stored.options == new.options
    assert stored.metadata == new.metadata
    assert (stored.owner, stored.priority, stored.max_retries) == ("team-a", 3, 2)
    assert (stored.retry_delay_s, stored.timeout_s) == (0.5, 60.0)


async def test_get_unknown_is_none(store: JobStore) -> None:
    assert await store.get("nope") is None


async def test_enqueue_same_id_twice_conflicts(store: JobStore) -> None:
    new = new_job()
    await store.enqueue(new, now=T0)
    with pytest.raises(Conflict):
        await store.enqueue(new, now=T0 + 1)


async def test_same_key_and_body_returns_the_first_job(store: JobStore) -> None:
    h = request_fingerprint({"a": 1})
    first, created = await store.enqueue(new_job(idempotency_key="k1", request_hash=h), now=T0)
    again, created_again = await store.enqueue(
        new_job(idempotency_key="k1", request_hash=h), now=T0 + 10
    )
    assert created and not created_again
    assert again.id == first.id
    assert (await store.counts())[JobStatus.QUEUED] == 1


async def test_same_key_other_body_is_refused(store: JobStore) -> None:
    await store.enqueue(new_job(idempotency_key="k1", request_hash="h1"), now=T0)
    with pytest.raises(IdempotencyKeyReuse):
        await store.enqueue(new_job(idempotency_key="k1", request_hash="h2"), now=T0 + 1)
    assert (await store.counts())[JobStatus.QUEUED] == 1


async def test_keys_expire_after_24_hours(store: JobStore) -> None:
    first, _ = await store.enqueue(new_job(idempotency_key="k", request_hash="h"), now=T0)
    later = T0 + IDEMPOTENCY_TTL_S + 1
    second, created = await store.enqueue(
        new_job(idempotency_key="k", request_hash="h2"), now=later
    )
    assert created and second.id != first.id
    third, created = await store.enqueue(
        new_job(idempotency_key="k", request_hash="h2"), now=later + 1
    )
    assert not created and third.id == second.id


async def test_keys_are_scoped_per_owner(store: JobStore) -> None:
    a, _ = await store.enqueue(new_job(idempotency_key="k", request_hash="h", owner="a"), now=T0)
    b, created = await store.enqueue(
        new_job(idempotency_key="k", request_hash="other", owner="b"), now=T0
    )
    assert created and a.id != b.id


async def test_key_of_a_deleted_job_makes_a_new_job(store: JobStore) -> None:
    first, _ = await store.enqueue(new_job(idempotency_key="k", request_hash="h"), now=T0)
    assert await store.delete(first.id)
    again, created = await store.enqueue(new_job(idempotency_key="k", request_hash="h"), now=T0 + 1)
    assert created and again.id != first.id


async def test_ping(store: JobStore) -> None:
    assert await store.ping()


async def test_json_values_come_back_exactly(store: JobStore) -> None:
    """Integers past 64 bits (which a fast JSON reader can turn into floats), text beyond
    ASCII, long digit strings and floats: what is read back, at a get and at a claim, is what
    was enqueued."""
    workflow = {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 2**64 + 7,
                "cfg": 7.5,
                "denoise": 0.1,
                "steps": 18446744073709551615,
            },
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "un chat noir, 黒猫 🐈"}},
    }
    metadata = {"big": -(2**80), "id": "12345678901234567890123", "tiny": 1e-300}
    new = new_job(workflow=workflow, metadata=metadata)
    await store.enqueue(new, now=T0)
    for job in (await store.get(new.id), await store.claim("w1", 30.0, now=T0 + 1)):
        assert job is not None and job.id == new.id
        assert job.workflow == workflow and job.metadata == metadata
        assert type(job.workflow["3"]["inputs"]["seed"]) is int


async def test_a_value_holding_nul_is_the_requests_fault_not_the_stores(store: JobStore) -> None:
    """PostgreSQL can hold no NUL character (in text or JSON): a job id holding one, read or
    cancelled by URL (`/api/v2/jobs/a%00b`), names no job; it was a StoreError there (a 503
    that tells the client to try again). Every store answers it as none, or as the request's
    fault (InvalidRequest, a 4xx), never as its own failure."""
    job, _ = await store.enqueue(new_job(), now=T0)
    for read in (lambda: store.get("a\x00b"), lambda: store.events_since("a\x00b", 0)):
        with contextlib.suppress(InvalidRequest):
            assert not await read()
    # and what the service refuses to submit (refuse_unstorable) fails so too at the store
    with contextlib.suppress(InvalidRequest):
        await store.enqueue(new_job(metadata={"a": "x\x00"}), now=T0)
    assert (await store.get(job.id)) is not None  # the other jobs untouched
