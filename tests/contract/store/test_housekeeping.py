"""Every store: lost leases, stuck jobs, expiry and deletion."""

from __future__ import annotations

from tests.support.store import new_job

from comfyrun.core.job import Job, JobStatus
from comfyrun.core.state import Event
from comfyrun.store.base import Changes, JobStore

T0 = 1_700_000_000.0


async def claimed(store: JobStore, lease_s: float = 30, now: float = T0, **kw: object) -> Job:
    await store.enqueue(new_job(**kw), now=now)
    job = await store.claim("w1", lease_s, now=now)
    assert job is not None
    return job


async def test_lost_lease_requeues_while_retries_remain_then_fails(store: JobStore) -> None:
    job = await claimed(store, max_retries=1, retry_delay_s=1.0)
    assert await store.sweep_expired_leases(now=T0 + 29) == []
    swept = await store.sweep_expired_leases(now=T0 + 31)
    assert [j.id for j in swept] == [job.id]
    back = swept[0]
    assert back.status is JobStatus.QUEUED and back.worker_id is None
    assert T0 + 31 < back.next_run_at <= T0 + 32  # backoff of retry_delay_s with jitter
    again = await store.claim("w2", 30, now=T0 + 40)
    assert again is not None and again.id == job.id and again.attempts == 2
    [failed] = await store.sweep_expired_leases(now=T0 + 71)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "lease_lost"
    last = (await store.events_since(job.id))[-1]
    assert last.data["status"] == "failed" and last.data["reason"] == "lease_lost"


async def test_lost_lease_while_canceling_ends_canceled(store: JobStore) -> None:
    job = await claimed(store, max_retries=5)
    await store.transition(job.id, Event.CANCEL, expect=JobStatus.RUNNING, now=T0 + 1)
    [swept] = await store.sweep_expired_leases(now=T0 + 31)
    assert swept.status is JobStatus.CANCELED


async def test_renewed_lease_is_not_swept(store: JobStore) -> None:
    job = await claimed(store)
    assert await store.renew(job.id, "w1", 30, now=T0 + 25)
    assert await store.sweep_expired_leases(now=T0 + 40) == []
    assert (await store.get(job.id)).status is JobStatus.RUNNING  # type: ignore[union-attr]


async def test_requeue_stuck(store: JobStore) -> None:
    old = await claimed(store, lease_s=10_000, now=T0)
    young = await claimed(store, lease_s=10_000, now=T0 + 500)
    requeued = await store.requeue_stuck(600, now=T0 + 700)
    assert [j.id for j in requeued] == [old.id]
    assert requeued[0].status is JobStatus.QUEUED and requeued[0].worker_id is None
    assert (await store.get(young.id)).status is JobStatus.RUNNING  # type: ignore[union-attr]


async def test_expire_finished(store: JobStore) -> None:
    job = await claimed(store)
    await store.transition(
        job.id,
        Event.SUCCEED,
        expect=JobStatus.RUNNING,
        changes=Changes(expires_at=T0 + 100),
        now=T0 + 1,
    )
    keep = await claimed(store)
    await store.transition(keep.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 1)
    assert await store.expire_finished(now=T0 + 99) == []
    [expired] = await store.expire_finished(now=T0 + 100)
    assert expired.id == job.id and expired.status is JobStatus.EXPIRED
    assert await store.expire_finished(now=T0 + 200) == []


async def test_delete_removes_job_and_events(store: JobStore) -> None:
    job, _ = await store.enqueue(new_job(), now=T0)
    await store.append_event(job.id, "log", {})
    assert await store.delete(job.id)
    assert await store.get(job.id) is None
    assert await store.events_since(job.id) == []
    assert not await store.delete(job.id)


async def test_delete_finished_before(store: JobStore) -> None:
    old = await claimed(store, now=T0)
    await store.transition(old.id, Event.FAIL, expect=JobStatus.RUNNING, now=T0 + 1)
    new = await claimed(store, now=T0)
    await store.transition(new.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 100)
    queued, _ = await store.enqueue(new_job(), now=T0)
    deleted = await store.delete_finished_before(T0 + 50)
    assert [j.id for j in deleted] == [old.id]
    assert deleted[0].workflow == old.workflow  # the job as it was, workflow and all
    assert await store.get(old.id) is None
    assert await store.get(new.id) is not None and await store.get(queued.id) is not None


async def test_jobs_in_retry_are_counted_until_they_end(store: JobStore) -> None:
    """`retrying` (RunPod's /health `jobs.retried`): a job whose attempt failed, queued to run
    again and then running again; not a first attempt, nor a job once it ended."""
    job = await claimed(store, max_retries=2, owner="a")
    # queued, never claimed (a lower priority: the claim below takes the retried job, not a
    # tie broken by the ids' random part)
    await store.enqueue(new_job(owner="b", priority=-1), now=T0)
    assert await store.retrying() == 0
    await store.transition(
        job.id, Event.RETRY, expect=JobStatus.RUNNING, changes=Changes(next_run_at=T0 + 1)
    )
    assert await store.retrying() == 1
    assert (await store.retrying(owner="a"), await store.retrying(owner="b")) == (1, 0)
    again = await store.claim("w2", 30, now=T0 + 2)
    assert again is not None and again.id == job.id and again.attempts == 2
    assert await store.retrying() == 1  # its second attempt runs
    await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=T0 + 3)
    assert await store.retrying() == 0
