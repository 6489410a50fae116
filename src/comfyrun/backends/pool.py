"""The fleet of ComfyUI backends: their state, their free slots, and their health probes.

A backend (backends.backend) is a ComfyUI base URL, or a managed process (comfyrun.backends.process) that the pool
starts lazily on its first job. The dispatcher asks the pool for a `Slot` (a promise of room on
one backend, chosen by core.placement), binds a job to it, and releases it when the job is done;
a released slot wakes whoever waits for one. No polling: waiting for room is an asyncio.Event,
health is probed on a timer per backend (the only thing that has no event to wait for).
An admin may hold a backend (drained, stopped, restarting: backends.control): it then has no
room for a new job, and a stopped managed one is not started lazily. Drained and stopped are
kept across a restart of this process (backends.holds) when the pool is given a file for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from comfyrun.aio import wait_event
from comfyrun.backends import health as hl
from comfyrun.backends.backend import (
    Backend,
    BackendClient,
    BackendInfo,
    BackendSpec,
    ClientFactory,
    ManagedProcessLike,
    ProcessFactory,
)
from comfyrun.backends.holds import HoldFile, HoldKeeper
from comfyrun.backends.slot import Slot
from comfyrun.core.placement import (
    BackendView,
    HeldPrompt,
    any_can_serve,
    choose_backend,
)

log = logging.getLogger(__name__)


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
        self._state_listeners: list[Callable[[], None]] = []
        self._bound: dict[str, Slot] = {}
        #: Each backend's reservations not yet bound to a job, in the order they were made.
        self._unused: dict[str, list[Slot]] = {}
        self._generation = 0
        #: Awaited before a backend found down is taken back (a probe answers again), with its
        #: client: it clears what the backend still holds of jobs that moved on
        #: (dispatch.stale_prompts); False: not back yet (probed again).
        self.on_return: Callable[[Backend, Any], Awaitable[bool]] | None = None
        #: Keeps the admins' holds across a restart (`keep_holds`); None: in memory only.
        self.holds: HoldKeeper | None = None
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

    def keep_holds(self, file: HoldFile) -> None:
        """Keep the admins' holds in `file`: read back by `start`, written on each change."""
        self.holds = HoldKeeper(file, lambda: self._backends.values())

    # --- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Hold the backends held before a restart (`keep_holds`), then start probing every
        backend (the first probe of a URL backend connects at once); managed ones start lazily
        on their first job unless their spec says otherwise (and no admin keeps them stopped)."""
        if self.holds is not None:
            await self.holds.restore()
        for backend in self._backends.values():
            self._tasks.append(
                asyncio.create_task(self._probe_loop(backend), name=f"health:{backend.name}")
            )
            eager = not bool(getattr(backend.spec.managed, "lazy", True))
            if backend.managed and eager and not backend.kept_stopped:
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
        if self.holds is not None:
            await self.holds.saved()
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
        self._unused.setdefault(name, []).append(slot)
        return slot

    def _turn_taken(self, slot: Slot) -> None:
        """`slot` runs a job: its turn in the round robin stands."""
        unused = self._unused.get(slot.backend.name, [])
        if slot in unused:
            unused.remove(slot)

    def _turn_given_back(self, slot: Slot) -> None:
        """`slot` was given back unused: the round robin is as if it had never been reserved,
        whatever other reservations of its backend were made since (several claims at once)
        and in whatever order they are given back."""
        unused = self._unused.get(slot.backend.name, [])
        if slot not in unused:
            return
        at = unused.index(slot)
        del unused[at]
        if at < len(unused) and unused[at]._assigned[0] == slot._assigned[1]:
            later = unused[at]  # its turn came right after this one's: now after its predecessor
            later._assigned = (slot._assigned[0], later._assigned[1])
        elif slot.backend.last_assigned == slot._assigned[1]:
            slot.backend.last_assigned = slot._assigned[0]

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
        return bool(self._backends) and not any_can_serve(
            b.base_state for b in self._backends.values()
        )

    def problems(self) -> str:
        """What is wrong with the backends, for a job that cannot run anywhere."""
        return "; ".join(
            f"{info.name}: {info.last_error or info.state}" for info in self.snapshot()
        )

    @property
    def generation(self) -> int:
        """Counts the changes of backend states and slots (each one tells the listeners, see
        `add_listener`): a number read before a pass that is the same after it says nothing
        changed meanwhile."""
        return self._generation

    def add_listener(self, callback: Callable[[], None], *, slots: bool = True) -> None:
        """Called on every change of a backend's state and, unless not `slots`, of its slots
        (a job bound, held, executed or released: several a job, which change no backend's
        state but the busy/ready that follows from its jobs)."""
        (self._listeners if slots else self._state_listeners).append(callback)

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
            backend.set_down()
        backend._kick.set()
        # A managed ComfyUI that is up but stuck (quarantine) is restarted here; one that exited
        # or stopped answering is the supervisor's to restart (it counts its restarts).
        if backend.process is not None and quarantine and backend.process_up:
            task = asyncio.create_task(self._restart(backend), name=f"restart:{backend.name}")
            self._tasks.append(task)

    def set_draining(self, backend: Backend, draining: bool) -> None:
        backend.draining = draining
        self.holds_changed()
        self._changed()

    def holds_changed(self) -> None:
        """An admin's hold (drained, kept stopped) may have changed: it is kept (`keep_holds`;
        `await pool.holds.saved()` waits for the write)."""
        if self.holds is not None:
            self.holds.changed()

    # --- internals --------------------------------------------------------------------------
    def _changed(self) -> None:
        """A backend's state changed (health, process, draining)."""
        for callback in self._state_listeners:
            callback()
        self._slots_changed()

    def _slots_changed(self) -> None:
        """A slot changed (see `add_listener`)."""
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
                # a managed backend not started yet has nothing to probe: wait for a kick
                # (never dropping a cancel: comfyrun.aio)
                await wait_event(backend._kick, None if idle_managed else interval)
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
            if (
                ok
                and backend.is_down
                and self.on_return is not None
                and not await self.on_return(backend, client)
            ):
                continue  # not back: it stays down as it is, and is probed again
            new = hl.after_probe(
                backend.health, ok=ok, idle=idle, threshold=settings.failure_threshold
            )
            new = hl.after_ws(new, bool(getattr(client, "connected", True)))
            backend._apply(new, None if ok else "health check failed (GET /system_stats)")
            if ok and backend.health.accepting:
                backend.recovered()


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
