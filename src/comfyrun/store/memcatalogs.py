"""The memory store's backend node catalogs (mixed into MemoryStore); the SQL stores'
semantics (store.sqlcatalogs)."""

from __future__ import annotations

import builtins

from comfyrun.core.catalog import NodeCatalog


class MemoryCatalogs:
    def __init__(self) -> None:
        self._catalogs: dict[str, NodeCatalog] = {}

    async def put_catalog(self, catalog: NodeCatalog) -> bool:
        stored = self._catalogs.get(catalog.backend)
        if stored is not None and stored.fetched_at > catalog.fetched_at:
            return False
        self._catalogs[catalog.backend] = catalog
        return True

    async def catalogs(self) -> builtins.list[NodeCatalog]:
        return [self._catalogs[name] for name in sorted(self._catalogs)]

    async def catalog_stamps(self) -> dict[str, float]:
        return {name: self._catalogs[name].fetched_at for name in sorted(self._catalogs)}

    async def delete_catalog(self, backend: str) -> bool:
        return self._catalogs.pop(backend, None) is not None


__all__ = ["MemoryCatalogs"]
