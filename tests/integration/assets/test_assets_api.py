"""The /api/v2/assets routes over HTTP (ASGI), on a local storage and on S3."""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from comfy_low.transport import AsyncComfyLow
from tests.integration.assets.conftest import BASE, app_for
from tests.support.media import blake3_of, pattern

from comfyrun.assets import AssetService

DATA = pattern(10_000)


async def upload(api: httpx.AsyncClient, data: bytes = DATA, **fields: Any) -> httpx.Response:
    form = {"content_type": "image/png", "file_path": "photo.png", **fields}
    return await api.post(
        "/api/v2/assets", data=form, files={"file": ("photo.png", data, "image/png")}
    )


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    code = body["error"]["code"]
    assert isinstance(code, str)
    return code


async def test_upload_then_dedup(api: httpx.AsyncClient) -> None:
    first = await upload(api, tags=["input", "portrait"])
    assert first.status_code == 201
    body = first.json()
    assert body["hash"] == blake3_of(DATA) and body["size_bytes"] == len(DATA)
    assert body["created_new"] is True and body["file_path"] == "photo.png"
    assert body["tags"] == ["input", "portrait"] and body["content_type"] == "image/png"
    assert body["url"] == f"{BASE}/api/v2/assets/{body['id']}/content"
    assert datetime.fromisoformat(body["url_expires_at"]) > datetime.fromisoformat(
        body["created_at"]
    )
    again = await upload(api)
    assert again.status_code == 200
    assert again.json()["created_new"] is False and again.json()["id"] != body["id"]


async def test_expected_hash(api: httpx.AsyncClient) -> None:
    assert (await upload(api, expected_hash=blake3_of(DATA))).status_code == 201
    wrong = await upload(api, pattern(99), expected_hash=blake3_of(DATA))
    assert wrong.status_code == 409 and error_code(wrong) == "hash_mismatch"
    assert (await api.head(f"/api/v2/assets/by-hash/{blake3_of(pattern(99))}")).status_code == 404
    malformed = await upload(api, expected_hash="md5:abc")
    assert malformed.status_code == 422 and error_code(malformed) == "invalid_request"


async def test_bad_uploads_are_4xx_with_the_envelope(api: httpx.AsyncClient) -> None:
    no_file = await api.post(
        "/api/v2/assets", data={"content_type": "image/png", "file_path": "a.png"}
    )
    assert no_file.status_code == 422 and error_code(no_file) == "invalid_request"
    not_multipart = await api.post(
        "/api/v2/assets", content=b"raw", headers={"content-type": "image/png"}
    )
    assert not_multipart.status_code == 422
    traversal = await upload(api, file_path="../../etc/passwd")
    assert traversal.status_code == 422 and error_code(traversal) == "invalid_request"
    too_big = await upload(api, b"z" * 1_000_001)
    assert too_big.status_code == 413 and error_code(too_big) == "input_rejected"
    huge = await upload(api, b"z" * 1_100_000)  # refused on its Content-Length alone
    assert huge.status_code == 413 and error_code(huge) == "input_rejected"


