"""How many prompts a backend may hold at once: its pipeline. Pure.

A backend runs one prompt and holds more in ComfyUI's own queue, so that when the one it runs
ends the next starts there at once, not after comfyrun's round trip (a claim, its commit, the
POST /prompt). One held prompt covers that round trip when prompts run longer than it (any real
model: seconds). Prompts that run shorter (a zero-work job: a few milliseconds, while the round
trip under load is ~10-20 ms) drain that one and leave the GPU idle while work waits; so the
depth grows to as many held prompts as the round trip takes runs of the backend's prompts, up
to `MAX_PIPELINE`. Long prompts keep the floor: a held prompt is work taken from the shared
queue (a worker's other backends, another worker's) and bound to one backend, which late
binding (core.placement) keeps to the least that keeps the backend busy.

Both times are smoothed (`Pace`, an EWMA): one prompt ten times slower than the rest moves
the depth by one (4 -> 3 for 50 ms among 4 ms ones), one of a real model (seconds) brings it
to the floor at once, and it takes a run of short prompts to raise it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The most prompts a backend holds (one running, the rest waiting in ComfyUI's queue), however
#: short its prompts run.
MAX_PIPELINE = 4
#: The weight of a new sample in a smoothed time (an exponential moving average).
SMOOTHING = 0.2


def pipeline_depth(
    run_s: float | None,
    refill_s: float | None,
    *,
    floor: int,
    cap: int = MAX_PIPELINE,
) -> int:
    """The prompts a backend may hold at once: one running, and enough waiting that they last
    while comfyrun sends the next (`refill_s`: from room for a job to its prompt in ComfyUI's
    queue), given how long the backend's prompts run (`run_s`). At least `floor` (the
    backend's configured depth), at most `cap` (or `floor` when that is higher). Unknown
    times give the floor."""
    if run_s is None or refill_s is None or refill_s <= 0:
        return floor
    waiting = math.ceil(refill_s / max(run_s, 1e-6))
    return max(floor, min(max(cap, floor), 1 + waiting))


@dataclass(slots=True)
class Smoothed:
    """An exponential moving average of a time; None until its first sample."""

    value: float | None = None

    def note(self, sample: float) -> None:
        if sample < 0 or math.isnan(sample):
            return
        if self.value is None:
            self.value = sample
        else:
            self.value += SMOOTHING * (sample - self.value)


@dataclass(slots=True)
class Pace:
    """One backend's pace: how long its prompts run, and how long comfyrun takes to put the
    next prompt in its queue once it has room (both smoothed)."""

    run: Smoothed
    refill: Smoothed

    @classmethod
    def new(cls) -> Pace:
        return cls(Smoothed(), Smoothed())

    def depth(self, floor: int, cap: int = MAX_PIPELINE) -> int:
        return pipeline_depth(self.run.value, self.refill.value, floor=floor, cap=cap)


__all__ = ["MAX_PIPELINE", "SMOOTHING", "Pace", "Smoothed", "pipeline_depth"]
