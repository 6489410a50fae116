"""The codec: jobs and their parts survive a trip through JSON; cursors are opaque but checked."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType, Progress
from comfyrun.errors import InvalidRequest
from comfyrun.store.codec import (
    decode_cursor,
    encode_cursor,
    job_from_dict,
    job_from_row,
    job_to_dict,
    job_to_row,
    load_json,
    output_from_dict,
    output_to_dict,
)

FULL = Job(
    id="j1",
    workflow={"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}}},
    status=JobStatus.FAILED,
    priority=-2,
    inputs=({"name": "a", "url": "http://x"},),
    options={"webhook": {"url": "http://h"}},
    metadata={"k": [1, 2]},
    owner="o",
    attempts=2,
    max_retries=3,
    retry_delay_s=1.5,
    timeout_s=30.0,
    idempotency_key="key",
    request_hash="abc",
    created_at=1.25,
    next_run_at=2.5,
    started_at=3.0,
    finished_at=4.0,
    expires_at=5.0,
    worker_id="w",
    lease_expires_at=6.0,
    backend="b",
    prompt_id="p",
    progress=Progress(value=0.5, nodes_done=1, nodes_total=2, current_node="3", step=1, steps=2),
    outputs=(
        Output(
            node_id="9",
            name="x.png",
            type=OutputType.IMAGE,
            content_type="image/png",
            size_bytes=3,
            meta={"subfolder": "s"},
        ),
    ),
    error=JobError(code="c", message="m", node_id="3", class_type="K", details={"a": 1}),
)


def test_job_round_trips_through_json_text() -> None:
    data = json.loads(json.dumps(job_to_dict(FULL)))
    assert data["status"] == "failed"
    assert data["outputs"][0]["type"] == "image"
    assert job_from_dict(data) == FULL


def test_row_round_trip_with_text_and_decoded_json() -> None:
    row = job_to_row(FULL)
    assert isinstance(row["workflow"], str) and row["error"] is not None
    assert job_from_row(row) == FULL
    decoded = {k: json.loads(v) if k in {"workflow", "outputs"} else v for k, v in row.items()}
    assert job_from_row(decoded) == FULL


def test_empty_parts_stay_empty() -> None:
    job = Job(id="j", workflow={})
    row = job_to_row(job)
    assert row["progress"] is None and row["error"] is None
    assert job_from_row(row) == job


def test_unknown_keys_are_ignored() -> None:
    data = job_to_dict(FULL) | {"from_the_future": 1}
    data["outputs"][0]["new_field"] = "x"
    assert job_from_dict(data) == FULL
    assert output_from_dict(output_to_dict(FULL.outputs[0])) == FULL.outputs[0]


@given(created=st.floats(allow_nan=False, allow_infinity=False), job_id=st.text(max_size=40))
def test_cursor_round_trip(created: float, job_id: str) -> None:
    assert decode_cursor(encode_cursor(created, job_id)) == (created, job_id)


@pytest.mark.parametrize("bad", ["", "!!", "e30", "WzEsMl0", "WyJhIiwiYiJd", "bnVsbA"])
def test_bad_cursors_are_invalid_requests(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_cursor(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(value=json_values, compact=st.booleans())
def test_load_json_is_json_loads(value: object, compact: bool) -> None:
    text = json.dumps(value, separators=(",", ":")) if compact else json.dumps(value)
    assert load_json(text) == json.loads(text)
    assert load_json(text.encode()) == json.loads(text)


def test_the_empty_values_load_fresh_each_time() -> None:
    first, second = load_json("{}"), load_json("{}")
    first["x"] = 1
    assert second == {} and load_json("[]") == [] and load_json("[]") is not load_json("[]")
    assert load_json("null") is None
