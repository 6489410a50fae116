"""Measuring a fleet's schedule from the emulators' own records (tests and bench/).

`history_runs` reads each emulator's GET /history: when each prompt started and ended
(execution_start / execution_success timestamps, as ComfyUI records them). `idle_while_waiting`
says how long a backend sat idle while a job it could run was waiting (submitted, not started).
`machine_stalls` records the spans in which the test process itself was not run by the machine
(its emulators are in-process): no scheduler can hand out work then.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from comfyrun.core.job import TERMINAL, Job

Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Run:
    """One prompt as a backend ran it (epoch seconds)."""

    backend: str
    prompt_id: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Wait:
    """One job: submitted when, started (by ComfyUI) when, and which backends could run it."""

    job_id: str
    submitted: float
    started: float
    backends: frozenset[str]


@dataclass(frozen=True, slots=True)
class IdleReport:
    total_s: float
    gaps: tuple[tuple[str, float, float], ...]  # (backend, from, to)

    @property
    def longest_s(self) -> float:
        return max((end - start for _, start, end in self.gaps), default=0.0)


async def history_runs(backends: Mapping[str, str]) -> list[Run]:
    """Every finished prompt of every backend (name -> base URL)."""
    runs: list[Run] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for name, url in backends.items():
            history: dict[str, Any] = (await http.get(f"{url}/history")).json()
            for prompt_id, entry in history.items():
                stamps = {
                    kind: data.get("timestamp")
                    for kind, data in entry.get("status", {}).get("messages", [])
                }
                start = stamps.get("execution_start")
                end = stamps.get("execution_success") or stamps.get("execution_error")
                if start is not None and end is not None:
                    runs.append(Run(name, prompt_id, start / 1000, end / 1000))
    return runs


def _union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


def _intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(intervals: Sequence[Interval], holes: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in intervals:
        for hole_start, hole_end in _union(holes):
            if hole_end <= start or hole_start >= end:
                continue
            if hole_start > start:
                out.append((start, hole_start))
            start = max(start, hole_end)
        if end > start:
            out.append((start, end))
    return out


@dataclass
class Stalls:
    """Spans (epoch seconds) in which this process's event loop ran nothing for longer than a
    threshold, sorted by cause: `machine` where its thread spent at least half the span waiting
    for a core (runnable, not run: Linux's schedstat run-queue time), `own` otherwise (busy, or
    blocked in a call on the loop: what a test must not excuse)."""

    machine: list[Interval]
    own: list[Interval]


def _queued_s() -> float | None:
    """This thread's time waiting on a run queue so far (None where Linux does not say)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


@asynccontextmanager
async def machine_stalls(tick_s: float = 0.01, over_s: float = 0.15) -> AsyncIterator[Stalls]:
    """Watch the event loop for the `async with` block (see `Stalls`)."""
    stalls = Stalls([], [])

    async def watch() -> None:
        while True:
            wall, queued = time.time(), _queued_s()
            await asyncio.sleep(tick_s)
            took, queued_after = time.time() - wall, _queued_s()
            if took > tick_s + over_s:
                span = (wall + tick_s, wall + took)
                waited = None if queued is None or queued_after is None else queued_after - queued
                (
                    stalls.machine if waited is not None and waited >= took / 2 else stalls.own
                ).append(span)

    task = asyncio.create_task(watch())
    try:
        yield stalls
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def idle_while_waiting(
    runs: Sequence[Run],
    waits: Sequence[Wait],
    backends: Iterable[str],
    *,
    excluding: Sequence[Interval] = (),
) -> IdleReport:
    """The time each backend sat idle while a job it could run waited, summed over backends,
    less the spans `excluding` (in which the machine ran none of this process)."""
    if not waits:
        return IdleReport(0.0, ())
    t0 = min(w.submitted for w in waits)
    t1 = max([r.end for r in runs] + [w.started for w in waits])
    gaps: list[tuple[str, float, float]] = []
    for backend in backends:
        busy = _union((r.start, r.end) for r in runs if r.backend == backend)
        idle: list[Interval] = []
        cursor = t0
        for start, end in busy:
            if start > cursor:
                idle.append((cursor, start))
            cursor = max(cursor, end)
        if t1 > cursor:
            idle.append((cursor, t1))
        waiting = _union((w.submitted, w.started) for w in waits if backend in w.backends)
        gaps += [(backend, s, e) for s, e in _subtract(_intersect(idle, waiting), list(excluding))]
    return IdleReport(sum(e - s for _, s, e in gaps), tuple(gaps))


def greedy_makespan(durations: Iterable[float], machines: int, *, longest_first: bool) -> float:
    """Makespan of greedy list scheduling (each job to the machine that frees first), in the
    given order or longest first (LPT)."""
    order = sorted(durations, reverse=True) if longest_first else list(durations)
    free = [0.0] * machines
    for duration in order:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


async def wait_all(store: Any, jobs: list[Job]) -> list[Job]:
    """`jobs` once each has ended, woken by the store's events."""
    done = []
    for job in jobs:
        after = 0
        while (current := await store.get(job.id)) is not None and current.status not in TERMINAL:
            events = await store.wait_for_event(job.id, after, 5.0)
            after = events[-1].id if events else after
        assert current is not None
        done.append(current)
    return done


__all__ = [
    "IdleReport",
    "Run",
    "Wait",
    "greedy_makespan",
    "history_runs",
    "idle_while_waiting",
    "wait_all",
]
