"""Job output files: GET /api/v2/files/{key} (by storage key) and the asset-style download of
an output, GET /api/v2/assets/{output id}/content (what comfy-sdk's Output.to_file calls).

Output ids look like `o<index>-<job id>`; a Starlette path convertor matches only those, so
every other asset id falls through to the assets router mounted after this one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from comfyrun.api.context import AppContext, get_ctx, public_base_url, require_auth
from comfyrun.api.errors import error_response
from comfyrun.api.wire import iso, parse_output_id
from comfyrun.core.job import Output
from comfyrun.errors import NotFound
from comfyrun.outputs.keys import job_segment

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

#: Types a browser shows without running anything of the file's own: every other type of
#: stored content (HTML, SVG, XML, scripts, what a node or an upload may name) is served
#: with `Content-Security-Policy: sandbox`, so that a page in it runs no script on this
#: server's origin, where the dashboard, the editor and their credentials live.
PASSIVE_TYPES = frozenset(
    {"application/octet-stream", "application/json", "application/pdf", "text/plain"}
)
PASSIVE_PREFIXES = ("image/", "video/", "audio/", "font/", "model/")


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
async def output_content(oid: str, request: Request, ctx: Ctx) -> Response:
    _, out = await _find(ctx, oid)
    assert out.storage_key is not None
    return await serve_key(ctx, out.storage_key, out.content_type, out.size_bytes, request.headers)


@router.get("/api/v2/files/{key:path}")
async def file_content(key: str, request: Request, ctx: Ctx) -> Response:
    if ".." in key.split("/") or key.startswith("/"):
        raise NotFound(f"file {key} not found")
    if not await readable_key(ctx, key):
        raise NotFound(f"file {key} not found", details={"key": key})  # not under its own job
    return await serve_key(ctx, key, None, None, request.headers)


async def readable_key(ctx: AppContext, key: str) -> bool:
    """Whether the caller may read stored object `key` by its name: an admin any; an API
    key only one in the folder of a job of its own (the folder its job's id names, so never
    the assets' or the uploads' namespace, whatever id a client chose for its job)."""
    if ctx.principal.owner is None:
        return True
    folder = key.split("/")[0]
    job = await ctx.store.get(folder)
    return job is not None and job_segment(job.id) == folder


async def serve_key(
    ctx: AppContext,
    key: str,
    content_type: str | None,
    size: int | None,
    request_headers: Mapping[str, str],
) -> Response:
    """Stream one stored object; a remote storage redirects to its signed URL. The request's
    Range (one range, RFC 9110's If-Range kept), If-None-Match (304) are answered, a HEAD with
    the headers alone."""
    storage = ctx.storage
    if storage is None:
        raise NotFound("this server keeps no output files")
    if storage.scheme != "file":
        url, _ = await storage.url(key, expires_s=3600)
        if url:
            return RedirectResponse(url, status_code=302)
    range_header = request_headers.get("range")
    found = await storage.read_small(key, -1 if range_header else SMALL_BODY)
    if found is None:
        raise NotFound(f"file {key} not found", details={"key": key})
    stat, body = found
    total = int(stat.size_bytes or size or 0)
    media = content_type or stat.content_type or "application/octet-stream"
    etag = entity_tag(stat.hash)
    headers = {"Accept-Ranges": "bytes", **content_safety(media)}
    if etag is not None:
        headers["ETag"] = etag
        if not_modified(request_headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
    if not range_applies(request_headers.get("if-range"), etag):
        range_header = None
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


def entity_tag(hash: str | None) -> str | None:
    """The ETag of stored content: its hash (content-addressed, so a strong validator)."""
    if not hash:
        return None
    return f'"{hash.split(":", 1)[-1]}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names `etag` (weak comparison, RFC 9110 13.1.2): a 304 then."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def range_applies(if_range: str | None, etag: str | None) -> bool:
    """Whether a Range is to be served (RFC 9110 13.1.5): with no If-Range, or one naming the
    content's strong ETag; a date (no Last-Modified is sent) or another tag: the whole."""
    if not if_range:
        return True
    return etag is not None and if_range.strip() == etag


def content_safety(media_type: str) -> dict[str, str]:
    """The headers every response of stored content carries: no sniffing of another type,
    and a sandbox for a type a browser would run (PASSIVE_TYPES)."""
    base = media_type.split(";", 1)[0].strip().lower()
    headers = {"X-Content-Type-Options": "nosniff"}
    passive = base in PASSIVE_TYPES or base.startswith(PASSIVE_PREFIXES)
    if not passive or base == "image/svg+xml":  # (an SVG document runs its scripts)
        headers["Content-Security-Policy"] = "sandbox"
    return headers


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


__all__ = [
    "content_disposition",
    "content_safety",
    "entity_tag",
    "not_modified",
    "parse_range",
    "range_applies",
    "readable_key",
    "router",
    "serve_key",
]
