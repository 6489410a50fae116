"""Placement: which backend takes the next job, and when a backend may take one more. Pure.

Rules:
- A backend runs one prompt and holds at most one more in ComfyUI's own queue
  (`max_inflight` = 2 by default), so the gap between two jobs on one backend is only the
  hand-over inside ComfyUI, while priority and cancel stay with comfyrun's queue; a backend
  whose prompts run shorter than comfyrun's round trip to the next holds more
  (core.pipeline: its view's `max_inflight`).
- Only `ready` and `busy` backends take work; a managed backend that is `stopped` may take a job
  too when it starts lazily (the job starts it), but a ready one is always preferred.
- Among the candidates: the least loaded first, then ready before lazily started, then the one
  that holds most of the job's models (`affinity`, core.affinity), then the one that was given
  a job longest ago (round robin).
- A retried job goes to another backend than the one its last attempt failed on when one
  as little loaded has room (`failed_on`): it is not queued behind other work to avoid it.

Late binding (no backend idle while a job it could run waits):
- A backend is given a second job (held, not started, in ComfyUI's queue) only when every
  backend that has room already runs one: the least loaded first (`choose_backend`), and a job
  that fits an idle backend better goes there (`choose_for_job`).
- A held prompt is taken back (deleted from ComfyUI's queue while it has not started) and run
  on a backend that fell idle and can run it (`choose_takeback`).
- A held prompt overtaken by a job claimed after it (another backend started that one first)
  moves to that backend's room when that backend is expected to free sooner than its own
  (`choose_overtaken`: the cost left of each running prompt, core.queue_order). So jobs start
  close to claim order on whichever backend frees first (list scheduling), as a longest-first
  queue needs to keep the makespan near the best.
- Priorities hold across the fleet: a job is held on a busy backend only when no held prompt
  anywhere has a higher priority (`may_hold`), and a held prompt is taken back (its job goes
  back to the queue) when a job of higher priority waits (`choose_preemption`). So the job of
  the highest priority is always the next to start, on whichever backend frees first.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def choose_backend(
    views: Iterable[BackendView],
    *,
    avoid: str | None = None,
    affinity: Callable[[str], int] | None = None,
    failed_on: str | None = None,
) -> str | None:
    """The backend the next job goes to, or None when no backend has room. `affinity`: how
    many of the job's models a backend (by name) holds; `avoid`: a backend taken only when
    no other has room; `failed_on`: the backend the job's last attempt failed on, ranked after
    the others of its load."""
    candidates = [v for v in views if has_room(v)]
    if not candidates:
        return None
    if avoid is not None and any(v.name != avoid for v in candidates):
        candidates = [v for v in candidates if v.name != avoid]
    return min(candidates, key=lambda v: placement_key(v, affinity, failed_on)).name


#: How many leading fields of `placement_key` make one backend better for a job than another
#: (the rest, last assigned and name, only take turns between equals).
BETTER_FIELDS = 4


def placement_key(
    view: BackendView,
    affinity: Callable[[str], int] | None = None,
    failed_on: str | None = None,
) -> tuple[int, bool, bool, int, int, str]:
    """How `choose_backend` ranks backends with room: lower first. Load first, then the
    backend a retried job failed on after the others, then ready before lazily started, then
    the job's models held, then round robin."""
    held = affinity(view.name) if affinity is not None else 0
    return (
        view.inflight,
        failed_on is not None and view.name == failed_on,
        view.state not in ACCEPTING,
        -held,
        view.last_assigned,
        view.name,
    )


def is_idle(view: BackendView) -> bool:
    """A healthy backend that holds no job at all."""
    return view.state in ACCEPTING and view.inflight == 0


@dataclass(frozen=True, slots=True)
class HeldPrompt:
    """A job submitted to a backend whose prompt ComfyUI has not started yet."""

    job_id: str
    backend: str
    priority: int
    seq: int  # claim order: lower = claimed earlier


@dataclass(frozen=True, slots=True)
class RunningPrompt:
    """The prompt a backend runs now: its job's claim order and its estimated cost left."""

    backend: str
    seq: int  # claim order of its job
    remaining: float  # estimated cost still to run (core.queue_order units)


