"""GET /dashboard over ASGI: the page and the assets it references, with their content types;
the page is public while the API keeps its token; no file outside static/ is served."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings

from comfyrun.dashboard.routes import static_dir

ASSET_REF = re.compile(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"')
TYPES = {".js": "text/javascript", ".css": "text/css"}


def referenced_assets(page: str) -> list[str]:
    return ASSET_REF.findall(page)


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/"])
async def test_page_and_every_asset_it_references_are_served(tmp_path: Path, path: str) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        page = await client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<base href="/dashboard/">' in page.text
        assets = referenced_assets(page.text)
        assert sorted(assets) == ["app.js", "style.css"]
        for name in assets:
            r = await client.get(f"/dashboard/{name}")
            assert r.status_code == 200, name
            expected = TYPES[Path(name).suffix]
            assert r.headers["content-type"].split(";")[0] == expected
            assert r.headers["cache-control"] == "no-cache"
            assert r.content == (static_dir() / name).read_bytes()


async def test_head_requests_are_answered(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        for path in ("/dashboard", "/dashboard/app.js"):
            r = await client.head(path)
            assert r.status_code == 200, path
            assert r.content == b""


async def test_base_href_follows_the_root_path(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (app, _, _ctx):
        transport = httpx.ASGITransport(app=app, root_path="/ops")
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.get("/ops/dashboard")
    assert r.status_code == 200
    assert '<base href="/ops/dashboard/">' in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/missing.js",
        "/dashboard/index.html",  # the page is only served with its base filled in
        "/dashboard/..%2Froutes.py",
        "/dashboard/%2E%2E%2F__init__.py",
        "/dashboard/.hidden",
        "/dashboard/" + "a" * 300,  # longer than a file name may be (it was a 500)
    ],
)
async def test_unknown_files_are_a_json_404(tmp_path: Path, path: str) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_page_is_public_while_the_api_needs_the_token(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, api_keys=["s3cret"])
    async with asgi_app(settings) as (_, client, _ctx):
        assert (await client.get("/dashboard")).status_code == 200
        assert (await client.get("/dashboard/app.js")).status_code == 200
        assert (await client.get("/api/v2/stats")).status_code == 401
        authed = await client.get("/api/v2/stats", headers={"Authorization": "Bearer s3cret"})
        assert authed.status_code == 200


async def test_api_paths_the_page_calls_exist(tmp_path: Path) -> None:
    """Every API path app.js names answers (not 404/405) on a fresh app."""
    script = (static_dir() / "app.js").read_text(encoding="utf-8")
    called = set(re.findall(r'\bapi\([`"]([a-z]+)', script))
    assert {"stats", "backends", "jobs"} <= called
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        for name in sorted(called):
            r = await client.get(f"/api/v2/{name}")
            assert r.status_code == 200, (name, r.text)


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN, no web font: a server without internet serves a complete page."""
    for name in ("index.html", "app.js", "style.css"):
        text = (static_dir() / name).read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text, name


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_app_js_parses() -> None:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, "--check", str(static_dir() / "app.js")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
