"""Running one handler (comfyrun.handlers) under a job's cancel and timeout, and storing what
it produced the way ComfyUI's outputs are stored. Shared by handler jobs (handler_run) and the
steps of a chain (chain).

    stop = stop_signal(wait_cancel_requested(...), timeout_s)   # resolves to why to stop
    await run_handler(handler, ctx, stop=stop, grace_s=...)     # raises Stopped, or the error
    outputs = await store_outputs(job, ctx.outputs.items, storage, node_id=..., inline_cap=...)

A failure becomes a (FailureKind, JobError) by `classify`, for the retry policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import shutil
import tempfile
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from comfyrun.core.job import Job, JobError, Output, OutputType
from comfyrun.core.retry import FailureKind
from comfyrun.dispatch.collect import read_file, wants_inline
from comfyrun.errors import (
    ComfyrunError,
    HandlerError,
    InputRejected,
    MissingAsset,
    is_disk_full,
)
from comfyrun.handlers.context import Cancelled, HandlerContext, InputFile, PendingOutput
from comfyrun.handlers.registry import Handler
from comfyrun.jsontext import without_lone_surrogates
from comfyrun.outputs import OutputStorage, classify_output, output_key, read_inline

SMALL = 4 << 20
#: ComfyUI's history key for an output of this type (what its clients look under).
HISTORY_KEYS = {OutputType.IMAGE: "images", OutputType.VIDEO: "gifs", OutputType.AUDIO: "audio"}


class Stopped(Exception):
    """The job was canceled ("canceled") or ran past its timeout ("timeout")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def stop_signal(cancel_requested: Awaitable[None], timeout_s: float | None) -> asyncio.Future[str]:
    """A future resolving to "canceled" or "timeout", whichever comes first. Cancel it when
    done with it."""

    async def first() -> str:
        cancel = asyncio.ensure_future(cancel_requested)
        try:
            done, _ = await asyncio.wait({cancel}, timeout=timeout_s)
            return "canceled" if done else "timeout"
        finally:
            cancel.cancel()
            with contextlib.suppress(BaseException):
                await cancel

    return asyncio.ensure_future(first())


async def run_handler(
    handler: Handler, ctx: HandlerContext, *, stop: asyncio.Future[str], grace_s: float
) -> None:
    """Run `handler` (sync: in a thread of its own) until it returns or `stop` resolves. On
    stop, the context's cancel token is set (an async handler is also cancelled), the handler
    gets `grace_s` to end, and Stopped is raised. Paths the handler returns join its outputs.

    A sync handler runs in a daemon thread of its own, not the event loop's pool: one that
    never returns (a thread cannot be killed) used a place of that pool for good, and a few
    of them stopped every file read and write of the server, and its exit. What a handler
    raises that would end the process (SystemExit from a library's sys.exit(),
    KeyboardInterrupt) is its error, as any other (it stopped the server)."""
    if handler.is_async:
        task: asyncio.Future[Any] = asyncio.ensure_future(_tamed_async(handler.run(ctx)))  # type: ignore[arg-type]
    else:
        task = in_daemon_thread(handler.run, ctx)
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        ctx.cancel.cancel("shutdown")
        task.cancel()
        raise
    if not task.done():
        reason = stop.result()
        ctx.cancel.cancel(reason)
        if handler.is_async:
            task.cancel()
        await asyncio.wait({task}, timeout=grace_s)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: what it raised after the stop does not matter
        raise Stopped(reason)
    try:
        result = task.result()
    except Cancelled:
        if stop.done():
            raise Stopped(stop.result()) from None
        raise
    for path in _paths(result):
        ctx.outputs.add(path)


#: What a handler may raise that would end the process, were it not caught.
_FATAL = (SystemExit, KeyboardInterrupt, GeneratorExit)


