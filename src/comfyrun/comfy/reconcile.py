"""Settling prompts whose websocket events cannot be trusted to arrive, from queue and history.

ComfyUI replays nothing and sends a prompt's events only to the clientId it was submitted with.
A watch is *stale* when its prompt was submitted on an earlier websocket connection, or while
none was up, or when its final event came without an outcome. The reconciler settles stale
watches every `poll_interval` seconds and at once when woken (after a reconnect), and every
`audit_interval` seconds checks all watches in flight: a prompt deleted from the queue by
someone else gets no event at all.

Reading order matters. The queue is read first: a prompt only ever moves queue → history, so
one that is not in the queue at that moment and not in history afterwards is gone. It is
declared lost only when `LOST_AFTER_MISSES` passes in a row find it nowhere, which covers a
POST that timed out on our side but is still being handled by the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from comfyrun.aio import cancel_and_wait, wait_event
from comfyrun.comfy.errors import (
    ComfyConnectionError,
    ComfyHTTPError,
    ComfyProtocolError,
    ComfyTimeout,
)
from comfyrun.comfy.history import HistoryEntry, QueueState
from comfyrun.comfy.result import result_from_history, result_from_tracker
from comfyrun.comfy.watch import PromptWatch

logger = logging.getLogger(__name__)

#: Reconcile passes in a row that must find a prompt nowhere before it is declared lost.
LOST_AFTER_MISSES = 2
_HISTORY_CONCURRENCY = 8


class Reconciler:
    def __init__(
        self,
        *,
        name: str,
        watches: Mapping[str, PromptWatch],
        queue: Callable[[], Awaitable[QueueState]],
        history: Callable[[str], Awaitable[HistoryEntry | None]],
        live_connection: Callable[[], int | None],
        poll_interval: float,
        audit_interval: float,
    ) -> None:
        self._name = name
        self._watches = watches
        self._queue = queue
        self._history = history
        self._live_connection = live_connection
        self.poll_interval = poll_interval
        self.audit_interval = audit_interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._loop(), name=f"comfy-reconcile {self._name}")

    async def close(self) -> None:
        """Stop the loop (see comfyrun.aio: it ends at its next turn even if the cancel is
        lost)."""
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def wake(self) -> None:
        """Reconcile the stale watches now rather than at the next poll."""
        self._wakeup.set()

    def stale(self) -> list[PromptWatch]:
        live = self._live_connection()
        return [
            w
            for w in self._watches.values()
            if w.submitted
            and not w.done
            and (w.needs_history or w.connection is None or w.connection != live)
        ]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_audit = loop.time()
        while True:
            await wait_event(self._wakeup, self.poll_interval)
            if self._closing:
                return
            self._wakeup.clear()
            if loop.time() - last_audit >= self.audit_interval:
                last_audit = loop.time()
                watches = [w for w in self._watches.values() if w.submitted and not w.done]
            else:
                watches = self.stale()
            if watches:
                await self._reconcile_logged(watches)

    async def _reconcile_logged(self, watches: list[PromptWatch]) -> None:
        try:
            await self.reconcile(watches)
        except (ComfyConnectionError, ComfyTimeout, ComfyHTTPError, ComfyProtocolError) as exc:
            logger.debug(
                "reconcile on %s failed: %s",
                self._name,
                exc,
                extra={"action": "reconcile_failed", "backend": self._name},
            )
        except Exception:
            logger.exception(
                "reconcile on %s failed unexpectedly",
                self._name,
                extra={"action": "reconcile_failed", "backend": self._name},
            )

    async def reconcile(self, watches: Iterable[PromptWatch]) -> None:
        """Settle `watches` from the server's queue and history (see the module docstring)."""
        pending = [w for w in watches if not w.done]
        if not pending:
            return
        queue = await self._queue()
        off_queue = []
        for watch in pending:
            if watch.prompt_id in queue:
                watch.misses = 0
            else:
                off_queue.append(watch)
        semaphore = asyncio.Semaphore(_HISTORY_CONCURRENCY)

        async def settle(watch: PromptWatch) -> None:
            async with semaphore:
                entry = await self._history(watch.prompt_id)
            if watch.done:
                return
            if entry is not None:
                watch.tracker.apply_history(entry)
                watch.settle(result_from_history(entry))
                return
            watch.misses += 1
            if watch.misses < LOST_AFTER_MISSES:
                watch.needs_history = True  # look again on the next poll
                return
            watch.tracker.mark_lost()
            logger.warning(
                "prompt %s is lost on %s",
                watch.prompt_id,
                self._name,
                extra={"action": "prompt_lost", "backend": self._name},
            )
            watch.settle(result_from_tracker(watch.tracker, source="history"))

        await asyncio.gather(*(settle(w) for w in off_queue))


__all__ = ["LOST_AFTER_MISSES", "Reconciler"]
