"""Chains: follow-up steps (`then`) run on a job's outputs before it succeeds.

Each step runs one handler (comfyrun.handlers) with the stored files of the outputs so far as
its inputs; its outputs replace those (the default) or join them. The steps run on the worker
that ran the job, under the job's cancel and timeout; a step that fails fails the job. Outputs
of step i are stored under "<job_id>/then<i>-<type>/".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from comfyrun.core.job import Job, JobError, Output, Progress
from comfyrun.core.retry import FailureKind
from comfyrun.dispatch.cancel import wait_cancel_requested
from comfyrun.dispatch.handler_exec import (
    Stopped,
    classify,
    fetch_outputs,
    new_workdir,
    remove_workdir,
    run_handler,
    stop_signal,
    store_outputs,
)
from comfyrun.dispatch.settings import DispatchSettings
from comfyrun.errors import HandlerError
from comfyrun.handlers.context import (
    CancelToken,
    HandlerContext,
    OutputSink,
    ProgressReporter,
)
from comfyrun.handlers.registry import HandlerRegistry
from comfyrun.handlers.spec import ChainStep, chain_of
from comfyrun.outputs import OutputStorage
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)


async def run_steps(
    job: Job,
    outputs: Sequence[Output],
    steps: Sequence[ChainStep],
    *,
    registry: HandlerRegistry,
    storage: OutputStorage,
    settings: DispatchSettings,
    stop: asyncio.Future[str],
    workdir: Path,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[Output]:
    """Run `steps` in order on `outputs`; returns the job's outputs after the last one. Raises
    Stopped (canceled or timed out), or what a step raised."""
    current = list(outputs)
    loop = asyncio.get_running_loop()
    for i, step in enumerate(steps, start=1):
        handler = registry.get(step.type)
        if handler is None:
            raise HandlerError(
                f"chain step {i}: this worker has no handler for job type {step.type!r}",
                code="handler_unavailable",
                details={"step": i, "type": step.type},
            )
        folder = workdir / f"step{i}"
        inputs = await fetch_outputs(current, storage, folder / "in")
        ctx = HandlerContext(
            job_id=job.id,
            type=step.type,
            params=dict(step.params),
            inputs=inputs,
            outputs=OutputSink(folder),
            progress=ProgressReporter(on_progress or _ignore, loop),
            cancel=CancelToken(),
            resources=registry.resources(step.type),
            workdir=folder,
            attempt=job.attempts,
        )
        await run_handler(handler, ctx, stop=stop, grace_s=settings.handler_stop_grace_s)
        made = await store_outputs(
            job,
            ctx.outputs.items,
            storage,
            node_id=f"then{i}-{step.type}",
            handler=step.type,
            inline_cap=settings.inline_max_bytes,
        )
        replaced = current if step.outputs == "replace" else []
        current = made if step.outputs == "replace" else [*current, *made]
        await _forget(storage, replaced)
        log.info(
            "job %s: chain step %d (%s) made %d outputs",
            job.id,
            i,
            step.type,
            len(made),
            extra={"action": "chain_step", "job_id": job.id, "backend": None},
        )
    return current


class ChainHost(Protocol):
    """What running a comfy job's chain needs of its run (dispatch.run.RunContext has it)."""

    @property
    def handlers(self) -> HandlerRegistry | None: ...
    @property
    def store(self) -> JobStore: ...
    @property
    def storage(self) -> OutputStorage: ...
    @property
    def settings(self) -> DispatchSettings: ...


@dataclass(frozen=True, slots=True)
class ChainFailure:
    """Why a chain did not end well: for the retry policy (`retry`: whether it may)."""

    kind: FailureKind
    error: JobError
    retry: bool = False


async def chain_outputs(
    job: Job, outputs: Sequence[Output], host: ChainHost
) -> list[Output] | ChainFailure:
    """A comfy job's outputs after its chain, run under a cancel watch of its own and the
    job's timeout (counted from the chain's start); or why the chain failed. Only a timeout
    may be retried (the prompt's result is then adopted, not run again). A cancel ends as a
    failure, which the state table turns into `canceled` for a job being canceled."""
    steps = chain_of(job.options)
    registry = host.handlers or HandlerRegistry.load(entry_points=False)
    timeout = job.timeout_s or host.settings.default_timeout_s
    workdir = await new_workdir("comfyrun-chain-")
    stop = stop_signal(wait_cancel_requested(host.store, job.id, host.settings), timeout)
    try:
        return await run_steps(
            job,
            outputs,
            steps,
            registry=registry,
            storage=host.storage,
            settings=host.settings,
            stop=stop,
            workdir=workdir,
        )
    except Stopped as exc:
        if exc.reason == "canceled":
            error = JobError(code="canceled", message="canceled while its chain ran")
            return ChainFailure(FailureKind.NODE_ERROR, error)
        return ChainFailure(*classify(exc), retry=True)
    except Exception as exc:
        return ChainFailure(*classify(exc))
    finally:
        stop.cancel()
        await remove_workdir(workdir)


async def _forget(storage: OutputStorage, outputs: Sequence[Output]) -> None:
    """Delete the files of outputs a step replaced (best effort: retention removes leftovers
    with the job's folder)."""
    for out in outputs:
        if out.storage_key is not None:
            try:
                await storage.delete(out.storage_key)
            except Exception as exc:
                log.debug("deleting replaced output %s failed: %s", out.storage_key, exc)


def _ignore(_: Progress) -> None:
    return None


__all__ = ["ChainFailure", "ChainHost", "chain_outputs", "run_steps"]
