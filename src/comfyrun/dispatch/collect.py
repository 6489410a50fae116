"""Copy a finished prompt's outputs into the output storage, for the job's final commit.

Each file is copied (from ComfyUI's /view, or read straight from a managed backend's folders)
into "<job_id>/<node_id>/<filename>": a small one (up to `SMALL` bytes, most images) in one
piece, in one trip to the disk, a larger one streamed. A small one in the folders comfyrun chose
for a managed backend, whose ComfyUI copy it removes (`cleaned`), is linked instead, where the
storage is local and on the same filesystem (outputs.FileBytes): no bytes written twice. The
outputs are returned, and the run commits them with the job's final state in one transaction
(`Changes.outputs`). Temp files (PreviewImage) are kept only when the job asks for
`keep_temp_outputs`; inline base64 is added when the job asks for it and the file is within
the cap.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from comfyrun.backends.pool import Backend
from comfyrun.comfy.outputs import FileRef, OutputItem, ValueOutput
from comfyrun.core.job import JSON, Job, Output, OutputType
from comfyrun.dispatch.janitor import Copy, plain_name
from comfyrun.dispatch.run_context import OUTPUT_MISSING, RECACHE_INPUT
from comfyrun.outputs import (
    FileBytes,
    OutputStorage,
    classify_output,
    output_key,
    put_read,
    read_inline,
)
from comfyrun.outputs.local_disk import on_local_disk

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Outputs up to this size are copied in one piece.
SMALL = 4 << 20
#: A managed backend's output up to this size, on a disk of this machine, is read, hashed and
#: stored by the event loop itself (the job's folders made, a link, an attribute: ~0.2 ms of
#: the loop's time in a busy `serve`, where the trip to a thread cost the job ~0.45 ms:
#: outputs.local.LocalOutputStorage.put_read); a larger one in a thread.
ON_LOOP = 64 << 10
#: Bytes read at a time from a file that grew while it was read.
READ_MORE = 1 << 20


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
    storage: OutputStorage,
    inline_cap: int,
    cleaned: bool = False,
) -> list[Output]:
    """Store every kept output and return them (for the job's final commit); raises on the
    first one that cannot be stored. `cleaned`: ComfyUI's copies in the folders comfyrun
    chose for a managed backend are removed once the job is committed (dispatch.janitor), so
    a small one there is linked into the storage rather than copied (`FileBytes`): nobody
    changes it meanwhile, and the storage's name is the only one left after."""
    stored: list[Output] = []
    for item in selected(job, outputs):
        if isinstance(item, ValueOutput):
            output = _value_output(item)
        else:
            link = cleaned and item.type in backend.chosen_dirs
            output = await _store_file(job, item, backend, client, storage, inline_cap, link)
        stored.append(output)
    return stored


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
    link: bool = False,
) -> Output:
    key = output_key(job.id, ref.node_id, ref.filename)
    kind, content_type = classify_output(ref.key, ref.filename)
    large: list[Path] = []  # a managed backend's file too large to copy in one piece

    def read_local(most: int) -> bytes | FileBytes | None:
        local = _read_local(backend, ref, most)
        if local is None:
            return None
        path, data = local
        if data is None:
            large.append(path)
            return None
        return FileBytes(data, path) if link else data

    root = _local_root(backend, ref)
    found = None
    if root is not None:
        # (a storage of local files on a share writes in a thread whatever the caller says:
        # the thread's one trip then reads up to SMALL, not up to ON_LOOP first)
        quick = on_local_disk(root) and getattr(storage, "on_local_disk", True)
        if quick:  # a small file on this machine's disk: by the loop itself (ON_LOOP)
            found = await put_read(
                storage, key, lambda: read_local(ON_LOOP), content_type=content_type, on_loop=True
            )
        if found is None and (large or not quick):  # past ON_LOOP, or another disk's
            large.clear()
            found = await put_read(
                storage, key, lambda: read_local(SMALL), content_type=content_type
            )
    if found is not None:
        stored = found
    elif large:
        stored = await storage.put(key, read_file(large[0]), content_type=content_type)
    else:
        async with client.view(ref) as stream:
            chunks = aiter(stream)
            head, more = await _head(chunks, SMALL)
            if more is None:
                stored = await storage.put_bytes(key, head, content_type=content_type)
            else:
                rest = _chain(head, more, chunks)
                stored = await storage.put(key, rest, content_type=content_type)
    name = shown_name(ref.filename, key)
    url, expires = await storage.url(key, content_type=content_type, filename=name)
    data = await read_inline(storage, key, inline_cap) if wants_inline(job) else None
    return Output(
        node_id=ref.node_id,
        name=name,
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


def shown_name(filename: str, key: str) -> str:
    """An output's name as the API shows it: the file name its backend gave, but never a path
    (a ComfyUI file name is one, its folder a `subfolder` apart; a backend naming one
    "../../x.sh" had clients that save by name write outside their folder): a name holding a
    slash, or "." or "..", is shown as its stored key's last segment (made safe)."""
    if "/" in filename or "\\" in filename or filename in ("", ".", ".."):
        return key.rsplit("/", 1)[-1]
    return filename


def backend_copies(backend: Backend, outputs: Mapping[str, list[OutputItem]]) -> list[Copy]:
    """The files a prompt's outputs name in the folders comfyrun chose for a managed backend
    (`Backend.chosen_dirs`): ComfyUI's copies, once comfyrun stored the outputs. Checked
    against their folder when removed (dispatch.janitor.remove_all)."""
    chosen = backend.chosen_dirs
    copies: list[Copy] = []
    for items in outputs.values():
        for item in items:
            if isinstance(item, FileRef) and item.type in chosen:
                root = _local_root(backend, item)
                if root is not None:
                    copies.append((root, root / item.subfolder / item.filename))
    return copies


def names_files(items: Sequence[OutputItem]) -> bool:
    """Whether a node's outputs name files (in ComfyUI's folders)."""
    return any(isinstance(item, FileRef) for item in items)


def recached(workflow: JSON, job: Job) -> JSON:
    """The workflow to submit for `job`: after a try whose outputs ComfyUI named but no longer
    had (OUTPUT_MISSING), with an input ComfyUI ignores added to the nodes that named them, so
    that its cache (keyed by every input) runs them anew and they save their files again."""
    error = job.error
    if error is None or error.code != OUTPUT_MISSING:
        return workflow
    nodes = (error.details or {}).get("nodes") or []
    out = dict(workflow)
    for node_id in nodes:
        node = out.get(str(node_id))
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            out[str(node_id)] = {
                **node,
                "inputs": {**node["inputs"], RECACHE_INPUT: f"{job.id}:{job.attempts}"},
            }
    return out


def _read_local(backend: Backend, ref: FileRef, most: int) -> tuple[Path, bytes | None] | None:
    """The file on disk for a managed backend (no HTTP round trip), when it is there, with its
    bytes when it has at most `most`. Blocking: one trip to the disk for a small output."""
    root = _local_root(backend, ref)
    if root is None:
        return None
    inside = _resolved(root)
    if not ref.subfolder and plain_name(ref.filename):
        # in the folder itself (resolved once): only the file's own name could lead out, and
        # it is not followed if it is a link (ELOOP: looked at the long way below)
        path = inside / ref.filename
        try:
            return _read_file_at(path, os.O_NOFOLLOW, most)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
    path = (root / ref.subfolder / ref.filename).resolve()
    if not path.is_relative_to(inside):
        return None
    try:
        return _read_file_at(path, 0, most)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_file_at(path: Path, flags: int, most: int) -> tuple[Path, bytes | None] | None:
    """(path, its bytes), (path, None) past `most`, or None when it is not a regular file: one
    open, one stat and (mostly) one read, where a buffered open and a resolve took a dozen
    calls to the disk."""
    # (non-blocking: a FIFO there must not hold the thread; a regular file reads the same)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > most:
            return path, None
        data = os.read(fd, info.st_size + 1)
        while len(data) > info.st_size:  # it grew meanwhile: the rest too
            more = os.read(fd, READ_MORE)
            if not more:
                break
            data += more
        return path, data
    finally:
        os.close(fd)


def _local_root(backend: Backend, ref: FileRef) -> Path | None:
    """The managed backend's folder that holds `ref`; None when its files are read over HTTP."""
    return {"output": backend.output_dir, "temp": backend.temp_dir}.get(ref.type)


@functools.lru_cache(maxsize=256)
def _resolved(root: Path) -> Path:
    """A backend's output or temp folder, resolved once (its files are resolved each time)."""
    return root.resolve()


async def _head(chunks: AsyncIterator[bytes], limit: int) -> tuple[bytes, bytes | None]:
    """Up to `limit` bytes of `chunks`: (all of it, None), or (what was read, the chunk that
    went past the limit) when there is more."""
    head = bytearray()
    async for chunk in chunks:
        if len(head) + len(chunk) > limit:
            return bytes(head), chunk
        head += chunk
    return bytes(head), None


async def _chain(head: bytes, more: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    yield more
    async for chunk in rest:
        yield chunk


async def read_file(path: Path) -> AsyncIterator[bytes]:
    """A local file's bytes in chunks, read in a thread."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


__all__ = [
    "backend_copies",
    "collect_outputs",
    "names_files",
    "read_file",
    "recached",
    "selected",
    "wants_inline",
    "wants_temp",
]
