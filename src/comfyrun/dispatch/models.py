"""Delivering a job's model files before it runs: fetched into the model cache (shared, once),
pinned for the run, and seen by managed ComfyUIs through the extra model paths comfyrun gives
them. Download progress goes into the job's events (`model_download`).

A job whose files download is `running`, in its events as in `GET /api/v2/jobs/{id}`: its
worker works on it (the spec's `queued` is a job no worker has taken; its cancel is `running
-> canceling`, and `model_download` events are its progress). The store's status says
`running` from the claim on; the API shows a claimed job whose ComfyUI prompt has not started
as `queued` (Job.waiting) unless its start is recorded, so the first byte of a download records
one (`record_placement`, the download's start); ComfyUI's own start replaces it once its
prompt runs. A job whose files are all cached records nothing (its prompt is sent at once).

A job whose files are not all cached fetches them before it takes a backend (dispatch.staging,
with `fetch_models`); its run then finds them cached. Without a staging set (a dispatcher given
no model cache, or one whose set was full when the job came) the run fetches them itself.

A backend comfyrun does not manage (a ComfyUI at a URL) cannot see the cache: fitting
(dispatch.fitting.receives) places a job with `models` only on managed backends; one that
reaches another backend all the same fails with `input_rejected` (reason
`models_need_managed_backend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from comfyrun.backends.pool import Backend
from comfyrun.core.job import JSON, Job, new_prompt_id
from comfyrun.dispatch.run import InputPlacer
from comfyrun.errors import InputRejected, StorageError
from comfyrun.models import Lease, ModelCache, ModelRef, parse_models
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)

EVENT = "model_download"


def with_models(
    place: InputPlacer, cache: ModelCache, store: JobStore, *, interval_s: float = 1.0
) -> InputPlacer:
    """`place`, preceded by fetching and pinning the job's `models` (released at clean-up)."""

    async def placed(
        job: Job, backend: Backend, client: Any
    ) -> tuple[JSON, Callable[[], Awaitable[None]]]:
        refs = parse_models(job.options.get("models"))
        if not refs:
            return await place(job, backend, client)
        if not backend.receives_models:
            raise InputRejected(
                f"job {job.id} brings model files, and backend {backend.name} is not one "
                "comfyrun manages (it cannot see comfyrun's model cache); run it on a managed "
                "backend (--comfy PATH), or start that ComfyUI with comfyrun's "
                "extra_model_paths.yaml and set sees_model_cache on it",
                details={"backend": backend.name, "reason": "models_need_managed_backend"},
            )

        lease = await fetch_models(
            cache, store, job, refs, backend=backend.name, interval_s=interval_s
        )
        try:
            workflow, cleanup = await place(job, backend, client)
        except BaseException:
            lease.release()
            raise

        async def release() -> None:
            try:
                await cleanup()
            finally:
                lease.release()

        return workflow, release

    return placed


async def fetch_models(
    cache: ModelCache,
    store: JobStore,
    job: Job,
    refs: tuple[ModelRef, ...],
    *,
    backend: str,
    interval_s: float = 1.0,
) -> Lease:
    """The job's model files fetched into the cache and pinned (release the lease when the job
    is done), their progress in its events; its start recorded (on `backend`) as its first
    download starts (see the module docstring). Raises the cache's errors; StorageError for
    its disk."""

    async def downloading() -> None:
        """The job's start, recorded as its first download starts (see the docstring)."""
        if job.worker_id is None:
            return
        try:
            await store.record_placement(
                job.id,
                job.worker_id,
                backend=backend,
                prompt_id=job.prompt_id or new_prompt_id(),
                execution_started_at=time.time(),
            )
        except Exception:  # the download goes on; only what the API shows lags
            log.warning("job %s: recording its download's start failed", job.id, exc_info=True)

    reporter = _Reporter(store, job.id, interval_s, started=downloading)
    try:
        return await cache.acquire(refs, reporter.progress)
    except OSError as exc:  # the cache's disk (full, read-only): the job fails, clearly
        raise StorageError(
            f"the model cache at {cache.root} could not store a file: {exc}",
            details={"reason": "model_cache"},
        ) from exc
    finally:
        await reporter.close()


class _Reporter:
    """Writes `model_download` events, at most one per `interval_s` (and the last one)."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        interval_s: float,
        *,
        started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store, self._job_id, self._interval_s = store, job_id, interval_s
        self._pending: JSON | None = None
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None
        self._started = started
        self._start: asyncio.Future[None] | None = None

    def progress(self, ref: ModelRef, done: int, total: int | None) -> None:
        if self._start is None and self._started is not None:
            self._start = asyncio.ensure_future(self._started())
        self._pending = {
            "folder": ref.folder,
            "name": ref.name,
            "bytes_done": done,
            "bytes_total": total,
            "finished": total is not None and done == total,
        }
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        if self._start is not None:
            await asyncio.shield(self._start)  # the start first: then the progress after it
        delay = self._last + self._interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        data, self._pending = self._pending, None
        if data is not None:
            self._last = time.monotonic()
            try:
                await self._store.append_event(self._job_id, EVENT, data)
            except Exception:
                log.warning("could not record model download progress", exc_info=True)

    async def close(self) -> None:
        if self._start is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._start)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending is not None:
            self._last = 0.0
            await self._write()


__all__ = ["EVENT", "fetch_models", "with_models"]
