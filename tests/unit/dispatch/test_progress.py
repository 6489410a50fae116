"""Progress snapshots from a prompt's websocket messages, replayed from real ComfyUI transcripts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from comfyrun.comfy import messages as m
from comfyrun.comfy.messages import parse_event
from comfyrun.core.job import NewJob, Progress
from comfyrun.dispatch.progress import ProgressTracker, ProgressWriter
from comfyrun.store.factory import open_store


def replay(workflow: dict[str, Any], frames: list[dict[str, Any]]) -> list[Any]:
    tracker = ProgressTracker(workflow)
    snapshots = []
    for frame in frames:
        if frame.get("binary"):
            continue  # previews carry no progress
        snapshot = tracker.feed(parse_event(frame["type"], frame["data"]))
        if snapshot is not None:
            snapshots.append(snapshot)
    return snapshots


def test_sampler_steps_move_the_value_and_name_the_node(shared_dir: Path) -> None:
    capture = json.loads(
        (shared_dir / "comfy-protocol" / "ws_sampler_progress_previews_interrupt.json").read_text()
    )["client_without_feature_flags"]
    workflow = capture["post"]["request"]["json"]["prompt"]
    snapshots = replay(workflow, capture["ws_messages"])
    values = [s.value for s in snapshots]
    assert values == sorted(values), "progress never goes back"
    sampler = [s for s in snapshots if s.current_node_class == "KSampler" and s.steps]
    assert sampler, "KSampler steps are reported"
    assert sampler[-1].message == f"KSampler {sampler[-1].step}/{sampler[-1].steps}"
    assert all(0.0 <= s.value <= 1.0 for s in snapshots)
    assert snapshots[-1].nodes_total == len(workflow)


def test_a_successful_run_ends_at_one(shared_dir: Path) -> None:
    capture = json.loads((shared_dir / "comfy-protocol" / "ws_success_run.json").read_text())
    workflow = capture["post_prompt"]["request"]["json"]["prompt"]
    snapshots = replay(workflow, capture["ws_messages"])
    assert snapshots[-1].value == 1.0
    assert snapshots[-1].nodes_done == len(workflow)
    assert snapshots[-1].current_node is None


def test_cached_nodes_count_as_done_at_once() -> None:
    workflow = {str(i): {"class_type": "X", "inputs": {}} for i in range(1, 5)}
    tracker = ProgressTracker(workflow)
    snapshot = tracker.feed(m.ExecutionCached(prompt_id="p", nodes=("1", "2")))
    assert snapshot is not None
    assert snapshot.nodes_done == 2 and snapshot.value == 0.5


def test_messages_that_change_nothing_give_no_snapshot() -> None:
    tracker = ProgressTracker({"1": {"class_type": "KSampler", "inputs": {}}})
    assert tracker.feed(m.Status(queue_remaining=1)) is None
    assert tracker.feed(m.Executing(node="1", prompt_id="p")) is not None
    assert tracker.feed(m.Executing(node="1", prompt_id="p")) is None


async def test_the_writer_stores_at_most_one_snapshot_per_interval_and_nothing_once_closed() -> (
    None
):
    store = open_store("memory://")
    await store.open()
    job, _ = await store.enqueue(NewJob(workflow={}))
    writer = ProgressWriter(store, job.id, interval_s=0.2)
    for step in range(1, 51):
        writer.progress(Progress(value=step / 100, step=step, steps=100))
    await asyncio.sleep(0.05)
    writer.progress(Progress(value=0.9, step=90, steps=100))
    await asyncio.sleep(0.8)  # generous: the second write is due 0.2 s after the first
    stored = [e.data for e in await store.events_since(job.id) if e.kind == "progress"]
    assert [p["step"] for p in stored] == [50, 90]  # the first at once, then the latest only
    writer.progress(Progress(value=1.0))
    writer.close()
    await asyncio.sleep(0.5)
    assert len([e for e in await store.events_since(job.id) if e.kind == "progress"]) == 2
    await store.close()
