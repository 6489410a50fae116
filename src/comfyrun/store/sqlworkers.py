"""The SQL stores' worker registry (mixed into SQLStore): which job types live workers serve."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence

from comfyrun.store.codec import dump_json
from comfyrun.store.sqldialect import SQLDialect


class SQLWorkers(SQLDialect):
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
