"""The pure transition plan every store applies: what each event writes besides the status."""

from __future__ import annotations

import itertools

import pytest

from comfyrun.core.job import ACTIVE, TERMINAL, Job, JobError, JobStatus, Progress
from comfyrun.core.state import Event, allowed, next_state
from comfyrun.errors import IllegalTransition
from comfyrun.store.base import Changes
from comfyrun.store.transition import apply, plan, status_event

NOW = 100.0
HELD = Job(
    id="j",
    workflow={},
    status=JobStatus.RUNNING,
    attempts=1,
    worker_id="w",
    lease_expires_at=130.0,
    started_at=90.0,
)


@pytest.mark.parametrize(("status", "event"), list(itertools.product(JobStatus, Event)))
def test_plan_follows_the_table_and_the_lease_rules(status: JobStatus, event: Event) -> None:
    if not allowed(status, event):
        with pytest.raises(IllegalTransition):
            plan(status, event, None, NOW)
        return
    p = plan(status, event, None, NOW)
    after = apply(HELD.evolve(status=status), p)
    assert after.status is next_state(status, event)
    if after.status is status:
        assert after == HELD.evolve(status=status)  # no-ops write nothing
        return
    if status in ACTIVE and after.status not in ACTIVE:
        assert after.lease_expires_at is None
    if after.status is JobStatus.QUEUED:
        assert after.worker_id is None and after.next_run_at == NOW
    if after.status in TERMINAL - {JobStatus.EXPIRED}:
        assert after.finished_at == NOW


def test_changes_are_applied_and_logged() -> None:
    error = JobError(code="oom", message="out of memory")
    changes = Changes(
        error=error,
        progress=Progress(value=1.0),
        backend="b",
        prompt_id="p",
        expires_at=500.0,
        extra={"why": "test"},
    )
    p = plan(JobStatus.RUNNING, Event.FAIL, changes, NOW)
    after = apply(HELD, p)
    assert (after.error, after.backend, after.prompt_id) == (error, "b", "p")
    assert after.expires_at == 500.0 and after.progress == Progress(value=1.0)
    data = status_event(after, p)
    assert data["status"] == "failed" and data["previous"] == "running"
    assert data["error"]["code"] == "oom" and data["why"] == "test"


def test_retry_delay_and_forced_lease_clear() -> None:
    after = apply(HELD, plan(JobStatus.RUNNING, Event.RETRY, Changes(next_run_at=150.0), NOW))
    assert after.next_run_at == 150.0
    p = plan(JobStatus.RUNNING, Event.CANCEL, Changes(clear_lease=True), NOW)
    canceling = apply(HELD, p)
    assert canceling.status is JobStatus.CANCELING and canceling.worker_id is None


def test_error_must_be_a_job_error() -> None:
    with pytest.raises(TypeError):
        plan(JobStatus.RUNNING, Event.FAIL, Changes(error="boom"), NOW)
