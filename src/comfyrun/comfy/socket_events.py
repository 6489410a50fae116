"""The client's websocket side: each message the socket (`socket`) hears goes to the watch of its
prompt (messages that name no prompt belong to the one running: ComfyUI runs one at a time),
whose tracker settles it; a connect or drop is told to subscribers and wakes the reconciler
(`reconcile`), as events sent while no connection was up are gone. `SocketEvents` is mixed into
`ComfyClient` (`client`), which sets what it reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from comfyrun.comfy.messages import Executing, ExecutionStart, Message, PreviewImage, Status, Text
from comfyrun.comfy.reconcile import Reconciler
from comfyrun.comfy.result import result_from_tracker
from comfyrun.comfy.socket import ComfySocket
from comfyrun.comfy.watch import PromptWatch

logger = logging.getLogger("comfyrun.comfy.client")


class SocketEvents:
    """The websocket's messages and state, as one client takes them (ComfyClient sets these)."""

    base_url: str
    _socket: ComfySocket | None
    _watches: dict[str, PromptWatch]
    _state_callbacks: list[Callable[[bool], None]]
    _reconciler: Reconciler
    _running: str | None
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
        if isinstance(message, Executing) and message.node is None and prompt_id == self._running:
            self._running = None
        watch = self._watches.get(prompt_id)
        if watch is None or watch.done:
            return
        watch.feed(message)
        tracker = watch.tracker
        if tracker.finished:
            if tracker.terminal:
                watch.settle(result_from_tracker(tracker))
            else:
                # Finished but the outcome event was missed: history has it by now.
                watch.needs_history = True
                self._reconciler.wake()

    def _on_socket_state(self, connected: bool) -> None:
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


__all__ = ["SocketEvents"]
