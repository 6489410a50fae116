"""The workflow a try submits after one whose outputs ComfyUI named but no longer had."""

from __future__ import annotations

import copy

from comfyrun.core.job import Job, JobError
from comfyrun.dispatch.collect import recached
from comfyrun.dispatch.run_context import OUTPUT_MISSING, RECACHE_INPUT

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


def test_only_the_nodes_that_named_files_get_the_input_and_nothing_is_changed_in_place() -> None:
    error = JobError(code=OUTPUT_MISSING, message="gone", details={"nodes": ["3", "9"]})
    job = Job(id="j1", workflow=copy.deepcopy(WORKFLOW), attempts=2, error=error)
    out = recached(job.workflow, job)
    assert out["3"]["inputs"] == {**WORKFLOW["3"]["inputs"], RECACHE_INPUT: "j1:2"}
    assert out["1"] == WORKFLOW["1"] and "9" not in out  # a node it no longer has: left alone
    assert job.workflow == WORKFLOW  # the job's own workflow is as it was


def test_any_other_try_submits_the_workflow_as_it_is() -> None:
    for error in (None, JobError(code="backend_lost", message="x")):
        job = Job(id="j1", workflow=WORKFLOW, error=error)
        assert recached(job.workflow, job) is job.workflow
