"""Relayed frames and store events → one ComfyUI client's messages (no sockets)."""

from __future__ import annotations

import json
import struct
from typing import Any

from comfyrun.api.compat.comfy_relay import STATUS, ComfyRelay, Out
from comfyrun.comfy.wire import from_json, preview_frame, to_json
from comfyrun.core.job import Job, JobError, JobStatus, Output, OutputType
from comfyrun.dispatch.relay import EVENT_KIND
from comfyrun.store.base import JobEvent
from comfyrun.store.codec import output_to_dict

PID = "job-1"


def text(kind: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "data": {**data, "prompt_id": PID}}


def preview(image: bytes = b"jpeg") -> dict[str, Any]:
    meta = {"node_id": "5", "prompt_id": PID, "image_type": "image/jpeg"}
    return to_json(preview_frame(image, meta, metadata_frame=True))


def status(value: str, event_id: int = 9) -> JobEvent:
    return JobEvent(event_id, PID, "status", {"status": value}, 1.0)


def stored_output() -> Output:
    return Output(
        node_id="7",
        name="a.png",
        type=OutputType.IMAGE,
        content_type="image/png",
        storage_key=f"{PID}/7/a.png",
        meta={"key": "images"},
    )


def output_event(event_id: int = 5) -> JobEvent:
    return JobEvent(event_id, PID, "output", output_to_dict(stored_output()), 1.0)


RUN = [
    text("execution_start", timestamp=1),
    text("execution_cached", nodes=["1"], timestamp=1),
    text("executing", node="5", display_node="5"),
    preview(),
    text("progress", value=1, max=2, node="5"),
    preview(),
    text("progress", value=2, max=2, node="5"),
]
END = [
    text("executed", node="7", display_node="7", output={"images": [{"filename": "b.png"}]}),
    text("execution_success", timestamp=2),
    text("executing", node=None),
]


def names(messages: list[Out]) -> list[str]:
    out = []
    for message in messages:
        if message is STATUS:
            out.append("STATUS")
        elif isinstance(message, bytes):
            out.append(f"<{struct.unpack_from('>I', message)[0]}>")
        else:
            assert isinstance(message, dict)
            out.append(message["type"])
    return out


def test_the_backends_messages_pass_through_and_the_end_waits_for_the_store() -> None:
    relay = ComfyRelay(PID, preview_metadata=True)
    sent = relay.feed_frames(RUN)
    assert names(sent) == [
        "STATUS",
        "execution_start",
        "execution_cached",
        "executing",
        "<4>",
        "progress",
        "<4>",
        "progress",
    ]
    assert sent[1:] == [f if "binary" not in f else json_bytes(f) for f in RUN]
    assert relay.feed_frames(END) == []  # the end waits for the job to be settled
    relay.feed_event(output_event())  # committed with the terminal status, just before it
    relay.feed_event(output_event())  # (counted once)
    ending = relay.feed_event(status("succeeded"), Job(id=PID, workflow={}))
    assert names(ending) == ["executed", "execution_success", "STATUS", "executing"]
    executed = ending[0]
    assert isinstance(executed, dict)
    assert executed["data"]["output"] == {
        "images": [{"filename": "a.png", "subfolder": f"{PID}/7", "type": "output"}]
    }
    assert relay.finished
    assert relay.feed_event(status("succeeded")) == []


def json_bytes(frame: dict[str, Any]) -> bytes:
    value = from_json(frame)
    assert isinstance(value, bytes)
    return value


def test_a_legacy_client_gets_previews_after_their_step() -> None:
    relay = ComfyRelay(PID, preview_metadata=False)
    sent = relay.feed_frames(RUN)
    assert names(sent)[-4:] == ["progress", "<1>", "progress", "<1>"]
    legacy = sent[-1]
    assert isinstance(legacy, bytes)
    assert legacy == struct.pack(">II", 1, 1) + b"jpeg"


def test_the_end_of_an_attempt_that_ran_again_is_dropped() -> None:
    relay = ComfyRelay(PID)
    relay.feed_frames(
        [*RUN[:3], text("execution_error", node_id="5"), text("executing", node=None)]
    )
    sent = relay.feed_frames(RUN[:2])  # the next attempt starts
    assert names(sent) == ["STATUS", "execution_start", "execution_cached"]
    relay.feed_frames(END)
    ending = relay.feed_event(status("succeeded"), Job(id=PID, workflow={}))
    assert names(ending) == ["executed", "execution_success", "STATUS", "executing"]


def test_frames_from_the_store_and_an_ending_made_up_for_a_job_failed_in_comfyrun() -> None:
    relay = ComfyRelay(PID)
    assert relay.feed_event(status("running", 1)) == []
    assert relay.feed_event(JobEvent(2, PID, "progress", {"current_node": "5"}, 1.0)) == []
    sent = relay.feed_event(JobEvent(3, PID, EVENT_KIND, {"messages": RUN[:3]}, 1.0))
    assert names(sent) == ["STATUS", "execution_start", "execution_cached", "executing"]
    job = Job(
        id=PID,
        workflow={},
        status=JobStatus.FAILED,
        error=JobError(code="backend_lost", message="backend gone"),
    )
    sent = relay.feed_event(status("failed"), job)
    assert names(sent) == ["execution_error", "STATUS", "executing"]  # no second start
    error = sent[0]
    assert isinstance(error, dict) and error["data"]["exception_message"] == "backend gone"


def test_a_job_without_relayed_frames_gets_the_made_up_sequence() -> None:
    relay = ComfyRelay(PID)
    relay.feed_event(output_event())
    sent = relay.feed_event(status("succeeded"), Job(id=PID, workflow={}))
    assert names(sent) == [
        "execution_start",
        "execution_cached",
        "executed",
        "execution_success",
        "STATUS",
        "executing",
    ]
    assert json.dumps(sent[2])  # plain JSON


def test_a_job_settled_in_this_process_ends_the_prompt_as_its_terminal_event_would() -> None:
    """The run that committed the job tells it (dispatch.relay): the same ending as from the
    store's output and terminal status events, the outputs taken from the job."""
    job = Job(id=PID, workflow={}, status=JobStatus.SUCCEEDED, outputs=(stored_output(),))
    from_events = ComfyRelay(PID, preview_metadata=True)
    from_events.feed_frames([*RUN, *END])
    from_events.feed_event(output_event())
    expected = from_events.feed_event(status("succeeded"), job)
    settled = ComfyRelay(PID, preview_metadata=True)
    settled.feed_frames([*RUN, *END])
    assert settled.settle(job) == expected
    assert names(expected) == ["executed", "execution_success", "STATUS", "executing"]
    assert settled.finished
    assert settled.feed_event(status("succeeded"), job) == []  # the store's copy comes later
    # a job with no relayed frames gets the made-up sequence, with the job's outputs
    made_up = ComfyRelay(PID)
    assert names(made_up.settle(job)) == [
        "execution_start",
        "execution_cached",
        "executed",
        "execution_success",
        "STATUS",
        "executing",
    ]
    # a job not settled (queued again) ends nothing
    assert ComfyRelay(PID).settle(Job(id=PID, workflow={}, status=JobStatus.QUEUED)) == []
