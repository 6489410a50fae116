"""Jobs as RunPod, the plain /run variant and the task variant show them (pure)."""

from __future__ import annotations

from typing import Any

from comfyrun.api.compat import runpod as rp
from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType


def job(status: JobStatus, **kw: Any) -> Job:
    values: dict[str, Any] = {
        "id": "j1",
        "workflow": {"1": {"class_type": "X", "inputs": {}}},
        "status": status,
        "created_at": 10.0,
        "started_at": 10.4,  # claimed
        "execution_started_at": 10.5,  # ComfyUI started the prompt
        "finished_at": 12.0,
    }
    values.update(kw)
    return Job(**values)


def test_statuses() -> None:
    timeout = JobError(code="timeout", message="ran past its timeout")
    assert rp.runpod_status(job(JobStatus.QUEUED)) == "IN_QUEUE"
    assert rp.runpod_status(job(JobStatus.CANCELING)) == "IN_PROGRESS"
    assert rp.runpod_status(job(JobStatus.SUCCEEDED)) == "COMPLETED"
    assert rp.runpod_status(job(JobStatus.CANCELED)) == "CANCELLED"
    assert rp.runpod_status(job(JobStatus.FAILED, error=timeout)) == "TIMED_OUT"
    assert rp.runpod_status(job(JobStatus.FAILED)) == "FAILED"
    assert [rp.plain_status(job(s)) for s in JobStatus] == [
        "pending",
        "running",
        "running",
        "completed",
        "failed",
        "failed",
        "completed",
    ]
    assert rp.task_status(job(JobStatus.CANCELED)) == "cancelled"
    # claimed, but its prompt still waits in a backend's ComfyUI queue
    held = job(JobStatus.RUNNING, execution_started_at=None)
    assert rp.runpod_status(held) == "IN_QUEUE" and rp.plain_status(held) == "pending"
    assert rp.runpod_status(job(JobStatus.RUNNING)) == "IN_PROGRESS"


def test_runpod_response_and_worker_output() -> None:
    png = Output(node_id="3", name="a.png", type=OutputType.IMAGE, content_type="image/png")
    mp4 = Output(node_id="4", name="v.mp4", type=OutputType.VIDEO, content_type="video/mp4")
    output = rp.worker_output(
        [rp.Delivered(png, "base64", "QUJD"), rp.Delivered(mp4, "s3_url", "https://x/v.mp4")]
    )
    assert output == {
        "images": [{"filename": "a.png", "type": "base64", "data": "QUJD"}],
        "videos": [{"filename": "v.mp4", "type": "s3_url", "data": "https://x/v.mp4"}],
    }
    body = rp.runpod_response(job(JobStatus.SUCCEEDED), output)
    assert body == {
        "id": "j1",
        "status": "COMPLETED",
        "delayTime": 500,
        "executionTime": 1500,
        "output": output,
    }
    error = JobError("node_execution_error", "boom", node_id="2", class_type="ImageInvert")
    failed = rp.runpod_response(job(JobStatus.FAILED, error=error), None)
    assert failed["error"] == (
        "Workflow execution error: Node Type: ImageInvert, Node ID: 2, Message: boom"
    )
    assert "output" not in failed
    queued = rp.runpod_response(
        job(JobStatus.QUEUED, started_at=None, execution_started_at=None, finished_at=None), None
    )
    assert queued["delayTime"] == 0 and queued["executionTime"] == 0
    stream = rp.stream_response(job(JobStatus.SUCCEEDED), output)
    assert stream == {"status": "COMPLETED", "stream": [{"output": output}]}


def test_plain_and_task_bodies() -> None:
    done = rp.plain_response(job(JobStatus.SUCCEEDED), {"images": []})
    assert done["result"] == {"images": []} and done["error"] is None
    assert done["completed_at"] == 12.0
    canceled = rp.plain_response(job(JobStatus.CANCELED), None)
    assert canceled["status"] == "failed" and canceled["error"] == "canceled"
    counts = {JobStatus.QUEUED: 2, JobStatus.SUCCEEDED: 3, JobStatus.FAILED: 1}
    stats = rp.plain_stats(counts, [job(JobStatus.QUEUED)])
    assert stats["total_jobs"] == 6 and stats["pending_jobs"] == 2
    assert stats["recent_jobs"][0]["status"] == "pending"
    health = rp.health(counts, retried=1, workers_idle=1, workers_running=2)
    assert health["jobs"]["inQueue"] == 2 and health["workers"] == {"idle": 1, "running": 2}
    assert health["jobs"]["retried"] == 1
    task = rp.task_response(
        job(
            JobStatus.SUCCEEDED,
            metadata={"workflow_id": "t2i"},
            attempts=2,
            max_retries=3,
            backend="comfy-1",
        ),
        {"outputs": {}},
    )
    assert task["workflow_id"] == "t2i" and task["retry_count"] == 1 and task["max_retries"] == 3
    assert task["worker_id"] == "comfy-1" and task["created_at"] == "1970-01-01T00:00:10Z"
    assert task["result"] == {"outputs": {}} and task["error"] == ""


def test_policy_ttl_becomes_a_start_deadline_and_a_late_job_reads_timed_out() -> None:
    import time

    from comfyrun.api.routes.runpod_compat import runpod_submission

    before = time.time()
    sub = runpod_submission(
        {"input": {"workflow": {"1": {"class_type": "X", "inputs": {}}}}, "policy": {"ttl": 5000}},
        endpoint_id="ep",
    )
    assert before + 5.0 <= sub.options["start_by"] <= time.time() + 5.0
    assert sub.metadata["runpod_ttl_ms"] == 5000
    plain = runpod_submission(
        {"input": {"workflow": {"1": {"class_type": "X", "inputs": {}}}}}, endpoint_id=None
    )
    assert "start_by" not in plain.options
    late = job(JobStatus.FAILED, error=JobError(code="queue_timeout", message="not started"))
    assert rp.runpod_status(late) == rp.TIMED_OUT
