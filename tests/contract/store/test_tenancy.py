"""Every store: API keys kept as hashes, quotas checked inside the enqueue, usage counted."""

from __future__ import annotations

import pytest
from tests.support.store import new_job

from comfyrun.core.batch import NewBatch
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.core.tenancy import ApiKey, Quota, Scope, hash_key, mint_key
from comfyrun.errors import Conflict, QuotaExceeded
from comfyrun.store.base import Changes, JobStore

T0 = 1_700_000_000.0


async def a_key(store: JobStore, quota: Quota | None = None, name: str = "team-a") -> ApiKey:
    key_id, _, key_hash = mint_key()
    key = ApiKey(
        id=key_id,
        name=name,
        key_hash=key_hash,
        scopes=frozenset({Scope.SUBMIT, Scope.READ}),
        quota=quota or Quota(),
        created_at=T0,
    )
    await store.create_api_key(key)
    return key


async def test_keys_are_found_by_hash_listed_and_revoked(store: JobStore) -> None:
    key = await a_key(store)
    assert await store.api_key_by_hash(key.key_hash) == key
    assert await store.api_key_by_hash(hash_key("crk_guess")) is None
    assert await store.get_api_key(key.id) == key
    other = await a_key(store, name="team-b")
    assert [k.id for k in await store.list_api_keys()] == sorted(
        [key.id, other.id], key=lambda i: (T0, i)
    )
    assert await store.revoke_api_key(key.id, now=T0 + 1)
    assert not await store.revoke_api_key(key.id, now=T0 + 2)  # already revoked
    revoked = await store.get_api_key(key.id)
    assert revoked is not None and revoked.revoked_at == T0 + 1 and not revoked.active
    with pytest.raises(Conflict):
        await store.create_api_key(key)


async def test_max_queued_counts_unfinished_jobs(store: JobStore) -> None:
    key = await a_key(store, Quota(max_queued=2))
    first, _ = await store.enqueue(new_job(owner=key.id), now=T0)
    await store.enqueue(new_job(owner=key.id), now=T0 + 1)
    with pytest.raises(QuotaExceeded) as err:
        await store.enqueue(new_job(owner=key.id), now=T0 + 2)
    assert err.value.retry_after_s >= 1
    await store.enqueue(new_job(), now=T0 + 2)  # other owners are not bound by it
    await store.transition(first.id, Event.CANCEL, expect=JobStatus.QUEUED, now=T0 + 3)
    await store.enqueue(new_job(owner=key.id), now=T0 + 4)  # room again
    counted = await store.get_api_key(key.id)
    assert counted is not None and counted.jobs_submitted == 3


async def test_the_unfinished_count_follows_every_path_out(store: JobStore) -> None:
    key = await a_key(store, Quota(max_queued=3))

    async def unfinished() -> int:
        found = await store.get_api_key(key.id)
        assert found is not None
        return found.unfinished

    for _ in range(3):
        await store.enqueue(new_job(owner=key.id), now=T0)
    first = await store.claim("w1", 30, now=T0 + 1)
    assert first is not None
    await store.transition(first.id, Event.RETRY, expect=JobStatus.RUNNING, now=T0 + 1)
    assert await unfinished() == 3  # back in the queue: still unfinished
    with pytest.raises(QuotaExceeded):
        await store.enqueue(new_job(owner=key.id), now=T0 + 1)
    failed = await store.claim("w1", 30, now=T0 + 10)
    assert failed is not None
    await store.transition(failed.id, Event.FAIL, expect=JobStatus.RUNNING, now=T0 + 11)
    canceled = await store.claim("w1", 30, now=T0 + 10)
    assert canceled is not None
    await store.transition(canceled.id, Event.CANCEL, expect=JobStatus.RUNNING, now=T0 + 11)
    assert await unfinished() == 2  # canceling is not over yet
    await store.transition(canceled.id, Event.CANCELED, expect=JobStatus.CANCELING, now=T0 + 12)
    [last] = (await store.list(statuses=[JobStatus.QUEUED])).jobs
    await store.transition(last.id, Event.CANCEL, expect=JobStatus.QUEUED, now=T0 + 12)
    assert await unfinished() == 0
    await store.enqueue(new_job(owner=key.id), now=T0 + 13)
    assert await unfinished() == 1


async def test_a_finished_jobs_expiry_does_not_count_it_out_again(store: JobStore) -> None:
    """A job counted out of its key's unfinished jobs at its end stays out when it expires:
    the count does not drop below the jobs still queued or running (it went negative, one a
    job, and the key's max_queued let through one more job for each)."""
    key = await a_key(store, Quota(max_queued=1))
    job, _ = await store.enqueue(new_job(owner=key.id), now=T0)
    assert (await store.claim("w1", 30, now=T0 + 1)) is not None
    await store.transition(
        job.id,
        Event.SUCCEED,
        expect=JobStatus.RUNNING,
        changes=Changes(expires_at=T0 + 100),
        now=T0 + 5,
    )
    [expired] = await store.expire_finished(now=T0 + 200)
    assert expired.status is JobStatus.EXPIRED
    used = await store.get_api_key(key.id)
    assert used is not None and used.unfinished == 0
    assert used.gpu_seconds == pytest.approx(4.0, abs=0.01)  # nothing owed again either
    await store.enqueue(new_job(owner=key.id), now=T0 + 201)
    with pytest.raises(QuotaExceeded):
        await store.enqueue(new_job(owner=key.id), now=T0 + 202)


