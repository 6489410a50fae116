"""The SQL stores' backend node catalogs (mixed into SQLStore): each backend's /object_info."""

from __future__ import annotations

import builtins

from comfyrun.core.catalog import NodeCatalog
from comfyrun.store.catalogs import catalog_from_row, catalog_to_row
from comfyrun.store.sqldialect import SQLDialect


class SQLCatalogs(SQLDialect):
    async def put_catalog(self, catalog: NodeCatalog) -> bool:
        async with self._write() as conn:
            return await self._run(conn, "put_catalog", catalog_to_row(catalog)) == 1

    async def catalogs(self) -> builtins.list[NodeCatalog]:
        async with self._read() as conn:
            return [catalog_from_row(r) for r in await self._all(conn, "catalogs", {})]

    async def catalog_stamps(self) -> dict[str, float]:
        async with self._read() as conn:
            rows = await self._all(conn, "catalog_stamps", {})
        return {r["backend"]: float(r["fetched_at"]) for r in rows}

    async def delete_catalog(self, backend: str) -> bool:
        async with self._write() as conn:
            return await self._run(conn, "delete_catalog", {"backend": backend}) == 1


__all__ = ["SQLCatalogs"]
