"""Model-aware routing for one worker: what each backend holds, learned from the jobs sent
there, and the claim choice (core.affinity) that lets a backend take a queued job whose models
it holds before the head of the queue.

What a backend holds is a projection: ComfyUI runs a backend's prompts in the order they were
sent, so after them it holds the models the last ones used. It is forgotten when the backend's
process restarts (a managed backend that stopped or crashed holds nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from comfyrun.core.affinity import (
    Candidate,
    affinity,
    choose,
    count_overtaken,
    job_models,
    remember,
)
from comfyrun.core.job import Job
from comfyrun.core.placement import ACCEPTING, BackendState, BackendView
from comfyrun.store.base import ClaimChoice

log = logging.getLogger(__name__)

#: States in which a backend keeps what it loaded.
_UP = ACCEPTING | {BackendState.DRAINING}


class ModelRouter:
    """Per backend, the models its jobs used (most recent last); per queued job, how many
    jobs were taken before it for affinity. `enabled=False`: plain queue order (the claim
    takes the head; placement ignores models)."""

    def __init__(
        self, *, enabled: bool = True, window: int = 32, max_overtake: int = 16, keep: int = 1
    ) -> None:
        self.enabled = enabled
        self.window = max(1, window)
        self.max_overtake = max(0, max_overtake)
        self.keep = max(1, keep)
        self._held: dict[str, tuple[str, ...]] = {}
        self._overtaken: dict[str, int] = {}

    def held(self, backend: str) -> tuple[str, ...]:
        """The models `backend` holds once the jobs sent there have run, most recent last."""
        return self._held.get(backend, ())

    def sent(self, backend: str, job: Job) -> None:
        """`job` was sent to `backend`: its models are the ones held there next."""
        if self.enabled:
            used = job_models(job.workflow, job.options)
            if used:
                self._held[backend] = remember(self.held(backend), used, self.keep)

    def forget_down(self, views: Callable[[], Iterable[BackendView]]) -> None:
        """Backends that are down (stopped, crashed, restarting, not answering) hold nothing
        when they come back (`views`: the pool's, asked for only when some backend holds
        models)."""
        if not self._held:
            return
        for view in views():
            if view.state not in _UP and view.name in self._held:
                del self._held[view.name]

    def affinity(self, job: Job) -> Callable[[str], int] | None:
        """How many of `job`'s models each backend (by name) holds; None when routing is off."""
        if not self.enabled:
            return None
        models = job_models(job.workflow, job.options)
        return lambda backend: affinity(models, self._held.get(backend, ()))

    def choice(self, backend: str) -> ClaimChoice | None:
        """The claim choice for a job to run on `backend`; None (take the head of the queue)
        when routing is off or `backend` holds nothing known."""
        held = self.held(backend)
        if not self.enabled or not held or self.max_overtake == 0:
            return None

        def pick(jobs: Sequence[Job]) -> int:
            candidates = [
                Candidate(j.id, j.priority, job_models(j.workflow, j.options)) for j in jobs
            ]
            elsewhere = {k for name, keys in self._held.items() if name != backend for k in keys}
            index = choose(candidates, held, self._overtaken, self.max_overtake, elsewhere)
            counts = count_overtaken(candidates, index, self._overtaken)
            if len(counts) > 4 * self.window:  # jobs gone from the queue (canceled, claimed)
                window = {c.job_id for c in candidates}
                counts = {job_id: n for job_id, n in counts.items() if job_id in window}
            self._overtaken = counts
            if index:
                log.debug(
                    "backend %s takes job %s before %d queued ahead of it (models held)",
                    backend,
                    candidates[index].job_id,
                    index,
                    extra={"action": "model_routing", "job_id": candidates[index].job_id},
                )
            return index

        return ClaimChoice(window=self.window, pick=pick)


__all__ = ["ModelRouter"]
