"""The live relay: a job's ComfyUI messages, as its backend sent them, for ComfyUI clients.

A run feeds every message of its prompt to its `JobRelay`, which rewrites the prompt id to the
job's (the one a ComfyUI client of comfyrun knows) and passes the frames on:

- to the in-process `RelayHub` when the API shares the process (`comfyrun serve`): no store
  write at all; a socket that attaches mid-run gets the frames so far replayed;
- as "comfy" store events when the API runs elsewhere (`comfyrun worker`): one event holding
  the frames of each flush interval (`interval_s`), woken by the store's notifications.

The end of a prompt (its `executed` messages, execution_success / _error / _interrupted and the
closing `executing` with node null) is held back until the run settles the job: released by
`finish(release=True)` just before the final transition (so it comes before the terminal status
event, with which the outputs are committed: the /ws side sends it once it sees that event),
dropped when the job goes back to the queue to run again. Once that transition has committed,
the run tells the hub's subscribers the settled job itself (`settled`): a socket in this process
ends the prompt from it at once, without reading the job's events back from the store.

A job that succeeds is told to the hub's subscribers sooner, as its final transition begins
(`end_early`): its outputs are stored by then and its commit under way, so a socket here ends
the prompt while the commit waits for the disk (~1 ms of the ComfyUI face's latency). ComfyUI
writes a prompt's history before it ends the prompt on the socket; here the hub keeps the job
as it was told (`told`: what the commit writes) and the commit's future until that commit is
over (`commit_over`). The request a ComfyUI client makes next, GET /history/{id}, is answered
from the job as told, at once, as ComfyUI answers it; the listings (/history, /queue,
/api/jobs) wait for the commit (`committed`), so that they never show the job still running
after its end. Should the process die before the commit, the job's next attempt adopts the
prompt by id, as for any job in flight, and ends it again from ComfyUI's record of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from comfyrun.comfy import messages as m
from comfyrun.comfy.wire import to_frame, to_json
from comfyrun.core.job import Job
from comfyrun.store.base import COMFY_CLIENT_ID, JobStore

log = logging.getLogger(__name__)

JSON = dict[str, Any]
#: One relayed frame as JSON: {"type", "data"}, or {"binary": base64} (see comfy.wire).
Frame = JSON
#: The store event kind that carries a batch of frames: {"messages": [frame, ...]}.
EVENT_KIND = "comfy"
#: The job metadata key naming the ComfyUI client (clientId) a prompt was submitted for, by the
#: ComfyUI face. Only such jobs are relayed: ComfyUI sends a prompt's messages to its client
#: alone, so no socket ever asks for the others'.
CLIENT_ID_KEY = COMFY_CLIENT_ID

Subscriber = Callable[[list[Frame]], None]
#: Told the job once the run's final transition committed it, with None; or, for a job that
#: succeeds, as that transition begins, with the future of its commit (see `RelayHub.settle`).
Settled = Callable[[Job, "asyncio.Future[None] | None"], None]
#: How long a request waits for a commit told early (`RelayHub.committed`), at most.
COMMIT_WAIT_S = 10.0


def wants_relay(metadata: Mapping[str, Any]) -> bool:
    """Whether a job's messages have anyone to go to (see CLIENT_ID_KEY)."""
    return bool(metadata.get(CLIENT_ID_KEY))


def held_back(message: m.Message) -> bool:
    """Messages sent only once the job is settled."""
    if isinstance(message, m.Executing):
        return message.node is None
    ends = m.Executed | m.ExecutionSuccess | m.ExecutionError | m.ExecutionInterrupted
    return isinstance(message, ends)


