"""An in-process fake of one ComfyUI server, seen through ComfyClient's interface (no sockets).

It runs one prompt at a time from a FIFO queue, as ComfyUI does, feeding the client's real
`PromptWatch` with real message objects. What a prompt does is read from its workflow's nodes:

    {"class_type": "Work", "inputs": {"seconds": 0.05, "steps": 3}}   takes time, reports steps
    {"class_type": "Fail"}   raises at run time        {"class_type": "OOM"}  an out-of-memory error
    {"class_type": "DiskFull"}   an OSError for no space left on the disk (while `disk_full_left`)
    {"class_type": "Invalid"}   rejected by POST /prompt (400)
    {"class_type": "Hang"}   never ends, ignores interrupts while `stuck` is set
    {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}   one PNG-ish output file
    {"class_type": "PreviewImage"}   one temp output       {"class_type": "ShowText"}  a text value
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from comfyrun.backends.pool import BackendPool
from comfyrun.comfy import messages as m
from comfyrun.comfy.client import SubmitResult
from comfyrun.comfy.errors import ComfyConnectionError, ComfyValidationError
from comfyrun.comfy.history import QueueState
from comfyrun.comfy.outputs import FileRef, parse_outputs
from comfyrun.comfy.result import PromptResult, execution_error, interrupted_error
from comfyrun.comfy.watch import PromptWatch
from comfyrun.core.job import TERMINAL, Job, NewJob
from comfyrun.dispatch import Dispatcher
from comfyrun.outputs import OutputStorage
from comfyrun.store.base import JobStore

JSON = dict[str, Any]


OOM_MESSAGE = "Allocation on device (out of memory)"


@dataclass
class Ran:
    """One prompt as the fake executed it."""

    prompt_id: str
    job_id: str | None
    started: float
    ended: float = 0.0
    status: str = "running"
    pending_at_start: int = 0
    pending_at_end: int = 0  # > 0: the next prompt was already waiting when this one ended


@dataclass
class FakeServer:
    """One fake ComfyUI; several FakeClients (one per connection) may talk to it."""

    name: str = "fake"
    up: bool = True
    stuck: bool = False  # a Hang node ignores interrupts
    oom_left: int = 0  # the next N OOM nodes fail; later ones succeed
    disk_full_left: int = 0  # the next N DiskFull nodes fail; later ones succeed
    silent: bool = False  # send no events (as over a lost websocket): only results settle
    refuse_posts: int = 0  # the next N POST /prompt cannot connect (never sent)
    hang_posts: int = 0  # the next N POST /prompt are never answered (nor queued)
    trickle_views: int = 0  # the next N GET /view send a byte every 10 ms, without end
    ran: list[Ran] = field(default_factory=list)
    freed: int = 0
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    history: dict[str, PromptResult] = field(default_factory=dict)
    max_pending: int = 0
    _pending: deque[tuple[str, JSON, str | None]] = field(default_factory=deque)
    _running: str | None = None
    _interrupt: str | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _watches: dict[str, PromptWatch] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _worker: asyncio.Task[None] | None = None

    def ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def go_down(self) -> None:
        """The server dies: nothing answers, running and pending prompts are gone."""
        self.up = False
        self._pending.clear()
        if self._worker is not None:
            self._worker.cancel()
        self._running = None

    # -- execution --------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            prompt_id, prompt, job_id = self._pending.popleft()
            self._running = prompt_id
            ran = Ran(prompt_id, job_id, time.monotonic(), pending_at_start=len(self._pending))
            self.ran.append(ran)
            ran.status = await self._execute(prompt_id, prompt)
            ran.ended = time.monotonic()
            ran.pending_at_end = len(self._pending)
            self._running = None

    def _feed(self, prompt_id: str, message: Any) -> None:
        if self.silent:
            return
        watch = self._watches.get(prompt_id)
        if watch is not None:
            watch.feed(message)

    def _settle(self, result: PromptResult) -> None:
        self.history[result.prompt_id] = result
        watch = self._watches.get(result.prompt_id)
        if watch is not None:
            watch.settle(result)

    async def _execute(self, pid: str, prompt: JSON) -> str:
        self._feed(pid, m.ExecutionStart(prompt_id=pid))
        self._feed(pid, m.ExecutionCached(prompt_id=pid, nodes=()))
        outputs: JSON = {}
        for node_id, node in prompt.items():
            kind = node.get("class_type")
            inputs = node.get("inputs", {})
            self._feed(pid, m.Executing(node=node_id, prompt_id=pid))
            if kind == "Work":
                steps = int(inputs.get("steps", 1))
                for step in range(1, steps + 1):
                    await asyncio.sleep(float(inputs.get("seconds", 0.0)) / steps)
                    if self._interrupt == pid:
                        return self._interrupted(pid, node_id, kind)
                    self._feed(pid, m.Progress(prompt_id=pid, node=node_id, value=step, max=steps))
            elif kind == "Hang":
                await until(lambda: not self.stuck and self._interrupt == pid, timeout=None)
                return self._interrupted(pid, node_id, kind)
            elif kind in ("Fail", "OOM", "DiskFull"):
                oom = kind == "OOM" and self.oom_left > 0
                full = kind == "DiskFull" and self.disk_full_left > 0
                if kind in ("OOM", "DiskFull") and not (oom or full):
                    continue
                if oom:
                    self.oom_left -= 1
                if full:
                    self.disk_full_left -= 1
                exception_type, message = "RuntimeError", "boom"
                if oom:
                    exception_type, message = "torch.OutOfMemoryError", OOM_MESSAGE
                if full:
                    exception_type, message = "OSError", "[Errno 28] No space left on device"
                error = m.ExecutionError(
                    prompt_id=pid,
                    node_id=node_id,
                    node_type=kind,
                    exception_type=exception_type,
                    exception_message=message,
                    traceback=("Traceback (most recent call last):\n", "RuntimeError: boom\n"),
                )
                self._feed(pid, error)
                self._settle(
                    PromptResult(pid, "error", parse_outputs(outputs), execution_error(pid, error))
                )
                return "error"
            elif kind in ("SaveImage", "PreviewImage"):
                temp = kind == "PreviewImage"
                name = f"{inputs.get('filename_prefix', 'ComfyUI')}_{next(self._counter):05}_.png"
                kind_dir = "temp" if temp else "output"
                self.files[(name, "", kind_dir)] = f"png:{pid}:{node_id}".encode()
                out: JSON = {"images": [{"filename": name, "subfolder": "", "type": kind_dir}]}
                outputs[node_id] = out
                self._feed(pid, m.Executed(prompt_id=pid, node=node_id, output=out))
            elif kind == "ShowText":
                out = {"text": [f"text of {pid}"]}
                outputs[node_id] = out
                self._feed(pid, m.Executed(prompt_id=pid, node=node_id, output=out))
            if self._interrupt == pid:
                return self._interrupted(pid, node_id, str(kind))
        self._feed(pid, m.ExecutionSuccess(prompt_id=pid))
        self._settle(PromptResult(pid, "success", parse_outputs(outputs)))
        return "success"

    def _interrupted(self, pid: str, node_id: str, kind: str) -> str:
        message = m.ExecutionInterrupted(prompt_id=pid, node_id=node_id, node_type=kind)
        self._feed(pid, message)
        self._settle(PromptResult(pid, "interrupted", {}, interrupted_error(pid, message)))
        return "interrupted"


class FakeClient:
    """ComfyClient's interface over a FakeServer."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.base_url = f"fake://{server.name}"
        self._callbacks: list[Any] = []
        self.started = False
        self.closed = False

    def _check(self) -> None:
        if not self.server.up:
            raise ComfyConnectionError(f"{self.server.name} is down")

    @property
    def connected(self) -> bool:
        return self.server.up and self.started

    def on_state_change(self, callback: Any) -> Any:
        self._callbacks.append(callback)
        return lambda: None

    def _forget(self, watch: PromptWatch) -> None:
        self.server._watches.pop(watch.prompt_id, None)

    async def start(self) -> None:
        self._check()
        self.started = True
        self.server.ensure_worker()

    async def close(self) -> None:
        self.started = False
        self.closed = True

    async def system_stats(self) -> JSON:
        self._check()
        return {"system": {}, "devices": []}

    def watch(
        self, prompt_id: str, *, attach: bool = False, node_ids: Iterable[str] | None = None
    ) -> PromptWatch:
        watch = PromptWatch(prompt_id, on_close=self._forget)
        self.server._watches[prompt_id] = watch
        done = self.server.history.get(prompt_id)
        if attach and done is not None:
            watch.settle(done)
        return watch

    async def submit(
        self,
        prompt: Mapping[str, Any],
        prompt_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        partial_execution_targets: Sequence[str] | None = None,
    ) -> SubmitResult:
        self._check()
        assert prompt_id is not None
        if self.server.refuse_posts > 0:
            self.server.refuse_posts -= 1
            refused = httpx.ConnectError("connection refused")
            raise ComfyConnectionError(f"{self.server.name}: connection refused") from refused
        if self.server.hang_posts > 0:
            self.server.hang_posts -= 1
            await asyncio.Event().wait()
        if any(n.get("class_type") == "Invalid" for n in prompt.values()):
            raise ComfyValidationError(
                "Prompt outputs failed validation",
                error={
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                },
                node_errors={
                    "1": {"errors": [{"type": "value_not_in_list"}], "class_type": "Invalid"}
                },
            )
        job_id = (extra_data or {}).get("comfyrun_job_id")
        self.server._pending.append((prompt_id, dict(prompt), job_id))
        # an idle ComfyUI starts a prompt at once: the first one in an idle server's queue is
        # about to run (its worker task just has not had its turn yet), not waiting
        waiting = len(self.server._pending) - (1 if self.server._running is None else 0)
        self.server.max_pending = max(self.server.max_pending, waiting)
        self.server._wake.set()
        return SubmitResult(prompt_id=prompt_id, number=0)

    async def queue(self) -> QueueState:
        self._check()
        running = [self.server._running] if self.server._running else []
        return QueueState(running=running, pending=[p for p, _, _ in self.server._pending])

    async def history(self, prompt_id: str) -> Any:
        self._check()
        return None  # the fake settles attached watches itself

    async def interrupt(self, prompt_id: str | None = None) -> None:
        self._check()
        if prompt_id is None or prompt_id == self.server._running:
            self.server._interrupt = self.server._running

    async def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        self._check()
        drop = set(prompt_ids)
        self.server._pending = deque(p for p in self.server._pending if p[0] not in drop)

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        self._check()
        self.server.freed += 1

    @contextlib.asynccontextmanager
    async def view(self, ref: FileRef) -> AsyncIterator[AsyncIterator[bytes]]:
        self._check()
        data = self.server.files[(ref.filename, ref.subfolder, ref.type)]
        trickle = self.server.trickle_views > 0
        self.server.trickle_views -= trickle

        async def chunks() -> AsyncIterator[bytes]:
            while trickle:  # (no read waits long: only a deadline on the whole copy ends it)
                yield b"x"
                await asyncio.sleep(0.01)
            yield data

        yield chunks()


