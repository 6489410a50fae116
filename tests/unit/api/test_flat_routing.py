"""Routers are added to the app flat (api/routing.include): the same app as FastAPI's nested
include_router — the same routes, dependencies and OpenAPI document — matched in one pass."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from starlette.routing import Mount, Route, WebSocketRoute

from comfyrun.api.app import create_app
from comfyrun.api.routing import include
from comfyrun.config import Settings


def _needs_token(request: Request) -> None:
    if request.headers.get("x-token") != "t":
        raise HTTPException(401, "no token")


def _router() -> APIRouter:
    router = APIRouter(prefix="/things", tags=["things"], dependencies=[Depends(_needs_token)])

    @router.get("/{thing_id}")
    async def get_thing(thing_id: int) -> dict[str, Any]:
        return {"id": thing_id}

    @router.post("", status_code=201)
    async def make_thing() -> dict[str, Any]:
        return {"made": True}

    return router


def _app(flat: bool) -> FastAPI:
    app = FastAPI()
    for router in (_router(),):
        if flat:
            include(app, router)
        else:
            app.include_router(router)
    return app


async def _answers(app: FastAPI) -> list[tuple[int, Any]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        replies = [
            await client.get("/things/7", headers={"x-token": "t"}),
            await client.get("/things/7"),  # the router's dependency still runs
            await client.get("/things/x", headers={"x-token": "t"}),  # path validation
            await client.post("/things", headers={"x-token": "t"}),
            await client.delete("/things/7", headers={"x-token": "t"}),  # 405
            await client.get("/nothing"),
        ]
    return [(r.status_code, r.json()) for r in replies]


async def test_a_flat_router_answers_as_the_nested_one() -> None:
    flat, nested = _app(True), _app(False)
    assert await _answers(flat) == await _answers(nested)
    assert flat.openapi() == nested.openapi()
    assert (await _answers(flat))[:2] == [(200, {"id": 7}), (401, {"detail": "no token"})]


def test_a_router_with_lifecycle_handlers_is_refused() -> None:
    router = APIRouter(on_startup=[lambda: None])
    with pytest.raises(ValueError, match="startup"):
        include(FastAPI(), router)


def test_the_app_holds_its_routes_flat(tmp_path: Any) -> None:
    """Every entry of comfyrun's app is a route matched by its own path, none a nested router
    (which FastAPI scans twice a request, walking every router again)."""
    app = create_app(Settings(data_dir=tmp_path))
    kinds = (Route, WebSocketRoute, Mount)
    nested = [type(r).__name__ for r in app.routes if not isinstance(r, kinds)]
    assert nested == []
    paths = {r.path for r in app.routes if isinstance(r, Route)}
    assert {"/api/v2/jobs", "/prompt", "/history/{prompt_id}", "/health"} <= paths