#: A held prompt moves only to a backend expected to free in at most this share of the time
#: its own backend needs (estimates are rough: a near tie is not worth a move).
OVERTAKE_GAIN = 0.75


def _claim_order(held: HeldPrompt) -> tuple[int, int]:
    return (-held.priority, held.seq)


def choose_for_job(
    views: Iterable[BackendView],
    fits: Callable[[str], bool],
    *,
    avoid: str | None = None,
    affinity: Callable[[str], int] | None = None,
    failed_on: str | None = None,
) -> str | None:
    """The backend with room that `fits` the job best: like `choose_backend`, among the backends
    the job can run on. None when none of those has room now."""
    return choose_backend(
        (v for v in views if fits(v.name)), avoid=avoid, affinity=affinity, failed_on=failed_on
    )


def choose_takeback(
    views: Iterable[BackendView],
    held: Sequence[HeldPrompt],
    fits: Callable[[str, str], bool],
) -> tuple[str, str] | None:
    """(job id, idle backend): the held prompt (highest priority, then claimed first) to take
    back from its busy backend and run on an idle backend that `fits(job_id, backend)`."""
    idle = sorted((v for v in views if is_idle(v)), key=lambda v: (v.last_assigned, v.name))
    for prompt in sorted(held, key=_claim_order):
        for view in idle:
            if view.name != prompt.backend and fits(prompt.job_id, view.name):
                return prompt.job_id, view.name
    return None


def choose_overtaken(
    views: Iterable[BackendView],
    held: Sequence[HeldPrompt],
    running: Mapping[str, RunningPrompt],
    fits: Callable[[str, str], bool],
) -> tuple[str, str] | None:
    """(job id, backend): a held prompt (highest priority, then claimed first) to take back and
    hold on a backend with room that runs a job claimed after it and is expected to free sooner
    than the held prompt's own backend (at most OVERTAKE_GAIN of its cost left)."""
    rooms = sorted(
        ((running[v.name], v) for v in views if v.name in running and has_room(v)),
        key=lambda rv: (rv[0].remaining, rv[1].last_assigned, rv[1].name),
    )
    for prompt in sorted(held, key=_claim_order):
        mine = running.get(prompt.backend)
        if mine is None:
            continue
        for other, view in rooms:
            if (
                view.name != prompt.backend
                and other.seq > prompt.seq
                and other.remaining <= OVERTAKE_GAIN * mine.remaining
                and fits(prompt.job_id, view.name)
            ):
                return prompt.job_id, view.name
    return None


def may_hold(priority: int, held: Iterable[HeldPrompt]) -> bool:
    """Whether a job of `priority` may be held (not started) on a busy backend: not while a
    prompt of higher priority is held elsewhere, which would then start after it whenever this
    backend frees first."""
    return all(priority >= h.priority for h in held)


def choose_preemption(held: Iterable[HeldPrompt], waiting_priority: int | None) -> str | None:
    """The held prompt to take back (its job goes back to the queue) because a job of higher
    priority (`waiting_priority`, the best in the queue) waits: the lowest priority, newest."""
    if waiting_priority is None:
        return None
    lower = [h for h in held if h.priority < waiting_priority]
    if not lower:
        return None
    return min(lower, key=lambda h: (h.priority, -h.seq)).job_id


def displayed_state(state: BackendState, inflight: int) -> BackendState:
    """A healthy backend shows `busy` while it holds jobs and `ready` when it holds none."""
    if state in ACCEPTING:
        return BackendState.BUSY if inflight > 0 else BackendState.READY
    return state


def any_can_serve(states: Iterable[BackendState]) -> bool:
    """Whether some backend, by its state, could ever take a job (not all in `error`)."""
    return any(state is not BackendState.ERROR for state in states)


__all__ = [
    "ACCEPTING",
    "BETTER_FIELDS",
    "DEFAULT_MAX_INFLIGHT",
    "BackendState",
    "BackendView",
    "HeldPrompt",
    "RunningPrompt",
    "any_can_serve",
    "choose_backend",
    "choose_for_job",
    "choose_overtaken",
    "choose_preemption",
    "choose_takeback",
    "displayed_state",
    "has_room",
    "is_idle",
    "may_hold",
    "placement_key",
]