class RelayHub:
    """In-process publish/subscribe of relayed frames by job id.

    Subscribers are plain callbacks, called synchronously in publish order. The frames of a run
    are kept until `end` so that a late subscriber is first given everything so far, except
    that of the binary frames (previews, ~40 KB each) only the latest is kept."""

    def __init__(self) -> None:
        self._frames: dict[str, list[Frame | None]] = {}
        self._last_binary: dict[str, int] = {}
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._settled: dict[str, list[Settled]] = {}
        self._live: dict[str, int] = {}  # job id -> runs of this process relaying it
        self._over: dict[str, asyncio.Event] = {}  # set when the last of them is over
        #: job id -> its final commit, told early (`end_early`) and not over yet
        self._commits: dict[str, asyncio.Future[None]] = {}
        #: job id -> the job as that commit writes it
        self._told: dict[str, Job] = {}

    def publish(self, job_id: str, frames: list[Frame]) -> None:
        if not frames:
            return
        kept = self._frames.setdefault(job_id, [])
        for frame in frames:
            if "binary" in frame:
                previous = self._last_binary.get(job_id)
                if previous is not None:
                    kept[previous] = None
                self._last_binary[job_id] = len(kept)
            kept.append(frame)
        for callback in list(self._subscribers.get(job_id, ())):
            try:
                callback(list(frames))
            except Exception:
                log.exception("relay subscriber of job %s failed", job_id)

    def settle(self, job: Job, committed: asyncio.Future[None] | None = None) -> None:
        """The run's final transition committed `job` (terminal, its outputs with it); or,
        with `committed`, is committing it (the future is done once the commit is over)."""
        for callback in list(self._settled.get(job.id, ())):
            try:
                callback(job, committed)
            except Exception:
                log.exception("relay subscriber of job %s failed", job.id)

    def wants_end(self, job_id: str) -> bool:
        """Whether a subscriber waits for the job's end."""
        return bool(self._settled.get(job_id))

    def commit_begun(self, job: Job) -> asyncio.Future[None]:
        """The future of the final commit of `job` (as that commit writes it), told early:
        done by `commit_over`."""
        self.commit_over(job.id)
        future = self._commits[job.id] = asyncio.get_running_loop().create_future()
        self._told[job.id] = job
        return future

    def told(self, job_id: str) -> Job | None:
        """The job whose end was told early, as its commit (under way) writes it."""
        return self._told.get(job_id)

    def commit_over(self, job_id: str) -> None:
        """The job's final commit (told early) is over, committed or not."""
        self._told.pop(job_id, None)
        future = self._commits.pop(job_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def committed(self, job_id: str | None = None, timeout_s: float = COMMIT_WAIT_S) -> None:
        """Return once the final commit told early of `job_id` (None: of every job) is over,
        at once when there is none; at most `timeout_s`."""
        if job_id is None:
            waiting = list(self._commits.values())
        else:
            one = self._commits.get(job_id)
            waiting = [] if one is None else [one]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout_s)

    def begin(self, job_id: str) -> None:
        """A run of this process relays the job from now on (until its `end`)."""
        self._live[job_id] = self._live.get(job_id, 0) + 1

    def end(self, job_id: str) -> None:
        """The run is over: forget its frames (subscribers stay for a next attempt)."""
        self._frames.pop(job_id, None)
        self._last_binary.pop(job_id, None)
        left = self._live.get(job_id, 0) - 1
        if left > 0:
            self._live[job_id] = left
            return
        self._live.pop(job_id, None)
        over = self._over.pop(job_id, None)
        if over is not None:
            over.set()

    def live(self, job_id: str) -> bool:
        """Whether a run of this process relays the job now: its frames, and its end as it
        settles it, come through this hub."""
        return job_id in self._live

    async def wait_over(self, job_id: str) -> None:
        """Return once no run of this process relays the job (at once if none does)."""
        while job_id in self._live:
            over = self._over.setdefault(job_id, asyncio.Event())
            await over.wait()

    def subscribe(
        self, job_id: str, callback: Subscriber, settled: Settled | None = None
    ) -> Callable[[], None]:
        """Call `callback(frames)` for the job's frames so far and every later batch, and
        `settled(job)` when a run settles it from now on; returns the unsubscribe function."""
        so_far = [frame for frame in self._frames.get(job_id, ()) if frame is not None]
        if so_far:
            callback(so_far)
        self._subscribers.setdefault(job_id, []).append(callback)
        if settled is not None:
            self._settled.setdefault(job_id, []).append(settled)

        def unsubscribe() -> None:
            _drop(self._subscribers, job_id, callback)
            if settled is not None:
                _drop(self._settled, job_id, settled)

        return unsubscribe

    @property
    def jobs(self) -> int:
        """Jobs with frames kept (for tests: nothing leaks)."""
        return len(self._frames)


