"""An admin's operations on one backend of a running pool: drain, resume, restart, stop, start.

- `drain`: the backend takes no new job; the jobs on it finish there. `resume` undoes it (and a
  stop: a stopped managed backend is started again by the next job, lazily).
- `stop`: a managed backend is drained, then its ComfyUI process stopped once its jobs are done
  (`force`: at once); it stays stopped (no job starts it) until `start` or `resume`. A backend
  comfyrun does not manage has no process to stop: stopping it drains it.
- `restart`: a managed backend's process is restarted once its jobs are done (`force`: at once);
  a URL backend's client (HTTP pool and websocket) is closed and opened anew.
- `start`: a managed backend's process is started now (a stop undone; a drain stays).

The jobs a forced stop or restart cuts short are found down with their backend, as after a
crash (dispatch.run), and go back to the queue, the attempt not counted (not the job's failure,
and its prompt died with the process): they run again, on another backend or on this one once it
is back, never end as succeeded without outputs. A backend comfyrun does not manage is not
restarted with force while jobs are on it (their prompts would go on in its ComfyUI): 409.
The operations return at once;
what waits (for the jobs, for the process) runs in a task of the pool's, and the backend's
state (GET /api/v2/backends) says where it is. Each change tells the pool's listeners, so a
dispatcher waiting for room looks again at once. Drained and kept stopped are kept across a
restart of the process (backends.holds); a restart under way is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from comfyrun.backends import health as hl
from comfyrun.backends.backend import Backend
from comfyrun.backends.pool import BackendPool
from comfyrun.errors import Conflict, NotFound

log = logging.getLogger("comfyrun.backends.pool")

OPERATIONS = ("drain", "resume", "restart", "stop", "start")


def backend_of(pool: BackendPool | None, name: str) -> Backend:
    """The pool's backend `name`, else NotFound (404)."""
    backend = pool.get(name) if pool is not None else None
    if backend is None:
        known = ", ".join(b.name for b in pool.backends) if pool is not None else ""
        raise NotFound(
            f"no backend named {name!r}" + (f" (backends: {known})" if known else ""),
            details={"backend": name},
        )
    return backend


def drain(pool: BackendPool, backend: Backend) -> None:
    if not backend.draining:
        backend.draining = True
        _note(backend, "drained")
    pool.holds_changed()
    pool._changed()


def resume(pool: BackendPool, backend: Backend) -> None:
    """Undo a drain and a stop (a stop still waiting for jobs is called off)."""
    _call_off(backend)
    if backend.draining or backend.kept_stopped:
        backend.draining = backend.kept_stopped = False
        _note(backend, "resumed")
    pool.holds_changed()
    pool._changed()


def stop(pool: BackendPool, backend: Backend, *, force: bool = False) -> None:
    if backend.process is None:
        drain(pool, backend)  # nothing to stop: it takes no new job
        return
    _not_restarting(backend, "stopped")
    _call_off(backend)
    backend.kept_stopped = True
    _note(backend, "stopping" + (" now" if force else " once its jobs are done"))
    pool.holds_changed()
    pool._changed()
    process = backend.process
    _later(pool, backend, "stop", process.stop, force=force, cut="stopped by an admin")


def start(pool: BackendPool, backend: Backend) -> None:
    if backend.process is None:
        raise Conflict(
            f"backend {backend.name} is not managed by comfyrun (a ComfyUI at {backend.url}): "
            "there is no process to start; `resume` undoes a drain",
            details={"backend": backend.name},
        )
    _not_restarting(backend, "started")
    _call_off(backend)
    if backend.kept_stopped:
        backend.kept_stopped = False
        _note(backend, "started")
    pool.holds_changed()
    pool._changed()
    process = backend.process
    if str(getattr(process.state, "value", process.state)) == "error":
        run: Callable[[], Awaitable[object]] = process.restart  # the way out of `error`
    else:
        run = backend.ready_client
    _later(pool, backend, "start", run, force=True)


async def holds_kept(pool: BackendPool) -> None:
    """Return once the holds changed so far are written (an operation's answer then means
    that a restart of the process keeps them)."""
    if pool.holds is not None:
        await pool.holds.saved()


