"""`backend_catalogs` rows ↔ NodeCatalog: JSON columns are text in both dialects (PostgreSQL's
JSONB would reorder ComfyUI's keys)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from comfyrun.core.catalog import NodeCatalog, well_formed


def catalog_to_row(catalog: NodeCatalog) -> dict[str, Any]:
    def dump(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    return {
        "backend": catalog.backend,
        "comfyui_version": catalog.comfyui_version,
        "fetched_at": catalog.fetched_at,
        "object_info": dump(catalog.object_info),
        "models": dump(catalog.models),
        "embeddings": dump(catalog.embeddings),
        "features": dump(catalog.features),
    }


def catalog_from_row(row: Mapping[str, Any]) -> NodeCatalog:
    def load(name: str) -> Any:
        value = row[name]
        return json.loads(value) if isinstance(value, str | bytes) else value

    return NodeCatalog(
        backend=row["backend"],
        comfyui_version=row["comfyui_version"],
        fetched_at=float(row["fetched_at"]),
        object_info=_definitions(load("object_info")),
        models=load("models"),
        embeddings=load("embeddings"),
        features=load("features"),
    )


def _definitions(info: Any) -> dict[str, Any]:
    """Those of the stored definitions in ComfyUI's shape (earlier builds kept them as the
    backend served them)."""
    return well_formed(info)[0] if isinstance(info, dict) else {}


__all__ = ["catalog_from_row", "catalog_to_row"]
