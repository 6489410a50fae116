"""Progress snapshots from a prompt's websocket messages, replayed from real ComfyUI transcripts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from comfyrun.comfy import messages as m
from comfyrun.comfy.messages import parse_event
from comfyrun.core.job import NewJob, Progress
from comfyrun.dispatch.progress import ProgressTracker, ProgressWriter, node_weights
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


def text_to_image(steps: Any = 20) -> dict[str, Any]:
    """ComfyUI's default graph: 6 quick nodes and a KSampler."""
    sampler = {"model": ["1", 0], "seed": 1, "steps": steps, "cfg": 7.0, "denoise": 1.0}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "b"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64}},
        "5": {"class_type": "KSampler", "inputs": sampler},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0]}},
    }


def run_prompt(workflow: dict[str, Any], steps: int, cached: tuple[str, ...] = ()) -> list[Any]:
    """The messages ComfyUI sends for `workflow` (node 5 samples `steps` steps)."""
    messages: list[Any] = [
        m.ExecutionStart("p"),
        m.ExecutionCached("p", cached),
    ]
    for node in ("1", "2", "3", "4", "5", "6", "7"):
        if node in cached:
            continue
        messages.append(m.Executing(node=node, prompt_id="p"))
        if node == "5":
            messages += [m.Progress("p", "5", i, steps) for i in range(1, steps + 1)]
    messages += [m.Executed("p", "7", {}), m.ExecutionSuccess("p"), m.Executing(None, "p")]
    return messages


def values(workflow: dict[str, Any], messages: list[Any]) -> list[float]:
    tracker = ProgressTracker(workflow)
    return [s.value for s in (tracker.feed(msg) for msg in messages) if s is not None]


def test_a_20_step_sampler_moves_the_value_smoothly_from_0_to_1() -> None:
    workflow = text_to_image(20)
    seen = values(workflow, run_prompt(workflow, 20))
    assert seen == sorted(seen) and seen[-1] == 1.0
    unit = 1 / 26  # 20 steps + 6 other nodes
    assert max(b - a for a, b in zip([0.0, *seen], seen, strict=False)) <= unit + 1e-3
    assert seen.count(max(seen)) == 1  # no plateau at the end: the last unit is the last node
    tracker = ProgressTracker(workflow)
    for message in run_prompt(workflow, 20)[:7]:  # the four loaders and the sampler started
        tracker.feed(message)
    assert tracker.snapshot.value <= 5 * unit  # not the 57 % of a node count
    for message in run_prompt(workflow, 20)[7:17]:  # ten steps
        tracker.feed(message)
    assert tracker.snapshot.value == round(14 / 26, 4)
    assert tracker.snapshot.message == "KSampler 10/20"


def test_cached_loaders_count_their_weight_at_once() -> None:
    workflow = text_to_image(20)
    seen = values(workflow, run_prompt(workflow, 20, cached=("1", "2", "3", "4")))
    assert seen[0] == round(4 / 26, 4)
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_steps_through_a_link_are_weighed_when_reported_and_never_go_back() -> None:
    workflow = text_to_image(["4", 1])  # a node that does not say its steps up front
    messages = run_prompt(workflow, 20)
    seen = values(workflow, messages)
    assert seen == sorted(seen) and seen[-1] == 1.0
    tracker = ProgressTracker(workflow)
    sampling = []
    for message in messages:
        snapshot = tracker.feed(message)
        if isinstance(message, m.Progress) and snapshot is not None:
            sampling.append(snapshot.value)
    assert len(sampling) >= 10  # it still moves during most of the sampling


def test_node_weights() -> None:
    advanced = {"steps": 30, "start_at_step": 10, "end_at_step": 10000}
    weights = node_weights(
        {
            "1": {"class_type": "KSampler", "inputs": {"steps": 25}},
            "2": {"class_type": "KSamplerAdvanced", "inputs": advanced},
            "3": {"class_type": "VAEDecode", "inputs": {}},
            "4": {"class_type": "X", "inputs": {"steps": True}},
            "5": {"class_type": "KSampler", "inputs": {"steps": ["9", 0]}},
            "6": {"class_type": "KSampler", "inputs": {"steps": ["7", 0]}},
            "7": {"class_type": "PrimitiveInt", "inputs": {"value": 12}},
        }
    )
    assert weights == {"1": 25.0, "2": 20.0, "3": 1.0, "4": 1.0, "5": 1.0, "6": 12.0, "7": 1.0}


