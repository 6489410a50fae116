"""The OpenAPI document is valid, holds every dialect's routes, has no clashing templates; /docs
and /redoc work offline (their assets are served by comfyrun itself)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import APIRoute
from openapi_spec_validator import validate
from tests.support.api import asgi_app, memory_settings

from comfyrun.api.app import create_app
from comfyrun.config import Settings

#: One route of each dialect, at least.
EXPECTED = {
    "/api/v2/jobs": "post",
    "/api/v2/assets/{asset_id}": "get",
    "/prompt": "post",
    "/api/prompt": "post",
    "/history/{prompt_id}": "get",
    "/api/jobs": "get",
    "/run": "post",
    "/runsync": "post",
    "/v2/{endpoint_id}/runsync": "post",
    "/status/{job_id}": "get",
    "/api/v1/tasks": "post",
    "/stats": "get",
}


def _document(tmp_path: Path) -> dict[str, object]:
    app = create_app(Settings(data_dir=tmp_path, db_url="memory://", api_keys=[]))
    return app.openapi()


def test_the_document_is_valid_openapi(tmp_path: Path) -> None:
    validate(_document(tmp_path))  # raises on any error, duplicate operation ids included


def test_every_dialect_is_in_the_document(tmp_path: Path) -> None:
    paths = _document(tmp_path)["paths"]
    assert isinstance(paths, dict)
    for path, method in EXPECTED.items():
        assert method in paths.get(path, {}), path


def test_every_schema_route_is_documented_and_no_templates_clash(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, db_url="memory://", api_keys=[]))
    paths = app.openapi()["paths"]
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            assert route.path_format in paths, route.path_format
    shapes = [re.sub(r"\{[^}]*\}", "{}", p) for p in paths]
    assert len(shapes) == len(set(shapes)), sorted(s for s in shapes if shapes.count(s) > 1)


async def test_docs_and_redoc_use_only_local_assets(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        for page in ("/docs", "/redoc"):
            r = await client.get(page)
            assert r.status_code == 200
            urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
            urls += re.findall(r"""url: ?['"]([^'"]+)['"]""", r.text)
            assert urls, r.text
            for url in urls:
                assert url.startswith("/"), f"{page} loads {url} from elsewhere"
                asset = await client.get(url)
                assert asset.status_code == 200, url
                assert asset.content, url
        assert (await client.get("/openapi.json")).json()["paths"]
