"""The prompt queue (a heap ordered by `number`) and the in-memory history, as ComfyUI's.

Thread-safe: HTTP handlers put and inspect; the worker thread gets, runs and finishes.
`on_change` is called (under the lock, so in order) whenever queue_remaining may have changed;
the server broadcasts a `status` message from it.
"""

from __future__ import annotations

import copy
import heapq
import threading
from collections.abc import Callable
from typing import Any

#: [number, prompt_id, prompt, extra_data, outputs_to_execute]
QueueItem = list[Any]
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000


class _Entry:
    __slots__ = ("item",)

    def __init__(self, item: QueueItem) -> None:
        self.item = item

    def key(self) -> tuple[Any, str]:
        return (self.item[0], str(self.item[1]))

    def __lt__(self, other: _Entry) -> bool:
        return self.key() < other.key()


class PromptQueue:
    def __init__(self, on_change: Callable[[int], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Condition()
        self._heap: list[_Entry] = []
        self._running: dict[int, QueueItem] = {}
        self._counter = 0
        self._closed = False
        self._flags: dict[str, bool] = {}
        self.history: dict[str, dict[str, Any]] = {}

    def set_flag(self, name: str, value: bool) -> None:
        """POST /free's request, taken by the worker after the prompt it runs next."""
        with self._lock:
            self._flags[name] = value

    def get_flags(self) -> dict[str, bool]:
        """The flags set since the last call (cleared), as ComfyUI's PromptQueue.get_flags."""
        with self._lock:
            flags, self._flags = self._flags, {}
            return flags

    def _changed(self) -> None:
        self._on_change(len(self._heap) + len(self._running))

    def remaining(self) -> int:
        with self._lock:
            return len(self._heap) + len(self._running)

    def put(self, item: QueueItem) -> None:
        with self._lock:
            heapq.heappush(self._heap, _Entry(item))
            self._changed()
            self._lock.notify()

    def get(self, timeout: float | None = None) -> tuple[QueueItem, int] | None:
        """The next item to run, or None when closed or after `timeout` seconds."""
        with self._lock:
            while not self._heap and not self._closed:
                if not self._lock.wait(timeout):
                    return None
            if self._closed:
                return None
            item = heapq.heappop(self._heap).item
            task_id = self._counter
            self._running[task_id] = copy.deepcopy(item)
            self._counter += 1
            self._changed()
            return item, task_id

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def task_done(
        self, task_id: int, outputs: dict[str, Any], meta: dict[str, Any], status: dict[str, Any]
    ) -> None:
        with self._lock:
            item = self._running.pop(task_id)
            extra = {k: v for k, v in item[3].items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
            record = [item[0], item[1], item[2], extra, item[4]]
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            self.history[item[1]] = {
                "prompt": record,
                "outputs": outputs,
                "status": status,
                "meta": meta,
            }
            self._changed()

    def current(self) -> tuple[list[QueueItem], list[QueueItem]]:
        with self._lock:
            running = [copy.deepcopy(i) for i in self._running.values()]
            pending = [copy.deepcopy(e.item) for e in self._heap]
            return running, pending

    def running_ids(self) -> list[str]:
        with self._lock:
            return [str(i[1]) for i in self._running.values()]

    def delete(self, prompt_id: str) -> bool:
        with self._lock:
            for index, entry in enumerate(self._heap):
                if entry.item[1] == prompt_id:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                    self._changed()
                    return True
            return False

    def wipe(self) -> None:
        with self._lock:
            self._heap = []
            self._changed()

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        with self._lock:
            if prompt_id is not None:
                if prompt_id in self.history:
                    return {prompt_id: copy.deepcopy(self.history[prompt_id])}
                return {}
            out: dict[str, Any] = {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            for i, key in enumerate(self.history):
                if i >= offset:
                    out[key] = copy.deepcopy(self.history[key])
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def delete_history(self, prompt_id: str) -> None:
        with self._lock:
            self.history.pop(prompt_id, None)

    def wipe_history(self) -> None:
        with self._lock:
            self.history = {}
