"""The asset service: content-addressed blobs plus small metadata records, both in one
OutputStorage so that every API node sharing that storage (S3, a shared directory) agrees.

    assets/blobs/<blake3 hex>     the bytes, stored once however many assets point at them
    assets/meta/<asset id>.json   one Asset record
    assets/owned/<key>/<hex>      (empty) an API key uploaded those bytes: for that key alone
                                  they exist by hash (HEAD by-hash, from-hash); another key
                                  that knows a hash learns nothing of, and mints nothing over,
                                  bytes it never had (it uploads them: still stored once)

Uploads are spooled to a local temporary file while the blake3 hash is computed, so the blob's
key is known before anything is written to the storage, a hash mismatch stores nothing, and a
dedup hit costs no upload at all.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO

import blake3

from comfyrun.assets.model import Asset, is_valid_asset_id, normalize_hash
from comfyrun.errors import BlobNotFound, HashMismatch, InputRejected, InvalidRequest, NotFound
from comfyrun.inputs.names import sanitize_name
from comfyrun.outputs.base import OutputStorage, StoredObject, iterate_bytes, read_all

log = logging.getLogger(__name__)

BLOB_PREFIX = "assets/blobs/"
META_PREFIX = "assets/meta/"
OWNED_PREFIX = "assets/owned/"
CHUNK = 1 << 20
MAX_TAGS = 32
SPOOL_IN_MEMORY = 4 * 1024 * 1024


class AssetService:
    """Upload, mint, look up and read assets."""

    def __init__(
        self,
        storage: OutputStorage,
        *,
        max_upload_bytes: int = 1024 * 1024 * 1024,
        tmp_dir: Path | None = None,
        url_expires_s: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.max_upload_bytes = max_upload_bytes
        self.tmp_dir = tmp_dir
        self.url_expires_s = url_expires_s
        self._clock = clock
        self.owner: str | None = None

    def for_owner(self, owner: str | None) -> AssetService:
        """This service as API key `owner` sees it: the assets it makes are its own and other
        owners' assets are not found (None: an admin, who sees all)."""
        scoped = copy.copy(self)
        scoped.owner = owner
        return scoped

    async def upload(
        self,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        file_path: str | None = None,
        expected_hash: str | None = None,
        tags: Sequence[str] = (),
    ) -> tuple[Asset, bool]:
        """Store the bytes (once per distinct content) and mint an asset over them.
        Returns (asset, created_new): created_new is False on a dedup hit.

        Raises HashMismatch when `expected_hash` differs from the computed hash (nothing is
        stored), InputRejected when the upload is over `max_upload_bytes`, InvalidRequest for a
        malformed hash, file path or tags."""
        expected = normalize_hash(expected_hash) if expected_hash else None
        path = _clean_path(file_path)
        clean_tags = _clean_tags(tags)
        content_type = _clean_content_type(content_type)
        spool = await asyncio.to_thread(_spool_file, self.tmp_dir)
        try:
            digest, size = await self._spool(chunks, spool)
            if expected is not None and expected != digest:
                raise HashMismatch(
                    "the uploaded bytes do not match expected_hash",
                    details={"expected_hash": expected, "actual_hash": digest},
                )
            key = blob_key(digest)
            created_new = await self.storage.stat(key) is None
            if created_new:
                await self.storage.put(key, _read_spool(spool), content_type=content_type)
        finally:
            await asyncio.to_thread(_discard, spool)
        if self.owner is not None:  # this key had these bytes: it may find them by hash
            marker = owned_key(self.owner, digest)
            await self.storage.put(marker, iterate_bytes(b""), content_type="text/plain")
        asset = await self._mint(digest, size, content_type, path, clean_tags, key)
        log.info(
            "asset %s uploaded (%d bytes, %s)",
            asset.id,
            size,
            "new blob" if created_new else "dedup hit",
            extra={"action": "asset.upload", "asset_id": asset.id},
        )
        return asset, created_new

    async def from_hash(
        self, hash: str, *, file_path: str | None = None, tags: Sequence[str] = ()
    ) -> Asset:
        """Mint a new asset over an existing blob. Raises BlobNotFound when there is none."""
        digest = normalize_hash(hash)
        stored = await self._blob(digest)
        if stored is None:
            raise BlobNotFound(f"no blob with hash {digest}", details={"hash": digest})
        return await self._mint(
            digest,
            stored.size_bytes,
            stored.content_type,
            _clean_path(file_path),
            _clean_tags(tags),
            blob_key(digest),
        )

    async def exists(self, hash: str) -> bool:
        """True when a blob with this hash is stored. A malformed hash is simply absent."""
        try:
            digest = normalize_hash(hash)
        except InvalidRequest:
            return False
        return await self._blob(digest) is not None

    async def _blob(self, digest: str) -> StoredObject | None:
        """The stored bytes of this hash, as this service's key may know them: any (an admin),
        or only bytes the key itself uploaded (else None, as for bytes never stored)."""
        if (
            self.owner is not None
            and await self.storage.stat(owned_key(self.owner, digest)) is None
        ):
            return None
        return await self.storage.stat(blob_key(digest))

    async def get(self, asset_id: str) -> Asset:
        """The asset; NotFound when it does not exist or its bytes are gone (e.g. the job whose
        output it was has been deleted)."""
        if not is_valid_asset_id(asset_id):
            raise _not_found(asset_id)
        try:
            raw = await read_all(self.storage, meta_key(asset_id))
        except NotFound:
            raise _not_found(asset_id) from None
        asset = Asset.from_json(json.loads(raw))
        if self.owner is not None and asset.owner != self.owner:
            raise _not_found(asset_id)
        if asset.job_id is not None and await self.storage.stat(asset.storage_key) is None:
            raise _not_found(asset_id)
        return asset

    async def delete(self, asset_id: str) -> None:
        """Forget the asset record. The blob stays: other assets may share the bytes."""
        await self.get(asset_id)
        await self.storage.delete(meta_key(asset_id))

    async def url(
        self, asset: Asset, *, expires_s: int | None = None
    ) -> tuple[str | None, float | None]:
        """A direct download URL for the asset's bytes, or (None, None) when the storage has
        none to give (the API then serves /api/v2/assets/{id}/content)."""
        return await self.storage.url(
            asset.storage_key,
            expires_s=expires_s or self.url_expires_s,
            content_type=asset.content_type,
            filename=Path(asset.file_path).name if asset.file_path else None,
        )

    def open_content(
        self, asset: Asset, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream the asset's bytes (a byte range when `offset`/`length` are given)."""
        return self.storage.open(asset.storage_key, offset=offset, length=length)

    async def register_output(
        self, stored: StoredObject, *, job_id: str, file_path: str | None = None
    ) -> Asset:
        """Make a stored job output an asset without copying it: the record points at the
        output's own key, so deleting the job's files ends the asset too (GET then says 404)."""
        digest = normalize_hash(stored.hash) if stored.hash else None
        if digest is None:
            raise InvalidRequest("an output needs its hash to become an asset")
        return await self._mint(
            digest,
            stored.size_bytes,
            stored.content_type,
            _clean_path(file_path),
            ("output",),
            stored.key,
            job_id=job_id,
        )

    async def _mint(
        self,
        digest: str,
        size: int,
        content_type: str,
        file_path: str | None,
        tags: tuple[str, ...],
        key: str,
        *,
        job_id: str | None = None,
    ) -> Asset:
        asset = Asset(
            id=str(uuid.uuid4()),
            hash=digest,
            size_bytes=size,
            content_type=content_type,
            file_path=file_path,
            tags=tags,
            created_at=self._clock(),
            storage_key=key,
            job_id=job_id,
            owner=self.owner,
        )
        body = json.dumps(asset.to_json(), separators=(",", ":")).encode()
        await self.storage.put(
            meta_key(asset.id), iterate_bytes(body), content_type="application/json"
        )
        return asset

    async def _spool(self, chunks: AsyncIterable[bytes], spool: IO[bytes]) -> tuple[str, int]:
        hasher = blake3.blake3()
        size = 0
        batch = bytearray()
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_upload_bytes:
                raise InputRejected(
                    f"the upload is larger than {self.max_upload_bytes} bytes",
                    details={"reason": "file_too_large", "limit": self.max_upload_bytes},
                )
            batch += chunk
            if len(batch) >= CHUNK:
                await asyncio.to_thread(_hash_write, spool, hasher, bytes(batch))
                batch.clear()
        await asyncio.to_thread(_hash_write, spool, hasher, bytes(batch))
        await asyncio.to_thread(spool.flush)
        return f"blake3:{hasher.hexdigest()}", size


def blob_key(digest: str) -> str:
    """Where the bytes with this "blake3:<hex>" hash live."""
    return BLOB_PREFIX + digest.removeprefix("blake3:")


def owned_key(owner: str, digest: str) -> str:
    """The mark that API key `owner` uploaded the bytes with this hash."""
    key = hashlib.sha256(owner.encode()).hexdigest()[:32]
    return f"{OWNED_PREFIX}{key}/{digest.removeprefix('blake3:')}"


def meta_key(asset_id: str) -> str:
    return f"{META_PREFIX}{asset_id}.json"


def _not_found(asset_id: str) -> NotFound:
    return NotFound(f"asset {asset_id!r} does not exist", details={"asset_id": asset_id})


def _clean_path(file_path: str | None) -> str | None:
    if file_path is None or not file_path.strip():
        return None
    try:
        return sanitize_name(file_path)
    except InputRejected as exc:
        raise InvalidRequest(f"file_path: {exc.message}", details=exc.details) from exc


def _clean_tags(tags: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(t.strip() for t in tags if t.strip()))
    if len(cleaned) > MAX_TAGS or any(len(t) > 64 for t in cleaned):
        raise InvalidRequest(f"at most {MAX_TAGS} tags of at most 64 characters")
    return cleaned


def _clean_content_type(content_type: str) -> str:
    text = content_type.strip().lower()
    if not text or "/" not in text or len(text) > 255 or any(ord(c) < 32 for c in text):
        raise InvalidRequest("content_type must be a MIME type such as image/png")
    return text


def _spool_file(tmp_dir: Path | None) -> IO[bytes]:
    """In memory up to SPOOL_IN_MEMORY bytes, then a temporary file in `tmp_dir`."""
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.SpooledTemporaryFile(
        max_size=SPOOL_IN_MEMORY, dir=str(tmp_dir) if tmp_dir else None
    )


def _hash_write(fh: IO[bytes], hasher: blake3.blake3, data: bytes) -> None:
    hasher.update(data)
    fh.write(data)


def _discard(fh: IO[bytes]) -> None:
    fh.close()


async def _read_spool(fh: IO[bytes]) -> AsyncIterator[bytes]:
    await asyncio.to_thread(fh.seek, 0)
    while chunk := await asyncio.to_thread(fh.read, CHUNK):
        yield chunk


__all__ = ["BLOB_PREFIX", "META_PREFIX", "AssetService", "blob_key", "meta_key"]
