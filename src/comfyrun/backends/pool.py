"""The fleet of ComfyUI backends: their state, their free slots, and their health probes.

A backend is a ComfyUI base URL, or a managed process (comfyrun.backends.process) that the pool
starts lazily on its first job. The dispatcher asks the pool for a `Slot` (a promise of room on
one backend, chosen by core.placement), binds a job to it, and releases it when the job is done;
a released slot wakes whoever waits for one. No polling: waiting for room is an asyncio.Event,
health is probed on a timer per backend (the only thing that has no event to wait for).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from comfyrun.backends import health as hl
from comfyrun.core.placement import (
    DEFAULT_MAX_INFLIGHT,
    BackendState,
    BackendView,
    HeldPrompt,
    any_can_serve,
    choose_backend,
    displayed_state,
)
from comfyrun.errors import BackendError

log = logging.getLogger(__name__)


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

    @classmethod
    def from_url(
        cls,
        url: str,
        name: str | None = None,
        labels: Mapping[str, str | int | float | bool] | None = None,
    ) -> BackendSpec:
        return cls(
            name=name or url.rstrip("/").split("://", 1)[-1],
            url=url.rstrip("/"),
            labels=dict(labels or {}),
        )


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A backend as GET /api/v2/backends and `comfyrun backends` show it."""

    name: str
    url: str | None
    state: str
    inflight: int
    jobs_done: int
    last_error: str | None
    log_tail: list[str] = field(default_factory=list)
    managed: bool = False


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
        self.jobs_done = 0
        self.last_error: str | None = None
        self.last_assigned = 0
        self.draining = False
        self._client_factory = client_factory
        self._on_change = on_change
        self._down = asyncio.Event()
        self._kick = asyncio.Event()
        self._pstate: str | None = None  # the managed process's last state
        self._start_lock = asyncio.Lock()
        self._settled = asyncio.Event()  # set on every process state change

    # --- facts -------------------------------------------------------------------------------
    @property
    def managed(self) -> bool:
        return self.process is not None

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
    def input_dir(self) -> Path | None:
        return self.process.input_dir if self.process is not None else None

    @property
    def output_dir(self) -> Path | None:
        return self.process.output_dir if self.process is not None else None

    @property
    def temp_dir(self) -> Path | None:
        return self.process.temp_dir if self.process is not None else None

    @property
    def base_state(self) -> BackendState:
        """The state before busy/ready is derived from the number of jobs."""
        if self.process is not None:
            pstate = str(getattr(self.process.state, "value", self.process.state))
            if pstate in ("stopped", "starting", "crashed", "restarting", "error"):
                return BackendState(pstate)
        if self.draining:
            return BackendState.DRAINING
        if not self.health.checked:
            return BackendState.STARTING
        if self.health.accepting:
            return BackendState.READY
        return BackendState.UNHEALTHY

    @property
    def state(self) -> BackendState:
        return displayed_state(self.base_state, self.inflight)

    def view(self) -> BackendView:
        return BackendView(
            name=self.name,
            state=self.base_state,
            inflight=self.inflight,
            max_inflight=self.spec.max_inflight,
            lazy_start=self.managed,
            last_assigned=self.last_assigned,
        )

    def info(self) -> BackendInfo:
        tail: list[str] = []
        if self.process is not None:
            with contextlib.suppress(Exception):
                tail = list(self.process.log_tail(20))
        last_error = self.last_error
        if self.process is not None and self.process.last_error:
            last_error = self.process.last_error
        return BackendInfo(
            name=self.name,
            url=self.url,
            state=self.state.value,
            inflight=self.inflight,
            jobs_done=self.jobs_done,
            last_error=last_error,
            log_tail=tail,
            managed=self.managed,
        )

    # --- the client --------------------------------------------------------------------------
    async def ready_client(self) -> Any:
        """The started client for this backend; starts a managed process first (lazily)."""
        async with self._start_lock:
            if self.process is not None:
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
    async def wait_down(self) -> None:
        """Return once the backend is found down (its jobs should be given up)."""
        await self._down.wait()

    @property
    def is_down(self) -> bool:
        return self._down.is_set()

    def _apply(self, new: hl.Health, reason: str | None = None) -> None:
        was = self.base_state
        self.health = new
        if new.down:
            if not self._down.is_set():
                self._down.set()
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
            self._down.set()
        if pstate in ("ready", "busy") and self._down.is_set() and not self.health.quarantined:
            self._down = asyncio.Event()
            self.health = hl.Health(
                http_ok=True, ws_connected=self.health.ws_connected, checked=True
            )
        if not ({previous, pstate} <= {"ready", "busy"}):
            # up or down: probe now. ready <-> busy (every job) is nothing to probe for.
            self._kick.set()
        self._on_change()


