"""Serving stored content: HEAD wherever GET is answered, validators (ETag, If-None-Match,
If-Range), and the headers that keep a stored page from running on the server's origin."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings, store_output, tiny_workflow

from comfyrun.api.routes.files import content_safety, entity_tag, not_modified, range_applies
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event


def test_validators() -> None:
    tag = entity_tag("blake3:abc")
    assert tag == '"abc"' and entity_tag(None) is None and entity_tag("") is None
    assert not_modified('"abc"', '"abc"') and not_modified('W/"abc"', '"abc"')
    assert not_modified('"x", "abc"', '"abc"') and not_modified("*", '"abc"')
    assert not not_modified('"x"', '"abc"') and not not_modified(None, '"abc"')
    assert range_applies(None, None) and range_applies('"abc"', '"abc"')
    assert not range_applies('"x"', '"abc"') and not range_applies('W/"abc"', '"abc"')
    assert not range_applies("Wed, 21 Oct 2015 07:28:00 GMT", '"abc"')  # no Last-Modified sent
    assert not range_applies('"abc"', None)


@pytest.mark.parametrize(
    ("media", "sandboxed"),
    [
        ("image/png", False),
        ("video/mp4", False),
        ("audio/wav", False),
        ("text/plain; charset=utf-8", False),
        ("application/json", False),
        ("application/octet-stream", False),
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("image/svg+xml", True),
        ("application/xhtml+xml", True),
        ("application/xml", True),
        ("text/javascript", True),
        ("application/x-unknown", True),
    ],
)
def test_what_a_browser_would_run_is_sandboxed(media: str, sandboxed: bool) -> None:
    headers = content_safety(media)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (headers.get("Content-Security-Policy") == "sandbox") is sandboxed


async def _job_with_output(
    client: Any, ctx: Any, payload: bytes, name: str, content_type: str
) -> tuple[dict[str, Any], str]:
    job = (await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})).json()
    await ctx.store.claim("w", 30)
    out = await store_output(ctx, job["id"], name, payload, content_type)
    await ctx.store.transition(job["id"], Event.SUCCEED, expect=JobStatus.RUNNING)
    done = (await client.get(f"/api/v2/jobs/{job['id']}")).json()
    assert out.storage_key is not None
    return done, out.storage_key


@pytest.mark.parametrize("size", [100, 3 << 20], ids=["small", "streamed"])
async def test_an_output_answers_head_and_its_validators(tmp_path: Path, size: int) -> None:
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        job, key = await _job_with_output(client, ctx, payload, "t_00001_.png", "image/png")
        (out,) = job["outputs"]
        for url in (out["url"], f"/api/v2/files/{key}"):
            got = await client.get(url)
            etag = got.headers["etag"]
            assert got.status_code == 200 and got.content == payload
            assert etag == f'"{out["hash"].removeprefix("blake3:")}"'
            assert got.headers["x-content-type-options"] == "nosniff"
            assert "content-security-policy" not in got.headers
            head = await client.head(url)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(len(payload))
            assert head.headers["etag"] == etag and head.headers["content-type"] == "image/png"
            again = await client.get(url, headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == etag
            other = await client.get(url, headers={"If-None-Match": '"other"'})
            assert other.status_code == 200 and other.content == payload
            part = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
            assert part.status_code == 206 and part.content == payload[:10]
            # the file changed since the client's copy: the whole, not a piece of the new one
            stale = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
            assert stale.status_code == 200 and stale.content == payload


async def test_a_page_among_the_outputs_runs_nothing_on_the_server_s_origin(
    tmp_path: Path,
) -> None:
    page = b"<html><script>fetch('/api/v2/keys')</script></html>"
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        job, key = await _job_with_output(client, ctx, page, "page.html", "text/html")
        (out,) = job["outputs"]
        for url in (out["url"], f"/api/v2/files/{key}"):
            got = await client.get(url)
            assert got.status_code == 200 and got.content == page
            assert got.headers["content-security-policy"] == "sandbox"
            assert got.headers["x-content-type-options"] == "nosniff"
        # ComfyUI's /view sends such a file to be downloaded, not shown
        params = {"filename": "page.html", "subfolder": f"{job['id']}/2", "type": "output"}
        view = await client.get("/view", params=params)
        assert view.status_code == 200 and view.content == page
        assert view.headers["content-type"] == "application/octet-stream"


async def test_comfyui_view_answers_head_ranges_and_validators_as_comfyui(
    tmp_path: Path,
) -> None:
    """ComfyUI's /view is aiohttp's FileResponse: HEAD, one Range (a video's seeking in the
    editor), If-None-Match; comfyrun's answered GET alone and sent the whole file each time."""
    payload = bytes(range(256)) * 8
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        job, _ = await _job_with_output(client, ctx, payload, "clip.mp4", "video/mp4")
        params = {"filename": "clip.mp4", "subfolder": f"{job['id']}/2", "type": "output"}
        whole = await client.get("/view", params=params)
        assert whole.status_code == 200 and whole.content == payload
        assert whole.headers["content-type"] == "video/mp4"
        assert whole.headers["accept-ranges"] == "bytes"
        head = await client.head("/view", params=params)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(payload))
        part = await client.get("/view", params=params, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == payload[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(payload)}"
        assert part.headers["content-disposition"] == 'filename="clip.mp4"'
        etag = whole.headers["etag"]
        cached = await client.get("/view", params=params, headers={"If-None-Match": etag})
        assert cached.status_code == 304
        past = await client.get("/view", params=params, headers={"Range": "bytes=99999-"})
        assert past.status_code == 416 and past.json()["error"]["type"] == "range_not_satisfiable"
        assert past.headers["content-range"] == f"bytes */{len(payload)}"


async def test_every_get_route_answers_head(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        job = (await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})).json()
        files = {"file": ("a.png", b"\x89PNG" + bytes(99), "image/png")}
        form = {"content_type": "image/png", "file_path": "a.png"}
        asset = (await client.post("/api/v2/assets", data=form, files=files)).json()
        for url in (
            f"/api/v2/assets/{asset['id']}/content",
            f"/api/v2/assets/{asset['id']}",
            f"/api/v2/jobs/{job['id']}",
            "/api/v2/jobs",
            "/api/v2/health",
            "/queue",
            "/history",
            "/object_info",
            "/system_stats",
            "/metrics",
        ):
            got, head = await client.get(url), await client.head(url)
            assert head.status_code == got.status_code, url
            assert head.content == b"", url
            assert head.headers["content-type"] == got.headers["content-type"], url
            if "assets" in url:  # (the others' bodies may change between the two)
                assert head.headers["content-length"] == got.headers["content-length"], url
        # a POST-only route still refuses HEAD
        assert (await client.head("/prompt_sync")).status_code == 405
        # the OpenAPI document shows no implied HEAD (nor a repeated operation id)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            doc = (await client.get("/openapi.json")).json()
        heads = [path for path, item in doc["paths"].items() if "head" in item]
        assert heads == ["/api/v2/assets/by-hash/{hash}"]
        assert "get" in doc["paths"]["/api/v2/jobs/{job_id}"]
