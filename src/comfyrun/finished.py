"""The jobs this process saw finished lately, kept at hand, and the word of its runs to the
`?wait`s on their jobs (used by JobService).

A finished job changes no more (only deletion and expiry remove it): the requests that follow
its end (the `?wait` that wakes at it, the GET after it, a ComfyUI client's /history) take it
from here instead of reading and decoding it again. A worker of this process tells the job its
run just settled (RunContext.finished -> `remember`), when one of its runs takes a job up
(RunContext.run_started -> `run_started`) and when any of its runs is over (RunContext.run_over
-> `run_over`), so that a `?wait` on a job a run here holds waits for that word (`wait`), and
one on a job still queued waits for the store to say it ended or for a run here to take it
(`taken`), instead of following the job's events in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from comfyrun.core.job import Job

#: How many finished jobs are kept, and for how long (s).
FINISHED_KEPT = 1024
FINISHED_TTL_S = 60.0
#: How many workflow nodes the kept jobs hold at most (each job counts its nodes, at least
#: one): 1,024 workflows of up to 16 nodes, or ~90 of 177 nodes (40 KB). A kept job's workflow
#: is live objects the garbage collector walks at each full collection: 1,024 jobs of 40 KB
#: kept made those pauses 50-67 ms (and ~150 MB); 32,768 nodes, 19-27 ms; 16,384, 15-16 ms.
#: The requests that follow a job's end (its ?wait, the GET after it, /history) come within
#: milliseconds; a later one reads the store.
FINISHED_NODES = 16_384


class FinishedJobs:
    """See the module docstring. `runs_here(job_id)`: whether a worker of this process runs the
    job now (None: no worker here)."""

    def __init__(self, runs_here: Callable[[str], bool] | None = None) -> None:
        self._runs_here = runs_here
        self._jobs: OrderedDict[str, tuple[Job, float]] = OrderedDict()
        self._nodes = 0  # the kept jobs' weight (_weight)
        self._waiting: dict[str, list[asyncio.Event]] = {}

    def holds(self, job_id: str) -> bool:
        """Whether the job is kept (finished, seen within FINISHED_TTL_S)."""
        seen = self._jobs.get(job_id)
        return seen is not None and time.monotonic() - seen[1] < FINISHED_TTL_S

    def kept(self, job_id: str, owner: str = "") -> Job | None:
        """The job if it is kept, and `owner`'s when one is given (the jobs are shared by every
        API key's view: an owner sees only its own here too)."""
        if not self.holds(job_id):
            return None
        job = self._jobs[job_id][0]
        return job if not owner or job.owner == owner else None

    def remember(self, job: Job) -> None:
        """Keep `job` if it is finished; a `?wait` on it wakes."""
        if not job.terminal:
            return
        self.forget(job.id)
        self._jobs[job.id] = (job, time.monotonic())
        self._nodes += _weight(job)
        # the newest always stays, however large
        while len(self._jobs) > 1 and (
            len(self._jobs) > FINISHED_KEPT or self._nodes > FINISHED_NODES
        ):
            _, (oldest, _) = self._jobs.popitem(last=False)
            self._nodes -= _weight(oldest)
        self.run_over(job.id)

    def forget(self, job_id: str) -> None:
        """The job was deleted or expired: what was kept changed."""
        kept = self._jobs.pop(job_id, None)
        if kept is not None:
            self._nodes -= _weight(kept[0])

    def run_over(self, job_id: str) -> None:
        """A run of this process is over, the job settled or given back: its `?wait`s look."""
        for signal in self._waiting.get(job_id, ()):
            signal.set()

    def run_started(self, job_id: str) -> None:
        """A run of this process took the job up: its `?wait`s wait for that run's word."""
        self.run_over(job_id)  # (the same signal: each waiter looks at what holds now)

    async def taken(self, job_id: str, owner: str = "") -> None:
        """Return once a run of this process holds the job, or it is kept as finished for
        `owner` (at once if so now); never without a worker here (the caller bounds the
        wait)."""
        with self._signal(job_id) as signal:
            while not (self._runs_here is not None and self._runs_here(job_id)):
                if self.kept(job_id, owner) is not None:
                    return
                await signal.wait()
                signal.clear()

    async def wait(self, job_id: str, deadline: float, owner: str = "") -> Job | None:
        """The job as its run in this process settles it, if a run here holds it and settles it
        before `deadline` (time.monotonic()); None otherwise (no run here, or it gave the job
        up, or time ran out: the store tells the rest)."""
        if self._runs_here is None:
            return None
        with self._signal(job_id) as signal:
            while True:
                settled = self.kept(job_id, owner)
                if settled is not None:
                    return settled
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._runs_here(job_id):
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        await signal.wait()
                except TimeoutError:
                    return None
                signal.clear()

    @contextlib.contextmanager
    def _signal(self, job_id: str) -> Iterator[asyncio.Event]:
        """A signal set at each word of the job's runs, registered before the caller looks, so
        a word said after the look is not missed."""
        signal = asyncio.Event()
        waiting = self._waiting.setdefault(job_id, [])
        waiting.append(signal)
        try:
            yield signal
        finally:
            waiting.remove(signal)
            if not waiting:
                del self._waiting[job_id]


def _weight(job: Job) -> int:
    return max(1, len(job.workflow))


__all__ = ["FINISHED_KEPT", "FINISHED_NODES", "FINISHED_TTL_S", "FinishedJobs"]
