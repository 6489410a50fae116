"""An app with only the assets router, over a local-directory or S3 (moto server) storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from tests.support.media import moto_s3_server, new_bucket, s3_client

from comfyrun.api.routes.assets import assets_router
from comfyrun.assets import AssetService
from comfyrun.outputs.local import LocalOutputStorage
from comfyrun.outputs.s3 import S3OutputStorage

BASE = "http://testserver"


def app_for(service: AssetService) -> FastAPI:
    app = FastAPI()
    app.state.assets = service

    def get_service(request: Request) -> AssetService:
        found: AssetService = request.app.state.assets
        return found

    app.include_router(assets_router(get_service))
    return app


@pytest.fixture
def service(tmp_path: Path) -> AssetService:
    return AssetService(
        LocalOutputStorage(tmp_path / "storage"),
        max_upload_bytes=1_000_000,
        tmp_dir=tmp_path / "tmp",
    )


@pytest.fixture
async def api(service: AssetService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_for(service))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_service(s3_endpoint: str, tmp_path: Path) -> AssetService:
    client: Any = s3_client(s3_endpoint)
    storage = S3OutputStorage(new_bucket(client), "shared", client=client)
    return AssetService(storage, tmp_dir=tmp_path / "tmp")
