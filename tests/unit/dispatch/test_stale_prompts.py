"""Which prompts found on a backend comfyrun gave up on are no longer their jobs' (pure)."""

from __future__ import annotations

import pytest

from comfyrun.comfy.history import QueueItem
from comfyrun.core.job import Job, JobStatus
from comfyrun.dispatch.stale_prompts import JOB_ID_KEY, is_stale, job_id_of


@pytest.mark.parametrize(
    ("status", "last_noted", "stale"),
    [
        (JobStatus.SUCCEEDED, "p1", True),  # ended: even its own last prompt goes
        (JobStatus.CANCELED, "p1", True),
        (JobStatus.FAILED, None, True),
        (JobStatus.QUEUED, "p2", True),  # a later attempt noted another prompt: it moved
        (JobStatus.RUNNING, "p2", True),
        (JobStatus.RUNNING, "p1", False),  # its current prompt: still this backend's
        (JobStatus.QUEUED, "p1", False),  # its next attempt may adopt it back
        (JobStatus.CANCELING, "p1", False),  # its run stops it itself
        (JobStatus.RUNNING, None, False),  # nothing noted (cannot tell): left
    ],
)
def test_a_prompt_is_stale_once_its_job_ended_or_moved(
    status: JobStatus, last_noted: str | None, stale: bool
) -> None:
    assert is_stale(Job(id="j", workflow={}, status=status), "p1", last_noted) is stale


def test_an_unknown_job_is_not_judged() -> None:
    assert not is_stale(None, "p1", "p2")


def test_only_prompts_comfyrun_submitted_name_a_job() -> None:
    assert job_id_of(QueueItem(1, "p", {}, {JOB_ID_KEY: "j"})) == "j"
    assert job_id_of(QueueItem(1, "p", {}, {"client_id": "editor"})) is None
    assert job_id_of(QueueItem(1, "p", {}, {JOB_ID_KEY: 7})) is None
