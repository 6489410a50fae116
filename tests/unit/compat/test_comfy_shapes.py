"""Jobs rendered as ComfyUI's queue, history and /api/jobs shapes, checked against what a real
ComfyUI answered (../shared/comfy-protocol)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.emulator import HISTORY_MAPS, assert_same_shape, image_workflow

from comfyrun.api.compat import comfy as cc
from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType


def load(shared_dir: Path, name: str) -> Any:
    return json.loads((shared_dir / "comfy-protocol" / name).read_text())


def output(job_id: str, node_id: str, filename: str, **kw: Any) -> Output:
    return Output(
        node_id=node_id,
        name=filename,
        type=kw.pop("type", OutputType.IMAGE),
        content_type="image/png",
        storage_key=f"{job_id}/{node_id}/{filename}",
        meta={"key": "images", "filename": filename, "subfolder": "", "type": "output"},
        **kw,
    )


def done_job(status: JobStatus = JobStatus.SUCCEEDED, **kw: Any) -> Job:
    job_id = "fe609172-6b0b-40da-b9f2-df080c73767d"
    values: dict[str, Any] = {
        "id": job_id,
        "workflow": image_workflow(),
        "status": status,
        "created_at": 100.0,
        "started_at": 101.0,
        "finished_at": 102.5,
        "metadata": {cc.META_NUMBER: 7, cc.META_CLIENT_ID: "client-1"},
        "outputs": (output(job_id, "3", "test_00001_.png"), output(job_id, "4", "p.png")),
    }
    values.update(kw)
    return Job(**values)


def test_history_entry_has_comfyuis_shape(shared_dir: Path) -> None:
    real = load(shared_dir, "history.json")["by_id_success"]["body"]
    job = done_job()
    ours = {job.id: cc.history_entry(job)}
    assert_same_shape(ours, real, maps=HISTORY_MAPS)
    entry = ours[job.id]
    assert entry["prompt"][:2] == [7, job.id]
    assert entry["prompt"][3] == {"client_id": "client-1"}
    assert entry["prompt"][4] == ["3", "4"]
    assert entry["outputs"]["3"]["images"] == [
        {"filename": "test_00001_.png", "subfolder": f"{job.id}/3", "type": "output"}
    ]
    assert entry["status"]["messages"][-1][1]["timestamp"] == 102500


def test_failed_history_entry_carries_the_execution_error(shared_dir: Path) -> None:
    real = load(shared_dir, "ws_runtime_error.json")["history"]["body"]
    error = JobError(
        code="node_execution_error",
        message="Error while deserializing header",
        node_id="1",
        class_type="CheckpointLoaderSimple",
        traceback="line 1\nline 2\n",
        details={"exception_type": "SafetensorError", "node_type": "CheckpointLoaderSimple"},
    )
    job = done_job(JobStatus.FAILED, error=error, outputs=())
    entry = cc.history_entry(job)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    kind, data = entry["status"]["messages"][-1]
    real_entry = next(iter(real.values()))
    real_kind, real_data = real_entry["status"]["messages"][-1]
    assert kind == real_kind == "execution_error"
    assert list(data) == list(real_data)
    assert data["exception_type"] == "SafetensorError"
    assert data["traceback"] == ["line 1\n", "line 2\n"]
    assert data["node_type"] == "CheckpointLoaderSimple"


def test_canceled_job_is_an_interrupted_prompt() -> None:
    entry = cc.history_entry(done_job(JobStatus.CANCELED, outputs=()))
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert cc.api_job(done_job(JobStatus.CANCELED))["status"] == "cancelled"


def test_queue_item_is_comfyuis_tuple(shared_dir: Path) -> None:
    queue = load(shared_dir, "queue_interrupt.json")["get_queue_1running_3pending"]["body"]
    options = {"extra_data": {"api_key_comfy_org": "key"}}  # what that client sent
    ours = {
        "queue_running": [cc.queue_item(done_job(JobStatus.RUNNING, options=options))],
        "queue_pending": [cc.queue_item(done_job(JobStatus.QUEUED))],
    }
    assert_same_shape(ours, queue)


def test_text_outputs_and_key_split() -> None:
    job = done_job(
        outputs=(
            Output(
                node_id="9", name="text", type=OutputType.TEXT, content_type="text/plain", text="hi"
            ),
        )
    )
    assert cc.history_outputs(job.outputs) == {"9": {"text": ["hi"]}}
    assert cc.split_key("a/b/c.png") == ("a/b", "c.png")


def test_api_jobs_item_and_statuses() -> None:
    job = done_job()
    item = cc.api_job(job)
    assert item["status"] == "completed"
    assert item["outputs_count"] == 2
    assert item["preview_output"]["nodeId"] == "3"
    assert item["execution_start_time"] == 101000 and item["create_time"] == 100000
    assert "outputs" not in item and "workflow" not in item
    detail = cc.api_job(job, detail=True)
    assert detail["workflow"]["prompt"] == job.workflow
    assert detail["execution_status"]["status_str"] == "success"
    pending = cc.api_job(done_job(JobStatus.QUEUED, outputs=(), started_at=None, finished_at=None))
    assert pending["status"] == "pending" and "execution_start_time" not in pending
    started = done_job(JobStatus.RUNNING, execution_started_at=101.2)
    assert cc.api_job(started)["status"] == "in_progress"
    # claimed, its prompt held in a backend's queue: still pending until ComfyUI starts it
    assert cc.api_job(done_job(JobStatus.RUNNING))["status"] == "pending"
    assert cc.statuses_for(["pending", "in_progress"]) == [
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.CANCELING,
    ]
    assert cc.statuses_for(["pending"]) == [JobStatus.QUEUED, JobStatus.RUNNING]
    assert cc.statuses_for(["bogus"]) == []
