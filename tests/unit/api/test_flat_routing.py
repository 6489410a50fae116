"""Routers are added to the app flat (api/routing.include): the same app as FastAPI's nested
include_router — the same routes, dependencies and OpenAPI document — matched in one pass."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.routing import Match, Mount, Route, WebSocketRoute

from comfyrun.api.app import create_app
from comfyrun.api.routing import (
    SegmentIndex,
    first_segment,
    include,
    index_by_segment,
    literal_prefix,
)
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
        for value in ("1", "a/b.png"):
            filled = path
            while "{" in filled:
                start = filled.index("{")
                filled = filled[:start] + value + filled[filled.index("}", start) + 1 :]
            paths |= {filled, filled + "/", filled + "/more", filled[:-1]}
    scopes: list[dict[str, Any]] = []
    for path in sorted(paths):
        scopes += [
            {"type": "http", "method": "GET", "path": path, "root_path": ""},
            {"type": "http", "method": "POST", "path": path, "root_path": ""},
            {"type": "websocket", "path": path, "root_path": ""},
            {"type": "http", "method": "GET", "path": "/base" + path, "root_path": "/base"},
        ]
    return scopes


def test_routes_turned_away_by_prefix_match_as_before(tmp_path: Any) -> None:
    """reject_by_prefix: every route of comfyrun's app answers every probe as its own matcher
    does, and most routes have the cheap check (those whose path starts with a literal)."""
    app = create_app(Settings(data_dir=tmp_path))
    checked = [r for r in app.routes if "matches" in vars(r)]
    assert len(checked) > 0.9 * len(app.routes)
    probes = _probes(app)
    assert len(probes) > 2000
    for route in app.routes:
        for scope in probes:
            ours = route.matches(dict(scope))
            theirs = type(route).matches(route, dict(scope))
            assert ours[0] == theirs[0], (getattr(route, "path", route), scope)
    assert literal_prefix(Route("/view", lambda r: None)) == "/view"
    assert literal_prefix(Route("/{name}", lambda r: None)) is None
    assert literal_prefix(Mount("", routes=[])) is None


def _chosen(routes: list[Any], scope: dict[str, Any]) -> tuple[Any, Any]:
    """Starlette's pick: the first full match, else the first partial one; and the first
    route that matches at all (what a slash redirect looks for)."""
    full = partial = anything = None
    for route in routes:
        match, _ = route.matches(dict(scope))
        if match is Match.FULL and full is None:
            full = route
        if match is Match.PARTIAL and partial is None:
            partial = route
        if match is not Match.NONE and anything is None:
            anything = route
    return (full or partial), anything


def _index_agrees(app: FastAPI) -> int:
    """Asserts that for every probe the view of the routes for its first segment picks the
    same route as all the routes in order would; returns how many probes were narrowed."""
    index = app.router.middleware_stack
    assert isinstance(index, SegmentIndex)
    routes = list(app.router.routes)
    narrowed = 0
    for scope in _probes(app):
        path = get_route_path(scope)
        if not path.startswith("/"):
            continue
        view = index.view(path[1:].split("/", 1)[0])
        assert view.routes == [r for r in routes if r in view.routes]  # the same order
        narrowed += len(view.routes) < len(routes) / 2
        assert _chosen(view.routes, scope) == _chosen(routes, scope), scope
    return narrowed


def test_the_segment_index_picks_the_route_the_whole_list_would(tmp_path: Any) -> None:
    """index_by_segment, on comfyrun's app and on one with routes that may match any first
    segment: the same route is picked (and found to redirect to) as without the index."""
    assert _index_agrees(create_app(Settings(data_dir=tmp_path))) > 1000
    odd = FastAPI()

    async def ok() -> dict[str, Any]:
        return {}

    for path in ("/a/{x}", "/v{n}/x", "/{name}", "/b", "/a/{x}/c", "/{name}/d"):
        odd.add_api_route(path, ok, methods=["GET"])
    odd.mount("/static", Starlette())
    odd.add_api_route("/{rest:path}", ok, methods=["POST"])
    index_by_segment(odd)
    assert _index_agrees(odd) > 0
    assert first_segment(Route("/view", lambda r: None)) == "view"
    assert first_segment(Route("/api/v2/jobs/{job_id}", lambda r: None)) == "api"
    assert first_segment(Route("/v{version}/x", lambda r: None)) is None
    assert first_segment(Mount("/static", routes=[])) == "static"


async def test_requests_through_the_segment_index_are_answered_as_without_it(
    tmp_path: Any,
) -> None:
    """The same app with and without the index: the same statuses, redirects included."""
    indexed = create_app(Settings(data_dir=tmp_path / "a"))
    plain = create_app(Settings(data_dir=tmp_path / "b"))
    plain.router.middleware_stack = plain.router.app
    requests = [
        ("GET", "/api/v2/health"),
        ("GET", "/api/v2/health/"),
        ("GET", "/api/v2/jobs/nope"),
        ("DELETE", "/api/v2/stats"),
        ("GET", "/history/x"),
        ("POST", "/view"),
        ("GET", "/nothing/here"),
        ("GET", "/"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ]

    async def answers(app: FastAPI) -> list[tuple[int, str | None]]:
        out = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for method, path in requests:
                    r = await client.request(method, path)
                    out.append((r.status_code, r.headers.get("location")))
        return out

    assert await answers(indexed) == await answers(plain)