def _drop(registry: dict[str, list[Any]], job_id: str, callback: Any) -> None:
    callbacks = registry.get(job_id)
    if callbacks is not None and callback in callbacks:
        callbacks.remove(callback)
        if not callbacks:
            del registry[job_id]


class JobRelay:
    """One run's relay. `hub` and `store` may each be None (then that channel is off)."""

    def __init__(
        self,
        job_id: str,
        *,
        hub: RelayHub | None = None,
        store: JobStore | None = None,
        interval_s: float = 0.5,
    ) -> None:
        self.job_id = job_id
        self._hub = hub
        self._store = store
        self._interval_s = interval_s
        self._held: list[Frame] = []
        self._pending: list[Frame] = []
        self._last_write = 0.0
        self._flush: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        if hub is not None:
            hub.begin(job_id)

    @property
    def enabled(self) -> bool:
        return self._hub is not None or self._store is not None

    def feed(self, message: m.Message) -> None:
        """One message of the run's prompt, in the order the backend sent it."""
        if not self.enabled or self._closed:
            return
        frame = to_frame(message, self.job_id)
        if frame is None:
            return
        if held_back(message):
            self._held.append(to_json(frame))
        else:
            self._emit([to_json(frame)])

    def _emit(self, frames: list[Frame]) -> None:
        if self._hub is not None:
            self._hub.publish(self.job_id, frames)
        if self._store is not None:
            self._pending.extend(frames)
            if self._flush is None or self._flush.done():
                delay = max(0.0, self._last_write + self._interval_s - time.monotonic())
                self._flush = asyncio.create_task(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)  # the throttle: at most one write per interval
        # shielded: a write under way finishes (in order) even when the run moves on
        await asyncio.shield(self._write([]))

    async def _write(self, final: list[Frame]) -> None:
        assert self._store is not None
        async with self._lock:
            batch, self._pending = self._pending + final, []
            if not batch:
                return
            self._last_write = time.monotonic()
            try:
                await self._store.append_event(self.job_id, EVENT_KIND, {"messages": batch})
            except Exception:  # a lost batch costs a client some messages, never the job
                log.warning("relaying messages of job %s failed", self.job_id, exc_info=True)

    async def finish(self, *, release: bool) -> None:
        """The run is about to settle the job: with `release`, pass on the held-back end of the
        prompt (the job ends now); without, drop it (the job will run again)."""
        if self._closed or not self.enabled:
            return
        held, self._held = (self._held if release else []), []
        if self._hub is not None and held:
            self._hub.publish(self.job_id, held)
        if self._store is not None:
            if self._flush is not None and not self._flush.done():
                self._flush.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flush
            await self._write(held)

    def settled(self, job: Job) -> None:
        """The run's final transition committed `job`: tell the hub's subscribers (the prompt's
        end was released to them just before, by `finish`)."""
        if self._hub is not None and not self._closed:
            self._hub.settle(job)

    @property
    def end_awaited(self) -> bool:
        """Whether a subscriber of the hub waits for the job's end (see `end_early`)."""
        return self._hub is not None and not self._closed and self._hub.wants_end(self.job_id)

    def end_early(self, job: Job) -> None:
        """The run's final transition, which makes `job` (succeeded, its outputs stored)
        committed, begins: tell the hub's subscribers now, with the commit's future (see the
        module); `commit_over` once that transition is over. Only while `end_awaited`."""
        if self._hub is not None and not self._closed:
            self._hub.settle(job, self._hub.commit_begun(job))

    def commit_over(self) -> None:
        """The final transition told by `end_early` is over (committed, or not)."""
        if self._hub is not None:
            self._hub.commit_over(self.job_id)

    def close(self) -> None:
        """The run is over: nothing more is relayed."""
        if self._closed:
            return
        self._closed = True
        if self._flush is not None:
            self._flush.cancel()
        if self._hub is not None:
            self._hub.commit_over(self.job_id)
            self._hub.end(self.job_id)


__all__ = [
    "CLIENT_ID_KEY",
    "COMMIT_WAIT_S",
    "EVENT_KIND",
    "Frame",
    "JobRelay",
    "RelayHub",
    "Settled",
    "held_back",
    "wants_relay",
]
