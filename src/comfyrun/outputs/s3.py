"""Output storage in S3 or any S3-compatible server: "s3://bucket/prefix?endpoint_url=…&region=…".

boto3 runs in threads (asyncio.to_thread): it is the reference client, thread-safe once a client
exists, and needs no second HTTP stack; the calls are few and large, so the thread hop is cheap.
Streams are uploaded in parts of `part_size` bytes (≥ 5 MiB, S3's minimum), so memory stays
bounded by about two parts whatever the object size; objects smaller than one part take a single
PutObject. Credentials come from the standard AWS environment and config files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, TypeVar

import blake3

from comfyrun.errors import NotFound, StorageError
from comfyrun.outputs.base import StoredObject, iterate_bytes, read_all
from comfyrun.outputs.keys import validate_key, validate_prefix

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 8 * 1024 * 1024
READ_CHUNK = 1 << 20
HASH_METADATA = "blake3"

T = TypeVar("T")


class S3OutputStorage:
    """Objects under `prefix` in `bucket`."""

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        url_expires_s: int = 3600,
        client: Any = None,
        list_page_size: int = 1000,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.url_expires_s = url_expires_s
        self.list_page_size = min(list_page_size, 1000)  # DeleteObjects takes at most 1000
        self._client = client if client is not None else _make_client(endpoint_url, region)

    def __repr__(self) -> str:
        return f"S3OutputStorage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except Exception as exc:
            if _is_not_found(exc):
                raise NotFound("object does not exist", details={"key": kwargs.get("Key")}) from exc
            if _is_client_error(exc):
                raise StorageError(f"S3 {fn.__name__} failed: {exc}") from exc
            raise

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> StoredObject:
        return await self.put(key, iterate_bytes(data), content_type=content_type)

    async def read_small(
        self, key: str, max_bytes: int
    ) -> tuple[StoredObject, bytes | None] | None:
        obj = await self.stat(key)
        if obj is None:
            return None
        if obj.size_bytes > max_bytes:
            return obj, None
        return obj, await read_all(self, key)

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        full = self._key(key)
        hasher = blake3.blake3()
        buf = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        client = self._client
        try:
            async for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                buf += chunk
                while len(buf) >= self.part_size:
                    if upload_id is None:
                        created = await self._call(
                            client.create_multipart_upload,
                            Bucket=self.bucket,
                            Key=full,
                            ContentType=content_type,
                        )
                        upload_id = str(created["UploadId"])
                    with memoryview(buf) as view:  # one copy of the part, not two
                        body = bytes(view[: self.part_size])
                    del buf[: self.part_size]
                    parts.append(await self._upload_part(full, upload_id, len(parts) + 1, body))
            digest = f"blake3:{hasher.hexdigest()}"
            if upload_id is None:
                await self._call(
                    client.put_object,
                    Bucket=self.bucket,
                    Key=full,
                    Body=bytes(buf),
                    ContentType=content_type,
                    Metadata={HASH_METADATA: digest},
                )
            else:
                if buf:
                    parts.append(
                        await self._upload_part(full, upload_id, len(parts) + 1, bytes(buf))
                    )
                    buf.clear()
                await self._call(
                    client.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort(full, upload_id))
            raise
        return StoredObject(key, size, digest, content_type)

    async def _upload_part(
        self, full: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        result = await self._call(
            self._client.upload_part,
            Bucket=self.bucket,
            Key=full,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"ETag": result["ETag"], "PartNumber": number}

    async def _abort(self, full: str, upload_id: str) -> None:
        try:
            await asyncio.to_thread(
                self._client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
            )
        except Exception:  # the original error matters more; S3 lifecycle rules clean up
            log.warning("could not abort multipart upload of %s", full, exc_info=True)

    async def open(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        full = self._key(key)
        if length == 0:
            await self._call(self._client.head_object, Bucket=self.bucket, Key=full)
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            response = await self._call(self._client.get_object, **kwargs)
        except StorageError as exc:
            if _error_code(exc.__cause__) == "InvalidRange":  # offset at or past the end
                return
            raise
        body = response["Body"]
        try:
            while True:
                chunk = await asyncio.to_thread(body.read, READ_CHUNK)
                if not chunk:
                    break
                yield bytes(chunk)
        finally:
            await asyncio.to_thread(body.close)

    async def url(
        self,
        key: str,
        *,
        expires_s: int | None = None,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> tuple[str | None, float | None]:
        expires = expires_s or self.url_expires_s
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if content_type:
            params["ResponseContentType"] = content_type
        if filename:
            safe = filename.replace('"', "_").replace("\\", "_")
            params["ResponseContentDisposition"] = f'inline; filename="{safe}"'
        url = await self._call(
            self._client.generate_presigned_url,
            ClientMethod="get_object",
            Params=params,
            ExpiresIn=expires,
        )
        return str(url), time.time() + expires

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def delete_prefix(self, prefix: str) -> int:
        full = self._key(validate_prefix(prefix)[:-1]) + "/"
        count = await asyncio.to_thread(self._delete_prefix_sync, full)
        log.info(
            "deleted %d objects under %s", count, prefix, extra={"action": "storage.delete_prefix"}
        )
        return count

    def _delete_prefix_sync(self, full: str) -> int:
        count = 0
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(
                Bucket=self.bucket,
                Prefix=full,
                PaginationConfig={"PageSize": self.list_page_size},
            ):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not keys:
                    continue
                result = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )
                errors = result.get("Errors") or []
                if errors:
                    raise StorageError(f"S3 refused to delete {len(errors)} objects under {full}")
                count += len(keys)
        except StorageError:
            raise
        except Exception as exc:
            if _is_client_error(exc):
                raise StorageError(f"S3 delete under {full!r} failed: {exc}") from exc
            raise
        return count

    async def stat(self, key: str) -> StoredObject | None:
        try:
            head = await self._call(
                self._client.head_object, Bucket=self.bucket, Key=self._key(key)
            )
        except NotFound:
            return None
        metadata = head.get("Metadata") or {}
        return StoredObject(
            key=key,
            size_bytes=int(head["ContentLength"]),
            hash=metadata.get(HASH_METADATA),
            content_type=str(head.get("ContentType") or "application/octet-stream"),
        )

    async def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def _make_client(endpoint_url: str | None, region: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - boto3 is a core dependency today
        raise StorageError("s3:// storage needs boto3: pip install boto3") from exc
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"} if endpoint_url else {},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _error_code(exc: BaseException | None) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _is_not_found(exc: BaseException) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound")


def _is_client_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("botocore", "boto3", "urllib3"))


__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3OutputStorage"]
