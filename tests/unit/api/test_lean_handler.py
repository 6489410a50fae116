"""The lean request handler (api/lean.py) answers every request as FastAPI's own handler does:
the same status, body and headers, for good requests and bad ones alike, on routes shaped as
comfyrun's are (a router dependency, a context dependency, a JSON body model, path, query,
header and cookie parameters, the Response parameter, a response model, a returned Response)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Response as FastAPIResponse
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import AliasChoices, BaseModel, Field

from comfyrun.api import lean
from comfyrun.api.app import create_app
from comfyrun.api.errors import install_error_handlers
from comfyrun.api.routing import include
from comfyrun.config import Settings
from comfyrun.core.job import JobStatus

calls: list[str] = []


async def needs_token(request: Request) -> None:
    calls.append("token")
    if request.headers.get("x-token") != "t":
        raise HTTPException(401, {"code": "unauthorized", "message": "no token"})


async def context(request: Request) -> dict[str, str]:
    calls.append("context")
    return {"method": request.method}


async def no_args() -> int:
    return 7


Ctx = Annotated[dict[str, str], Depends(context)]


class Thing(BaseModel):
    name: str = Field(min_length=1)
    size: int = 1
    tags: list[str] = []


class ThingOut(BaseModel):
    name: str
    size: int
    secret: str | None = None


def router() -> APIRouter:
    r = APIRouter(prefix="/things", tags=["things"], dependencies=[Depends(needs_token)])

    @r.post("", status_code=201, response_model=ThingOut, response_model_exclude_none=True)
    async def make(
        body: Thing,
        request: Request,
        response: FastAPIResponse,
        ctx: Ctx,
        again: Ctx,
        idempotency_key: Annotated[str | None, Header(max_length=8)] = None,
        wait: Annotated[float | None, Query(ge=0)] = None,
    ) -> ThingOut:
        if idempotency_key:
            response.headers["Idempotency-Replayed"] = "true"
        if wait:
            response.status_code = 202
        assert ctx is again  # one call a request
        return ThingOut(name=f"{body.name}:{ctx['method']}:{request.url.path}", size=body.size)

    @r.get("/{thing_id}")
    async def get(
        thing_id: int,
        seven: Annotated[int, Depends(no_args)],
        flavor: Annotated[str | None, Cookie()] = None,
        fields: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(alias="n", ge=1)] = 5,
        x_mode: Annotated[str | None, Header()] = None,
        x_ids: Annotated[list[int], Header()] = [],  # noqa: B006 - FastAPI copies defaults
        sort: Annotated[str | None, Query(validation_alias=AliasChoices("sort", "order"))] = None,
    ) -> dict[str, Any]:
        return {
            "id": thing_id,
            "seven": seven,
            "flavor": flavor,
            "fields": fields,
            "limit": limit,
            "mode": x_mode,
            "ids": x_ids,
            "sort": sort,
        }

    @r.get("/{thing_id}/raw")
    async def raw(thing_id: int) -> PlainTextResponse:
        return PlainTextResponse(f"raw {thing_id}", headers={"x-raw": "1"})

    @r.delete("/{thing_id}", status_code=204)
    async def remove(thing_id: int) -> None:
        if thing_id == 0:
            raise HTTPException(404, "no such thing")

    @r.put("/{thing_id}", response_model=ThingOut)
    async def bad_reply(thing_id: int) -> Any:
        return {"name": "x"}  # misses `size`: a response validation error

    @r.get("/{thing_id}/plain")
    async def plain(thing_id: int) -> dict[str, Any]:
        return {
            "status": JobStatus.QUEUED,
            "pair": (thing_id, 2),
            "nested": [{"x": 1.5, "text": "é ☃", "none": None, "yes": True}],
            7: "an int key",
        }

    @r.get("/{thing_id}/when")
    async def when(thing_id: int) -> dict[str, Any]:  # not JSON's own types
        return {"at": datetime.datetime(2026, 1, 2, 3, 4, 5), "tags": {"one"}}

    @r.get("/{thing_id}/nan")
    async def nan(thing_id: int) -> dict[str, Any]:  # JSON has no NaN: a 500 either way
        return {"x": float("nan")}

    @r.get("/{thing_id}/stream")
    async def stream(thing_id: int) -> StreamingResponse:
        async def chunks() -> Any:
            yield b"a"
            yield b"b"

        return StreamingResponse(chunks())

    return r


def app(leaned: bool) -> FastAPI:
    a = FastAPI()
    install_error_handlers(a)
    include(a, router())
    if leaned:
        assert lean.leanify(a) == 9
    return a


TOKEN = {"x-token": "t"}
JSON_TYPE = {"content-type": "application/json"}
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/things", {"json": {"name": "a", "size": 2}, "headers": TOKEN}),
    (
        "POST",
        "/things?wait=1",
        {"json": {"name": "a"}, "headers": {**TOKEN, "idempotency-key": "k"}},
    ),
    ("POST", "/things", {"json": {"name": "a"}}),  # the router's dependency refuses
    ("POST", "/things", {"json": {"name": ""}, "headers": TOKEN}),  # body validation
    ("POST", "/things", {"json": {"size": "big"}, "headers": TOKEN}),
    ("POST", "/things", {"json": [1, 2], "headers": TOKEN}),
    ("POST", "/things", {"headers": TOKEN}),  # no body
    (
        "POST",
        "/things",
        {"content": b"{not json", "headers": {**TOKEN, "content-type": "application/json"}},
    ),
    ("POST", "/things", {"content": b'{"name": "a"}', "headers": TOKEN}),  # no content type
    # bodies orjson reads otherwise than json, or not at all (comfyrun.jsontext): the same
    # answers as FastAPI's json.loads gives them
    *(
        ("POST", "/things", {"content": body, "headers": {**TOKEN, **JSON_TYPE}})
        for body in (
            b'{"name": "a", "size": 123456789012345678901234567890}',
            b'{"name": "a", "size": NaN}',
            b'{"name": "\\ud800"}',
            b'{"name": "\xff"}',
            '{"name": "a"}'.encode("utf-16"),
            b'{"name": "a"} trailing',
            b'{"name": "a",}',
        )
    ),
    (
        "POST",
        "/things",
        {"content": b'{"name": "a"}', "headers": {**TOKEN, "content-type": "text/plain"}},
    ),
    (
        "POST",
        "/things",
        {
            "content": b'{"name": "a"}',
            "headers": {**TOKEN, "content-type": "Application/JSON; charset=utf-8"},
        },
    ),
    (
        "POST",
        "/things",
        {
            "content": b'{"name": "a"}',
            "headers": {**TOKEN, "content-type": "application/vnd.x+json"},
        },
    ),
    (
        "POST",
        "/things",
        {"content": b'{"name": "a"}', "headers": {**TOKEN, "content-type": "json"}},
    ),
    (
        "POST",
        "/things?wait=-1",
        {"json": {"name": "a"}, "headers": {**TOKEN, "idempotency-key": "much too long"}},
    ),
    ("POST", "/things?wait=soon", {"json": {"name": ""}, "headers": TOKEN}),  # query and body
    ("GET", "/things/7", {"headers": TOKEN}),
    ("GET", "/things/7?fields=a&fields=b", {"headers": {**TOKEN, "cookie": "flavor=mint"}}),
    ("GET", "/things/x", {"headers": TOKEN}),
    ("GET", "/things/7?n=3&order=up&fields=", {"headers": {**TOKEN, "x-mode": "fast"}}),
    ("GET", "/things/7?n=0&n=4&sort=a&order=b", {"headers": TOKEN}),  # repeated, both names
    ("GET", "/things/7?limit=3&n=x", {"headers": {**TOKEN, "x_mode": "underscored"}}),
    ("GET", "/things/7", {"headers": [*TOKEN.items(), ("x-ids", "1"), ("x-ids", "2")]}),
    ("GET", "/things/7", {"headers": [*TOKEN.items(), ("x-ids", "1"), ("x-ids", "two")]}),
    ("POST", "/things?wait=1&wait=-2", {"json": {"name": "a"}, "headers": TOKEN}),
    ("POST", "/things?wait=", {"json": {"name": "a"}, "headers": TOKEN}),
    ("GET", "/things/7", {}),
    ("GET", "/things/7/raw", {"headers": TOKEN}),
    ("DELETE", "/things/7", {"headers": TOKEN}),
    ("DELETE", "/things/0", {"headers": TOKEN}),
    ("PUT", "/things/7", {"headers": TOKEN}),
    ("GET", "/things/7/stream", {"headers": TOKEN}),
    ("GET", "/things/7/plain", {"headers": TOKEN}),
    ("GET", "/things/7/when", {"headers": TOKEN}),
    ("GET", "/things/7/nan", {"headers": TOKEN}),
    ("PATCH", "/things/7", {"headers": TOKEN}),
]


async def answers(a: FastAPI) -> list[tuple[int, bytes, list[tuple[str, str]], list[str]]]:
    transport = httpx.ASGITransport(app=a, raise_app_exceptions=False)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for method, url, kwargs in REQUESTS:
            calls.clear()
            reply = await client.request(method, url, **kwargs)
            headers = sorted((k, v) for k, v in reply.headers.items() if k != "date")
            out.append((reply.status_code, reply.content, headers, list(calls)))
    return out


async def test_the_lean_handler_answers_as_fastapis() -> None:
    leaned, plain = await answers(app(True)), await answers(app(False))
    for request, mine, theirs in zip(REQUESTS, leaned, plain, strict=True):
        assert mine == theirs, request
    statuses = [status for status, *_ in leaned]
    assert statuses[:3] == [201, 202, 401]  # the answers are the routes' own, not all errors
    assert 422 in statuses and 500 in statuses and 204 in statuses
    assert leaned[1][2].count(("idempotency-replayed", "true")) == 1


async def test_dependency_overrides_get_fastapis_handler() -> None:
    a = FastAPI()  # a route declared on the app: the app provides its overrides

    @a.get("/guarded", dependencies=[Depends(needs_token)])
    async def guarded() -> int:
        return 1

    assert lean.leanify(a) == 1

    async def let_in(request: Request) -> None:
        calls.append("let in")

    transport = httpx.ASGITransport(app=a)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/guarded")).status_code == 401
        a.dependency_overrides[needs_token] = let_in
        calls.clear()
        reply = await client.get("/guarded")
    assert reply.status_code == 200 and calls == ["let in"]


def test_routes_it_cannot_answer_keep_fastapis_handler() -> None:
    r = APIRouter()

    def sync_dependency() -> int:
        return 1

    async def generator_dependency() -> Any:
        yield 1

    async def nested(x: Annotated[int, Depends(no_args)]) -> int:
        return x

    @r.get("/sync")
    def sync_endpoint() -> int:
        return 1

    @r.get("/a", dependencies=[Depends(sync_dependency)])
    async def a() -> int:
        return 1

    @r.get("/b", dependencies=[Depends(generator_dependency)])
    async def b() -> int:
        return 1

    @r.get("/c", dependencies=[Depends(nested)])
    async def c() -> int:
        return 1

    @r.get("/d")
    async def d(q: Annotated[int, Depends(lambda q=1: q)]) -> int:
        return q

    @r.get("/ok")
    async def ok(request: Request) -> int:
        return 1

    a_ = FastAPI()
    include(a_, r)
    assert lean.leanify(a_) == 1


def test_a_route_of_another_fastapi_keeps_fastapis_handler() -> None:
    """A route without the attributes the lean handler reads (another FastAPI) is left as it
    is, not a failure at start-up."""
    a = FastAPI()

    @a.get("/one")
    async def one() -> int:
        return 1

    @a.get("/two")
    async def two() -> int:
        return 2

    old = next(r for r in a.router.routes if getattr(r, "path", "") == "/one")
    del old.strict_content_type  # type: ignore[union-attr]
    assert lean.leanify(a) == 1


@pytest.mark.parametrize(
    ("value", "json"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        (" Application/Problem+JSON ", True),
        ("application/jsonx", False),
        ("text/json", False),
        ("application/json/x", False),
        ("json", False),
        ("", False),
    ],
)
def test_a_json_content_type_is_read_as_fastapi_reads_it(value: str, json: bool) -> None:
    import email.message

    message = email.message.Message()
    message["content-type"] = value
    fastapis = message.get_content_maintype() == "application" and (
        message.get_content_subtype() == "json" or message.get_content_subtype().endswith("+json")
    )
    assert lean.json_content_type(value) is json is fastapis


async def test_comfyruns_hot_routes_get_the_lean_handler(tmp_path: Any) -> None:
    a = create_app(Settings(data_dir=tmp_path))
    leaned = {
        (route.path, tuple(sorted(route.methods)))
        for route in a.router.routes
        if getattr(route, "app", None) is not None
        and getattr(route.app, "__qualname__", "").startswith("lean_asgi")
    }
    for path, method in [
        ("/api/v2/jobs", "POST"),
        ("/api/v2/jobs/{job_id}", "GET"),
        ("/prompt", "POST"),
        ("/history/{prompt_id}", "GET"),
        ("/view", "GET"),
        ("/run", "POST"),
    ]:
        methods = ("GET", "HEAD") if method == "GET" else (method,)  # (GET answers HEAD too)
        assert (path, methods) in leaned, path
