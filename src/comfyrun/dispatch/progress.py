"""A job's progress from its prompt's websocket messages, and its throttled writing.

`ProgressTracker` is pure, fed one message at a time. Each snapshot is complete (it replaces the
last): the nodes done (cached ones count as done at once), the node running now with its class,
and the sampler's step within it. The overall value weighs the work (`node_weights`): a sampler
counts one unit per step, any other node one unit, and a node in progress counts by its step
fraction; so a 20-step KSampler job moves by about 1/26 per step instead of jumping when the
loaders finish, and the value never goes back. `ProgressWriter` stores the latest snapshot and
preview at most once per interval, and nothing once closed (after the job's final transition).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from comfyrun.comfy import messages as m
from comfyrun.core.job import JSON, Progress
from comfyrun.store.base import JobStore


def node_weights(workflow: Mapping[str, Any]) -> dict[str, float]:
    """Each node's share of a prompt's work: its steps for a node with a `steps` input (KSampler;
    with `start_at_step`/`end_at_step`, as KSamplerAdvanced, only the steps it runs), else 1.
    Steps that come through a link from a node with an integer `value` (PrimitiveInt) count;
    other linked steps are left to the tracker, which weighs the node when it reports them."""
    weights: dict[str, float] = {}
    for node_id, node in workflow.items():
        if not _is_map(node):
            continue
        inputs = node.get("inputs")
        steps = _steps(inputs, workflow) if _is_map(inputs) and "steps" in inputs else None
        weights[str(node_id)] = float(steps or 1)
    return weights


def _is_map(value: Any) -> bool:
    """isinstance(value, Mapping), a JSON object (a dict) told at once (the ABC's check costs
    several times as much, and these walks see every node of every job)."""
    return isinstance(value, dict | Mapping)


def _steps(inputs: Mapping[str, Any], workflow: Mapping[str, Any]) -> int | None:
    """The steps a node runs, None when unknown before it runs."""
    steps = _int(inputs.get("steps"))
    link = inputs.get("steps")
    if steps is None and isinstance(link, list) and link:
        source = workflow.get(str(link[0]))
        source_inputs = source.get("inputs") if isinstance(source, Mapping) else None
        if isinstance(source_inputs, Mapping):
            steps = _int(source_inputs.get("value"))
    if steps is None:
        return None
    start, end = _int(inputs.get("start_at_step")), _int(inputs.get("end_at_step"))
    if start is not None and end is not None:
        steps = min(end, steps) - start
    return max(1, steps)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ProgressTracker:
    """Turns messages of one prompt into Progress snapshots."""

    def __init__(self, workflow: Mapping[str, Any]) -> None:
        self._classes = {
            str(node_id): str(node.get("class_type", ""))
            for node_id, node in workflow.items()
            if _is_map(node)
        }
        self._weights = node_weights(workflow)
        #: nodes whose steps are unknown until they run: weighed by the steps they report
        self._unweighed = {
            str(node_id)
            for node_id, node in workflow.items()
            if _is_map(node)
            and _is_map(node.get("inputs"))
            and "steps" in node["inputs"]
            and _steps(node["inputs"], workflow) is None
        }
        self._done: set[str] = set()
        self._current: str | None = None
        self._step: int | None = None
        self._steps: int | None = None
        self.snapshot = Progress(nodes_total=len(self._classes))

    def feed(self, message: object) -> Progress | None:
        """The new snapshot when `message` changed the progress, else None."""
        if isinstance(message, m.ExecutionCached):
            self._done.update(message.nodes)
        elif isinstance(message, m.Executing):
            if self._current is not None and self._current != message.node:
                self._done.add(self._current)
            self._current = message.node
            self._step = self._steps = None
        elif isinstance(message, m.Progress):
            if message.node is not None and message.node != self._current:
                self._current = message.node
            self._step, self._steps = int(message.value), int(message.max)
            if self._current in self._unweighed and self._steps > 0:
                self._unweighed.discard(self._current)
                self._weights[self._current] = float(self._steps)
        elif isinstance(message, m.Executed):
            self._done.add(message.node)
        elif isinstance(message, m.ExecutionSuccess):
            self._done.update(self._classes)
            self._current = None
            self._step = self._steps = None
        else:
            return None
        snapshot = self._build()
        if snapshot == self.snapshot:
            return None
        self.snapshot = snapshot
        return snapshot

    def _build(self) -> Progress:
        done_ids = self._done & self._classes.keys() if self._classes else self._done
        done = len(done_ids)
        weights = self._weights
        total = sum(weights.values())
        work = sum(weights.get(n, 0.0) for n in done_ids) if weights else float(done)
        current = self._current if self._current not in self._done else None
        if current is not None and self._step is not None and self._steps:
            work += weights.get(current, 1.0) * min(1.0, self._step / self._steps)
        value = min(1.0, work / total) if total else 0.0
        # never back: a node weighed late (linked steps) grows the total
        value = max(value, self.snapshot.value)
        class_type = self._classes.get(current) if current is not None else None
        message: str | None = None
        if class_type and self._step is not None and self._steps:
            message = f"{class_type} {self._step}/{self._steps}"
        elif class_type:
            message = class_type
        return Progress(
            value=round(value, 4),
            nodes_done=done,
            nodes_total=len(self._classes),
            current_node=current,
            current_node_class=class_type,
            step=self._step if current is not None else None,
            steps=self._steps if current is not None else None,
            message=message,
        )


def preview_event(message: m.PreviewImage | m.PreviewImageWithMetadata) -> JSON:
    """The data of a "preview" event: {node_id, content_type, data_base64}."""
    if isinstance(message, m.PreviewImage):
        content_type = "image/png" if message.format == "PNG" else "image/jpeg"
        node_id = None
    else:
        content_type, node_id = message.image_type or "image/jpeg", message.node_id
    return {
        "node_id": node_id,
        "content_type": content_type,
        "data_base64": base64.b64encode(message.image).decode("ascii"),
    }


class ProgressWriter:
    """Stores a job's latest progress snapshot and preview, at most once per `interval_s`,
    the first one `FIRST_AFTER_S` after the first of them (a job that ends sooner writes none:
    its final state says it all). Counted from the first snapshot, not from the run's start:
    a prompt that waited in ComfyUI's queue (a busy worker holds several per backend) sends
    none while it waits, and its first, at its start, would otherwise be written at once, a
    store write (and on PostgreSQL a NOTIFY to every node) for a job about to end."""

    #: The first write waits this long after the first snapshot (at most `interval_s`).
    FIRST_AFTER_S = 0.1

    def __init__(self, store: JobStore, job_id: str, interval_s: float) -> None:
        self._store = store
        self._job_id = job_id
        self._interval_s = interval_s
        #: when the next write is due (monotonic); set by the first snapshot
        self._due: float | None = None
        self._progress: Progress | None = None
        self._preview: JSON | None = None
        self._closed = False
        #: until the next write is due (a timer, not a task: most jobs end before it fires)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # the write under way

    def progress(self, snapshot: Progress) -> None:
        self._progress = snapshot
        self._schedule()

    def preview(self, data: JSON) -> None:
        self._preview = data
        self._schedule()

    def close(self) -> None:
        """No more writes: those not yet due are dropped, the one under way is cancelled (the
        run is abandoned; `settle` ends a run)."""
        self._stop()
        if self._task is not None:
            self._task.cancel()

    async def settle(self) -> None:
        """No more writes: those not yet due are dropped, the one under way is let finish (it
        catches the store's errors). Before a final transition, so that no progress write lands
        after it; cancelled mid-way instead, its statement would be cancelled on the server (on
        PostgreSQL a connection of its own to ask) and the final transition would wait for the
        row it holds."""
        self._stop()
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    def _stop(self) -> None:
        """No write is scheduled from now on; the one not yet due is dropped."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self._closed or self._timer is not None:
            return
        if self._task is not None and not self._task.done():
            return
        now = time.monotonic()
        if self._due is None:  # the first snapshot: the prompt just started running
            self._due = now + min(self._interval_s, self.FIRST_AFTER_S)
        delay = max(0.0, self._due - now)
        # the throttle itself: at most one write per interval
        self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if not self._closed:
            self._task = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        snapshot, self._progress = self._progress, None
        preview, self._preview = self._preview, None
        self._due = time.monotonic() + self._interval_s
        with contextlib.suppress(Exception):
            if snapshot is not None:
                await self._store.record_progress(self._job_id, snapshot)
            if preview is not None:
                await self._store.append_event(self._job_id, "preview", preview)


__all__ = ["ProgressTracker", "ProgressWriter", "preview_event"]
