"""Handlers for tests (registered by config target, e.g. "blocking=tests.support.handlers:
blocking"): they tell the test what they saw through module-level events."""

from __future__ import annotations

import asyncio
import threading

from comfyrun.handlers import HandlerContext

#: Set by `blocking` / `sleepy` once they run; `stopped_by` holds the cancel reason they saw.
started = threading.Event()
stopped_by: list[str] = []
closed: list[str] = []
#: Released by the test that holds `stuck` handlers (they ignore their cancel token).
unstuck = threading.Event()


def reset() -> None:
    unstuck.clear()
    started.clear()
    stopped_by.clear()
    closed.clear()


def blocking(ctx: HandlerContext) -> None:
    """A sync handler that works until its cancel token is set, then stops as asked."""
    started.set()
    ctx.progress.report(0.25, "working")
    while not ctx.cancel.wait(0.05):
        pass
    stopped_by.append(str(ctx.cancel.reason))
    ctx.cancel.raise_if_cancelled()


async def sleepy(ctx: HandlerContext) -> None:
    """An async handler that waits forever; a cancel or a timeout cancels it."""
    started.set()
    ctx.progress.report(0.25, "working")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        stopped_by.append(str(ctx.cancel.reason))
        raise


class Counter:
    """A resource: made once per worker, closed when the worker stops."""

    made = 0

    def __init__(self) -> None:
        Counter.made += 1
        self.calls = 0

    def close(self) -> None:
        closed.append("counter")


def counting(ctx: HandlerContext) -> list[str]:
    """Uses a lazily created resource and returns a file path it wrote."""
    counter = ctx.resources.get("counter", Counter)
    counter.calls += 1
    path = ctx.workdir / "count.txt"
    path.write_text(f"{counter.calls} of {Counter.made}")
    return [str(path)]


def failing(ctx: HandlerContext) -> None:
    """Fails with a message of its own (final unless the job retries node errors)."""
    from comfyrun.errors import HandlerError

    raise HandlerError(f"cannot {ctx.params.get('what', 'do it')}", code="step_refused")


def flaky(ctx: HandlerContext) -> None:
    """Fails in a way worth retrying on every attempt."""
    from comfyrun.errors import HandlerError

    raise HandlerError(f"try again (attempt {ctx.attempt})", retryable=True)


def disk_full(ctx: HandlerContext) -> None:
    """Finds its disk full on its first attempt (as a write would), succeeds on the next."""
    if ctx.attempt == 1:
        raise OSError(28, "No space left on device")
    ctx.outputs.write_bytes("out.txt", b"written")


def buggy(ctx: HandlerContext) -> None:
    """Raises like a bug would."""
    raise ZeroDivisionError("division by zero")


def exiting(ctx: HandlerContext) -> None:
    """A sync handler whose library calls sys.exit() (it stopped the server)."""
    raise SystemExit(2)


async def interrupted(ctx: HandlerContext) -> None:
    """An async handler that raises KeyboardInterrupt (it stopped the server)."""
    raise KeyboardInterrupt


def stuck(ctx: HandlerContext) -> None:
    """A sync handler that ignores its cancel token until the test lets it go."""
    unstuck.wait(60)


def undecodable(ctx: HandlerContext) -> None:
    """Fails naming a file whose name was decoded with surrogateescape."""
    name = b"caf\xe9.png".decode("utf-8", "surrogateescape")
    ctx.outputs.add_text("seen", f"read {name}")
    raise FileNotFoundError(f"no file {name}")