async def test_per_minute_says_when_the_window_frees(store: JobStore) -> None:
    key = await a_key(store, Quota(per_minute=2))
    await store.enqueue(new_job(owner=key.id), now=T0)
    await store.enqueue(new_job(owner=key.id), now=T0 + 10)
    with pytest.raises(QuotaExceeded) as err:
        await store.enqueue(new_job(owner=key.id), now=T0 + 20)
    assert err.value.retry_after_s == 40  # the first submission leaves the window at T0+60
    await store.enqueue(new_job(owner=key.id), now=T0 + 61)


async def test_a_keys_batch_fits_its_quota_whole_or_is_refused(store: JobStore) -> None:
    """A batch's jobs count against their key's quota like any job's: one that does not fit
    whole queues nothing; one that does is counted job by job (and each end counts out)."""
    key = await a_key(store, Quota(max_queued=3, per_minute=4))
    batch = NewBatch(workflow="t2i", version="v1", owner=key.id)
    with pytest.raises(QuotaExceeded):
        await store.create_batch(batch, [new_job(owner=key.id) for _ in range(4)], now=T0)
    assert await store.get_batch(batch.id) is None
    assert sum((await store.counts()).values()) == 0
    record = await store.create_batch(batch, [new_job(owner=key.id) for _ in range(2)], now=T0)
    counted = await store.get_api_key(key.id)
    assert counted is not None and (counted.jobs_submitted, counted.unfinished) == (2, 2)
    more = NewBatch(workflow="t2i", version="v1", owner=key.id)
    with pytest.raises(QuotaExceeded):  # 2 + 2 > max_queued 3
        await store.create_batch(more, [new_job(owner=key.id) for _ in range(2)], now=T0 + 1)
    await store.cancel_batch(record.id, now=T0 + 2)
    ended = await store.get_api_key(key.id)
    assert ended is not None and ended.unfinished == 0
    with pytest.raises(QuotaExceeded):  # per_minute: 2 + 3 > 4
        await store.create_batch(more, [new_job(owner=key.id) for _ in range(3)], now=T0 + 3)
    await store.create_batch(more, [new_job(owner=key.id) for _ in range(2)], now=T0 + 3)


async def test_a_refused_submission_leaves_no_trace(store: JobStore) -> None:
    key = await a_key(store, Quota(max_queued=1))
    await store.enqueue(new_job(owner=key.id), now=T0)
    refused = new_job(owner=key.id, idempotency_key="k1")
    with pytest.raises(QuotaExceeded):
        await store.enqueue(refused, now=T0 + 1)
    assert await store.get(refused.id) is None
    assert sum((await store.counts()).values()) == 1


async def test_time_on_a_backend_is_added_to_the_key(store: JobStore) -> None:
    key = await a_key(store)
    job, _ = await store.enqueue(new_job(owner=key.id), now=T0)
    claimed = await store.claim("w1", 30, now=T0 + 1)
    assert claimed is not None and claimed.id == job.id
    await store.transition(
        job.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 1 + 7.5, worker_id="w1"
    )
    used = await store.get_api_key(key.id)
    assert used is not None
    assert used.gpu_seconds == pytest.approx(7.5, abs=0.01)
    assert used.jobs_submitted == 1


async def test_counts_and_oldest_of_one_key_are_its_jobs_alone(store: JobStore) -> None:
    a, b = await a_key(store, name="team-a"), await a_key(store, name="team-b")
    first, _ = await store.enqueue(new_job(owner=a.id), now=T0)
    await store.enqueue(new_job(owner=a.id), now=T0 + 1)
    await store.enqueue(new_job(owner=b.id), now=T0 + 2)
    await store.enqueue(new_job(), now=T0 + 3)  # no key's (an admin's, or no keys at all)
    assert await store.oldest_queued_at(owner=b.id) == T0 + 2
    claimed = await store.claim("w1", 30, now=T0 + 4)
    assert claimed is not None and claimed.id == first.id
    await store.transition(
        first.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 5, worker_id="w1"
    )
    claimed = await store.claim("w1", 30, now=T0 + 6)  # b's, by the keys' fair share
    assert claimed is not None and claimed.owner == b.id

    def nonzero(counts: dict[JobStatus, int]) -> dict[JobStatus, int]:
        assert set(counts) == set(JobStatus)  # every status, 0 where none
        return {status: n for status, n in counts.items() if n}

    assert nonzero(await store.counts(owner=a.id)) == {
        JobStatus.SUCCEEDED: 1,
        JobStatus.QUEUED: 1,
    }
    assert nonzero(await store.counts(unfinished=True, owner=a.id)) == {JobStatus.QUEUED: 1}
    assert nonzero(await store.counts(owner=b.id)) == {JobStatus.RUNNING: 1}
    assert nonzero(await store.counts(owner="nobody")) == {}
    for owner in (a.id, b.id, "nobody", None):
        now = store.counts_now(unfinished=True, owner=owner)
        assert now is None or now == await store.counts(unfinished=True, owner=owner)
    assert nonzero(await store.counts()) == {
        JobStatus.SUCCEEDED: 1,
        JobStatus.RUNNING: 1,
        JobStatus.QUEUED: 2,
    }
    assert nonzero(await store.counts(unfinished=True)) == {
        JobStatus.RUNNING: 1,
        JobStatus.QUEUED: 2,
    }
    assert await store.oldest_queued_at(owner=a.id) == T0 + 1  # its first is done
    assert await store.oldest_queued_at(owner=b.id) is None  # running now
    assert await store.oldest_queued_at() == T0 + 1
