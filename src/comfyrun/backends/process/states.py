"""A managed process's states, the changes allowed between them, and the restart budget.

Pure: no I/O, no asyncio. The supervisor (`supervisor.py`) is the only thing that changes a
state, and only along `TRANSITIONS`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from comfyrun.core.retry import backoff_delay

if TYPE_CHECKING:
    from comfyrun.backends.process.spec import ManagedSpec


class ProcessState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    CRASHED = "crashed"
    RESTARTING = "restarting"
    ERROR = "error"


_S = ProcessState
#: Every state change the supervisor makes; anything else is a bug (and is logged as one).
TRANSITIONS: frozenset[tuple[ProcessState, ProcessState]] = frozenset(
    {
        (_S.STOPPED, _S.STARTING),
        (_S.STARTING, _S.READY),
        (_S.STARTING, _S.ERROR),
        (_S.STARTING, _S.CRASHED),
        (_S.STARTING, _S.STOPPED),
        (_S.READY, _S.BUSY),
        (_S.BUSY, _S.READY),
        (_S.READY, _S.CRASHED),
        (_S.BUSY, _S.CRASHED),
        (_S.READY, _S.STOPPED),
        (_S.BUSY, _S.STOPPED),
        (_S.CRASHED, _S.RESTARTING),
        (_S.CRASHED, _S.ERROR),
        (_S.CRASHED, _S.STOPPED),
        (_S.RESTARTING, _S.STARTING),
        (_S.RESTARTING, _S.STOPPED),
        (_S.ERROR, _S.STOPPED),
    }
)
#: States in which the process answers requests.
UP: frozenset[ProcessState] = frozenset({_S.READY, _S.BUSY})


def restart_delay(
    crashes: Sequence[float], now: float, spec: ManagedSpec, rng: random.Random
) -> float | None:
    """Seconds to wait before the next restart, or None when the restart budget is spent.

    `crashes` are the times of crashes so far (the latest included); only those within
    `restart_window_s` of `now` count."""
    recent = sum(1 for t in crashes if t > now - spec.restart_window_s)
    if recent > spec.max_restarts:
        return None
    return backoff_delay(spec.restart_backoff_s, max(1, recent), rng)


__all__ = ["TRANSITIONS", "UP", "ProcessState", "restart_delay"]
