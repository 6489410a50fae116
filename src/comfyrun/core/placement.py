"""Placement: which backend takes the next job, and when a backend may take one more. Pure.

Rules:
- A backend runs one prompt and holds at most one more in ComfyUI's own queue
  (`max_inflight` = 2 by default), so the gap between two jobs on one backend is only the
  hand-over inside ComfyUI, while priority and cancel stay with comfyrun's queue.
- Only `ready` and `busy` backends take work; a managed backend that is `stopped` may take a job
  too when it starts lazily (the job starts it), but a ready one is always preferred.
- Among the candidates: the least loaded first, then ready before lazily started, then the one
  that was given a job longest ago (round robin).
- A job that just failed on a backend goes elsewhere when another backend has room.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class BackendState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    # managed backends only
    STOPPED = "stopped"
    CRASHED = "crashed"
    RESTARTING = "restarting"
    ERROR = "error"


#: States in which a backend is given new jobs.
ACCEPTING: frozenset[BackendState] = frozenset({BackendState.READY, BackendState.BUSY})
#: One prompt running plus one waiting in ComfyUI's queue.
DEFAULT_MAX_INFLIGHT = 2


@dataclass(frozen=True, slots=True)
class BackendView:
    """What placement needs to know about one backend at one moment."""

    name: str
    state: BackendState
    inflight: int = 0
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    lazy_start: bool = False  # a stopped managed backend that starts on its first job
    last_assigned: int = 0  # a counter value; lower = given a job longer ago


def has_room(view: BackendView) -> bool:
    """Whether `view` may be handed one more job now."""
    if view.inflight >= view.max_inflight:
        return False
    if view.state in ACCEPTING:
        return True
    return view.state is BackendState.STOPPED and view.lazy_start


def choose_backend(views: Iterable[BackendView], *, avoid: str | None = None) -> str | None:
    """The backend the next job goes to, or None when no backend has room."""
    candidates = [v for v in views if has_room(v)]
    if not candidates:
        return None
    if avoid is not None and any(v.name != avoid for v in candidates):
        candidates = [v for v in candidates if v.name != avoid]
    best = min(
        candidates,
        key=lambda v: (v.inflight, v.state not in ACCEPTING, v.last_assigned, v.name),
    )
    return best.name


def displayed_state(state: BackendState, inflight: int) -> BackendState:
    """A healthy backend shows `busy` while it holds jobs and `ready` when it holds none."""
    if state in ACCEPTING:
        return BackendState.BUSY if inflight > 0 else BackendState.READY
    return state


def any_can_serve(views: Iterable[BackendView]) -> bool:
    """Whether some backend could ever take a job (not all of them in `error`)."""
    return any(v.state is not BackendState.ERROR for v in views)


__all__ = [
    "ACCEPTING",
    "DEFAULT_MAX_INFLIGHT",
    "BackendState",
    "BackendView",
    "any_can_serve",
    "choose_backend",
    "displayed_state",
    "has_room",
]
