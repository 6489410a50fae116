"""The small objects a local storage wrote lately, kept in memory: a download right after the
write (a v2 output's GET, ComfyUI's /view of a prompt's output), and the look that goes before
it, is answered without a trip to the disk's thread."""

from __future__ import annotations

import time
from collections import OrderedDict

from comfyrun.outputs.base import StoredObject

#: What the recently written small objects may hold in memory, and for how long.
RECENT_BYTES = 8 << 20
RECENT_TTL_S = 30.0


class Recent:
    """Small objects just written, by key, oldest first; bounded in bytes and in age."""

    def __init__(self, budget: int = RECENT_BYTES, ttl_s: float = RECENT_TTL_S) -> None:
        self.budget = budget
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, StoredObject, bytes]] = OrderedDict()
        self._bytes = 0

    def add(self, key: str, stored: StoredObject, data: bytes) -> None:
        self.drop(key)
        if len(data) > self.budget // 16:
            return
        self._entries[key] = (time.monotonic() + self.ttl_s, stored, data)
        self._bytes += len(data)
        while self._bytes > self.budget:
            self._pop(next(iter(self._entries)))

    def get(self, key: str) -> tuple[StoredObject, bytes] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._pop(key)
            return None
        return entry[1], entry[2]

    def drop(self, key: str) -> None:
        if key in self._entries:
            self._pop(key)

    def drop_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            self._pop(key)

    def _pop(self, key: str) -> None:
        self._bytes -= len(self._entries.pop(key)[2])


__all__ = ["RECENT_BYTES", "RECENT_TTL_S", "Recent"]
