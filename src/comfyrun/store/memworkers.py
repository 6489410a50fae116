"""The memory store's worker registry (mixed into MemoryStore); the SQL stores' semantics."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence


class MemoryWorkers:
    def __init__(self) -> None:
        self._workers: dict[str, tuple[frozenset[str], float]] = {}

    async def announce_worker(
        self, worker_id: str, types: Sequence[str], *, now: float | None = None
    ) -> None:
        self._workers[worker_id] = (frozenset(types), time.time() if now is None else now)

    async def retire_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def served_types(self, *, since: float) -> builtins.set[str]:
        return {t for types, seen in self._workers.values() if seen >= since for t in types}
