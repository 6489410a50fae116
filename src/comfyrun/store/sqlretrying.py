"""The SQL stores' count of jobs in retry (store.retrying)."""

from __future__ import annotations

from comfyrun.store.sqldialect import SQLDialect


class SQLRetryCounts(SQLDialect):
    """`retrying` for the SQL stores: reads the unfinished jobs only (the status index)."""

    async def retrying(self, *, owner: str | None = None) -> int:
        query, params = (
            ("retrying", {}) if owner is None else ("retrying_of_owner", {"owner": owner})
        )
        async with self._read() as conn:
            row = await self._one(conn, query, params)
        return 0 if row is None else int(row["n"])


__all__ = ["SQLRetryCounts"]
