"""One ComfyUI server's node catalog over HTTP: GET /object_info (required), /system_stats (its
version), /models and /models/{folder}, /embeddings and /features (each optional: an older
ComfyUI lacks some, and a catalog without them is still useful)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from comfyrun.comfy.errors import ComfyProtocolError
from comfyrun.comfy.http import ComfyHTTP
from comfyrun.core.catalog import NodeCatalog, well_formed
from comfyrun.errors import BackendError

log = logging.getLogger(__name__)


async def fetch_catalog(
    base_url: str,
    backend: str,
    *,
    timeout_s: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NodeCatalog:
    """The catalog of the ComfyUI at `base_url`, named `backend`. Raises a BackendError
    (ComfyConnectionError, ComfyTimeout, ComfyHTTPError, ComfyProtocolError) when its
    /object_info cannot be read."""
    http = ComfyHTTP(base_url.rstrip("/"), timeout=timeout_s, transport=transport)
    try:
        fetched_at = time.time()
        info, stats, folders, embeddings, features = await asyncio.gather(
            _get(http, "/object_info", required=True),
            _get(http, "/system_stats"),
            _get(http, "/models"),
            _get(http, "/embeddings"),
            _get(http, "/features"),
        )
        if isinstance(info, dict):
            info, dropped = well_formed(info)
            if dropped:
                log.warning(
                    "GET /object_info on %s: %d node definitions not in ComfyUI's shape left "
                    "out (%s)",
                    base_url,
                    len(dropped),
                    ", ".join(dropped[:5]) + (", …" if len(dropped) > 5 else ""),
                )
        if not isinstance(info, dict) or not info:
            raise ComfyProtocolError(f"GET /object_info on {base_url} answered no node types")
        names = [f for f in folders if isinstance(f, str)] if isinstance(folders, list) else []
        lists = await asyncio.gather(*(_get(http, f"/models/{name}") for name in names))
    finally:
        await http.aclose()
    system = stats.get("system") if isinstance(stats, dict) else None
    version = system.get("comfyui_version") if isinstance(system, dict) else None
    return NodeCatalog(
        backend=backend,
        object_info=info,
        fetched_at=fetched_at,
        comfyui_version=str(version) if version is not None else None,
        models={n: _names(files) for n, files in zip(names, lists, strict=True)},
        embeddings=_names(embeddings),
        features=features if isinstance(features, dict) else {},
    )


async def _get(http: ComfyHTTP, path: str, *, required: bool = False) -> Any:
    """The JSON body of GET `path`; None for an optional one that fails."""
    try:
        response = await http.request("GET", path)
        return response.json()
    except (BackendError, ValueError) as exc:
        if required:
            if isinstance(exc, ValueError):
                raise ComfyProtocolError(f"GET {path} answered non-JSON") from exc
            raise
        log.debug("GET %s on %s: %s", path, http.base_url, exc)
        return None


def _names(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


__all__ = ["fetch_catalog"]