async def test_from_hash_and_by_hash(api: httpx.AsyncClient) -> None:
    digest = blake3_of(DATA)
    assert (await api.head(f"/api/v2/assets/by-hash/{digest}")).status_code == 404
    missing = await api.post("/api/v2/assets/from-hash", json={"hash": digest})
    assert missing.status_code == 404 and error_code(missing) == "blob_not_found"
    await upload(api)
    assert (await api.head(f"/api/v2/assets/by-hash/{digest}")).status_code == 200
    minted = await api.post(
        "/api/v2/assets/from-hash", json={"hash": digest, "file_path": "copy.png"}
    )
    assert minted.status_code == 201
    assert minted.json()["file_path"] == "copy.png" and minted.json()["hash"] == digest
    assert (await api.head("/api/v2/assets/by-hash/not-a-hash")).status_code == 404
    for bad in (b"{", b"[]", b'{"hash": 5}', b'{"hash": "blake3:zz"}'):
        response = await api.post(
            "/api/v2/assets/from-hash", content=bad, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, bad


async def test_get_and_delete(api: httpx.AsyncClient) -> None:
    asset = (await upload(api)).json()
    got = await api.get(f"/api/v2/assets/{asset['id']}")
    assert got.status_code == 200 and got.json()["hash"] == asset["hash"]
    assert "created_new" not in got.json()
    content = await api.get(got.json()["url"])
    assert content.content == DATA
    assert (await api.delete(f"/api/v2/assets/{asset['id']}")).status_code == 204
    gone = await api.get(f"/api/v2/assets/{asset['id']}")
    assert gone.status_code == 404 and error_code(gone) == "not_found"
    assert (await api.get("/api/v2/assets/..%2F..%2Fx")).status_code == 404


async def test_content_of_an_asset_of_any_name(api: httpx.AsyncClient) -> None:
    """An asset named in other scripts is served, its name in RFC 6266's `filename*` (it was
    a 500: a header is Latin-1)."""
    asset_id = (await upload(api, file_path="фото.png")).json()["id"]
    content = await api.get(f"/api/v2/assets/{asset_id}/content")
    assert content.status_code == 200 and content.content == DATA
    disposition = content.headers["content-disposition"]
    assert disposition.startswith("inline; ") and quote("фото.png") in disposition


async def test_content_and_ranges(api: httpx.AsyncClient) -> None:
    asset_id = (await upload(api)).json()["id"]
    url = f"/api/v2/assets/{asset_id}/content"
    full = await api.get(url)
    assert full.status_code == 200 and full.content == DATA
    assert full.headers["content-type"] == "image/png"
    assert full.headers["content-length"] == str(len(DATA))
    assert full.headers["accept-ranges"] == "bytes"
    assert 'filename="photo.png"' in full.headers["content-disposition"]
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=9990-": (9990, 9999),
        "bytes=-5": (9995, 9999),
        "bytes=100-200000": (100, 9999),
        "bytes=0-0": (0, 0),
    }
    for header, (start, end) in cases.items():
        part = await api.get(url, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == DATA[start : end + 1], header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
        assert part.headers["content-length"] == str(end - start + 1)
    for header in ("bytes=10000-", "bytes=20000-20010", "bytes=-0"):
        unsatisfiable = await api.get(url, headers={"Range": header})
        assert unsatisfiable.status_code == 416, header
        assert unsatisfiable.headers["content-range"] == f"bytes */{len(DATA)}"
    for header in ("pages=1-2", "bytes=5-1", "bytes=0-1,5-6"):
        ignored = await api.get(url, headers={"Range": header})
        assert ignored.status_code == 200 and ignored.content == DATA, header
    missing = await api.get("/api/v2/assets/nope/content")
    assert missing.status_code == 404 and error_code(missing) == "not_found"


async def test_the_official_client_speaks_to_the_router(service: AssetService) -> None:
    transport = httpx.ASGITransport(app=app_for(service))
    async with httpx.AsyncClient(transport=transport) as http:
        low = AsyncComfyLow(BASE, client=http)
        digest = blake3_of(DATA)
        assert await low.head_asset_by_hash(digest) is False
        created = await low.post_assets(
            io.BytesIO(DATA), "image/png", "photo.png", expected_hash=digest, tags=["input"]
        )
        assert created.hash == digest and created.created_new is True
        assert await low.head_asset_by_hash(digest) is True
        minted = await low.asset_from_hash(digest, file_path="again.png")
        assert minted.id != created.id
        fetched = await low.get_asset(created.id)
        assert fetched.size_bytes == len(DATA) and str(fetched.url).endswith("/content")


async def test_on_s3_the_asset_url_is_a_presigned_link(s3_service: AssetService) -> None:
    transport = httpx.ASGITransport(app=app_for(s3_service))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as api:
        asset = (await upload(api)).json()
        assert not asset["url"].startswith(BASE)
        got = (await api.get(f"/api/v2/assets/{asset['id']}")).json()
        part = await api.get(
            f"/api/v2/assets/{asset['id']}/content", headers={"Range": "bytes=10-19"}
        )
        assert part.status_code == 206 and part.content == DATA[10:20]
    async with httpx.AsyncClient() as http:
        direct = await http.get(got["url"])
    assert direct.status_code == 200 and direct.content == DATA
    assert direct.headers["content-type"] == "image/png"


async def test_two_services_on_one_storage_agree(s3_service: AssetService) -> None:
    other = AssetService(s3_service.storage)
    transport = httpx.ASGITransport(app=app_for(s3_service))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as api:
        asset = (await upload(api)).json()
    seen = await other.get(asset["id"])
    assert seen.hash == asset["hash"]
    assert await other.exists(asset["hash"])
    assert json.loads(json.dumps(asset))["id"] == seen.id


@pytest.mark.parametrize("field", ["content_type", "file_path"])
async def test_form_fields_fall_back_to_the_file_part(api: httpx.AsyncClient, field: str) -> None:
    form = {"content_type": "image/png", "file_path": "photo.png"}
    del form[field]
    response = await api.post(
        "/api/v2/assets", data=form, files={"file": ("pic.png", DATA, "image/png")}
    )
    assert response.status_code == 201
    assert response.json()["content_type"] == "image/png"


async def test_content_validators_head_and_a_page_s_sandbox(api: httpx.AsyncClient) -> None:
    asset_id = (await upload(api)).json()["id"]
    url = f"/api/v2/assets/{asset_id}/content"
    full = await api.get(url)
    etag = full.headers["etag"]
    assert full.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in full.headers  # an image: shown as it is
    cached = await api.get(url, headers={"If-None-Match": f'"x", {etag}'})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    part = await api.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert part.status_code == 206 and part.content == DATA[:10]
    changed = await api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert changed.status_code == 200 and changed.content == DATA
    # an uploaded page is shown without running its scripts on the server's origin
    page = b"<html><script>fetch('/api/v2/keys')</script></html>"
    form = {"content_type": "text/html", "file_path": "page.html"}
    files = {"file": ("page.html", page, "text/html")}
    page_id = (await api.post("/api/v2/assets", data=form, files=files)).json()["id"]
    shown = await api.get(f"/api/v2/assets/{page_id}/content")
    assert shown.status_code == 200 and shown.content == page
    assert shown.headers["content-security-policy"] == "sandbox"
    assert shown.headers["x-content-type-options"] == "nosniff"
