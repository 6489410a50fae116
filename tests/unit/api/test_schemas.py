"""The wire Job is the spec's Job: the official SDK's own models accept what we render."""

from __future__ import annotations

import dataclasses

from comfy_low.models import Job as SpecJob
from comfy_low.models import Output as SpecOutput

from comfyrun.api.wire import job_to_wire, output_id, parse_output_id
from comfyrun.client.sse import SSEDecoder
from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType, Progress

NOW = 1_800_000_000.0


def _job(**changes: object) -> Job:
    base = Job(id="j1", workflow={}, created_at=NOW - 10)
    return base.evolve(**changes)


def test_queued_job_validates_against_the_sdk_model() -> None:
    wire = job_to_wire(_job(), queue_position=3, base_url="http://h", retention_s=3600, now=NOW)
    spec = SpecJob.model_validate(wire.model_dump(mode="json"))
    assert spec.queue_position == 3 and spec.started_at is None and spec.completed_at is None
    assert spec.expires_at.timestamp() == NOW + 3600


def test_finished_job_with_outputs_progress_and_error() -> None:
    out = Output(
        node_id="9",
        name="ComfyUI_00001_.png",
        type=OutputType.IMAGE,
        content_type="image/png",
        size_bytes=123,
        hash="blake3:ab",
        storage_key="j1/9/ComfyUI_00001_.png",
    )
    job = _job(
        status=JobStatus.FAILED,
        started_at=NOW - 9,  # claimed
        execution_started_at=NOW - 8,  # ComfyUI started the prompt
        finished_at=NOW - 2,
        expires_at=NOW + 100,
        progress=Progress(value=1.5, nodes_done=3, nodes_total=3, message="KSampler 20/20"),
        outputs=(out,),
        error=JobError(code="node_execution_error", message="boom", node_id="3"),
    )
    wire = job_to_wire(job, queue_position=None, base_url="http://h:1", retention_s=60, now=NOW)
    data = wire.model_dump(mode="json")
    spec = SpecJob.model_validate(data)
    assert spec.metrics == {"queue_ms": 2000, "execution_ms": 6000, "attempts": 0}
    assert spec.progress is not None and spec.progress.value == 1.0  # clamped to the spec's range
    assert spec.error is not None and spec.error.code == "node_execution_error"
    (o,) = spec.outputs
    assert str(o.url) == "http://h:1/api/v2/assets/o0-j1/content"
    assert o.id == "o0-j1" and o.job_id == "j1"
    assert SpecOutput.model_validate(data["outputs"][0]).size_bytes == 123


def test_a_claimed_job_whose_prompt_waits_in_a_backend_queue_is_queued_there() -> None:
    held = _job(status=JobStatus.RUNNING, started_at=NOW - 5, backend="gpu-1")
    wire = job_to_wire(held, queue_position=None, base_url="http://h", retention_s=60, now=NOW)
    assert wire.status is JobStatus.QUEUED and wire.backend == "gpu-1"
    assert wire.started_at is None and wire.metrics["queue_ms"] is None
    # a start left by an earlier attempt (before this claim) does not count
    stale = held.evolve(execution_started_at=NOW - 7)
    assert job_to_wire(stale, queue_position=None, base_url="", retention_s=60, now=NOW).status is (
        JobStatus.QUEUED
    )
    started = held.evolve(execution_started_at=NOW - 4)
    wire = job_to_wire(started, queue_position=None, base_url="http://h", retention_s=60, now=NOW)
    assert wire.status is JobStatus.RUNNING and wire.metrics["queue_ms"] == 6000


def test_output_ids_round_trip_and_asset_ids_win() -> None:
    out = Output(node_id="1", name="a", type=OutputType.FILE, content_type="x/y")
    assert parse_output_id(output_id("abc-def", 7, out)) == ("abc-def", 7)
    assert output_id("j", 0, dataclasses.replace(out, id="asset_1")) == "asset_1"
    assert parse_output_id("asset_1") is None and parse_output_id("ox-j") is None


def test_sse_decoder_tracks_ids_and_events() -> None:
    dec = SSEDecoder()
    lines = ["retry: 1000", "", ": keep-alive", "", "id: 4", "event: status"]
    lines += ['data: {"status": "running"}', "", 'data: {"value": 1}', ""]
    events = [e for line in lines for e in dec.push(line)]
    assert [(e.event, e.id) for e in events] == [("status", "4"), ("message", "4")]
    assert events[0].data == {"status": "running"} and dec.retry_ms == 1000
