"""One ComfyUI backend as the dispatcher sees it (`Backend`): its spec, its client, its health
and its managed process's state, and the room it has. The pool (backends.pool) owns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from comfyrun.backends import health as hl
from comfyrun.core.pipeline import Pace
from comfyrun.core.placement import (
    DEFAULT_MAX_INFLIGHT,
    BackendState,
    BackendView,
    displayed_state,
)
from comfyrun.errors import BackendError

log = logging.getLogger("comfyrun.backends.pool")


class BackendClient(Protocol):
    """What the pool itself needs of a ComfyUI client (comfyrun.comfy.client.ComfyClient)."""

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def system_stats(self) -> Any: ...

    async def queue(self) -> Any: ...


class ManagedProcessLike(Protocol):
    """What the pool needs of comfyrun.backends.process.ManagedProcess."""

    @property
    def state(self) -> Any: ...

    @property
    def url(self) -> str | None: ...

    @property
    def input_dir(self) -> Path: ...

    @property
    def output_dir(self) -> Path: ...

    @property
    def temp_dir(self) -> Path: ...

    @property
    def last_error(self) -> str | None: ...

    async def ensure_started(self) -> str: ...

    async def stop(self) -> None: ...

    async def restart(self) -> None: ...

    def log_tail(self, n: int = 20) -> list[str]: ...

    def on_state_change(self, cb: Callable[[Any], None]) -> None: ...

    def mark_busy(self, busy: bool) -> None: ...

    def note_activity(self) -> None: ...


ClientFactory = Callable[[str], Any]
ProcessFactory = Callable[[Any], ManagedProcessLike]


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One backend: a ComfyUI `url`, or a `managed` process (a process.ManagedSpec)."""

    name: str
    url: str | None = None
    managed: Any = None
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    labels: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    #: a `url` backend that reads comfyrun's model cache (see BackendConfig.sees_model_cache)
    sees_model_cache: bool = False

    @classmethod
    def from_url(
        cls,
        url: str,
        name: str | None = None,
        labels: Mapping[str, str | int | float | bool] | None = None,
        *,
        sees_model_cache: bool = False,
    ) -> BackendSpec:
        return cls(
            name=name or url.rstrip("/").split("://", 1)[-1],
            url=url.rstrip("/"),
            labels=dict(labels or {}),
            sees_model_cache=sees_model_cache,
        )


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A backend as GET /api/v2/backends and `comfyrun backends` show it."""

    name: str
    url: str | None
    state: str
    inflight: int
    jobs_done: int
    #: What is wrong with it now: cleared once it is ready again and answered a probe
    last_error: str | None
    log_tail: list[str] = field(default_factory=list)
    managed: bool = False
    #: When `last_error` was first seen (epoch seconds; None with it)
    last_error_at: float | None = None
    #: takes no new jobs: drained by an admin, or stopping/restarting once its jobs are done
    draining: bool = False
    #: a managed backend an admin stopped: no job starts it again until `start` or `resume`
    kept_stopped: bool = False
    #: the prompts it may hold now: one running, the rest waiting in ComfyUI's queue (more than
    #: 2 only while its prompts run shorter than comfyrun takes to send the next: core.pipeline)
    depth: int = DEFAULT_MAX_INFLIGHT


class Backend:
    """One ComfyUI server as the dispatcher sees it. Mutated only by the pool and its slots."""

    def __init__(
        self,
        spec: BackendSpec,
        client_factory: ClientFactory,
        process: ManagedProcessLike | None,
        on_change: Callable[[], None],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.process = process
        self.client: Any = None
        self.health = hl.Health()
        self.jobs: set[str] = set()
        self.reserved = 0
        self.executed = 0  # jobs whose prompt ComfyUI finished (their outputs being collected)
        #: How long its prompts run and comfyrun takes to queue the next: its depth
        self.pace = Pace.new()
        self.jobs_done = 0
        self._last_error: str | None = None
        self.last_error_at: float | None = None
        #: the managed process's last error, and when this backend first saw it
        self._process_error: tuple[str, float] | None = None
        self.last_assigned = 0
        #: An admin's holds (backends.control): drained (no new jobs, until resumed); stopped
        #: (a managed one: its process stopped and not started by a job, until started or
        #: resumed); an admin's restart under way (no new jobs until it is done).
        self.draining = False
        self.kept_stopped = False
        self.restart_pending = False
        #: the admin operation waiting for this backend's jobs to end (backends.control)
        self.admin_task: asyncio.Task[None] | None = None
        #: jobs an admin's forced stop or restart cut short (job id -> why): their runs put
        #: them back in the queue, the attempt not counted (it was not the job's failure)
        self.cut_jobs: dict[str, str] = {}
        #: prompts of jobs that had moved on, stopped here as it came back (stale_prompts)
        self.stale_prompts_stopped = 0
        self._client_factory = client_factory
        self._on_change = on_change
        self._down = asyncio.Event()
        self._down_futures: set[asyncio.Future[None]] = set()
        self._kick = asyncio.Event()
        self._pstate: str | None = None  # the managed process's last state
        self._start_lock = asyncio.Lock()
        self._settled = asyncio.Event()  # set on every process state change

    # --- facts -------------------------------------------------------------------------------
    @property
    def last_error(self) -> str | None:
        """What went wrong with this backend last, while it matters: cleared once the backend
        is ready again and answered a probe (`recovered`)."""
        return self._last_error

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        if value != self._last_error:
            self.last_error_at = None if value is None else time.time()
        self._last_error = value

    def recovered(self) -> None:
        """The backend answered a probe and takes jobs again: its last error is history (the
        log keeps it)."""
        if self._last_error is None:
            return
        log.info(
            "backend %s recovered (its last error was: %s)",
            self.name,
            self._last_error,
            extra={"action": "backend_recovered", "backend": self.name},
        )
        self.last_error = None
        self._on_change()

    @property
    def managed(self) -> bool:
        return self.process is not None

    @property
    def receives_models(self) -> bool:
        """Whether model files comfyrun caches are seen by this backend's ComfyUI: a managed
        one (given the cache's extra model paths), or one configured to read the cache."""
        return self.managed or self.spec.sees_model_cache

    @property
    def accepts_new(self) -> bool:
        """No admin hold keeps new jobs off this backend (drained, stopped, restarting)."""
        return not (self.draining or self.kept_stopped or self.restart_pending)

    @property
    def url(self) -> str | None:
        if self.process is not None:
            return self.process.url
        return self.spec.url

    @property
    def process_up(self) -> bool:
        """A managed backend's process runs and answered its readiness check."""
        if self.process is None:
            return False
        return str(getattr(self.process.state, "value", self.process.state)) in ("ready", "busy")

    @property
    def inflight(self) -> int:
        """Jobs that occupy ComfyUI: reserved, held in its queue or running there."""
        return self.reserved + len(self.jobs) - self.executed

    @property
    def depth(self) -> int:
        """The prompts it may hold now (core.pipeline: its configured depth, more while its
        prompts run shorter than comfyrun takes to send the next)."""
        return self.pace.depth(self.spec.max_inflight)

    @property
    def input_dir(self) -> Path | None:
        return self.process.input_dir if self.process is not None else None

    @property
    def output_dir(self) -> Path | None:
        return self.process.output_dir if self.process is not None else None

    @property
    def temp_dir(self) -> Path | None:
        return self.process.temp_dir if self.process is not None else None

    @property
    def chosen_dirs(self) -> frozenset[str]:
        """The kinds of folder ("output", "temp") comfyrun chose for this managed backend (its
        files there are comfyrun's to remove); none for any other backend."""
        chosen = getattr(self.process, "chosen_dirs", None)
        return chosen if isinstance(chosen, frozenset) else frozenset()

    @property
    def base_state(self) -> BackendState:
        """The state before busy/ready is derived from the number of jobs."""
        if self.process is not None:
            pstate = str(getattr(self.process.state, "value", self.process.state))
            if pstate in ("stopped", "starting", "crashed", "restarting", "error"):
                return BackendState(pstate)
        if not self.health.checked:
            return BackendState.STARTING
        if not self.health.accepting:
            return BackendState.UNHEALTHY  # drained or not: it could not take a job anyway
        if not self.accepts_new:
            return BackendState.DRAINING
        return BackendState.READY

    @property
    def state(self) -> BackendState:
        return displayed_state(self.base_state, self.inflight)

    def view(self) -> BackendView:
        return BackendView(
            name=self.name,
            state=self.base_state,
            inflight=self.inflight,
            max_inflight=self.depth,
            # a stopped managed backend starts on a job, unless an admin holds it
            lazy_start=self.managed and self.accepts_new,
            last_assigned=self.last_assigned,
        )

    def info(self) -> BackendInfo:
        tail: list[str] = []
        if self.process is not None:
            with contextlib.suppress(Exception):
                tail = list(self.process.log_tail(20))
        last_error, last_error_at = self.last_error, self.last_error_at
        process_error = self.process.last_error if self.process is not None else None
        if process_error:
            if self._process_error is None or self._process_error[0] != process_error:
                self._process_error = (process_error, time.time())
            last_error, last_error_at = self._process_error
        else:
            self._process_error = None
        return BackendInfo(
            name=self.name,
            url=self.url,
            state=self.state.value,
            inflight=self.inflight,
            jobs_done=self.jobs_done,
            last_error=last_error,
            log_tail=tail,
            managed=self.managed,
            last_error_at=last_error_at,
            draining=not self.accepts_new,
            kept_stopped=self.kept_stopped,
            depth=self.depth,
        )

    # --- the client --------------------------------------------------------------------------
    async def ready_client(self) -> Any:
        """The started client for this backend; starts a managed process first (lazily)."""
        async with self._start_lock:
            if self.process is not None:
                if self.kept_stopped:
                    raise BackendError(
                        f"backend {self.name} was stopped by an admin; "
                        f"`comfyrun backends start {self.name}` starts it again",
                        details={"backend": self.name},
                    )
                await self._wait_restart()
                try:
                    url = await self.process.ensure_started()
                except BackendError as exc:
                    self.last_error = exc.message
                    self._on_change()
                    raise
                if self.client is not None and getattr(self.client, "base_url", url) != url:
                    await self._close_client()
                if self.client is None:
                    await self._open_client(url)
                    self.health = hl.after_probe(self.health, ok=True, idle=None, threshold=1)
                    self._kick.set()
                    self._on_change()
            elif self.client is None:
                assert self.spec.url is not None
                await self._open_client(self.spec.url)
            return self.client

    async def connect_running(self) -> Any:
        """The client of a managed process that is up, opened if needed (no start)."""
        async with self._start_lock:
            url = self.process.url if self.process is not None else None
            if url is None:
                raise BackendError(f"backend {self.name} is not running")
            if self.client is not None and getattr(self.client, "base_url", url) != url:
                await self._close_client()
            if self.client is None:
                await self._open_client(url)
            return self.client

    async def _wait_restart(self) -> None:
        """A crashed managed process is the supervisor's to restart: wait for that rather than
        start it a second time (bounded by the spec's ready timeout)."""
        assert self.process is not None
        limit = float(getattr(self.spec.managed, "ready_timeout_s", 120.0)) * 2
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while str(getattr(self.process.state, "value", self.process.state)) in (
                    "crashed",
                    "restarting",
                ):
                    self._settled.clear()
                    await self._settled.wait()

    async def _open_client(self, url: str) -> None:
        client = self._client_factory(url)
        on_state = getattr(client, "on_state_change", None)
        if on_state is not None:
            on_state(self._ws_state_changed)
        try:
            await client.start()
        except BaseException:
            # a client that did not start must not keep reconnecting in the background
            await asyncio.shield(_close_quietly(client))
            raise
        self.client = client
        self.health = hl.after_ws(self.health, bool(getattr(client, "connected", True)))

    async def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    def _ws_state_changed(self, state: Any) -> None:
        connected = bool(getattr(self.client, "connected", state)) if self.client else bool(state)
        if connected != self.health.ws_connected:
            log.info(
                "backend %s websocket %s",
                self.name,
                "connected" if connected else "disconnected",
                extra={"action": "backend_ws", "backend": self.name},
            )
        self.health = hl.after_ws(self.health, connected)
        self._kick.set()
        self._on_change()

    # --- down / up ---------------------------------------------------------------------------
    def down_future(self) -> asyncio.Future[None]:
        """A future resolved once the backend is found down (its jobs should be given up),
        without a task of its own; cancel it when no longer needed."""
        found: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._down.is_set():
            found.set_result(None)
        else:
            self._down_futures.add(found)
            found.add_done_callback(self._down_futures.discard)
        return found

    @property
    def is_down(self) -> bool:
        return self._down.is_set()

    def set_down(self) -> None:
        """The backend is found down: its jobs should be given up."""
        self._down.set()
        for found in list(self._down_futures):
            if not found.done():
                found.set_result(None)

    def _apply(self, new: hl.Health, reason: str | None = None) -> None:
        was = self.base_state
        self.health = new
        if new.down:
            if not self._down.is_set():
                self.set_down()
                self.last_error = reason or self.last_error
        elif self._down.is_set():
            self._down = asyncio.Event()
        now = self.base_state
        if now is not was:
            log.info(
                "backend %s is %s%s",
                self.name,
                now.value,
                f": {reason}" if reason else "",
                extra={"action": "backend_state", "backend": self.name, "state": now.value},
            )
            self._on_change()

    def sync_busy(self) -> None:
        """Tell a managed process whether it has work (drives its busy state and idle stop)."""
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.mark_busy(bool(self.jobs))
                self.process.note_activity()

    def process_changed(self, state: Any) -> None:
        pstate = str(getattr(state, "value", state))
        previous, self._pstate = self._pstate, pstate
        self._settled.set()
        if pstate in ("stopped", "crashed", "restarting", "error") and self.client is not None:
            # stopped on purpose (idle stop, shutdown): drop the client so that nothing probes
            # or reconnects to it; the next job starts the process and opens a new one
            old, self.client = self.client, None
            asyncio.get_running_loop().create_task(_close_quietly(old))
        if pstate in ("crashed", "error", "stopped", "restarting") and self.jobs:
            self.set_down()
        if pstate in ("ready", "busy") and self._down.is_set() and not self.health.quarantined:
            self._down = asyncio.Event()
            self.health = hl.Health(
                http_ok=True, ws_connected=self.health.ws_connected, checked=True
            )
        if not ({previous, pstate} <= {"ready", "busy"}):
            # up or down: probe now. ready <-> busy (every job) is nothing to probe for.
            self._kick.set()
        self._on_change()


async def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.close()


__all__ = [
    "Backend",
    "BackendClient",
    "BackendInfo",
    "BackendSpec",
    "ClientFactory",
    "ManagedProcessLike",
    "ProcessFactory",
]
