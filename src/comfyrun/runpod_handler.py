"""Handler mode: comfyrun's execution core inside a RunPod serverless worker.

RunPod owns the queue there; each RunPod job becomes one comfyrun job on an in-process engine
(the app's lifespan: memory store by default, output storage, backend pool, dispatcher), and
its result is worker-comfyui's output object ({"images": [{"filename", "type", "data"}]}), or
{"error": ...} which RunPod reports as a failed job. The engine starts on the first job and is
reused by later ones on the same event loop.

    from comfyrun.runpod_handler import RunpodHandler
    runpod.serverless.start({"handler": RunpodHandler(settings)})
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

from comfyrun import errors
from comfyrun.api.compat import runpod as rp
from comfyrun.api.context import AppContext
from comfyrun.config import Settings
from comfyrun.core.job import JSON, JobStatus

log = logging.getLogger(__name__)


class RunpodHandler:
    """A RunPod handler: `await handler({"id", "input": {"workflow", "images"?}})`."""

    def __init__(
        self,
        settings: Settings,
        *,
        close_after_job: bool = False,
        job_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.close_after_job = close_after_job
        self.job_timeout_s = job_timeout_s
        self._stack: AsyncExitStack | None = None
        self._ctx: AppContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, job: JSON) -> JSON:
        try:
            return await self.run(job)
        finally:
            if self.close_after_job:
                await self.close()

    async def run(self, job: JSON) -> JSON:
        from comfyrun.api.routes.plain_compat import deliver_outputs
        from comfyrun.api.routes.runpod_compat import runpod_submission

        runpod_id = str(job.get("id") or "")
        try:
            submission = runpod_submission({"input": job.get("input")}, endpoint_id=None)
        except errors.ComfyrunError as exc:
            return {"error": exc.message}
        ctx = await self._engine()
        meta = {**submission.metadata, "runpod_job_id": runpod_id}
        try:
            submitted = await ctx.service.submit(
                _replace_metadata(submission, meta, self.job_timeout_s)
            )
        except errors.ComfyrunError as exc:
            return {"error": exc.message, "details": exc.details}
        job_id = submitted.job.id
        log.info(
            "runpod job %s runs as comfyrun job %s",
            runpod_id,
            job_id,
            extra={"action": "runpod_job", "job_id": job_id},
        )
        view = await ctx.service.wait(job_id, self.job_timeout_s or 24 * 3600.0)
        done = view.job
        if done.status is JobStatus.SUCCEEDED:
            return await deliver_outputs(ctx, done)
        if not done.terminal:
            await ctx.service.cancel(job_id)
            return {"error": f"the workflow did not finish in {self.job_timeout_s} s"}
        return {"error": rp.error_text(done) or f"the job ended {done.status.value}"}

    async def _engine(self) -> AppContext:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._ctx is not None and self._loop is loop:
                return self._ctx
            self._ctx = None
            from comfyrun.api.app import create_app

            app = create_app(self.settings)
            stack = AsyncExitStack()
            await stack.enter_async_context(app.router.lifespan_context(app))
            self._stack, self._loop = stack, loop
            ctx: AppContext = app.state.ctx
            self._ctx = ctx
            return ctx

    async def close(self) -> None:
        stack, self._stack, self._ctx = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def _replace_metadata(submission: Any, metadata: JSON, timeout_s: float | None) -> Any:
    from dataclasses import replace

    changes: dict[str, Any] = {"metadata": metadata}
    if submission.timeout_s is None and timeout_s is not None:
        changes["timeout_s"] = timeout_s
    return replace(submission, **changes)


__all__ = ["RunpodHandler"]
