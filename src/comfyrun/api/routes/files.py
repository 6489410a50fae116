"""Job output files: GET /api/v2/files/{key} (by storage key) and the asset-style download of
an output, GET /api/v2/assets/{output id}/content (what comfy-sdk's Output.to_file calls).

Output ids look like `o<index>-<job id>`; a Starlette path convertor matches only those, so
every other asset id falls through to the assets router mounted after this one.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from comfyrun.api.context import AppContext, get_ctx, public_base_url, require_auth
from comfyrun.api.errors import error_response
from comfyrun.api.schemas import iso, parse_output_id
from comfyrun.core.job import Output
from comfyrun.errors import NotFound

Ctx = Annotated[AppContext, Depends(get_ctx)]


class OutputIdConvertor(Convertor[str]):
    regex = r"o[0-9]+-[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette keeps convertors in one registry; registering the same name again is harmless.
register_url_convertor("outputid", OutputIdConvertor())

router = APIRouter(tags=["files"], dependencies=[Depends(require_auth)])

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Files up to this size are read whole and sent in one response body.
SMALL_BODY = 1 << 20


async def _find(ctx: AppContext, oid: str) -> tuple[str, Output]:
    parsed = parse_output_id(oid)
    if parsed is None:
        raise NotFound(f"output {oid} not found")
    job_id, index = parsed
    job = await ctx.service.job(job_id)
    if job is None or index >= len(job.outputs) or not job.outputs[index].storage_key:
        raise NotFound(f"output {oid} not found", details={"id": oid})
    return job_id, job.outputs[index]


# Out of the OpenAPI document: to it these are the assets router's /api/v2/assets/{asset_id}
# paths (one templated path, which accepts output ids too), not a second, clashing template.
@router.get("/api/v2/assets/{oid:outputid}", include_in_schema=False)
async def output_asset(oid: str, request: Request, ctx: Ctx) -> dict[str, object]:
    """An output described as an Asset (the spec: outputs are assets)."""
    job_id, out = await _find(ctx, oid)
    job = await ctx.store.get(job_id)
    created = job.finished_at if job and job.finished_at else time.time()
    return {
        "id": oid,
        "hash": out.hash,
        "size_bytes": out.size_bytes or 0,
        "content_type": out.content_type,
        "file_path": out.name,
        "created_at": iso(created),
        "url": f"{public_base_url(request)}/api/v2/assets/{oid}/content",
        "url_expires_at": iso(time.time() + 3600),
        "expires_at": iso(job.expires_at) if job and job.expires_at else None,
        "job_id": job_id,
    }


@router.get("/api/v2/assets/{oid:outputid}/content", include_in_schema=False)
async def output_content(
    oid: str, ctx: Ctx, range_header: Annotated[str | None, Header(alias="range")] = None
) -> Response:
    _, out = await _find(ctx, oid)
    assert out.storage_key is not None
    return await serve_key(ctx, out.storage_key, out.content_type, out.size_bytes, range_header)


@router.get("/api/v2/files/{key:path}")
async def file_content(
    key: str, ctx: Ctx, range_header: Annotated[str | None, Header(alias="range")] = None
) -> Response:
    if ".." in key.split("/") or key.startswith("/"):
        raise NotFound(f"file {key} not found")
    if ctx.principal.owner is not None and await ctx.store.get(key.split("/")[0]) is None:
        raise NotFound(f"file {key} not found", details={"key": key})  # not under its own job
    return await serve_key(ctx, key, None, None, range_header)


async def serve_key(
    ctx: AppContext,
    key: str,
    content_type: str | None,
    size: int | None,
    range_header: str | None,
) -> Response:
    """Stream one stored object; a remote storage redirects to its signed URL."""
    storage = ctx.storage
    if storage is None:
        raise NotFound("this server keeps no output files")
    if storage.scheme != "file":
        url, _ = await storage.url(key, expires_s=3600)
        if url:
            return RedirectResponse(url, status_code=302)
    found = await storage.read_small(key, -1 if range_header else SMALL_BODY)
    if found is None:
        raise NotFound(f"file {key} not found", details={"key": key})
    stat, body = found
    total = int(stat.size_bytes or size or 0)
    media = content_type or stat.content_type or "application/octet-stream"
    headers = {"Accept-Ranges": "bytes"}
    if body is not None:  # small: read in one trip, sent in one piece
        return Response(body, 200, headers=headers, media_type=media)
    span = parse_range(range_header, total)
    if span is not None:
        if span == "unsatisfiable":
            return error_response(
                416,
                "range_not_satisfiable",
                f"cannot serve {range_header} of {total} bytes",
                headers={"Content-Range": f"bytes */{total}"},
            )
        first, last = span
        headers["Content-Range"] = f"bytes {first}-{last}/{total}"
        headers["Content-Length"] = str(last - first + 1)
        chunks = storage.open(key, offset=first, length=last - first + 1)
        return StreamingResponse(chunks, 206, headers=headers, media_type=media)
    headers["Content-Length"] = str(total)
    return StreamingResponse(storage.open(key), 200, headers=headers, media_type=media)


def content_disposition(filename: str, kind: str | None = None) -> str:
    """A Content-Disposition for `filename` (`kind`: "inline", "attachment", or none, as
    ComfyUI's /view sends it): the name as it is where it is plain ASCII (byte for byte what
    ComfyUI sends), else RFC 6266's `filename*=UTF-8''…`, with an ASCII stand-in beside it for
    clients that know only `filename` (a header is Latin-1: a name in other scripts, a quote,
    a line break, cannot be written as it is)."""
    lead = f"{kind}; " if kind else ""
    if filename.isascii() and filename.isprintable() and not any(c in filename for c in '"\\'):
        return f'{lead}filename="{filename}"'
    stand_in = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"{lead}filename=\"{stand_in}\"; filename*=UTF-8''{quote(filename, safe='')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One byte range (inclusive start, end) from a Range header, "unsatisfiable", or None to
    serve everything (no header, a malformed one, or several ranges: RFC 9110 lets a server
    ignore those)."""
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


__all__ = ["content_disposition", "parse_range", "router", "serve_key"]
