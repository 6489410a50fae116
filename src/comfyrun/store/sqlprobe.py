"""The SQL stores' write probe for readiness (store.writable)."""

from __future__ import annotations

from comfyrun.store.sqldialect import SQLDialect
from comfyrun.store.writable import WriteHealth


class SQLWriteProbe(SQLDialect):
    """`can_commit` for the SQL stores (each sets `write_health` and notes its commits)."""

    write_health: WriteHealth

    async def probe_write(self) -> None:
        """Commit one tiny write (a `schema_version` row rewritten as it is)."""
        async with self._write() as conn:
            await self._run(conn, "probe_write", {})

    async def can_commit(self) -> str | None:
        return await self.write_health.check(self.probe_write)


__all__ = ["SQLWriteProbe"]
