"""Revalidating a cached URL: a conditional GET with the validators its last answer carried
(ETag, Last-Modified); its bytes are replaced only when they changed (`ModelCache.refresh`)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from comfyrun.errors import Conflict
from comfyrun.models.records import CachedModel, ModelProgress, Progress, Validators
from comfyrun.models.specs import ModelRef

if TYPE_CHECKING:
    from comfyrun.models.cache import ModelCache

log = logging.getLogger(__name__)


async def refresh(
    cache: ModelCache, ref: ModelRef, progress: ModelProgress | None = None
) -> tuple[CachedModel, str]:
    """Like `cache.pull`, and a URL without a declared hash cached already is revalidated.
    Returns the model and what happened: `content_addressed` (a hash or an asset: its bytes
    cannot change; nothing asked), `fetched` (it was not cached), `not_modified` (304),
    `unchanged` (downloaded again, the same bytes: the server keeps no validators) or
    `replaced` (new bytes under the same name; the old ones are dropped unless something else
    uses them). Conflict when the name is in use by a running job."""
    name = f"{ref.folder}/{ref.name}"
    if cache.name_in_use(name) and ref.hash is None and ref.url is not None:
        raise Conflict(
            f"model name {name} is in use by a running job; refresh it once that ends",
            details={"name": name},
        )
    old = cache.find(ref)
    current = None if old is None else cache.model(old)
    if ref.hash is not None or ref.url is None or old is None or current is None:
        model = await cache.pull(ref, progress)
        return model, "content_addressed" if ref.hash or ref.url is None else "fetched"
    kept = current.validators.get(ref.source) or {}
    revalidate = Validators(etag=kept.get("etag"), last_modified=kept.get("last_modified"))
    report: Progress = (lambda d, t: progress(ref, d, t)) if progress else (lambda d, t: None)
    digest = await cache.store(ref, report, revalidate)
    if digest is None:
        still = cache.model(old)
        if still is not None and ref.source in still.validators:
            still.validators[ref.source]["checked_at"] = time.time()
        return await cache.pull(ref, progress), "not_modified"
    if digest == old:
        return await cache.pull(ref, progress), "unchanged"
    stale = cache.model(old)
    if stale is not None:  # the URL means the new bytes now
        if ref.source in stale.sources:
            stale.sources.remove(ref.source)
        stale.validators.pop(ref.source, None)
    model = await cache.pull(ref, progress)
    await cache.drop_if_unused(old)
    log.info(
        "model %s/%s: %s changed; the new bytes replace the old",
        ref.folder,
        ref.name,
        ref.source,
        extra={"action": "model.refreshed", "hash": f"blake3:{model.blake3}"},
    )
    return model, "replaced"


__all__ = ["refresh"]