class Slot:
    """Room for one job on one backend, held from before the claim until the job is done.

    While its prompt waits in ComfyUI's queue (submitted, not started) the slot is `held`:
    the dispatcher may take the prompt back and run the job elsewhere (core.placement)."""

    def __init__(self, pool: BackendPool, backend: Backend) -> None:
        self.pool = pool
        self.backend = backend
        self.job_id: str | None = None
        self.priority = 0
        self.seq = 0  # bind order: the slot's place in its backend's ComfyUI queue
        self.claimed = 0  # its job's claim order, kept when a held prompt moves
        self.held = False
        self.executed = False
        self._released = False
        self._assigned = (backend.last_assigned, backend.last_assigned)  # (before, after)

    def bind(self, job_id: str, *, priority: int = 0, claimed: int | None = None) -> None:
        """The slot runs `job_id`; `claimed`: the claim order of a job moved here (else
        now)."""
        assert self.job_id is None and not self._released
        self.backend.reserved -= 1
        self.backend.jobs.add(job_id)
        self.job_id = job_id
        self.priority = priority
        self.seq = next(self.pool._counter)
        self.claimed = self.seq if claimed is None else claimed
        self.pool._bound[job_id] = self
        self.backend.sync_busy()
        self.pool._changed()

    def hold(self, held: bool) -> None:
        """The prompt is in ComfyUI's queue and has not started (True), or it started."""
        if self.held != held and not self._released:
            self.held = held
            self.pool._changed()

    def executed_prompt(self) -> None:
        """ComfyUI is done with the prompt: the backend has room for the next one while the
        job's outputs are collected."""
        if not self.executed and not self._released and self.job_id is not None:
            self.executed = True
            self.held = False
            self.backend.executed += 1
            self.pool._changed()

    def release(self, *, done: bool = False) -> None:
        if self._released:
            return
        self._released = True
        self.held = False
        if self.executed:
            self.backend.executed -= 1
        if self.job_id is None:
            self.backend.reserved -= 1
            # room held and given back unused (nothing to claim): no change to wake anyone for
            # (the dispatcher would spin), and the round robin stays where it was
            if self.backend.last_assigned == self._assigned[1]:
                self.backend.last_assigned = self._assigned[0]
            self.pool._room.set()
            return
        if self.pool._bound.get(self.job_id) is self:
            del self.pool._bound[self.job_id]
        self.backend.jobs.discard(self.job_id)
        if done:
            self.backend.jobs_done += 1
        self.backend.sync_busy()
        self.pool._changed()


