"""The supervisor of one managed ComfyUI process: its states, its start (shared by concurrent
callers), crash restarts, health watch, stop and idle stop; the child process itself (spawning,
readiness, terminating its group) is `child.py`. See the package docstring for how it works."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from comfyrun.backends.logs import ProcessLog
from comfyrun.backends.ports import PortPicker, pick_free_port
from comfyrun.backends.process import readiness
from comfyrun.backends.process.child import (
    LOG_LINES_IN_ERRORS,
    Child,
    StartFailed,
    launch,
    terminate,
    with_tail,
)
from comfyrun.backends.process.groups import signal_group
from comfyrun.backends.process.spec import ManagedSpec
from comfyrun.backends.process.states import TRANSITIONS, UP, ProcessState, restart_delay
from comfyrun.errors import BackendError, InvalidRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A snapshot for `GET /api/v2/backends`, `comfyrun backends` and the metrics."""

    name: str
    state: ProcessState
    url: str | None
    pid: int | None
    restarts: int
    last_error: str | None
    log_file: Path
    log_tail: tuple[str, ...]


StateCallback = Callable[[ProcessState], None]


class ManagedProcess:
    """Supervises one ComfyUI child process (see the package docstring)."""

    def __init__(
        self,
        spec: ManagedSpec,
        *,
        port_picker: PortPicker = pick_free_port,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        folders = spec.folders()
        self.input_dir: Path = folders.input_dir
        self.output_dir: Path = folders.output_dir
        self.temp_dir: Path = folders.temp_dir
        #: The folders comfyrun chose (and passed ComfyUI the flag for): "output", "temp".
        self.chosen_dirs = frozenset(
            kind
            for kind, flag in (("output", "--output-directory"), ("temp", "--temp-directory"))
            if flag in folders.flags
        )
        self.log = ProcessLog(spec.log_file)
        self.state: ProcessState = ProcessState.STOPPED
        self.last_error: str | None = None
        self.restarts = 0
        self._port_picker = port_picker
        self._rng = rng or random.Random()
        self._child: Child | None = None
        self._start_task: asyncio.Task[str] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._crashes: list[float] = []
        self._last_failure = ""
        self._callbacks: list[StateCallback] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_task: asyncio.Task[None] | None = None

    # -- what others read ---------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        return self._child.url if self._child is not None and self.state in UP else None

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    def log_tail(self, n: int = 20) -> list[str]:
        return self.log.tail(n)

    def info(self, tail: int = 20) -> ProcessInfo:
        return ProcessInfo(
            name=self.name,
            state=self.state,
            url=self.url,
            pid=self.pid,
            restarts=self.restarts,
            last_error=self.last_error,
            log_file=self.log.path,
            log_tail=tuple(self.log_tail(tail)),
        )

    def on_state_change(self, cb: StateCallback) -> None:
        """Call `cb(new_state)` on every change (synchronously, from the event loop)."""
        self._callbacks.append(cb)

    # -- files --------------------------------------------------------------------------------

    def job_input_dir(self, job_id: str) -> Path:
        """A folder inside ComfyUI's input folder for one job's inputs (created)."""
        if not job_id or "/" in job_id or "\\" in job_id or job_id in {".", ".."}:
            raise InvalidRequest(f"job id {job_id!r} cannot name a folder")
        folder = self.input_dir / "comfyrun" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def input_name(self, job_id: str, filename: str) -> str:
        """How a LoadImage-style node names a file written into `job_input_dir(job_id)`."""
        return f"comfyrun/{job_id}/{filename}"

    def remove_job_inputs(self, job_id: str) -> None:
        """Delete what `job_input_dir(job_id)` holds (after the job)."""
        folder = self.input_dir / "comfyrun" / job_id
        if folder.parent == self.input_dir / "comfyrun":
            shutil.rmtree(folder, ignore_errors=True)

    # -- activity -----------------------------------------------------------------------------

    def mark_busy(self, busy: bool) -> None:
        """The pool says whether the backend has work; this drives ready ⇄ busy and idle stop."""
        if self.state not in UP:
            return
        self._set_state(ProcessState.BUSY if busy else ProcessState.READY)
        self.note_activity()

    def note_activity(self) -> None:
        """Restart the idle-stop clock."""
        self._arm_idle_timer()

    # -- lifecycle ----------------------------------------------------------------------------

    async def ensure_started(self) -> str:
        """The base URL of a ready ComfyUI, starting it if needed (lazy start).

        Raises BackendError, with what to fix and the log's last lines, if it cannot start."""
        while True:
            if self._stop_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._stop_task)
                continue
            if self.state in UP and self._child is not None:
                self.note_activity()
                return self._child.url
            if self.state is ProcessState.ERROR:
                raise self._error()
            task = self._start_task or self._begin_start(after_crash=False)
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and not (current and current.cancelling()):
                    raise BackendError(
                        f"backend {self.name!r} was stopped while it was starting",
                        details={"backend": self.name},
                    ) from None
                raise

    def start_in_background(self) -> None:
        """Begin starting now without waiting (eager start); failures land in `error`."""
        if self._start_task is None and self.state is ProcessState.STOPPED:
            self._begin_start(after_crash=False)

    async def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; returns when none of
        the group is left. A later `ensure_started()` starts it again."""
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self._run_stop())
        task = self._stop_task
        await asyncio.shield(task)

    async def restart(self) -> None:
        """Stop, forget past crashes and errors, and start again."""
        await self.stop()
        self._crashes.clear()
        await self.ensure_started()

    def kill_now(self) -> None:
        """SIGKILL the whole group at once, without waiting (last resort, e.g. at exit)."""
        if self._child is not None:
            signal_group(self._child.proc.pid, signal.SIGKILL)

    # -- internals ----------------------------------------------------------------------------

    def _set_state(self, state: ProcessState) -> None:
        old = self.state
        if old is state:
            return
        if (old, state) not in TRANSITIONS:
            logger.error(
                "backend %s: unexpected state change %s -> %s",
                self.name,
                old,
                state,
                extra={"action": "backend_state_bug", "backend": self.name},
            )
        self.state = state
        logger.info(
            "backend %s: %s -> %s",
            self.name,
            old,
            state,
            extra={"action": "backend_state", "backend": self.name, "state": state.value},
        )
        if state is not ProcessState.READY:
            self._cancel_idle_timer()
        for cb in list(self._callbacks):
            try:
                cb(state)
            except Exception:
                logger.exception("backend %s: state callback failed", self.name)

    def _error(self) -> BackendError:
        return BackendError(
            self.last_error or f"backend {self.name!r} failed",
            details={
                "backend": self.name,
                "state": self.state.value,
                "log_file": str(self.log.path),
                "log_tail": self.log_tail(LOG_LINES_IN_ERRORS),
            },
        )

    def _begin_start(self, *, after_crash: bool) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(self._run_start(after_crash=after_crash))
        self._start_task = task

        def done(t: asyncio.Task[str]) -> None:
            if self._start_task is t:
                self._start_task = None
            if not t.cancelled():
                t.exception()  # retrieved: its awaiters (if any) got it already

        task.add_done_callback(done)
        return task

    async def _run_start(self, *, after_crash: bool) -> str:
        loop = asyncio.get_running_loop()
        while True:
            if after_crash:
                delay = restart_delay(self._crashes, loop.time(), self.spec, self._rng)
                if delay is None:
                    self.last_error = with_tail(
                        self.log,
                        f"backend {self.name!r} crashed {len(self._crashes)} times within "
                        f"{self.spec.restart_window_s:.0f}s and was given up; "
                        f"last failure: {self._last_failure}; fix it and restart the backend",
                    )
                    self._set_state(ProcessState.ERROR)
                    raise self._error()
                self._set_state(ProcessState.RESTARTING)
                logger.warning(
                    "backend %s: restarting in %.1fs",
                    self.name,
                    delay,
                    extra={"action": "backend_restart", "backend": self.name},
                )
                await asyncio.sleep(delay)
                self.restarts += 1
            self._set_state(ProcessState.STARTING)
            try:
                child = await launch(
                    self.spec, self.log, (self.input_dir, self.output_dir), self._port_picker
                )
                self._adopt(child)
                return child.url
            except (OSError, ValueError) as exc:  # a folder or the log it cannot create, ...
                failure = StartFailed(
                    f"backend {self.name!r} could not be started: {exc}", fatal=True
                )
            except StartFailed as exc:
                failure = exc
            if failure.fatal or not after_crash:
                self.last_error = failure.message
                self._set_state(ProcessState.ERROR)
                logger.error(
                    "backend %s: %s",
                    self.name,
                    failure.message,
                    extra={"action": "backend_error", "backend": self.name},
                )
                raise self._error() from None
            self._crashes.append(loop.time())
            self._last_failure = failure.message.split("\n", 1)[0]
            self.last_error = failure.message
            self._set_state(ProcessState.CRASHED)

    def _adopt(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        self._child = child
        self.last_error = None
        child.watcher = loop.create_task(self._watch(child))
        if self.spec.health_interval_s:
            child.health = loop.create_task(self._watch_health(child))
        self._set_state(ProcessState.READY)
        self.note_activity()

    async def _watch(self, child: Child) -> None:
        code = await child.proc.wait()
        if self._child is not child:
            return  # stopped on purpose
        # no await from here on: a stop() must not slip in between the exit and the restart
        self._child = None
        signal_group(child.proc.pid, signal.SIGKILL)  # whatever it left behind
        if child.health is not None:
            child.health.cancel()
        reason = (
            f"stopped answering ({self.spec.health_failures} health probes failed) and was killed"
            if child.unresponsive
            else f"exited unexpectedly with code {code}"
        )
        self.log.note(reason)
        self._crashes.append(asyncio.get_running_loop().time())
        self._last_failure = reason
        self.last_error = with_tail(self.log, f"backend {self.name!r}: ComfyUI {reason}")
        logger.warning(
            "backend %s: ComfyUI %s",
            self.name,
            reason,
            extra={"action": "backend_crash", "backend": self.name},
        )
        self._set_state(ProcessState.CRASHED)
        if self._start_task is None and self._stop_task is None:
            self._begin_start(after_crash=True)

    async def _watch_health(self, child: Child) -> None:
        assert self.spec.health_interval_s
        failures = 0
        timeout = httpx.Timeout(self.spec.health_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            while failures < self.spec.health_failures:
                await asyncio.sleep(self.spec.health_interval_s)
                failures = 0 if await readiness.answers(http, child.url) else failures + 1
        if self._child is child:
            child.unresponsive = True
            await terminate(child, min(self.spec.stop_grace_s, 5.0))

    async def _run_stop(self) -> None:
        try:
            self._cancel_idle_timer()
            await self._cancel(self._start_task)
            child, self._child = self._child, None
            if child is not None:
                await self._cancel(child.watcher)
                await self._cancel(child.health)
                self.log.note("stopping")
                await terminate(child, self.spec.stop_grace_s)
                self.log.note(f"stopped (exit code {child.proc.returncode})")
            self._set_state(ProcessState.STOPPED)
        finally:
            self._stop_task = None

    async def _cancel(self, task: asyncio.Task[Any] | None) -> None:
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    # -- idle stop ----------------------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        if self.spec.idle_stop_s is None or self.state is not ProcessState.READY:
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self.spec.idle_stop_s, self._idle_expired)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.state is ProcessState.READY and self._stop_task is None:
            logger.info(
                "backend %s: idle for %gs, stopping it",
                self.name,
                self.spec.idle_stop_s,
                extra={"action": "backend_idle_stop", "backend": self.name},
            )
            self._idle_task = asyncio.get_running_loop().create_task(self.stop())


__all__ = ["ManagedProcess", "ProcessInfo", "StateCallback"]
