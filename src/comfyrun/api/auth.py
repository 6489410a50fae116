"""Who is calling: `Authenticator` turns a bearer token into a `Principal`. A key from the config
is an admin; a key minted through the admin API is found by its sha256 in the store (cached for a
few seconds, so revoking takes effect on every node within `cache_s`). A server without config
keys is open: a caller with no key, or one it does not know, is an admin. What a key that is not
an admin sees of the store is `OwnedStore` (api.tenancy).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence

from comfyrun.core.tenancy import ADMIN, ApiKey, Principal, hash_key
from comfyrun.store.base import JobStore


class Authenticator:
    """Bearer tokens → principals. None: not a valid key."""

    def __init__(self, store: JobStore, config_keys: Sequence[str], *, cache_s: float = 2.0):
        self._store = store
        self._config_keys = [k.encode() for k in config_keys]
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    @property
    def open(self) -> bool:
        """No config keys: callers without a key are admins (a server for one team)."""
        return not self._config_keys

    async def principal(self, token: str | None) -> Principal | None:
        if not token:
            return ADMIN if self.open else None
        if any(hmac.compare_digest(token.encode(), k) for k in self._config_keys):
            return ADMIN
        key = await self._lookup(hash_key(token))
        if key is None or not key.active:
            # an open server ignores tokens it does not know (SDKs always send one)
            return ADMIN if self.open else None
        return Principal(name=key.name, scopes=key.scopes, key_id=key.id)

    def forget(self, key_id: str) -> None:
        """Drop a key from this node's cache (after revoking it here)."""
        self._cache = {h: v for h, v in self._cache.items() if not v[1] or v[1].id != key_id}

    async def _lookup(self, key_hash: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        key = await self._store.api_key_by_hash(key_hash)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_hash] = (now, key)
        return key


__all__ = ["Authenticator"]
