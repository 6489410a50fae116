"""The editor's per-user routes, answered as ComfyUI's app/user_manager.py and
app/app_settings.py answer them: /users, /settings, /userdata (v1 and v2). Each caller sees the
files of its own owner (editor.userfiles), so API keys never see each other's workflows.

Errors are ComfyUI's: a bare status with a short text body (400, 403, 404, 409).
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from comfyrun import errors, jsontext
from comfyrun.api.context import AppContext, get_ctx
from comfyrun.api.editor.userfiles import UserFiles, owner_folder

Ctx = Annotated[AppContext, Depends(get_ctx)]
T = TypeVar("T")

#: Where owners' folders live, under the data dir (ComfyUI's "user" directory).
USERS_FOLDER = "user"


def users_root(ctx: AppContext) -> Path:
    return ctx.settings.data_dir / USERS_FOLDER


def user_files(ctx: AppContext) -> UserFiles:
    return UserFiles(owner_folder(users_root(ctx), ctx.principal.owner))


def _lock(ctx: AppContext) -> asyncio.Lock:
    """One lock per owner: the editor saves several settings at once, each a read-modify-write."""
    locks: dict[str | None, asyncio.Lock] = ctx.extras.setdefault("editor_locks", {})
    return locks.setdefault(ctx.principal.owner, asyncio.Lock())


def _text(exc: errors.ComfyrunError) -> Response:
    status = 400
    if isinstance(exc, errors.NotFound):
        status = 404
    elif isinstance(exc, errors.Forbidden):
        status = 403
    elif isinstance(exc, errors.Conflict):
        status = 409
    return PlainTextResponse(exc.message, status_code=status)


async def _run(fn: Callable[[], T]) -> T:
    """`fn` (blocking file calls on a name the client chose) in a thread; the system's refusal
    of that name is the client's error: too long, or not a name at all (400), a part of its
    path that is no folder (404). Any other OSError (a full disk…) is the server's."""
    try:
        return await asyncio.to_thread(fn)
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL):
            raise errors.InvalidRequest(f"bad file name: {exc.strerror}") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise errors.NotFound("no such file") from None
        raise


def _flag(request: Request, name: str, default: str = "") -> bool:
    return request.query_params.get(name, default).lower() == "true"


# /users ----------------------------------------------------------------------------------------


async def get_users(ctx: Ctx) -> Response:
    """Server storage, one user per API key ("migrated": its folder exists)."""
    files = user_files(ctx)
    return JSONResponse({"storage": "server", "migrated": await _run(lambda: files.exists)})


async def post_users() -> Response:
    return JSONResponse(
        {"error": "comfyrun's users are its API keys: mint one with POST /api/v2/keys"},
        status_code=400,
    )


# /settings -------------------------------------------------------------------------------------


