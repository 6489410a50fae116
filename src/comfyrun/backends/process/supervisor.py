"""The supervisor of one managed ComfyUI process (see the package docstring for how it works)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from comfyrun.backends.logs import ProcessLog
from comfyrun.backends.ports import (
    PortPicker,
    fixed_port_taken,
    pick_free_port,
    port_is_free,
    says_port_in_use,
)
from comfyrun.backends.process import readiness
from comfyrun.backends.process.groups import group_alive, signal_group, tied_to_parent
from comfyrun.backends.process.spec import HOST, ManagedSpec
from comfyrun.backends.process.states import TRANSITIONS, UP, ProcessState, restart_delay
from comfyrun.errors import BackendError, InvalidRequest

logger = logging.getLogger(__name__)

_LOG_LINES_IN_ERRORS = 8


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


class _StartFailed(BackendError):
    """A start attempt failed (internal: callers get a BackendError from `_error()`)."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(eq=False)
class _Child:
    proc: asyncio.subprocess.Process
    port: int
    log_offset: int
    unresponsive: bool = False
    watcher: asyncio.Task[None] | None = None
    health: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


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
        self._child: _Child | None = None
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
                "log_tail": self.log_tail(_LOG_LINES_IN_ERRORS),
            },
        )

    def _with_tail(self, message: str) -> str:
        tail = self.log_tail(_LOG_LINES_IN_ERRORS)
        if not tail:
            return message
        return f"{message}\nlast lines of {self.log.path}:\n" + "\n".join(tail)

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
                    self.last_error = self._with_tail(
                        f"backend {self.name!r} crashed {len(self._crashes)} times within "
                        f"{self.spec.restart_window_s:.0f}s and was given up; "
                        f"last failure: {self._last_failure}; fix it and restart the backend"
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
                return await self._launch()
            except (OSError, ValueError) as exc:  # a folder or the log it cannot create, ...
                failure = _StartFailed(
                    f"backend {self.name!r} could not be started: {exc}", fatal=True
                )
            except _StartFailed as exc:
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

    async def _launch(self) -> str:
        # off the loop: the first call discovers the interpreter (it may run candidates)
        problem = await asyncio.to_thread(self.spec.problem)
        if problem is not None:
            self.log.note(f"not started: {problem}")
            raise _StartFailed(problem, fatal=True)
        for folder in (self.input_dir, self.output_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self.spec.port is not None and not port_is_free(self.spec.port, HOST):
            # whatever listens there would answer the readiness probe in its place
            self.log.note(f"not started: port {self.spec.port} is in use")
            raise _StartFailed(fixed_port_taken(self.name, self.spec.port), fatal=False)
        attempts = 1 if self.spec.port is not None else max(1, self.spec.port_attempts)
        for _ in range(attempts):
            port = self.spec.port if self.spec.port is not None else self._port_picker()
            child = await self._spawn(port)
            warmed = True
            try:
                failure = await readiness.wait_ready(child.proc, child.url, self.spec)
                if failure is None and self.spec.warmup_prompt is not None:
                    failure = await readiness.warm_up(child.proc, child.url, self.spec)
                    warmed = failure is None
            except BaseException:
                await asyncio.shield(self._terminate(child, 0))
                raise
            if failure is None:
                self._adopt(child)
                return child.url
            # shielded: a stop() arriving now must not leave this child half-terminated
            await asyncio.shield(self._terminate(child, self.spec.stop_grace_s))
            if not warmed:
                raise _StartFailed(self._with_tail(failure), fatal=True)
            output = self.log.read_from(child.log_offset)
            if child.proc.returncode not in (None, -signal.SIGTERM, -signal.SIGKILL) and (
                says_port_in_use(output)
            ):
                if self.spec.port is not None:
                    raise _StartFailed(fixed_port_taken(self.name, self.spec.port), fatal=False)
                logger.warning(
                    "backend %s: port %d was taken, trying another",
                    self.name,
                    port,
                    extra={"action": "backend_port_taken", "backend": self.name},
                )
                continue
            raise _StartFailed(self._with_tail(failure), fatal=False)
        raise _StartFailed(
            f"backend {self.name!r} could not bind a free port in {self.spec.port_attempts} "
            "attempts; something keeps taking the ports comfyrun picks",
            fatal=False,
        )

    async def _spawn(self, port: int) -> _Child:
        argv = self.spec.argv(port)
        launch = argv
        if self.spec.die_with_parent:
            launcher = self.spec.interpreter if self.spec.comfy_path is not None else sys.executable
            launch = tied_to_parent(argv, launcher)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
        with self.log.open_for_child() as out:
            offset = out.tell()
            out.write(f"[comfyrun] starting: {shlex.join(argv)}\n".encode())
            try:
                proc = await asyncio.create_subprocess_exec(
                    *launch,
                    cwd=self.spec.workdir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise _StartFailed(
                    f"backend {self.name!r} could not run {argv[0]!r}: {exc}; fix the "
                    "backend's python/command",
                    fatal=True,
                ) from None
        logger.info(
            "backend %s: started pid %d on port %d",
            self.name,
            proc.pid,
            port,
            extra={"action": "backend_spawn", "backend": self.name, "pid": proc.pid},
        )
        return _Child(proc=proc, port=port, log_offset=offset)

    def _adopt(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        self._child = child
        self.last_error = None
        child.watcher = loop.create_task(self._watch(child))
        if self.spec.health_interval_s:
            child.health = loop.create_task(self._watch_health(child))
        self._set_state(ProcessState.READY)
        self.note_activity()

    async def _watch(self, child: _Child) -> None:
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
        self.last_error = self._with_tail(f"backend {self.name!r}: ComfyUI {reason}")
        logger.warning(
            "backend %s: ComfyUI %s",
            self.name,
            reason,
            extra={"action": "backend_crash", "backend": self.name},
        )
        self._set_state(ProcessState.CRASHED)
        if self._start_task is None and self._stop_task is None:
            self._begin_start(after_crash=True)

    async def _watch_health(self, child: _Child) -> None:
        assert self.spec.health_interval_s
        failures = 0
        timeout = httpx.Timeout(self.spec.health_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            while failures < self.spec.health_failures:
                await asyncio.sleep(self.spec.health_interval_s)
                failures = 0 if await readiness.answers(http, child.url) else failures + 1
        if self._child is child:
            child.unresponsive = True
            await self._terminate(child, min(self.spec.stop_grace_s, 5.0))

    async def _terminate(self, child: _Child, grace: float) -> None:
        """TERM the group, KILL it after `grace`, and wait until none of it is left."""
        pgid = child.proc.pid
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if grace > 0:
            signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.proc.wait(), grace)
            # No event tells us when a grandchild exits; a short bounded poll does.
            while group_alive(pgid) and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        signal_group(pgid, signal.SIGKILL)
        await child.proc.wait()
        for _ in range(100):  # SIGKILL is not instant; wait (bounded) until the kernel is done
            if not group_alive(pgid):
                break
            await asyncio.sleep(0.02)

    async def _run_stop(self) -> None:
        try:
            self._cancel_idle_timer()
            await self._cancel(self._start_task)
            child, self._child = self._child, None
            if child is not None:
                await self._cancel(child.watcher)
                await self._cancel(child.health)
                self.log.note("stopping")
                await self._terminate(child, self.spec.stop_grace_s)
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
