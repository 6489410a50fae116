"""Routers added to the app flat, matched in one pass.

FastAPI (0.16x) keeps each `include_router` as one nested entry: a request scans every nested
router before its own twice (once to match, once to handle) and, per router, walks all routers
again to check that their routes did not change. With comfyrun's ~40 routers and ~160 routes
that was about a fifth of a simple request's CPU (a GET of a job: ~0.3 ms routing alone on
these cores). An APIRouter's routes already carry its prefix, tags and dependencies (it applies
them when a route is declared), so adding the routes themselves to the app, in order, is the
same app — the same matching order, the same OpenAPI document — matched by one scan of plain
regexes, as FastAPI did before it nested them.

`reject_by_prefix` makes that scan cheap for the routes a request cannot match: a route's path
up to its first parameter is literal, so a request path that does not start with it is turned
away by one string comparison instead of a regex and FastAPI's scope building (the ComfyUI
face's /view was matched against ~50 routes before its own, /ws against ~60).

`index_by_segment` goes further: a request is matched only against the routes that can match a
path with its first segment (and those that can match any), kept in their order. The scan and
everything FastAPI does with its outcome (404, 405, slash redirects) are FastAPI's own, run by
a copy of the app's router that holds just those routes.

`answer_head` has every GET route answer HEAD too, as ComfyUI's (aiohttp's `add_get`) and
Starlette's own routes do, and HTTP wants (RFC 9110 9.3.2: a server that answers GET answers
HEAD): FastAPI's routes do not, a HEAD of an output, of /view, of a job was a 405. The headers
are GET's; the body is not sent (uvicorn), a streamed one not even read (Starlette).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match


def include(app: FastAPI, router: APIRouter) -> None:
    """Add `router`'s routes to `app`, after the ones it has (where `include_router` would).

    Only for a router included as it is (no prefix, tags or dependencies added at inclusion:
    give those to the APIRouter itself) and without startup/shutdown handlers of its own."""
    if router.on_startup or router.on_shutdown:
        raise ValueError("a router with startup/shutdown handlers must be included nested")
    app.router.routes.extend(router.routes)


def literal_prefix(route: BaseRoute) -> str | None:
    """The literal start every path this route matches begins with (None: no useful one)."""
    path = getattr(route, "path", None)
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    prefix = path.split("{", 1)[0]
    return prefix if len(prefix) > 1 else None


def reject_by_prefix(app: FastAPI) -> None:
    """Give each of the app's routes with a literal prefix a matcher that says NONE to a
    request path without it before trying the route's own (the same answers, cheaper)."""
    for route in app.router.routes:
        prefix = literal_prefix(route)
        if prefix is not None and "matches" not in vars(route):
            route.matches = _prefix_checked(route.matches, prefix)  # type: ignore[method-assign,assignment]


def _prefix_checked(
    matches: Callable[[Any], tuple[Match, Any]], prefix: str
) -> Callable[[Any], tuple[Match, Any]]:
    def checked(scope: Any) -> tuple[Match, Any]:
        if scope["type"] != "lifespan" and not get_route_path(scope).startswith(prefix):
            return Match.NONE, {}
        return matches(scope)

    return checked


def first_segment(route: BaseRoute) -> str | None:
    """The first segment of every path this route matches (None: it may match any)."""
    prefix = literal_prefix(route)
    if prefix is None:
        return None
    rest = prefix[1:]
    if "/" in rest:
        return rest.split("/", 1)[0]
    path: str = getattr(route, "path", "")
    return rest if "{" not in path else None  # "/name{param}" may go on in its first segment


class SegmentIndex:
    """The app router's entry point: each request is matched by a view of the router that
    holds only the routes that can match its path's first segment, in their order."""

    def __init__(self, router: APIRouter, full: Any) -> None:
        self.router = router
        self.full = full
        self._built_for: tuple[int, int] | None = None
        self._views: dict[str, APIRouter] = {}
        self._any: APIRouter = router

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            path = get_route_path(scope)
            if path.startswith("/"):
                view = self.view(path[1:].split("/", 1)[0])
                if "router" not in scope:
                    scope["router"] = self.router
                await view.app(scope, receive, send)
                return
        await self.full(scope, receive, send)

    def view(self, segment: str) -> APIRouter:
        routes = self.router.routes
        if self._built_for != (id(routes), len(routes)):
            self._build(routes)
        return self._views.get(segment, self._any)

    def _build(self, routes: list[BaseRoute]) -> None:
        keyed = [(r, first_segment(r)) for r in routes]
        views: dict[str, APIRouter] = {}
        for segment in {k for _, k in keyed if k is not None}:
            views[segment] = self._copy([r for r, k in keyed if k in (segment, None)])
        self._any = self._copy([r for r, k in keyed if k is None])
        self._views = views
        self._built_for = (id(routes), len(routes))

    def _copy(self, routes: list[BaseRoute]) -> APIRouter:
        view = copy.copy(self.router)
        view.routes = routes
        return view


#: The mark of a route `answer_head` gave HEAD (not its own).
IMPLIED_HEAD = "comfyrun_implied_head"


def answer_head(app: FastAPI) -> None:
    """Every GET route of the app answers HEAD too; the OpenAPI document stays as it was (an
    implied HEAD is no operation of its own there, and would repeat GET's operation id)."""
    implied: list[set[str]] = []
    for route in app.router.routes:
        if not isinstance(route, APIRoute) or not route.methods or "GET" not in route.methods:
            continue
        if vars(route).get(IMPLIED_HEAD) or "HEAD" not in route.methods:
            vars(route)[IMPLIED_HEAD] = True  # (a module's router's routes serve every app)
            route.methods.add("HEAD")
            implied.append(route.methods)
    document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        for methods in implied:
            methods.discard("HEAD")
        try:
            return document()
        finally:
            for methods in implied:
                methods.add("HEAD")

    app.openapi = openapi  # type: ignore[method-assign]


def index_by_segment(app: FastAPI) -> None:
    """Match the app's requests through a SegmentIndex (unless its router has middleware of
    its own, which would be skipped)."""
    router = app.router
    if router.middleware_stack == router.app:
        router.middleware_stack = SegmentIndex(router, router.middleware_stack)


__all__ = [
    "SegmentIndex",
    "answer_head",
    "first_segment",
    "include",
    "index_by_segment",
    "literal_prefix",
    "reject_by_prefix",
]
