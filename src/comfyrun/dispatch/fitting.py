"""Which backends of this worker's pool can run a job (core.fit over the pool's catalogs).

The catalogs (each backend's labels and node definitions) come from backends.catalog; a
backend whose object_info could not be read is asked again only after a while and is judged on
its labels meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from comfyrun.backends.catalog import catalog_of, load_catalogs
from comfyrun.backends.pool import BackendPool
from comfyrun.core.fit import (
    Misfit,
    RequirementError,
    check_requirements,
    misfit,
    unmet_requirements,
)
from comfyrun.core.job import Job

#: Seconds before asking a backend whose object_info could not be read again.
CATALOG_RETRY_S = 10.0


class FleetFit:
    """Fitting jobs to the backends of one pool."""

    def __init__(self, pool: BackendPool, *, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self._retry_at: dict[str, float] = {}

    async def refresh(self) -> None:
        """Read the node definitions of the connected backends not known yet."""
        now = time.monotonic()
        wanted = [b for b in self.pool.backends if self._retry_at.get(b.name, 0.0) <= now]
        await load_catalogs(wanted, timeout_s=self.timeout_s)
        for backend in wanted:
            if backend.client is not None and catalog_of(backend).object_info is None:
                self._retry_at[backend.name] = now + CATALOG_RETRY_S

    def fitter(self, job: Job) -> Callable[[str], bool]:
        """Whether `job` fits a backend (by name), as far as its catalog is known. When no
        backend has every node type and model it uses, its labels alone decide: the backend
        then refuses the prompt with ComfyUI's own validation error (submission refuses such a
        job with 422 when the catalogs are known then)."""
        requirements = requirements_of(job)
        values = not job.inputs  # input files replace some values at dispatch

        def fits(name: str) -> bool:
            backend = self.pool.get(name)
            if backend is None:
                return False
            return misfit(job.workflow, requirements, catalog_of(backend), values=values) is None

        if any(fits(b.name) for b in self.pool.backends):
            return fits

        def labels_fit(name: str) -> bool:
            backend = self.pool.get(name)
            return backend is not None and not unmet_requirements(requirements, backend.spec.labels)

        return labels_fit

    def misfits(self, job: Job) -> list[Misfit] | None:
        """Why each backend cannot run `job` (its labels), or None when one can."""
        requirements = requirements_of(job)
        reasons = []
        for backend in self.pool.backends:
            unmet = unmet_requirements(requirements, backend.spec.labels)
            if not unmet:
                return None
            reasons.append(Misfit(backend.name, unmet=tuple(unmet)))
        return reasons


def requirements_of(job: Job) -> dict[str, Any]:
    """The job's `requirements` option (refused at submission when malformed; an old record
    with a malformed one runs anywhere)."""
    try:
        return check_requirements(job.options.get("requirements"))
    except RequirementError:
        return {}


__all__ = ["CATALOG_RETRY_S", "FleetFit", "requirements_of"]
