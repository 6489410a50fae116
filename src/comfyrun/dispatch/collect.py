"""Copy a finished prompt's outputs into the output storage and commit them to the job.

Each file is streamed (from ComfyUI's /view, or read straight from a managed backend's folders)
into "<job_id>/<node_id>/<filename>" and committed with `store.add_output` as soon as it is
stored, so clients see outputs appear one by one. Temp files (PreviewImage) are kept only when
the job asks for `keep_temp_outputs`; inline base64 is added when the job asks for it and the
file is within the cap.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from comfyrun.backends.pool import Backend
from comfyrun.comfy.outputs import FileRef, OutputItem, ValueOutput
from comfyrun.core.job import Job, Output, OutputType
from comfyrun.outputs import OutputStorage, classify_output, output_key, read_inline
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def wants_temp(job: Job) -> bool:
    return bool(_option(job, "keep_temp_outputs"))


def wants_inline(job: Job) -> bool:
    return bool(_option(job, "return_base64") or _option(job, "inline_base64"))


def _option(job: Job, name: str) -> Any:
    if name in job.options:
        return job.options[name]
    nested = job.options.get("output")
    if isinstance(nested, Mapping):
        return nested.get(name)
    return None


def selected(job: Job, outputs: Mapping[str, list[OutputItem]]) -> list[OutputItem]:
    """The outputs a job keeps, in node order: files of type output (and temp when asked),
    and values."""
    keep_temp = wants_temp(job)
    items: list[OutputItem] = []
    for node_id in outputs:
        for item in outputs[node_id]:
            if isinstance(item, FileRef):
                if item.type == "output" or (item.type == "temp" and keep_temp):
                    items.append(item)
            else:
                items.append(item)
    return items


async def collect_outputs(
    job: Job,
    outputs: Mapping[str, list[OutputItem]],
    *,
    backend: Backend,
    client: Any,
    store: JobStore,
    storage: OutputStorage,
    inline_cap: int,
) -> list[Output]:
    """Store and commit every kept output; raises on the first one that cannot be stored."""
    committed: list[Output] = []
    for item in selected(job, outputs):
        if isinstance(item, ValueOutput):
            output = _value_output(item)
        else:
            output = await _store_file(job, item, backend, client, storage, inline_cap)
        await store.add_output(job.id, output)
        committed.append(output)
    return committed


def _value_output(item: ValueOutput) -> Output:
    value = item.value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = "\n".join(value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
    return Output(
        node_id=item.node_id,
        name=item.key,
        type=OutputType.TEXT,
        content_type="text/plain",
        size_bytes=len(text.encode()),
        text=text,
        meta={"key": item.key},
    )


async def _store_file(
    job: Job,
    ref: FileRef,
    backend: Backend,
    client: Any,
    storage: OutputStorage,
    inline_cap: int,
) -> Output:
    key = output_key(job.id, ref.node_id, ref.filename)
    kind, content_type = classify_output(ref.key, ref.filename)
    local = _local_path(backend, ref)
    if local is not None:
        stored = await storage.put(key, _read_file(local), content_type=content_type)
    else:
        async with client.view(ref) as stream:
            stored = await storage.put(key, _iterate(stream), content_type=content_type)
    url, expires = await storage.url(key, content_type=content_type, filename=ref.filename)
    data = await read_inline(storage, key, inline_cap) if wants_inline(job) else None
    return Output(
        node_id=ref.node_id,
        name=ref.filename,
        type=kind,
        content_type=content_type,
        size_bytes=stored.size_bytes,
        hash=stored.hash,
        url=url,
        url_expires_at=expires,
        storage_key=key,
        data_base64=data,
        meta={
            "filename": ref.filename,
            "subfolder": ref.subfolder,
            "type": ref.type,
            "key": ref.key,
        },
    )


def _local_path(backend: Backend, ref: FileRef) -> Path | None:
    """The file on disk for a managed backend (no HTTP round trip), when it is there."""
    root = {"output": backend.output_dir, "temp": backend.temp_dir}.get(ref.type)
    if root is None:
        return None
    path = (root / ref.subfolder / ref.filename).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    return path


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def _iterate(stream: Any) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


__all__ = ["collect_outputs", "selected", "wants_inline", "wants_temp"]
