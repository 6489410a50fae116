"""Placing a job's input files on the backend that runs it (comfyrun.inputs plans them).

A managed backend gets each file written straight into its input folder (no HTTP round trip);
a remote one gets it through POST /upload/image, and ComfyUI's answer (it may rename a file) is
what the workflow then points at. The returned clean-up removes the temporary files and, on a
managed backend, the job's input folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from comfyrun.backends.pool import Backend
from comfyrun.core.job import JSON, Job
from comfyrun.dispatch.run import InputPlacer
from comfyrun.errors import InputRejected
from comfyrun.inputs import (
    AssetSource,
    InputLimits,
    MaterializedInput,
    find_asset_refs,
    prepare_inputs,
)


async def _nothing() -> None:
    return None


def make_input_placer(
    *,
    limits: InputLimits | None = None,
    assets: AssetSource | None = None,
    tmp_dir: Path | None = None,
) -> InputPlacer:
    """An InputPlacer for the Dispatcher (`place_inputs=`)."""
    limits = limits or InputLimits()

    async def place(
        job: Job, backend: Backend, client: Any
    ) -> tuple[JSON, Callable[[], Awaitable[None]]]:
        if not job.inputs and not find_asset_refs(job.workflow):
            return job.workflow, _nothing
        plan = await prepare_inputs(
            job.workflow,
            list(job.inputs),
            job_id=job.id,
            limits=limits,
            tmp_dir=tmp_dir,
            assets=assets,
        )
        input_dir = backend.input_dir
        written: list[Path] = []

        async def upload(item: MaterializedInput) -> str:
            if input_dir is not None:
                path = await _write(input_dir, item)
                written.append(path)
                return item.filename
            result = await client.upload_image(
                item.chunks(), item.name, subfolder=item.subfolder, type="input", overwrite=True
            )
            return f"{result.subfolder}/{result.name}" if result.subfolder else str(result.name)

        async def cleanup() -> None:
            await plan.cleanup()
            if input_dir is not None:
                folder = input_dir / "comfyrun" / job.id
                if folder.parent == input_dir / "comfyrun":
                    await asyncio.to_thread(shutil.rmtree, folder, True)

        try:
            workflow = await plan.place(upload)
        except BaseException:
            with contextlib.suppress(Exception):
                await cleanup()
            raise
        return workflow, cleanup

    return place


def _resolve(input_dir: Path, filename: str) -> tuple[Path, Path]:
    root = input_dir.resolve()
    return root, (root / filename).resolve()


async def _write(input_dir: Path, item: MaterializedInput) -> Path:
    root, path = await asyncio.to_thread(_resolve, input_dir, item.filename)
    if not path.is_relative_to(root):
        raise InputRejected(
            f"input {item.filename!r} would land outside the input folder",
            details={"filename": item.filename},
        )
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in item.chunks():
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)
    return path


__all__ = ["make_input_placer"]
