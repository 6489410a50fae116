"""The client's websocket side: each message the socket (`socket`) hears goes to the watch of its
prompt (messages that name no prompt belong to the one running: ComfyUI runs one at a time),
whose tracker settles it; a connect or drop is told to subscribers and wakes the reconciler
(`reconcile`), as events sent while no connection was up are gone. `SocketEvents` is mixed into
`ComfyClient` (`client`), which sets what it reads.

A prompt is settled as ComfyUI tells its outcome (`execution_success`, `_error`, `_interrupted`),
before ComfyUI has finished it: it then writes its history (and, with --disable-smart-memory,
unloads every model first) before `executing` null, and takes its next prompt only after.
Until then the prompt is `finishing`: `prompt_over(prompt_id)` is the future of that null,
which a run waits for before it gives its backend back (dispatch.run), so that the backend is
not taken for idle meanwhile. A connection that drops or connects ends every such wait (what it
missed is gone).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from comfyrun.comfy.messages import Executing, ExecutionStart, Message, PreviewImage, Status, Text
from comfyrun.comfy.reconcile import Reconciler
from comfyrun.comfy.result import result_from_tracker
from comfyrun.comfy.socket import ComfySocket
from comfyrun.comfy.watch import PromptWatch

logger = logging.getLogger("comfyrun.comfy.client")

#: Prompts settled early whose end is awaited, at most (each ends at its `executing` null).
MAX_FINISHING = 1024


class SocketEvents:
    """The websocket's messages and state, as one client takes them (ComfyClient sets these)."""

    base_url: str
    _socket: ComfySocket | None
    _watches: dict[str, PromptWatch]
    _state_callbacks: list[Callable[[bool], None]]
    _reconciler: Reconciler
    _running: str | None
    #: prompt id -> the future of its `executing` null, for prompts settled before it came
    _finishing: dict[str, asyncio.Future[None]]
    #: Last `queue_remaining` the server broadcast.
    queue_remaining: int | None

    @property
    def connected(self) -> bool:
        """Whether the websocket is up now."""
        return self._socket is not None and self._socket.connected

    @property
    def client_id(self) -> str | None:
        """The clientId of the current websocket connection (or of the next one)."""
        return self._socket.client_id if self._socket is not None else None

    def on_state_change(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        """Call `callback(connected)` whenever the websocket connects or drops.

        Returns a function that unsubscribes.
        """
        self._state_callbacks.append(callback)
        return lambda: self._state_callbacks.remove(callback)

    def _live_connection(self) -> int | None:
        socket = self._socket
        return socket.connection if socket is not None and socket.connected else None

    def _on_message(self, message: Message) -> None:
        if isinstance(message, Status):
            self.queue_remaining = message.queue_remaining
            return
        if isinstance(message, ExecutionStart):
            self._running = message.prompt_id
        prompt_id = message.prompt_id
        if prompt_id is None and isinstance(message, Executing | PreviewImage | Text):
            # Legacy `executing`, plain previews and TEXT frames do not name their prompt;
            # ComfyUI runs one prompt at a time, so they belong to the one running.
            prompt_id = self._running
        if prompt_id is None:
            return
        if isinstance(message, Executing) and message.node is None:
            if prompt_id == self._running:
                self._running = None
            self._prompt_over(prompt_id)
        watch = self._watches.get(prompt_id)
        if watch is None or watch.done:
            return
        watch.feed(message)
        tracker = watch.tracker
        if tracker.terminal:  # as ComfyUI tells the outcome, not at `executing` null (tracker)
            if not tracker.finished:
                self._finishing_begins(prompt_id)
            watch.settle(result_from_tracker(tracker))
        elif tracker.finished:
            # Finished but the outcome event was missed: history has it by now.
            watch.needs_history = True
            self._reconciler.wake()

    def prompt_over(self, prompt_id: str) -> asyncio.Future[None] | None:
        """The future of the end of a prompt settled before ComfyUI finished it (see the
        module); None when no end is awaited (it came, or the prompt never settled early)."""
        return self._finishing.get(prompt_id)

    def _finishing_begins(self, prompt_id: str) -> None:
        if prompt_id in self._finishing:
            return
        if len(self._finishing) >= MAX_FINISHING:  # ends that never came (never expected)
            self._prompt_over(next(iter(self._finishing)))
        self._finishing[prompt_id] = asyncio.get_running_loop().create_future()

    def _prompt_over(self, prompt_id: str) -> None:
        over = self._finishing.pop(prompt_id, None)
        if over is not None and not over.done():
            over.set_result(None)

    def _all_over(self) -> None:
        """Every awaited end, told as over: its message cannot come any more (a connection
        dropped or replaced, the client closed)."""
        for prompt_id in list(self._finishing):
            self._prompt_over(prompt_id)

    def _on_socket_state(self, connected: bool) -> None:
        self._all_over()
        if connected:
            # Events for prompts submitted on earlier connections are gone: settle them now.
            self._reconciler.wake()
        else:
            self._running = None
        for callback in list(self._state_callbacks):
            try:
                callback(connected)
            except Exception:
                logger.exception(
                    "state callback failed",
                    extra={"action": "state_callback_failed", "backend": self.base_url},
                )


def prompt_end(client: Any, prompt_id: str | None) -> asyncio.Future[None] | None:
    """`client.prompt_over(prompt_id)`: the end of a prompt that was settled before ComfyUI
    finished it, where the client tells it (a stand-in for ComfyClient may not)."""
    over = getattr(client, "prompt_over", None)
    return over(prompt_id) if over is not None and prompt_id is not None else None


__all__ = ["MAX_FINISHING", "SocketEvents", "prompt_end"]
