"""A caller's handle on one prompt: its events as they come, and its result.

The client feeds a watch; the watch only buffers. Events are kept in a bounded buffer so a
caller that never iterates cannot make memory grow without limit (previews are ~40 KB each):
past `max_buffered` the oldest events are dropped and counted in `dropped`. The result never
depends on the buffer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType

from comfyrun.comfy.errors import ComfyTimeout
from comfyrun.comfy.messages import Message, PreviewImage, PreviewImageWithMetadata
from comfyrun.comfy.result import PromptResult
from comfyrun.comfy.tracker import PromptTracker

Preview = PreviewImage | PreviewImageWithMetadata


class PromptWatch:
    """Events and result of one prompt; get one from `ComfyClient.watch` before submitting.

    ``async for event in watch`` yields the prompt's messages (`comfyrun.comfy.messages`) and
    ends when the prompt is done. ``await watch.result()`` returns a `PromptResult` whatever
    the outcome (check `.status` or call `.raise_for_status()`); it raises only when the result
    cannot be known: the submit failed, the client closed, or the timeout passed
    (`ComfyTimeout`). A watch closed before its prompt finished is never settled.
    """

    def __init__(
        self,
        prompt_id: str,
        *,
        node_ids: Iterable[str] | None = None,
        max_buffered: int = 1024,
        on_close: Callable[[PromptWatch], None] | None = None,
    ) -> None:
        self.prompt_id = prompt_id
        self.tracker = PromptTracker(prompt_id, node_ids=node_ids)
        self.latest_preview: Preview | None = None
        self.dropped = 0
        #: The websocket connection this prompt was submitted on (None: settle via history).
        self.connection: int | None = None
        self.submitted = False
        #: Set when the events cannot settle the prompt (a terminal event was missed).
        self.needs_history = False
        #: Reconcile passes in a row that found the prompt neither queued nor in history.
        self.misses = 0
        self._events: deque[Message] = deque()
        self._max_buffered = max_buffered
        self._wakeup = asyncio.Event()
        self._result: asyncio.Future[PromptResult] = asyncio.get_running_loop().create_future()
        self._on_close = on_close
        self.closed = False

    @property
    def done(self) -> bool:
        return self._result.done()

    def feed(self, message: Message) -> None:
        """Record one message for this prompt (the client calls this)."""
        if self.done:
            return
        self.tracker.feed(message)
        if isinstance(message, PreviewImage | PreviewImageWithMetadata):
            self.latest_preview = message
        if len(self._events) >= self._max_buffered:
            self._events.popleft()
            self.dropped += 1
        self._events.append(message)
        self._wakeup.set()

    def settle(self, result: PromptResult) -> None:
        if not self._result.done():
            self._result.set_result(result)
        self._wakeup.set()
        self._release()

    def fail(self, exc: BaseException) -> None:
        if not self._result.done():
            self._result.set_exception(exc)
            # Mark the exception retrieved: a caller may legitimately never await the result.
            self._result.exception()
        self._wakeup.set()
        self._release()

    def _release(self) -> None:
        # Once settled nothing more is routed here: the client can forget the watch even if
        # the caller never closes it.
        if self._on_close is not None:
            callback, self._on_close = self._on_close, None
            callback(self)

    def settled(self) -> asyncio.Future[PromptResult]:
        """A future of the prompt's result (what `result` waits for): cancelling it leaves
        the watch as it is."""
        return asyncio.shield(self._result)

    async def result(self, timeout: float | None = None) -> PromptResult:
        """Wait for the prompt's result."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), timeout)
        except TimeoutError:
            if self._result.done():
                return self._result.result()
            raise ComfyTimeout(
                f"no result for prompt {self.prompt_id} within {timeout} s"
            ) from None

    def __aiter__(self) -> PromptWatch:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._events:
                return self._events.popleft()
            if self._result.done() or self.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def drain(self) -> list[Message]:
        """Take the buffered events now, without waiting (what iterating would yield next)."""
        events = list(self._events)
        self._events.clear()
        return events

    def close(self) -> None:
        """Stop watching; the client forgets this watch."""
        if self.closed:
            return
        self.closed = True
        self._wakeup.set()
        self._release()

    def __enter__(self) -> PromptWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["Preview", "PromptWatch"]
