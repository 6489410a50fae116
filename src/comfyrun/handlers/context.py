"""What a handler receives: `HandlerContext` and its parts.

A handler is `def handler(ctx) -> outputs` (run in a thread) or `async def handler(ctx)`. It
reads `ctx.params` and `ctx.inputs` (files on local disk), writes its result files anywhere
under `ctx.workdir` and hands them to `ctx.outputs` (or returns their paths), reports progress
with `ctx.progress.report(...)`, and checks `ctx.cancel` in its loops: when the job is canceled
or runs past its timeout the token is set (an async handler is also cancelled outright). Its
long-lived resources (a loaded model, a client) come from `ctx.resources.get(key, factory)`:
created on first use, kept for the worker's life, shared by the handler's jobs.

Every part is safe to use from the handler's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from comfyrun.core.job import JSON, Progress
from comfyrun.errors import HandlerError

T = TypeVar("T")


class Cancelled(HandlerError):
    """The job was canceled or ran past its timeout."""

    code = "canceled"


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file of the job (or, in a chain, one output of the step before)."""

    name: str
    path: Path
    content_type: str


class CancelToken:
    """Set when the job must stop: `reason` is "canceled" or "timeout"."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._async = asyncio.Event()
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise `Cancelled` once the token is set: call it between units of work."""
        if self._event.is_set():
            raise Cancelled(f"stopped: {self.reason}")

    def wait(self, timeout: float | None = None) -> bool:
        """Block (a sync handler's thread) until set or `timeout`; True when set."""
        return self._event.wait(timeout)

    async def wait_async(self) -> None:
        await self._async.wait()

    def cancel(self, reason: str) -> None:
        """Set the token (from the event loop)."""
        if self._event.is_set():
            return
        self.reason = reason
        self._event.set()
        self._async.set()


class ProgressReporter:
    """Reports a handler's progress; snapshots reach the job (throttled) and its events."""

    def __init__(self, sink: Callable[[Progress], None], loop: asyncio.AbstractEventLoop) -> None:
        self._sink = sink
        self._loop = loop
        self.last: Progress | None = None

    def report(
        self,
        value: float,
        message: str | None = None,
        *,
        step: int | None = None,
        steps: int | None = None,
    ) -> None:
        """`value` in [0, 1] (clamped); `step`/`steps` for a count of units (frames, items)."""
        snapshot = Progress(
            value=min(1.0, max(0.0, float(value))), message=message, step=step, steps=steps
        )
        self.last = snapshot
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._sink(snapshot)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                self._loop.call_soon_threadsafe(self._sink, snapshot)


@dataclass(frozen=True, slots=True)
class PendingOutput:
    """A file or a text value the handler produced, stored once it returns."""

    name: str
    path: Path | None = None
    text: str | None = None


class OutputSink:
    """Collects the handler's outputs; comfyrun stores them like ComfyUI's outputs
    ("<job_id>/<node>/<name>" in the output storage) when the handler returns."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._items: list[PendingOutput] = []
        self._lock = threading.Lock()

    def add(self, path: Path | str, name: str | None = None) -> None:
        """Keep the file at `path` (named `name`, default its own name) as an output."""
        file = Path(path)
        if not file.is_file():
            raise HandlerError(f"output {str(file)!r} is not a file")
        with self._lock:
            self._items.append(PendingOutput(name=name or file.name, path=file))

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write `data` to a new file in the work folder and keep it as an output."""
        path = self.path_for(name)
        path.write_bytes(data)
        self.add(path, name)
        return path

    def add_text(self, name: str, text: str) -> None:
        """Keep a text value as an output (shown inline, like ComfyUI's text outputs)."""
        with self._lock:
            self._items.append(PendingOutput(name=name, text=text))

    def path_for(self, name: str) -> Path:
        """A fresh path in the work folder for a file to be named `name`."""
        out = self.workdir / "out"
        out.mkdir(parents=True, exist_ok=True)
        stem, dot, ext = Path(name).name.rpartition(".")
        candidate = out / Path(name).name
        n = 1
        while candidate.exists():
            candidate = out / (f"{stem}_{n}.{ext}" if dot else f"{Path(name).name}_{n}")
            n += 1
        return candidate

    @property
    def items(self) -> list[PendingOutput]:
        with self._lock:
            return list(self._items)


class Resources:
    """One handler's long-lived resources, created on first use and closed when the worker
    stops (anything with `close()`; an async `close` or `aclose` is awaited)."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, factory: Callable[[], T]) -> T:
        """The resource under `key`, made by `factory()` the first time (once, even when
        several jobs ask at once)."""
        with self._lock:
            if key not in self._items:
                self._items[key] = factory()
            value: T = self._items[key]
            return value

    async def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for item in reversed(items):
            closer = getattr(item, "aclose", None) or getattr(item, "close", None)
            if closer is None:
                continue
            try:
                result = closer()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logging.getLogger(__name__).exception("closing a handler resource failed")


@dataclass
class HandlerContext:
    """Everything one run of a handler gets."""

    job_id: str
    type: str
    params: JSON
    inputs: Sequence[InputFile]
    outputs: OutputSink
    progress: ProgressReporter
    cancel: CancelToken
    resources: Resources
    workdir: Path
    attempt: int = 1
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("comfyrun.handlers"))

    def which(self, program: str) -> str:
        """The path of `program` on this worker; HandlerError (code handler_unavailable) when
        it is not installed."""
        path = shutil.which(program)
        if path is None:
            raise HandlerError(
                f"{program} is not installed on this worker (install it, e.g. "
                f"`apt-get install {program}`, or run this job type elsewhere)",
                code="handler_unavailable",
            )
        return path


__all__ = [
    "CancelToken",
    "Cancelled",
    "HandlerContext",
    "InputFile",
    "OutputSink",
    "PendingOutput",
    "ProgressReporter",
    "Resources",
]
