"""The SQL stores' worker registry (mixed into SQLStore): which job types live workers serve."""

from __future__ import annotations

import builtins
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from comfyrun.core.job import JSON
from comfyrun.store.codec import dump_json

Row = dict[str, Any]


class SQLWorkers(ABC):
    async def announce_worker(
        self, worker_id: str, types: Sequence[str], *, now: float | None = None
    ) -> None:
        seen_at = time.time() if now is None else now
        params = {"id": worker_id, "types": dump_json(sorted(set(types))), "seen_at": seen_at}
        async with self._write() as conn:
            await self._run(conn, "announce_worker", params)

    async def retire_worker(self, worker_id: str) -> None:
        async with self._write() as conn:
            await self._run(conn, "retire_worker", {"id": worker_id})

    async def served_types(self, *, since: float) -> builtins.set[str]:
        async with self._read() as conn:
            rows = await self._all(conn, "served_types", {"since": since})
        return {str(r["type"]) for r in rows}

    # -- the dialect's part (SQLStore) --------------------------------------------------------

    @abstractmethod
    def _read(self) -> AbstractAsyncContextManager[Any]: ...

    @abstractmethod
    def _write(self) -> AbstractAsyncContextManager[Any]: ...

    @abstractmethod
    async def _all(self, conn: Any, name: str, params: JSON) -> builtins.list[Row]: ...

    @abstractmethod
    async def _run(self, conn: Any, name: str, params: JSON) -> int: ...
