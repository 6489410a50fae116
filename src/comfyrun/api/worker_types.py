"""A worker's job types at start-up: its handler registry, which types it serves (from the
settings' `types`, its backends and its handlers), and its handler lane (dispatch.lane)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from comfyrun.config import Settings
from comfyrun.core.job import Job
from comfyrun.handlers.context import InputFile
from comfyrun.handlers.registry import HandlerRegistry
from comfyrun.handlers.spec import TypePlan, plan_types
from comfyrun.outputs import OutputStorage
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)


def handler_registry(settings: Settings) -> HandlerRegistry:
    """Built-ins, entry points and the configured `handlers` (RegistryError: a bad one)."""
    return HandlerRegistry.load(settings.handlers)


def type_plan(settings: Settings, registry: HandlerRegistry, *, has_backends: bool) -> TypePlan:
    return plan_types(
        settings.types,
        registry.types,
        has_backends=has_backends,
        comfy_without_backends=settings.comfy_without_backends,
    )


def worker_id(settings: Settings, stack: AsyncExitStack) -> str:
    """The configured worker id, or one that a restart in this data dir gets back."""
    from comfyrun.dispatch.identity import WorkerIdentity

    if settings.worker_id is not None:
        return settings.worker_id
    identity = WorkerIdentity.claim(settings.data_dir)
    stack.callback(identity.release)
    return identity.worker_id


def input_loader(assets: Any, limits: Any) -> Any:
    """Fetches a handler job's `inputs` (data, URLs, assets) into a folder."""
    from comfyrun.inputs.materialize import prepare_inputs

    async def load(job: Job, folder: Path) -> list[InputFile]:
        if not job.inputs:
            return []
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        plan = await prepare_inputs(
            {}, list(job.inputs), job_id=job.id, limits=limits, tmp_dir=folder, assets=assets
        )
        try:
            files = []
            for i, item in enumerate(plan.files):
                path = folder / f"{i:03d}_{item.name}"
                if isinstance(item.source, bytes):
                    await asyncio.to_thread(path.write_bytes, item.source)
                else:
                    await asyncio.to_thread(item.source.replace, path)
                files.append(InputFile(name=item.name, path=path, content_type=item.content_type))
            return files
        finally:
            await plan.cleanup()

    return load


async def start_lane(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    store: JobStore,
    storage: OutputStorage,
    registry: HandlerRegistry,
    plan: TypePlan,
    worker: str,
    assets: Any,
    limits: Any,
    alone: bool,
) -> Any:
    """Start the handler lane (`alone`: no dispatcher runs, so the lane sweeps too)."""
    from comfyrun.api.worker_setup import dispatch_settings
    from comfyrun.dispatch.handler_run import HandlerRunContext
    from comfyrun.dispatch.lane import HandlerLane
    from comfyrun.dispatch.sweeper import Sweeper

    dispatch = dispatch_settings(settings)
    ctx = HandlerRunContext(
        store=store,
        storage=storage,
        settings=dispatch,
        worker_id=worker,
        registry=registry,
        load_inputs=input_loader(assets, limits),
        comfy_unavailable="this worker runs no ComfyUI backend (comfy_without_backends = "
        '"fail"); give it --backend, --comfy or --emulator, or leave comfy jobs to others',
    )
    sweeper = Sweeper(store, storage, interval_s=dispatch.sweep_interval_s) if alone else None
    lane = HandlerLane(ctx, plan.lane, announce=plan.announce, sweeper=sweeper, release_stale=alone)
    await lane.start()
    stack.push_async_callback(lane.stop)
    return lane


__all__ = ["handler_registry", "input_loader", "start_lane", "type_plan", "worker_id"]
