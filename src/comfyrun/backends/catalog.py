"""What each backend can run, for placement and submit-time checks (core.fit).

`catalog_of` is the one place that says where a backend's node definitions come from: today
the object_info its ComfyClient fetched (and caches); a persisted catalog can take its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from comfyrun.backends.pool import Backend
from comfyrun.core.fit import BackendCatalog

log = logging.getLogger(__name__)


def catalog_of(backend: Backend) -> BackendCatalog:
    """The backend's labels, and its object_info once known (None before its first fetch)."""
    info = getattr(backend.client, "cached_object_info", None) if backend.client else None
    return BackendCatalog(
        name=backend.name,
        labels=dict(backend.spec.labels),
        object_info=info if isinstance(info, dict) else None,
    )


async def load_catalogs(backends: Iterable[Backend], *, timeout_s: float) -> None:
    """Fetch the object_info of every connected backend that has none cached yet (once each:
    the client caches it). A backend that does not answer is judged on its labels meanwhile."""
    wanted = [
        b
        for b in backends
        if b.client is not None and getattr(b.client, "cached_object_info", False) is None
    ]
    if wanted:
        await asyncio.gather(*(_fetch(b, timeout_s) for b in wanted))


async def _fetch(backend: Backend, timeout_s: float) -> Any:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            return await backend.client.object_info()
    log.info("object_info of backend %s is not known yet", backend.name)
    return None


__all__ = ["catalog_of", "load_catalogs"]