def _tame(exc: BaseException) -> BaseException:
    """`exc` as the handler's error where it would end the process."""
    if isinstance(exc, _FATAL):
        error = HandlerError(f"the handler raised {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    return exc


async def _tamed_async(run: Awaitable[Any]) -> Any:
    try:
        return await run
    except (SystemExit, KeyboardInterrupt) as exc:  # (GeneratorExit is a closing coroutine's)
        raise _tame(exc) from exc


def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """`fn(*args)` in a daemon thread of its own (its context copied, as asyncio.to_thread
    copies it); its result or error on the returned future. A call that never returns holds
    only its own thread, and the process can still exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = context.run(fn, *args), None
        except BaseException as exc:  # (told to the awaiting task, made harmless)
            result, error = None, _tame(exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="comfyrun-handler", daemon=True).start()
    return future


def _paths(result: Any) -> Iterable[Path | str]:
    if result is None:
        return ()
    if isinstance(result, str | Path):
        return (result,)
    try:
        return list(result)
    except TypeError:
        raise HandlerError(
            f"a handler returns None or file paths, not {type(result).__name__}"
        ) from None


def classify(exc: BaseException) -> tuple[FailureKind, JobError]:
    """The failure kind (for the retry policy) and the error a failed handler run records."""
    if isinstance(exc, Stopped):
        return FailureKind.TIMEOUT, JobError(code="timeout", message="the job ran past its timeout")
    if isinstance(exc, InputRejected | MissingAsset):
        return FailureKind.INPUT_ERROR, JobError(
            code=exc.code, message=exc.message, details=exc.details
        )
    if isinstance(exc, HandlerError):
        kind = FailureKind.BACKEND_LOST if exc.retryable else FailureKind.NODE_ERROR
        return kind, JobError(code=exc.code, message=exc.message, details=exc.details)
    if isinstance(exc, MemoryError):
        return FailureKind.OUT_OF_MEMORY, JobError(code="out_of_memory", message="out of memory")
    if is_disk_full(exc):  # the machine's state, not the job's: retried within max_retries
        return FailureKind.DISK_FULL, JobError(code="disk_full", message=str(exc))
    if isinstance(exc, ComfyrunError):
        return FailureKind.BACKEND_LOST, JobError(code=exc.code, message=exc.message)
    # (a message may hold what was decoded with surrogateescape: no answer could carry it)
    return FailureKind.NODE_ERROR, JobError(
        code="handler_error",
        message=without_lone_surrogates(f"{type(exc).__name__}: {exc}"),
        traceback=without_lone_surrogates("".join(traceback.format_exception(exc))[-8000:]),
    )


# --- files in and out ------------------------------------------------------------------------


async def new_workdir(prefix: str) -> Path:
    return Path(await asyncio.to_thread(tempfile.mkdtemp, "", prefix))


async def remove_workdir(path: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, path, True)


async def fetch_outputs(
    outputs: Sequence[Output], storage: OutputStorage, folder: Path
) -> list[InputFile]:
    """A chain step's inputs: the stored files among `outputs`, copied to `folder`."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    files: list[InputFile] = []
    for i, out in enumerate(outputs):
        if out.storage_key is None:
            continue
        path = folder / f"{i:03d}_{Path(out.name).name}"
        handle = await asyncio.to_thread(path.open, "wb")
        try:
            async for chunk in storage.open(out.storage_key):
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        files.append(InputFile(name=out.name, path=path, content_type=out.content_type))
    return files


async def store_outputs(
    job: Job,
    items: Sequence[PendingOutput],
    storage: OutputStorage,
    *,
    node_id: str,
    handler: str,
    inline_cap: int,
) -> list[Output]:
    """Store a handler's outputs under "<job_id>/<node_id>/<name>" and describe them."""
    stored: list[Output] = []
    taken: set[str] = set()
    for item in items:
        name = _unique(item.name, taken)
        if item.text is not None:
            stored.append(
                Output(
                    node_id=node_id,
                    name=name,
                    type=OutputType.TEXT,
                    content_type="text/plain",
                    size_bytes=len(item.text.encode()),
                    text=item.text,
                    meta={"key": "text", "handler": handler},
                )
            )
            continue
        assert item.path is not None
        stored.append(
            await _store_file(job, item.path, name, storage, node_id, handler, inline_cap)
        )
    return stored


async def _store_file(
    job: Job, path: Path, name: str, storage: OutputStorage, node_id: str, handler: str, cap: int
) -> Output:
    key = output_key(job.id, node_id, name)
    kind, content_type = classify_output("", name)
    size = (await asyncio.to_thread(path.stat)).st_size
    if size <= SMALL:
        data = await asyncio.to_thread(path.read_bytes)
        obj = await storage.put_bytes(key, data, content_type=content_type)
    else:
        obj = await storage.put(key, read_file(path), content_type=content_type)
    url, expires = await storage.url(key, content_type=content_type, filename=name)
    inline = await read_inline(storage, key, cap) if wants_inline(job) else None
    return Output(
        node_id=node_id,
        name=name,
        type=kind,
        content_type=content_type,
        size_bytes=obj.size_bytes,
        hash=obj.hash,
        url=url,
        url_expires_at=expires,
        storage_key=key,
        data_base64=inline,
        meta={
            "filename": name,
            "subfolder": "",
            "type": "output",
            "key": HISTORY_KEYS.get(kind, "files"),
            "handler": handler,
        },
    )


def _unique(name: str, taken: set[str]) -> str:
    base = Path(name).name or "output"
    candidate, n = base, 1
    stem, dot, ext = base.rpartition(".")
    while candidate in taken:
        candidate = f"{stem}_{n}.{ext}" if dot else f"{base}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


__all__ = [
    "Stopped",
    "classify",
    "fetch_outputs",
    "new_workdir",
    "remove_workdir",
    "run_handler",
    "stop_signal",
    "store_outputs",
]