async def until(predicate: Callable[[], bool], *, timeout: float | None = 10.0) -> None:
    """Wait until `predicate()` holds: for state outside the code under test (a fake server's
    counters) that offers nothing to wait on."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def work(
    seconds: float = 0.0,
    steps: int = 1,
    *,
    save: bool = True,
    extra: Mapping[str, JSON] | None = None,
) -> JSON:
    """A workflow for the fake: one Work node, then a SaveImage."""
    workflow: JSON = {"1": {"class_type": "Work", "inputs": {"seconds": seconds, "steps": steps}}}
    if save:
        workflow["2"] = {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "out", "images": ["1", 0]},
        }
    workflow.update(extra or {})
    return workflow


@dataclass
class EngineBase:
    """A store, output storage, pool and dispatcher wired together, with the calls engine tests
    make: enqueue a job and wait (on the store's events) until it reaches a state."""

    store: JobStore
    storage: OutputStorage
    pool: BackendPool
    dispatcher: Dispatcher
    wait_timeout: ClassVar[float] = 20.0

    async def submit(self, workflow: dict[str, Any], **kwargs: Any) -> Job:
        job, _ = await self.store.enqueue(NewJob(workflow=workflow, **kwargs))
        return job

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        return await self.wait_for(job_id, lambda j: j.status in TERMINAL, timeout=timeout)

    async def wait_for(
        self, job_id: str, predicate: Callable[[Job], bool], *, timeout: float | None = None
    ) -> Job:
        after = 0
        async with asyncio.timeout(timeout or self.wait_timeout):
            while True:
                job = await self.store.get(job_id)
                assert job is not None
                if predicate(job):
                    return job
                events = await self.store.wait_for_event(job_id, after, 1.0)
                if events:
                    after = events[-1].id


__all__ = ["EngineBase", "FakeClient", "FakeServer", "Ran", "until", "work"]
