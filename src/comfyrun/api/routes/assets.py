"""The Assets API (Comfy API v2): upload, mint from hash, existence check, metadata, content.

    POST /api/v2/assets                 multipart: file, content_type, file_path, expected_hash?, tags*
    POST /api/v2/assets/from-hash       {"hash", "file_path"?, "tags"?}
    HEAD /api/v2/assets/by-hash/{hash}  200 / 404
    GET  /api/v2/assets/{id}            Asset with a fresh url
    GET  /api/v2/assets/{id}/content    bytes; one Range → 206, unsatisfiable → 416
    DELETE /api/v2/assets/{id}          forget the record (the blob stays: others may share it)

Errors use the v2 envelope {"error": {"code", "message", "details"?}} and are answered here, so
the router behaves the same whichever app mounts it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response, params
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from comfyrun import errors, jsontext
from comfyrun.api.errors import retry_after
from comfyrun.api.routes.files import (
    content_disposition,
    content_safety,
    entity_tag,
    not_modified,
    parse_range,
    range_applies,
)
from comfyrun.assets import Asset, AssetService

UPLOAD_CHUNK = 1 << 20
#: Room for the multipart framing and the small fields around the file.
MULTIPART_SLACK = 64 * 1024

#: Most specific first.
_STATUS: tuple[tuple[type[errors.ComfyrunError], int], ...] = (
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidRequest, 422),
    (errors.StorageError, 503),
    (errors.StoreError, 503),
)


def assets_router(
    get_service: Callable[[Request], AssetService],
    *,
    base_url: Callable[[Request], str] | None = None,
    dependencies: Sequence[params.Depends] = (),
) -> APIRouter:
    """The /api/v2/assets routes. `get_service` finds the AssetService for a request (the app
    keeps it in its lifespan state); `base_url` gives the public origin for content URLs
    (default: the request's own); `dependencies` run before each route (e.g. authentication)."""
    router = APIRouter(prefix="/api/v2/assets", tags=["assets"], dependencies=list(dependencies))

    def origin(request: Request) -> str:
        return (base_url(request) if base_url else str(request.base_url)).rstrip("/")

    async def present(
        request: Request, service: AssetService, asset: Asset, created_new: bool | None = None
    ) -> dict[str, Any]:
        url, expires = await service.url(asset)
        if url is None:
            url = f"{origin(request)}/api/v2/assets/{asset.id}/content"
            expires = time.time() + service.url_expires_s
        return asset_json(asset, url=url, url_expires_at=expires, created_new=created_new)

    @router.post("", status_code=201)
    async def upload(request: Request) -> Response:
        service = get_service(request)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > service.max_upload_bytes + MULTIPART_SLACK:
            return error_response(  # refused before a byte of the body is read
                errors.InputRejected(
                    f"the upload is larger than {service.max_upload_bytes} bytes",
                    details={"reason": "file_too_large", "limit": service.max_upload_bytes},
                )
            )
        try:
            form = await request.form(max_files=1, max_fields=64)
        except Exception as exc:  # malformed multipart body
            return error_response(
                errors.InvalidRequest(f"expected a multipart/form-data body: {exc}")
            )
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise errors.InvalidRequest("the 'file' part is missing", details={"field": "file"})
            content_type = _text_field(form.get("content_type")) or file.content_type
            file_path = _text_field(form.get("file_path")) or file.filename
            if not content_type:
                raise errors.InvalidRequest(
                    "content_type is required", details={"field": "content_type"}
                )
            if not file_path:
                raise errors.InvalidRequest("file_path is required", details={"field": "file_path"})
            tags = _tags([_text_field(v) or "" for v in form.getlist("tags")])
            asset, created_new = await service.upload(
                _read_upload(file),
                content_type=content_type,
                file_path=file_path,
                expected_hash=_text_field(form.get("expected_hash")),
                tags=tags,
            )
            body = await present(request, service, asset, created_new)
        except errors.ComfyrunError as exc:
            return error_response(exc)
        finally:
            await form.close()
        return JSONResponse(body, status_code=201 if created_new else 200)

    @router.post("/from-hash", status_code=201)
    async def from_hash(request: Request) -> Response:
        service = get_service(request)
        try:
            try:
                payload = jsontext.loads(await request.body())
            except ValueError as exc:
                raise errors.InvalidRequest("the body must be JSON") from exc
            if not isinstance(payload, dict) or not isinstance(payload.get("hash"), str):
                raise errors.InvalidRequest(
                    "the body must be an object with a string 'hash'", details={"field": "hash"}
                )
            file_path = payload.get("file_path")
            tags = payload.get("tags") or []
            if file_path is not None and not isinstance(file_path, str):
                raise errors.InvalidRequest("file_path must be a string")
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise errors.InvalidRequest("tags must be a list of strings")
            asset = await service.from_hash(payload["hash"], file_path=file_path, tags=tags)
            return JSONResponse(await present(request, service, asset, False), status_code=201)
        except errors.ComfyrunError as exc:
            return error_response(exc)

    @router.head("/by-hash/{hash}")
    async def by_hash(request: Request, hash: str) -> Response:
        try:
            found = await get_service(request).exists(hash)
        except errors.ComfyrunError as exc:
            return Response(status_code=error_status(exc))
        return Response(status_code=200 if found else 404)

    @router.get("/{asset_id}")
    async def get_asset(request: Request, asset_id: str) -> Response:
        """An asset; a job output's id (`o<index>-<job id>`) is answered as an asset too."""
        service = get_service(request)
        try:
            asset = await service.get(asset_id)
            return JSONResponse(await present(request, service, asset))
        except errors.ComfyrunError as exc:
            return error_response(exc)

    @router.delete("/{asset_id}", status_code=204)
    async def delete_asset(request: Request, asset_id: str) -> Response:
        try:
            await get_service(request).delete(asset_id)
        except errors.ComfyrunError as exc:
            return error_response(exc)
        return Response(status_code=204)

    @router.get("/{asset_id}/content")
    async def content(request: Request, asset_id: str) -> Response:
        """The asset's bytes (Range requests work); job output ids are accepted too."""
        service = get_service(request)
        try:
            asset = await service.get(asset_id)
        except errors.ComfyrunError as exc:
            return error_response(exc)
        size = asset.size_bytes
        etag = entity_tag(asset.hash)
        headers = {"Accept-Ranges": "bytes", **content_safety(asset.content_type)}
        if etag is not None:
            headers["ETag"] = etag
            if not_modified(request.headers.get("if-none-match"), etag):
                return Response(status_code=304, headers=headers)
        if asset.file_path:
            name = asset.file_path.rsplit("/", 1)[-1]
            headers["Content-Disposition"] = content_disposition(name, "inline")
        wanted = None
        if range_applies(request.headers.get("if-range"), etag):
            wanted = parse_range(request.headers.get("range"), size)
        if wanted == "unsatisfiable":
            return JSONResponse(
                envelope("range_not_satisfiable", f"the asset has {size} bytes"),
                status_code=416,
                headers={"Content-Range": f"bytes */{size}"},
            )
        if not isinstance(wanted, tuple):
            headers["Content-Length"] = str(size)
            return StreamingResponse(
                service.open_content(asset),
                media_type=asset.content_type,
                headers=headers,
            )
        start, end = wanted
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        return StreamingResponse(
            service.open_content(asset, offset=start, length=end - start + 1),
            status_code=206,
            media_type=asset.content_type,
            headers=headers,
        )

    return router


def asset_json(
    asset: Asset,
    *,
    url: str,
    url_expires_at: float | None,
    created_new: bool | None = None,
) -> dict[str, Any]:
    """The v2 Asset object."""
    body: dict[str, Any] = {
        "id": asset.id,
        "hash": asset.hash,
        "size_bytes": asset.size_bytes,
        "content_type": asset.content_type,
        "file_path": asset.file_path,
        "tags": list(asset.tags),
        "created_at": _iso(asset.created_at),
        "url": url,
        "url_expires_at": _iso(url_expires_at) if url_expires_at is not None else None,
        "job_id": asset.job_id,
        "expires_at": None,
    }
    if created_new is not None:
        body["created_new"] = created_new
    return body


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_status(exc: errors.ComfyrunError) -> int:
    if isinstance(exc, errors.InputRejected) and _reason(exc) == "file_too_large":
        return 413
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: errors.ComfyrunError) -> JSONResponse:
    details = json.loads(json.dumps(exc.details, default=str)) if exc.details is not None else None
    return JSONResponse(
        envelope(exc.code, exc.message, details),
        status_code=error_status(exc),
        headers=retry_after(exc),
    )


def _reason(exc: errors.ComfyrunError) -> str | None:
    return exc.details.get("reason") if isinstance(exc.details, dict) else None


def _text_field(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _tags(values: list[str]) -> list[str]:
    """Tags as repeated fields (the SDK's form), a JSON array, or comma-separated text."""
    tags: list[str] = []
    for value in values:
        if value.startswith("["):
            try:
                parsed = jsontext.loads(value)
            except ValueError as exc:
                raise errors.InvalidRequest("tags is not a valid JSON array") from exc
            if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
                raise errors.InvalidRequest("tags must be a list of strings")
            tags.extend(parsed)
        else:
            tags.extend(part for part in value.split(",") if part.strip())
    return tags


async def _read_upload(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(UPLOAD_CHUNK):
        yield chunk


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


__all__ = ["asset_json", "assets_router"]