def _not_json(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON")


async def _json(request: Request) -> tuple[bool, Any]:
    """The body's JSON value; NaN and Infinity, which `json` reads but no JSON parser (the
    editor's JSON.parse) reads back, are refused: kept in the settings, they made every later
    GET /settings fail."""
    try:
        return True, json.loads(await request.body(), parse_constant=_not_json)
    except (ValueError, RecursionError):
        return False, None


def _settings_answer(value: Any) -> Response:
    """JSON for the editor, whatever the settings file holds (a NaN written through /userdata
    is sent as null, not a 500)."""
    return Response(jsontext.dumpb(value), media_type="application/json")


async def get_settings(ctx: Ctx) -> Response:
    files = user_files(ctx)
    return _settings_answer(await _run(files.settings))


async def get_setting(setting_id: str, ctx: Ctx) -> Response:
    files = user_files(ctx)
    return _settings_answer((await _run(files.settings)).get(setting_id))


async def post_settings(request: Request, ctx: Ctx) -> Response:
    ok, values = await _json(request)
    if not ok or not isinstance(values, dict):
        return PlainTextResponse("the body must be a JSON object", status_code=400)
    files = user_files(ctx)
    async with _lock(ctx):
        current = await _run(files.settings)
        await _run(lambda: files.save_settings(current | values))
    return Response(status_code=200)


async def post_setting(setting_id: str, request: Request, ctx: Ctx) -> Response:
    ok, value = await _json(request)
    if not ok:
        return PlainTextResponse("the body must be JSON", status_code=400)
    files = user_files(ctx)
    async with _lock(ctx):
        current = await _run(files.settings)
        await _run(lambda: files.save_settings(current | {setting_id: value}))
    return Response(status_code=200)


# /userdata -------------------------------------------------------------------------------------


async def list_userdata(request: Request, ctx: Ctx) -> Response:
    directory = request.query_params.get("dir", "")
    if not directory:
        return PlainTextResponse("Directory not provided", status_code=400)
    files = user_files(ctx)
    try:
        found = await _run(
            lambda: files.listing(
                directory,
                recurse=_flag(request, "recurse"),
                full_info=_flag(request, "full_info"),
                split=_flag(request, "split"),
            )
        )
    except errors.ComfyrunError as exc:
        return _text(exc)
    return JSONResponse(found)


async def list_userdata_v2(request: Request, ctx: Ctx) -> Response:
    files = user_files(ctx)
    try:
        found = await _run(lambda: files.listing_v2(request.query_params.get("path", "")))
    except errors.ComfyrunError as exc:
        return _text(exc)
    return JSONResponse(found)


def _names(request: Request) -> list[str]:
    """The URL-encoded segments after /userdata/ (a file name is one segment, its slashes
    encoded: "workflows%2Fa.json"), each decoded; as aiohttp's {file} matches ComfyUI's."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    marker = "/userdata/"
    rest = path[path.index(marker) + len(marker) :] if marker in path else ""
    return [unquote(part) for part in rest.split("/")]


async def get_userdata(request: Request, ctx: Ctx) -> Response:
    names = _names(request)
    if len(names) != 1 or not names[0]:
        return Response(status_code=404)
    files = user_files(ctx)
    try:
        path = await _run(lambda: files.existing(names[0]))
    except errors.ComfyrunError as exc:
        return _text(exc)
    return FileResponse(path)


async def post_userdata(request: Request, ctx: Ctx) -> Response:
    """POST /userdata/{file} writes it; POST /userdata/{file}/move/{dest} renames it."""
    names = _names(request)
    overwrite = request.query_params.get("overwrite", "true") != "false"
    full_info = _flag(request, "full_info", "false")
    files = user_files(ctx)
    try:
        if len(names) == 3 and names[1] == "move" and names[0] and names[2]:
            path = await _run(lambda: files.move(names[0], names[2], overwrite=overwrite))
        elif len(names) == 1 and names[0]:
            body = await request.body()
            async with _lock(ctx):
                path = await _run(lambda: files.write(names[0], body, overwrite=overwrite))
        else:
            return Response(status_code=404)
        return JSONResponse(await _run(lambda: files.describe(path, full_info=full_info)))
    except errors.ComfyrunError as exc:
        return _text(exc)


async def delete_userdata(request: Request, ctx: Ctx) -> Response:
    names = _names(request)
    if len(names) != 1 or not names[0]:
        return Response(status_code=404)
    files = user_files(ctx)
    try:
        await _run(lambda: files.delete(names[0]))
    except errors.ComfyrunError as exc:
        return _text(exc)
    return Response(status_code=204)


def add_userdata_routes(router: APIRouter) -> None:
    router.add_api_route("/users", get_users, methods=["GET"])
    router.add_api_route("/users", post_users, methods=["POST"])
    router.add_api_route("/settings", get_settings, methods=["GET"])
    router.add_api_route("/settings", post_settings, methods=["POST"])
    router.add_api_route("/settings/{setting_id}", get_setting, methods=["GET"])
    router.add_api_route("/settings/{setting_id}", post_setting, methods=["POST"])
    router.add_api_route("/userdata", list_userdata, methods=["GET"])
    router.add_api_route("/v2/userdata", list_userdata_v2, methods=["GET"])
    router.add_api_route("/userdata/{name:path}", get_userdata, methods=["GET"])
    router.add_api_route("/userdata/{name:path}", post_userdata, methods=["POST"])
    router.add_api_route("/userdata/{name:path}", delete_userdata, methods=["DELETE"])


__all__ = ["USERS_FOLDER", "add_userdata_routes", "user_files", "users_root"]