async def test_the_writer_stores_at_most_one_snapshot_per_interval_and_nothing_once_closed() -> (
    None
):
    store = open_store("memory://")
    await store.open()
    job, _ = await store.enqueue(NewJob(workflow={}))
    writer = ProgressWriter(store, job.id, interval_s=0.2)
    for step in range(1, 51):
        writer.progress(Progress(value=step / 100, step=step, steps=100))
    await asyncio.sleep(0.6)  # generous: the first write is due FIRST_AFTER_S (0.1 s) in
    stored = [e.data for e in await store.events_since(job.id) if e.kind == "progress"]
    assert [p["step"] for p in stored] == [50]  # one write for the 50 snapshots
    writer.progress(Progress(value=0.8, step=80, steps=100))
    writer.progress(Progress(value=0.9, step=90, steps=100))
    await asyncio.sleep(0.8)  # generous: the second write is due 0.2 s after the first
    stored = [e.data for e in await store.events_since(job.id) if e.kind == "progress"]
    assert [p["step"] for p in stored] == [50, 90]  # then the latest only
    writer.progress(Progress(value=1.0))
    writer.close()
    await asyncio.sleep(0.5)
    assert len([e for e in await store.events_since(job.id) if e.kind == "progress"]) == 2
    await store.close()


async def test_a_job_that_ends_before_the_first_write_writes_no_progress() -> None:
    store = open_store("memory://")
    await store.open()
    job, _ = await store.enqueue(NewJob(workflow={}))
    writer = ProgressWriter(store, job.id, interval_s=0.5)
    writer.progress(Progress(value=0.5, step=1, steps=2))
    writer.close()  # the run ended: its final state carries the progress
    await asyncio.sleep(ProgressWriter.FIRST_AFTER_S * 3)
    assert [e for e in await store.events_since(job.id) if e.kind == "progress"] == []
    await store.close()


async def test_the_first_write_is_counted_from_the_first_snapshot_not_the_run_s_start() -> None:
    """A prompt that waited in ComfyUI's queue sends its first progress as it starts: a job
    that ends within FIRST_AFTER_S of that writes none, however long it waited before."""
    store = open_store("memory://")
    await store.open()
    job, _ = await store.enqueue(NewJob(workflow={}))
    writer = ProgressWriter(store, job.id, interval_s=1.0)
    writer.FIRST_AFTER_S = 0.5  # (wide margins for a loaded machine)
    await asyncio.sleep(0.6)  # queued behind other prompts
    writer.progress(Progress(value=0.5, step=1, steps=2))  # it starts
    await asyncio.sleep(0.05)  # runs a short while
    await writer.settle()  # and ends (a write under way would land)
    assert [e for e in await store.events_since(job.id) if e.kind == "progress"] == []
    # one that runs on is written (FIRST_AFTER_S after its first snapshot)
    other, _ = await store.enqueue(NewJob(workflow={}))
    writer = ProgressWriter(store, other.id, interval_s=0.5)
    await asyncio.sleep(ProgressWriter.FIRST_AFTER_S * 2)
    writer.progress(Progress(value=0.5, step=1, steps=2))
    logged = (await store.events_since(other.id))[-1].id
    written = await store.wait_for_event(other.id, logged, 10.0)  # (woken by the write)
    assert [(e.kind, e.data["step"]) for e in written] == [("progress", 1)]
    writer.close()
    await store.close()


async def test_settling_lets_the_write_under_way_finish_and_drops_the_rest() -> None:
    """A run's end settles its writer before the final transition: the write under way is not
    cancelled (on PostgreSQL that is a cancel request on a connection of its own, and the end
    would wait for the row it holds) and lands first; none is written after."""
    store = open_store("memory://")
    await store.open()
    job, _ = await store.enqueue(NewJob(workflow={}))
    record = store.record_progress
    writing, finished = asyncio.Event(), asyncio.Event()

    async def slow_record(job_id: str, progress: Progress) -> None:
        writing.set()
        await asyncio.sleep(0.1)
        await record(job_id, progress)
        finished.set()

    store.record_progress = slow_record  # type: ignore[method-assign]
    writer = ProgressWriter(store, job.id, interval_s=0.05)
    writer.progress(Progress(value=0.5, step=1, steps=2))
    async with asyncio.timeout(5):
        await writing.wait()
    writer.progress(Progress(value=0.9, step=9, steps=10))  # due after the one under way
    await writer.settle()
    assert finished.is_set()  # settled once the write under way landed, not cancelled
    stored = [e.data for e in await store.events_since(job.id) if e.kind == "progress"]
    assert [p["step"] for p in stored] == [1]
    writer.progress(Progress(value=1.0))
    await asyncio.sleep(0.3)
    stored = [e.data for e in await store.events_since(job.id) if e.kind == "progress"]
    assert [p["step"] for p in stored] == [1]  # nothing after the settle
    await store.close()
