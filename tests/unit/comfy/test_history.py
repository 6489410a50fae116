"""History and queue bodies recorded from real ComfyUI."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.comfy import load

from comfyrun.comfy.errors import ComfyProtocolError
from comfyrun.comfy.history import parse_history, parse_queue
from comfyrun.comfy.messages import ExecutionError, ExecutionStart


def test_success_entry(shared_dir: Path) -> None:
    data = load(shared_dir, "history.json")
    body = data["by_id_success"]["body"]
    (prompt_id,) = body
    entry = parse_history(body, prompt_id)
    assert entry is not None
    assert entry.outcome == "success" and entry.completed
    assert entry.number == 676
    assert entry.prompt["3"]["class_type"] == "SaveImage"
    assert entry.extra_data["client_id"].startswith("capclient")
    assert entry.outputs_to_execute == ("3", "4")
    assert isinstance(entry.messages[0], ExecutionStart)
    assert set(entry.outputs) == {"3", "4"}


def test_unknown_prompt_is_none(shared_dir: Path) -> None:
    assert parse_history(load(shared_dir, "history.json")["by_id_unknown"]["body"], "nope") is None


def test_error_and_interrupt_are_told_apart(shared_dir: Path) -> None:
    runtime = load(shared_dir, "ws_runtime_error.json")["history"]["body"]
    (rid,) = runtime
    entry = parse_history(runtime, rid)
    assert entry is not None and entry.outcome == "error"
    assert isinstance(entry.error, ExecutionError) and entry.interrupted is None
    assert "6" in entry.outputs

    interrupted = load(shared_dir, "queue_interrupt.json")["history_interrupted"]["body"]
    (iid,) = interrupted
    ientry = parse_history(interrupted, iid)
    assert ientry is not None and ientry.status_str == "error"
    assert ientry.outcome == "interrupted" and ientry.error is None
    assert ientry.outputs == {}


def test_queue_shape(shared_dir: Path) -> None:
    data = load(shared_dir, "queue_interrupt.json")
    state = parse_queue(data["get_queue_1running_3pending"]["body"])
    assert state.running == ["5eaf2743-2ad4-45eb-93b8-7394e2573c85"]
    assert len(state.pending) == 3
    assert "5eaf2743-2ad4-45eb-93b8-7394e2573c85" in state
    assert state.pending[0] in state and "nope" not in state
    assert state.running_items[0].extra_data["client_id"] == "qclient-d3b10768"
    assert state.running_items[0].outputs_to_execute == ("4",)
    assert parse_queue({"queue_running": [], "queue_pending": []}).running == []


@pytest.mark.parametrize(
    "body", [[], "x", {"queue_running": [[]]}, {"queue_running": [["x", "id"]]}]
)
def test_malformed_queue(body: object) -> None:
    with pytest.raises(ComfyProtocolError):
        parse_queue(body)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"p": "x"},
        {"p": {"prompt": 5}},
        {"p": {"status": {"messages": [["execution_error", "x"]]}}},
    ],
)
def test_malformed_history(body: object) -> None:
    with pytest.raises(ComfyProtocolError):
        parse_history(body, "p")
