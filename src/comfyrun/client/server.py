"""The client's calls about the server itself (mixed into ComfyrunClient): its backends (and an
admin's actions on them), stats and health, its model cache, and its API keys (admin)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote


class ServerCalls:
    """The server's backends, stats, health, model cache and API keys."""

    if TYPE_CHECKING:  # ComfyrunClient's

        async def _json(self, method: str, path: str, **kwargs: Any) -> Any: ...

    # backends, stats, health -------------------------------------------------------------------

    async def backends(self) -> list[dict[str, Any]]:
        body: dict[str, Any] = await self._json("GET", "/api/v2/backends")
        return list(body["backends"])

    async def backend_action(
        self, name: str, action: str, *, force: bool = False
    ) -> dict[str, Any]:
        """POST /api/v2/backends/{name}/{action} (drain, resume, restart, stop, start; an admin
        key): the backend as GET /api/v2/backends then shows it."""
        params = {"force": "true"} if force else None
        body: dict[str, Any] = await self._json(
            "POST", f"/api/v2/backends/{quote(name, safe='')}/{action}", params=params
        )
        return body

    async def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("GET", "/api/v2/stats")
        return body

    async def health(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("GET", "/api/v2/health")
        return body

    # the model cache ----------------------------------------------------------------------------

    async def models(self) -> dict[str, Any]:
        """GET /api/v2/models: the cached files, total bytes and budget."""
        body: dict[str, Any] = await self._json("GET", "/api/v2/models")
        return body

    async def pull_model(self, model: Mapping[str, Any]) -> dict[str, Any]:
        """POST /api/v2/models `{url | asset_id, folder, name, hash?, refresh?}`; returns when
        cached (with `refresh`: revalidated, its answer's `refresh` saying what happened)."""
        body: dict[str, Any] = await self._json(
            "POST", "/api/v2/models", json=dict(model), timeout=None
        )
        return body

    async def remove_model(self, key: str) -> dict[str, Any]:
        """DELETE /api/v2/models/{key}: `blake3:<hex>`, `sha256:<hex>` or `folder/name`."""
        body: dict[str, Any] = await self._json("DELETE", f"/api/v2/models/{key}")
        return body

    # API keys (admin) --------------------------------------------------------------------------

    async def create_key(
        self,
        name: str,
        *,
        scopes: Sequence[str] = ("submit", "read"),
        max_queued: int | None = None,
        per_minute: int | None = None,
    ) -> dict[str, Any]:
        """Mint a key; the answer's "key" is the only time the key itself is shown."""
        body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
        if max_queued is not None or per_minute is not None:
            body["quota"] = {"max_queued": max_queued, "per_minute": per_minute}
        key: dict[str, Any] = await self._json("POST", "/api/v2/admin/keys", json=body)
        return key

    async def list_keys(self) -> list[dict[str, Any]]:
        body: dict[str, Any] = await self._json("GET", "/api/v2/admin/keys")
        return list(body["keys"])

    async def revoke_key(self, key_id: str) -> None:
        await self._json("DELETE", f"/api/v2/admin/keys/{key_id}")


__all__ = ["ServerCalls"]
