"""Which backends of this worker's pool can run a job (core.fit over what each one offers).

`offer_of` is the one place that says where a backend's node definitions come from: the fleet's
persisted catalog (backends.catalog, once attached with `use_catalog`), else the object_info
its ComfyClient fetched (and caches). A backend whose definitions could not be read is asked
again only after a while and is judged on its labels meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from comfyrun.backends.pool import Backend, BackendPool
from comfyrun.core.fit import (
    BackendOffer,
    Misfit,
    RequirementError,
    check_requirements,
    misfit,
    unmet_requirements,
)
from comfyrun.core.job import JSON, Job

log = logging.getLogger(__name__)

#: Seconds before asking a backend whose object_info could not be read again.
CATALOG_RETRY_S = 10.0


class FleetFit:
    """Fitting jobs to the backends of one pool."""

    def __init__(self, pool: BackendPool, *, timeout_s: float) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self._retry_at: dict[str, float] = {}
        self._catalog: Any = None

    def use_catalog(self, catalog: Any) -> None:
        """Read node definitions from the fleet's catalog (backends.catalog.BackendCatalog)."""
        self._catalog = catalog

    def offer_of(self, backend: Backend) -> BackendOffer:
        """The backend's labels, and its object_info once known."""
        return BackendOffer(
            name=backend.name,
            labels=dict(backend.spec.labels),
            object_info=self._object_info(backend),
        )

    def _object_info(self, backend: Backend) -> JSON | None:
        info = None
        if self._catalog is not None:
            info = self._catalog.object_info(backend.name)
        if info is None and backend.client is not None:
            info = getattr(backend.client, "cached_object_info", None)
        return info if isinstance(info, dict) else None

    async def refresh(self) -> None:
        """Read the node definitions of the connected backends not known yet (once each: the
        client caches them); one that does not answer is asked again after a while."""
        now = time.monotonic()
        wanted = [
            b
            for b in self.pool.backends
            if b.client is not None
            and self._retry_at.get(b.name, 0.0) <= now
            and self._object_info(b) is None
        ]
        if not wanted:
            return
        await asyncio.gather(*(self._fetch(b) for b in wanted))
        for backend in wanted:
            if self._object_info(backend) is None:
                self._retry_at[backend.name] = now + CATALOG_RETRY_S

    async def _fetch(self, backend: Backend) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout_s):
                await backend.client.object_info()
                return
        log.info("object_info of backend %s is not known yet", backend.name)

    def fitter(self, job: Job) -> Callable[[str], bool]:
        """Whether `job` fits a backend (by name), as far as its catalog is known. When no
        backend has every node type and model it uses, its labels alone decide: the backend
        then refuses the prompt with ComfyUI's own validation error (submission refuses such a
        job with 422 when the catalogs are known then). A job that brings model files fits
        only backends comfyrun manages (the others cannot see its model cache)."""
        requirements = requirements_of(job)
        values = not job.inputs  # input files replace some values at dispatch
        brought = brought_models(job)

        known: dict[str, bool] = {}  # a placement asks about each backend several times

        def fits(name: str) -> bool:
            answer = known.get(name)
            if answer is None:
                answer = known[name] = _fits(name)
            return answer

        def _fits(name: str) -> bool:
            backend = self.pool.get(name)
            if backend is None or not receives(backend, brought):
                return False
            offer = self.offer_of(backend)
            why = misfit(job.workflow, requirements, offer, values=values, brought=brought)
            return why is None

        if any(fits(b.name) for b in self.pool.backends):
            return fits

        def labels_fit(name: str) -> bool:
            backend = self.pool.get(name)
            return (
                backend is not None
                and receives(backend, brought)
                and not unmet_requirements(requirements, backend.spec.labels)
            )

        return labels_fit

    def misfits(self, job: Job) -> list[Misfit] | None:
        """Why each backend cannot run `job` (its labels; model files it brings that only a
        managed backend can receive), or None when one can."""
        requirements = requirements_of(job)
        brought = brought_models(job)
        reasons = []
        for backend in self.pool.backends:
            unmet = unmet_requirements(requirements, backend.spec.labels)
            undeliverable = not receives(backend, brought)
            if not unmet and not undeliverable:
                return None
            reasons.append(
                Misfit(backend.name, unmet=tuple(unmet), no_model_delivery=undeliverable)
            )
        return reasons


def receives(backend: Backend, brought: frozenset[str]) -> bool:
    """Whether comfyrun can deliver the model files a job brings to `backend`: a managed one
    sees the model cache (through the extra model paths comfyrun gives it), an unmanaged one
    only when configured to (`sees_model_cache`)."""
    return not brought or backend.receives_models


def brought_models(job: Job) -> frozenset[str]:
    """The names of the model files the job brings (its `models` option): delivered to the
    backend before the job runs, so no backend needs to list them."""
    raw = job.options.get("models")
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(str(m["name"]) for m in raw if isinstance(m, dict) and m.get("name"))


def requirements_of(job: Job) -> dict[str, Any]:
    """The job's `requirements` option (refused at submission when malformed; an old record
    with a malformed one runs anywhere)."""
    try:
        return check_requirements(job.options.get("requirements"))
    except RequirementError:
        return {}


__all__ = ["CATALOG_RETRY_S", "FleetFit", "brought_models", "receives", "requirements_of"]
