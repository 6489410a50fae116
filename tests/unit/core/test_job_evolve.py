"""`Job.evolve`: a copy with some fields changed, as `dataclasses.replace` makes it (it copies
the fields without `__init__`, so it must still give the same job, and a frozen one)."""

from __future__ import annotations

import dataclasses

import pytest

from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType


def a_job() -> Job:
    return Job(
        id="j1",
        workflow={"1": {"class_type": "EmptyImage", "inputs": {}}},
        status=JobStatus.RUNNING,
        priority=3,
        inputs=({"name": "a.png"},),
        metadata={"k": "v"},
        owner="t1",
        attempts=1,
        outputs=(
            Output(node_id="2", name="a.png", type=OutputType.IMAGE, content_type="image/png"),
        ),
        error=JobError(code="x", message="y"),
        fair_tag=1.5,
    )


def test_each_field_changed_alone_as_replace_changes_it() -> None:
    job = a_job()
    other = Job(id="j2", workflow={}, status=JobStatus.SUCCEEDED, fair_key="k", type="t")
    for f in dataclasses.fields(Job):
        value = getattr(other, f.name)
        changed = job.evolve(**{f.name: value})
        assert changed == dataclasses.replace(job, **{f.name: value})
        assert getattr(changed, f.name) is value
    assert job == a_job()  # the original is untouched


def test_no_change_is_an_equal_copy_and_it_stays_frozen() -> None:
    job = a_job()
    copy = job.evolve()
    assert copy == job and copy is not job
    assert copy.terminal is job.terminal
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.priority = 9  # type: ignore[misc]


def test_a_field_the_job_has_not_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no_such_field"):
        a_job().evolve(no_such_field=1)
