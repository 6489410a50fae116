"""A leaner request handler for the app's plain routes: the same answers as FastAPI's, with
less work per request.

FastAPI (0.16x) solves each request's dependencies generically: every dependency, even one
that takes only the request, is solved as a dependant of its own (four parameter passes, a
cache key, callable classification, a result object), the content type is parsed with
`email.message`, and two exit stacks are entered for dependencies with `yield`: 0.03 to 0.08 ms
of CPU a request on these cores (bench/request_cpu.py), paid by every request of the hot path
(a ComfyUI-face job makes three).

`leanify` gives each route whose dependencies are all plain `async def f(request)` (or
`async def f()`) callables, and whose endpoint is a plain `async def` answering a response
or a value for its response model, a handler that does what FastAPI's does for such a route,
in its order: read the body (a JSON body only for a JSON content type, a decode error a 422
`json_invalid`), call the dependencies in order (each once a request), check the path, query,
header and cookie parameters and the body with FastAPI's own functions, raise FastAPI's
`RequestValidationError` for what fails, call the endpoint, and render its value with FastAPI's
own `serialize_response` (status code and headers set on the `Response` parameter included).
Any other route — generator dependencies, forms, streams, SSE, security scopes, background
tasks — keeps FastAPI's handler, and so does every request while the app has dependency
overrides (tests set them). Where FastAPI's internals this relies on are not there, nothing
changes.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any

from fastapi import FastAPI, params
from fastapi.routing import APIRoute
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from comfyrun import jsontext

log = logging.getLogger(__name__)

try:  # FastAPI's internals the handler reuses; without them, routes keep FastAPI's handler
    from fastapi._body_limit import get_body_limit_error
    from fastapi._compat import Undefined, field_annotation_is_sequence
    from fastapi.datastructures import DefaultPlaceholder
    from fastapi.dependencies.models import Dependant
    from fastapi.dependencies.utils import (
        _get_param_aliases,
        _get_param_model,
        _is_json_field,
        _validate_value_with_model_field,
        request_body_to_args,
        request_params_to_args,
    )
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import _extract_endpoint_context, serialize_response
    from fastapi.sse import EventSourceResponse
    from fastapi.utils import is_body_allowed_for_status_code
    from starlette.datastructures import Headers, ImmutableMultiDict
    from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

    AVAILABLE = True
except ImportError:  # pragma: no cover - another FastAPI
    AVAILABLE = False

Handler = Callable[[Request], Awaitable[Response]]
ParamReader = Callable[[Any], tuple[dict[str, Any], list[Any]]]


def leanify(app: FastAPI) -> int:
    """Give the app's eligible routes the lean handler; returns how many got it."""
    if not AVAILABLE:
        return 0
    count = 0
    for route in app.router.routes:
        if not isinstance(route, APIRoute):
            continue
        try:
            if not eligible(route):
                continue
            handler = lean_handler(route)
        except AttributeError:  # another FastAPI's route: it keeps FastAPI's handler
            continue
        route.app = lean_asgi(handler, route.app, route.dependency_overrides_provider)
        count += 1
    return count


def _plain_coroutine(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) and not inspect.isasyncgenfunction(call)


def _plain_dependency(dep: Dependant) -> bool:
    """A dependency the lean handler calls itself: `async def f(request)` or `async def f()`,
    with no parameters of its own to check and no dependencies of its own."""
    return (
        _plain_coroutine(dep.call)
        and not dep.dependencies
        and not (dep.path_params or dep.query_params or dep.header_params)
        and not (dep.cookie_params or dep.body_params)
        and dep.websocket_param_name is None
        and dep.http_connection_param_name is None
        and dep.response_param_name is None
        and dep.background_tasks_param_name is None
        and dep.security_scopes_param_name is None
        and dep.concurrency is None
        and not dep.own_oauth_scopes
    )