def restart(pool: BackendPool, backend: Backend, *, force: bool = False) -> None:
    _not_restarting(backend, "restarted")
    if backend.kept_stopped:
        raise Conflict(
            f"backend {backend.name} was stopped by an admin: `start` starts it",
            details={"backend": backend.name},
        )
    # its jobs (a room reserved for a claim under way is none: no prompt of it is there yet)
    if force and backend.process is None and backend.jobs:
        raise Conflict(
            f"backend {backend.name} is not managed by comfyrun: the prompts of its "
            f"{len(backend.jobs)} job(s) would go on running in its ComfyUI, so they are not cut "
            "short; restart it without force (it reconnects once they are done)",
            details={"backend": backend.name, "inflight": len(backend.jobs)},
        )
    _call_off(backend)
    backend.restart_pending = True
    _note(backend, "restarting" + (" now" if force else " once its jobs are done"))
    pool._changed()

    async def again() -> None:
        try:
            if backend.process is not None:
                await backend.process.restart()
                backend.health = hl.Health(checked=False)
            else:
                await _reconnect(pool, backend)
        finally:
            backend.restart_pending = False
            backend._kick.set()
            pool._changed()

    _later(
        pool,
        backend,
        "restart",
        again,
        force=force,
        cleanup=_restart_called_off(pool, backend),
        cut="restarted by an admin",
    )


async def _reconnect(pool: BackendPool, backend: Backend) -> None:
    """A URL backend's client (no job on it) closed, to be opened anew by its health probe."""
    await backend._close_client()
    backend.health = hl.Health()


def _restart_called_off(pool: BackendPool, backend: Backend) -> Callable[[], None]:
    def cleanup() -> None:
        backend.restart_pending = False
        pool._changed()

    return cleanup


def _later(
    pool: BackendPool,
    backend: Backend,
    what: str,
    act: Callable[[], Awaitable[object]],
    *,
    force: bool,
    cleanup: Callable[[], None] | None = None,
    cut: str | None = None,
) -> None:
    """Run `act` in a task of the pool's: once the backend's jobs are done, or at once (the
    jobs on it then cut short, for `cut`: see Backend.cut_jobs)."""

    async def run() -> None:
        try:
            if not force:
                await _jobs_done(pool, backend)
            elif cut is not None:
                backend.cut_jobs.update(dict.fromkeys(backend.jobs, cut))
            await act()
        except asyncio.CancelledError:
            if cleanup is not None:
                cleanup()
            raise
        except Exception as exc:
            backend.last_error = f"{what} failed: {exc}"
            log.warning(
                "backend %s: %s failed: %s",
                backend.name,
                what,
                exc,
                extra={"action": "backend_admin", "backend": backend.name},
            )
            if cleanup is not None:
                cleanup()
            pool._changed()
        finally:
            if backend.admin_task is asyncio.current_task():
                backend.admin_task = None

    task = asyncio.get_running_loop().create_task(run(), name=f"{what}:{backend.name}")
    backend.admin_task = task
    pool._tasks[:] = [t for t in pool._tasks if not t.done()]
    pool._tasks.append(task)  # the pool's stop cancels it


async def _jobs_done(pool: BackendPool, backend: Backend) -> None:
    """Return once no job is on `backend`, nor room reserved there (on the pool's events)."""
    while backend.jobs or backend.reserved:
        pool._room.clear()
        await pool._room.wait()


def _call_off(backend: Backend) -> None:
    """Call off an operation still waiting for the backend's jobs (a restart is not)."""
    task = backend.admin_task
    if task is not None and not task.done() and not backend.restart_pending:
        task.cancel()
        backend.admin_task = None


def _not_restarting(backend: Backend, what: str) -> None:
    if backend.restart_pending:
        raise Conflict(
            f"backend {backend.name} is being restarted; it can be {what} once that is done",
            details={"backend": backend.name},
        )


def _note(backend: Backend, what: str) -> None:
    log.info(
        "backend %s: %s (admin)",
        backend.name,
        what,
        extra={"action": "backend_admin", "backend": backend.name},
    )


__all__ = [
    "OPERATIONS",
    "backend_of",
    "drain",
    "holds_kept",
    "restart",
    "resume",
    "start",
    "stop",
]