class BackendPool:
    """All backends of one worker, their slots and their health probes."""

    def __init__(
        self,
        backends: Sequence[Backend] | None = None,
        *,
        health: hl.HealthSettings | None = None,
    ) -> None:
        self.health_settings = health or hl.HealthSettings()
        self._backends: dict[str, Backend] = {}
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._counter = itertools.count(1)
        self._listeners: list[Callable[[], None]] = []
        self._bound: dict[str, Slot] = {}
        self._generation = 0
        for backend in backends or ():
            self._backends[backend.name] = backend

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[BackendSpec],
        client_factory: ClientFactory,
        *,
        process_factory: ProcessFactory | None = None,
        health: hl.HealthSettings | None = None,
    ) -> BackendPool:
        """A pool of `specs`; `client_factory(url)` makes a ComfyClient, `process_factory(spec)`
        a ManagedProcess (default: comfyrun.backends.process.ManagedProcess)."""
        pool = cls(health=health)
        names: set[str] = set()
        for spec in specs:
            if spec.name in names:
                raise ValueError(f"two backends are named {spec.name!r}")
            names.add(spec.name)
            process: ManagedProcessLike | None = None
            if spec.managed is not None:
                factory = process_factory or _default_process_factory
                process = factory(spec.managed)
            elif not spec.url:
                raise ValueError(f"backend {spec.name!r} has neither a url nor a managed spec")
            backend = Backend(spec, client_factory, process, pool._changed)
            if process is not None:
                process.on_state_change(backend.process_changed)
            pool._backends[spec.name] = backend
        return pool

    # --- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start probing every backend (the first probe of a URL backend connects at once);
        managed ones start lazily on their first job unless their spec says otherwise."""
        for backend in self._backends.values():
            self._tasks.append(
                asyncio.create_task(self._probe_loop(backend), name=f"health:{backend.name}")
            )
            if backend.managed and not bool(getattr(backend.spec.managed, "lazy", True)):
                self._tasks.append(
                    asyncio.create_task(self._eager_start(backend), name=f"start:{backend.name}")
                )

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every URL backend has answered a probe (tests, `comfyrun serve` start-up)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not all(b.health.checked or b.managed for b in self._backends.values()):
                    self._room.clear()
                    await self._room.wait()
                return True
        return False

    async def _eager_start(self, backend: Backend) -> None:
        with contextlib.suppress(Exception):
            await backend.ready_client()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for backend in self._backends.values():
            await backend._close_client()
            if backend.process is not None:
                with contextlib.suppress(Exception):
                    await backend.process.stop()

    # --- what the dispatcher calls ----------------------------------------------------------
    @property
    def backends(self) -> list[Backend]:
        return list(self._backends.values())

    def get(self, name: str) -> Backend | None:
        return self._backends.get(name)

    def snapshot(self) -> list[BackendInfo]:
        return [b.info() for b in self._backends.values()]

    def views(self) -> list[BackendView]:
        return [b.view() for b in self._backends.values()]

    def held_prompts(self) -> list[HeldPrompt]:
        """The jobs whose prompts wait, not started, in a backend's ComfyUI queue behind
        another prompt (one alone on its backend is about to start: nothing to take back)."""
        slots = list(self._bound.values())
        return [
            HeldPrompt(job_id, slot.backend.name, slot.priority, slot.claimed)
            for job_id, slot in self._bound.items()
            if slot.held
            and any(
                other.backend is slot.backend and not other.executed and other.seq < slot.seq
                for other in slots
            )
        ]

    def running_jobs(self) -> dict[str, tuple[str, int]]:
        """Backend name -> (job id, claim order) of the prompt it runs now: the first of its
        prompts ComfyUI has not finished."""
        first: dict[str, Slot] = {}
        for slot in self._bound.values():
            name = slot.backend.name
            if not slot.executed and (name not in first or slot.seq < first[name].seq):
                first[name] = slot
        return {
            name: (slot.job_id, slot.claimed)
            for name, slot in first.items()
            if slot.job_id is not None and not slot.held
        }

    def try_reserve(self, *, avoid: str | None = None, on: str | None = None) -> Slot | None:
        """Room on the backend core.placement chooses (or on backend `on`), or None."""
        views = self.views()
        if on is not None:
            views = [v for v in views if v.name == on]
        name = choose_backend(views, avoid=avoid)
        if name is None:
            return None
        backend = self._backends[name]
        before = backend.last_assigned
        backend.reserved += 1
        backend.last_assigned = next(self._counter)
        slot = Slot(self, backend)
        slot._assigned = (before, backend.last_assigned)
        return slot

    async def reserve(self) -> Slot | None:
        """Wait (on events, not a timer) until some backend has room, and hold that room.
        None when no backend can ever take a job (every one is in `error`)."""
        while True:
            slot = self.try_reserve()
            if slot is not None:
                return slot
            if self.hopeless:
                return None
            self._room.clear()
            await self._room.wait()

    @property
    def hopeless(self) -> bool:
        """Every backend is in `error` (e.g. a managed ComfyUI that is missing)."""
        return bool(self._backends) and not any_can_serve(b.view() for b in self._backends.values())

    def problems(self) -> str:
        """What is wrong with the backends, for a job that cannot run anywhere."""
        return "; ".join(
            f"{info.name}: {info.last_error or info.state}" for info in self.snapshot()
        )

    @property
    def generation(self) -> int:
        """Counts the changes of backend states and slots (see `wait_changed`)."""
        return self._generation

    async def wait_changed(self, since: int) -> None:
        """Return once something changed after generation `since` (at once if it has)."""
        while self._generation == since:
            self._room.clear()
            await self._room.wait()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called on every change of a backend's state or slots."""
        self._listeners.append(callback)

    def mark_unhealthy(self, backend: Backend, reason: str, *, quarantine: bool = True) -> None:
        """Take `backend` out of service now: its jobs are given up, and it comes back when a
        probe finds it answering (and, in quarantine, idle). A managed one in quarantine is
        restarted."""
        backend.last_error = reason
        if quarantine:
            backend._apply(
                hl.quarantine(backend.health, self.health_settings.failure_threshold), reason
            )
        else:
            backend._down.set()
        backend._kick.set()
        # A managed ComfyUI that is up but stuck (quarantine) is restarted here; one that exited
        # or stopped answering is the supervisor's to restart (it counts its restarts).
        if backend.process is not None and quarantine and backend.process_up:
            task = asyncio.create_task(self._restart(backend), name=f"restart:{backend.name}")
            self._tasks.append(task)

    def set_draining(self, backend: Backend, draining: bool) -> None:
        backend.draining = draining
        self._changed()

    # --- internals --------------------------------------------------------------------------
    def _changed(self) -> None:
        self._generation += 1
        self._room.set()
        for callback in self._listeners:
            callback()

    async def _restart(self, backend: Backend) -> None:
        assert backend.process is not None
        try:
            await backend.process.restart()
            backend.health = hl.Health(checked=False)
            backend._kick.set()
        except Exception as exc:
            backend.last_error = f"restart failed: {exc}"
            log.warning("backend %s restart failed: %s", backend.name, exc)

    async def _probe_loop(self, backend: Backend) -> None:
        settings = self.health_settings
        me = asyncio.current_task()
        while True:
            interval = (
                settings.down_interval_s if not backend.health.accepting else settings.interval_s
            )
            idle_managed = backend.managed and not backend.process_up
            if backend.health.checked or idle_managed:
                # a managed backend not started yet has nothing to probe: wait for a kick.
                # asyncio.wait, not asyncio.timeout: on Python 3.11 a timeout that fires with a
                # cancel can swallow the cancel, and pool.stop() would wait forever
                kick = asyncio.ensure_future(backend._kick.wait())
                try:
                    await asyncio.wait({kick}, timeout=None if idle_managed else interval)
                finally:
                    kick.cancel()
            else:
                await asyncio.sleep(0)
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            backend._kick.clear()
            if backend.managed and not backend.process_up:
                continue  # nothing to probe: the supervisor watches a process that is not up
            try:
                if backend.managed:
                    # never start (or restart) a managed process from a probe, only a job does;
                    # but connect to one the supervisor (re)started
                    client = await backend.connect_running()
                else:
                    async with asyncio.timeout(settings.timeout_s):
                        client = await backend.ready_client()
            except Exception as exc:
                backend._apply(
                    hl.after_probe(
                        backend.health, ok=False, idle=None, threshold=settings.failure_threshold
                    ),
                    f"cannot connect: {exc}",
                )
                continue
            ok, idle = await hl.probe(
                client, timeout_s=settings.timeout_s, ask_idle=backend.health.quarantined
            )
            new = hl.after_probe(
                backend.health, ok=ok, idle=idle, threshold=settings.failure_threshold
            )
            new = hl.after_ws(new, bool(getattr(client, "connected", True)))
            backend._apply(new, None if ok else "health check failed (GET /system_stats)")


async def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.close()


def _default_process_factory(spec: Any) -> ManagedProcessLike:
    # imported lazily: a pool of URL backends never needs the process supervisor
    process_module = importlib.import_module("comfyrun.backends.process")
    factory: Any = process_module.ManagedProcess
    result: ManagedProcessLike = factory(spec)
    return result


__all__ = [
    "Backend",
    "BackendClient",
    "BackendInfo",
    "BackendPool",
    "BackendSpec",
    "ClientFactory",
    "ManagedProcessLike",
    "ProcessFactory",
    "Slot",
]
