"""The reconciler's loop ends when the client closes, even when the cancel that stops it comes
in the same turn of the event loop as a wake-up: on Python 3.11 `asyncio.wait_for` then
returns the finished wait and drops the cancel (the inner wait completed first), and a loop
that only ended by its cancel went on polling every second, its `close()` waiting forever (a
server's shutdown hung with it)."""

from __future__ import annotations

import asyncio

from comfyrun.comfy.history import QueueState
from comfyrun.comfy.reconcile import Reconciler


def reconciler(poll_interval: float = 1.0) -> Reconciler:
    async def queue() -> QueueState:
        raise AssertionError("no watches: nothing to reconcile")

    async def history(prompt_id: str) -> None:
        raise AssertionError("no watches: nothing to reconcile")

    return Reconciler(
        name="test",
        watches={},
        queue=queue,
        history=history,
        live_connection=lambda: None,
        poll_interval=poll_interval,
        audit_interval=30.0,
    )


async def test_close_right_after_a_wake_up_ends_the_loop() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(3):
        rec = reconciler(poll_interval=30.0)
        rec.start()
        task = rec._task
        assert task is not None
        await asyncio.sleep(0.01)  # the loop waits for a wake-up or its poll
        started = loop.time()
        async with asyncio.timeout(10):
            rec.wake()  # the wait is done in the same turn as...
            await rec.close()  # ...the cancel that close() sends
        assert task.done()
        assert loop.time() - started < 5  # not at its next poll (30 s), nor at the timeout


async def test_close_does_not_swallow_its_callers_cancel() -> None:
    """A `close()` that is itself cancelled (a shutdown's timeout) raises it."""
    rec = reconciler(poll_interval=30.0)
    rec.start()
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(rec.close())
    await asyncio.sleep(0)  # close() has cancelled the loop and waits for it to end
    closing.cancel()
    await asyncio.wait({closing})
    assert closing.cancelled()  # raised to its caller, not swallowed


async def test_close_while_it_polls_and_while_idle() -> None:
    rec = reconciler()
    rec.start()
    async with asyncio.timeout(5):
        await rec.close()
        await rec.close()  # twice is fine
    idle = reconciler()
    async with asyncio.timeout(5):
        await idle.close()  # never started