def eligible(route: APIRoute) -> bool:
    """Whether the lean handler answers `route` as FastAPI's would."""
    dependant = route.dependant
    body_field = route.body_field
    strict = route.strict_content_type
    if isinstance(strict, DefaultPlaceholder):
        strict = strict.value
    return (
        _plain_coroutine(dependant.call)
        and all(_plain_dependency(d) for d in dependant.dependencies)
        and dependant.websocket_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
        and dependant.concurrency is None
        and not (body_field is not None and isinstance(body_field.field_info, params.Form))
        and not route.is_json_stream
        and route.stream_item_field is None
        and not _is_sse(route.response_class)
        and strict is True
        and getattr(route, "max_body_size", None) is None
    )


def _is_sse(response_class: Any) -> bool:
    actual = (
        response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
    )
    return isinstance(actual, type) and issubclass(actual, EventSourceResponse)


def json_content_type(value: str) -> bool:
    """Whether a Content-Type header names JSON as FastAPI reads it (email.message's parse:
    the type before any parameter, lowercased; `application/json` or `application/*+json`;
    anything without exactly one `/` is text/plain)."""
    ctype = value.split(";", 1)[0].strip().lower()
    if ctype.count("/") != 1:
        return False
    main, sub = ctype.split("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def param_reader(fields: list[Any]) -> ParamReader:
    """FastAPI's `request_params_to_args` for `fields` (one route's path, query, header or
    cookie parameters), with what it works out for each field on every request (whether the
    field is a parameter model, its aliases, whether its annotation is a sequence: a third of
    the CPU of a request's parameters) worked out once. A parameter model keeps FastAPI's."""
    if any(_get_param_model(field) is not None for field in fields):
        return lambda received: request_params_to_args(fields, received)
    plans = []
    for field in fields:
        sequence = field_annotation_is_sequence(field.field_info.annotation)
        names = [alias for _, alias in _get_param_aliases(field)]
        many = sequence and not _is_json_field(field)
        plans.append((field, field.name, names, many, sequence, field.field_info.in_.value))

    def read(received: Any) -> tuple[dict[str, Any], list[Any]]:
        values: dict[str, Any] = {}
        errors: list[Any] = []
        multi = isinstance(received, (ImmutableMultiDict, Headers))
        for field, name, names, many, sequence, where in plans:
            alias = next((n for n in names if n in received), names[0])
            value = received.getlist(alias) if many and multi else received.get(alias, None)
            if value is None or (sequence and len(value) == 0):
                value = Undefined
            found, failed = _validate_value_with_model_field(
                field=field, value=value, values=values, loc=(where, alias)
            )
            if failed:
                errors.extend(failed)
            else:
                values[name] = found
        return values, errors

    return read


class _SubResponse(Response):
    """The endpoint's `Response` parameter, as FastAPI makes it (a Response without its
    content-length header), made without adding that header and deleting it again (a scan and
    rebuild of the headers, each request)."""

    def init_headers(self, headers: Any = None) -> None:
        self.raw_headers = []


def lean_handler(route: APIRoute) -> Handler:
    dependant = route.dependant
    call: Callable[..., Awaitable[Any]] = dependant.call  # type: ignore[assignment]
    deps: list[tuple[Callable[..., Awaitable[Any]], str | None, bool, bool]] = [
        (d.call, d.name, d.request_param_name is not None, d.use_cache)  # type: ignore[misc]
        for d in dependant.dependencies
    ]
    body_field = route.body_field
    body_params = dependant.body_params
    param_lists = [
        (param_reader(lst), attrgetter(source))
        for lst, source in (
            (dependant.path_params, "path_params"),
            (dependant.query_params, "query_params"),
            (dependant.header_params, "headers"),
            (dependant.cookie_params, "cookies"),
        )
        if lst
    ]
    request_name = dependant.request_param_name or dependant.http_connection_param_name
    response_name = dependant.response_param_name
    status_code = route.status_code
    response_class = route.response_class
    actual_class: type[Response] = (
        response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
    )
    response_field = route.response_field
    dump_json = response_field is not None and isinstance(response_class, DefaultPlaceholder)
    embed = route._embed_body_fields

    def endpoint_ctx(request: Request) -> Any:
        ctx = dict(_extract_endpoint_context(call))
        if dependant.path:
            mount = request.scope.get("root_path", "").rstrip("/")
            ctx["path"] = f"{request.method} {mount}{dependant.path}"
        return ctx

    async def read_body(request: Request) -> Any:
        try:
            body_bytes = await request.body()
            if not body_bytes:
                return Undefined
            content_type = request.headers.get("content-type")
            if content_type and json_content_type(content_type):
                # comfyrun.jsontext: orjson, json where orjson would refuse or read otherwise
                # (so the same bodies parse, and bad ones fail with json's own error)
                return jsontext.loads(body_bytes)
            return body_bytes
        except json.JSONDecodeError as exc:
            invalid = {
                "type": "json_invalid",
                "loc": ("body", exc.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": exc.msg},
            }
            raise RequestValidationError(
                [invalid], body=exc.doc, endpoint_ctx=endpoint_ctx(request)
            ) from exc
        except HTTPException:
            raise
        except Exception as exc:
            if MAX_BODY_SIZE_SCOPE_KEY in request.scope and (error := get_body_limit_error(exc)):
                raise error from exc
            raise HTTPException(400, "There was an error parsing the body") from exc

    async def handler(request: Request) -> Response:
        body = await read_body(request) if body_field is not None else Undefined
        sub_response = _SubResponse()
        sub_response.status_code = None  # type: ignore[assignment]
        values: dict[str, Any] = {}
        solved: dict[Any, Any] = {}
        for dep_call, name, takes_request, use_cache in deps:
            if use_cache and dep_call in solved:
                value = solved[dep_call]
            else:
                value = await (dep_call(request) if takes_request else dep_call())
                solved.setdefault(dep_call, value)
            if name is not None:
                values[name] = value
        errors: list[Any] = []
        for read_params, source in param_lists:
            found, failed = read_params(source(request))
            values.update(found)
            errors += failed
        if body_params:
            found, failed = await request_body_to_args(
                body_fields=body_params,
                received_body=body,
                embed_body_fields=embed,
            )
            values.update(found)
            errors.extend(failed)
        if request_name is not None:
            values[request_name] = request
        if response_name is not None:
            values[response_name] = sub_response
        if errors:
            raise RequestValidationError(
                errors, body=None if body is Undefined else body, endpoint_ctx=endpoint_ctx(request)
            )
        raw = await call(**values)
        if isinstance(raw, Response):
            return raw
        code = status_code or sub_response.status_code
        args: dict[str, Any] = {"background": None}
        if code is not None:
            args["status_code"] = code
        if sub_response.status_code:
            args["status_code"] = sub_response.status_code
        content = await serialize_response(
            field=response_field,
            response_content=raw,
            is_coroutine=True,
            endpoint_ctx=endpoint_ctx(request) if response_field is not None else None,
            dump_json=dump_json,
            include=route.response_model_include,
            exclude=route.response_model_exclude,
            by_alias=route.response_model_by_alias,
            exclude_unset=route.response_model_exclude_unset,
            exclude_defaults=route.response_model_exclude_defaults,
            exclude_none=route.response_model_exclude_none,
        )
        if dump_json:
            response = Response(content=content, media_type="application/json", **args)
        else:
            response = actual_class(content, **args)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        response.headers.raw.extend(sub_response.headers.raw)
        return response

    return handler


def lean_asgi(handler: Handler, fastapi_app: ASGIApp, overrides: Any) -> ASGIApp:
    """The route's ASGI app: `handler` with Starlette's exception handling (as FastAPI's
    `request_response`, without the exit stacks only `yield` dependencies use); FastAPI's own
    app while the app has dependency overrides."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if overrides is not None and overrides.dependency_overrides:
            await fastapi_app(scope, receive, send)
            return
        request = Request(scope, receive, send)

        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(request)
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(respond, request)(scope, receive, send)

    return app
