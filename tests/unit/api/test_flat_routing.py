"""Routers are added to the app flat (api/routing.include): the same app as FastAPI's nested
include_router — the same routes, dependencies and OpenAPI document — matched in one pass."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from starlette.routing import Mount, Route, WebSocketRoute

from comfyrun.api.app import create_app
from comfyrun.api.routing import include, literal_prefix
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


def _probes(app: FastAPI) -> list[dict[str, Any]]:
    """Request scopes aimed at every route of the app and around them."""
    paths = {"/", "/nope", "/api", "/api/v2", ""}
    for route in app.routes:
        path = getattr(route, "path", "")
        for value in ("1", "a/b.png", "x y"):
            filled = path
            while "{" in filled:
                start = filled.index("{")
                filled = filled[:start] + value + filled[filled.index("}", start) + 1 :]
            paths |= {filled, filled + "/", filled.rstrip("/"), filled + "/more", filled[:-1]}
    scopes = []
    for path in sorted(paths):
        for root in ("", "/base"):
            full = root + path
            scopes.append({"type": "http", "method": "GET", "path": full, "root_path": root})
            scopes.append({"type": "http", "method": "POST", "path": full, "root_path": root})
            scopes.append({"type": "websocket", "path": full, "root_path": root})
        scopes.append({"type": "http", "method": "GET", "path": path, "root_path": "/other"})
    return scopes


def test_routes_turned_away_by_prefix_match_as_before(tmp_path: Any) -> None:
    """reject_by_prefix: every route of comfyrun's app answers every probe as its own matcher
    does, and most routes have the cheap check (those whose path starts with a literal)."""
    app = create_app(Settings(data_dir=tmp_path))
    checked = [r for r in app.routes if "matches" in vars(r)]
    assert len(checked) > 0.9 * len(app.routes)
    probes = _probes(app)
    assert len(probes) > 3000
    for route in app.routes:
        for scope in probes:
            ours = route.matches(dict(scope))
            theirs = type(route).matches(route, dict(scope))
            assert ours[0] == theirs[0], (getattr(route, "path", route), scope)
    assert literal_prefix(Route("/view", lambda r: None)) == "/view"
    assert literal_prefix(Route("/{name}", lambda r: None)) is None
    assert literal_prefix(Mount("", routes=[])) is None
