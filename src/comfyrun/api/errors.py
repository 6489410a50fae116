"""comfyrun's exceptions → the Comfy API v2 error envelope {"error": {code, message, details?}}.

The only place that knows HTTP status codes for comfyrun.errors. Request validation errors,
unknown routes and unexpected exceptions get the same envelope, never a bare 500 page.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from comfyrun import errors

log = logging.getLogger(__name__)

#: Most specific first: the first class the exception is an instance of decides.
STATUS: tuple[tuple[type[errors.ComfyrunError], int], ...] = (
    (errors.NotFound, 404),
    (errors.IdempotencyKeyReuse, 422),
    (errors.IdempotencyInFlight, 409),
    (errors.IllegalTransition, 409),
    (errors.Conflict, 409),
    (errors.InvalidWorkflow, 422),
    (errors.ConversionError, 422),
    (errors.MissingAsset, 422),
    (errors.InputRejected, 422),
    (errors.InvalidTemplate, 422),
    (errors.InvalidParams, 422),
    (errors.UnservedJobType, 422),
    (errors.InvalidRequest, 400),
    (errors.QueueFull, 429),
    (errors.Forbidden, 403),
    (errors.StoreError, 503),
    (errors.StorageError, 503),
    (errors.BackendError, 502),
)

#: Retry-After of a 503: the store (SQLite locked past its busy timeout, PostgreSQL unreachable)
#: or the output storage failing.
UNAVAILABLE_RETRY_AFTER_S = 5

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = jsonable_encoder(details)
    return {"error": body}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(envelope(code, message, details), status_code=status, headers=headers)


def status_for(exc: errors.ComfyrunError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def comfyrun_error_response(
    exc: errors.ComfyrunError, request: Request | None = None
) -> JSONResponse:
    """`exc` as an answer: in the dialect of the route `request` matched (see `answer`)."""
    status = status_for(exc)
    code = exc.code
    details = exc.details
    if isinstance(details, dict) and details.get("code") == "workflow_format_ui":
        code = "workflow_format_ui"
    if isinstance(exc, errors.QueueFull):
        details = {"retry_after_s": exc.retry_after_s}
    if status >= 500:
        log.warning("request failed: %s", exc.message, extra={"action": "api_error", "code": code})
    return answer(request, status, code, exc.message, details, retry_after(exc))


def retry_after(exc: errors.ComfyrunError) -> dict[str, str] | None:
    """The Retry-After header an answer to `exc` carries, in every dialect: a full queue's
    wait, a moment for an idempotent twin still in flight, a few seconds for the store or the
    output storage failing (503); None for the rest."""
    if isinstance(exc, errors.QueueFull):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, errors.IdempotencyInFlight):
        return {"Retry-After": "1"}
    if status_for(exc) == 503:
        return {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
    return None


def answer(
    request: Request | None,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
    *,
    comfy_details: str = "",
) -> JSONResponse:
    """An error in the shape of the dialect of the route `request` matched, for an error no
    route of that dialect answered itself (a body Starlette could not parse, say): ComfyUI's
    {"error": {type, message, details, extra_info}, "node_errors": {}}, RunPod's and the plain
    API's {"error", "code"}; the v2 envelope for the v2 API's routes, no route, or a 5xx."""
    dialect = route_dialect(request) if request is not None else None
    if dialect is None or status >= 500:
        return error_response(status, code, message, details, headers)
    body: dict[str, Any]
    if dialect == "comfyui":
        error = {"type": code, "message": message, "details": comfy_details, "extra_info": {}}
        body = {"error": error, "node_errors": {}}
    else:
        body = {"error": message, "code": code}
    return JSONResponse(body, status_code=status, headers=headers)


async def _on_comfyrun_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ComfyrunError)
    return comfyrun_error_response(exc, request)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A request whose parameters or body do not validate: in the shape of the dialect of the
    route it asked for (ComfyUI's, RunPod's and the plain /run API's answer 400, as their
    errors do; the v2 API, 422 with every problem)."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    if route_dialect(request) is None:
        return error_response(422, "invalid_request", message, {"errors": problems})
    detail = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    return answer(request, 400, "invalid_request", message, comfy_details=detail)


#: Route tags whose routes answer errors in another API's shape.
DIALECTS = ("comfyui", "runpod", "plain")


def route_dialect(request: Request) -> str | None:
    """ "comfyui" or "runpod" when the request matched a route of that dialect (its tag)."""
    tags = getattr(request.scope.get("route"), "tags", None) or ()
    return next((t for t in DIALECTS if t in tags), None)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail
    headers = dict(exc.headers or {}) or None
    if isinstance(detail, dict) and "code" in detail:
        return answer(
            request,
            exc.status_code,
            str(detail["code"]),
            str(detail.get("message", "")),
            detail.get("details"),
            headers,
        )
    message = detail if isinstance(detail, str) else code
    return answer(request, exc.status_code, code, message, None, headers)


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    """The client went away while its request's body was still coming (a cancelled upload, a
    dropped connection): nothing went wrong here and nobody is left to answer, so no error is
    logged (it was logged as an unhandled one, with two tracebacks). The response is never
    sent; its status is nginx's "client closed request"."""
    assert isinstance(exc, ClientDisconnect)
    log.info("%s %s: the client left before its body was whole", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


#: The status of a request whose client went away first (never sent; nginx's 499).
CLIENT_CLOSED_REQUEST = 499


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.ComfyrunError, _on_comfyrun_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(ClientDisconnect, _on_client_gone)
    app.add_exception_handler(Exception, _on_unexpected)


__all__ = [
    "UNAVAILABLE_RETRY_AFTER_S",
    "answer",
    "comfyrun_error_response",
    "envelope",
    "error_response",
    "install_error_handlers",
    "retry_after",
    "status_for",
]
