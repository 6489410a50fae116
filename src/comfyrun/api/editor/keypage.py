"""The key page: with API keys on, ComfyUI's editor (which sends no Authorization header) is
let in once a browser has given a key here. The key is kept in an HttpOnly, SameSite=Strict
cookie that authenticates ComfyUI's routes and /ws for that key's owner (api.context:
`require_comfy_auth`, honoured only on same-origin requests).

    GET  /editor/key      the form
    POST /editor/key      key=…: checked, kept in the cookie, then back to the editor at /
    GET  /editor/logout   forgets the cookie
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from comfyrun.api.context import EDITOR_COOKIE, AppContext
from comfyrun.core.tenancy import Scope

router = APIRouter(tags=["editor"], include_in_schema=False)

#: How long the browser keeps the key (the key itself may be revoked sooner).
COOKIE_MAX_AGE_S = 30 * 24 * 3600

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>comfyrun: API key</title>
<style>
 body {{ font: 15px system-ui, sans-serif; background: #202020; color: #ddd;
        display: grid; place-items: center; min-height: 90vh; }}
 form {{ background: #2b2b2b; padding: 2em; border-radius: 8px; width: 24em; }}
 h1 {{ font-size: 1.2em; margin-top: 0; }}
 input {{ width: 100%; box-sizing: border-box; padding: .5em; margin: .5em 0 1em;
         background: #111; color: #eee; border: 1px solid #555; border-radius: 4px; }}
 button {{ padding: .5em 1.5em; }}
 .error {{ color: #f77; }}
</style></head>
<body><form method="post" action="{action}">
<h1>ComfyUI on comfyrun</h1>
<p>This server asks for an API key. The editor keeps it in a cookie and shows this key's
jobs only.</p>
{error}<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Open the editor</button>
</form></body></html>
"""


def _page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    body = PAGE.format(
        action=html.escape(f"{root}/editor/key", quote=True),
        error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/editor/key")
async def key_page(request: Request) -> Response:
    return _page(request)


@router.post("/editor/key")
async def key_submit(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    form = await request.form()
    key = form.get("key")
    key = key.strip() if isinstance(key, str) else ""
    if ctx.auth is not None and ctx.auth.open:
        key = ""  # a server without keys needs none
    principal = await ctx.auth.principal(key or None) if ctx.auth is not None else None
    if ctx.auth is not None and principal is None:
        return _page(request, "That key is not valid.", status=401)
    if principal is not None and not principal.may(Scope.READ):
        return _page(request, "That key lacks the read scope the editor needs.", status=403)
    response = RedirectResponse(f"{request.scope.get('root_path', '')}/", status_code=303)
    if key:
        response.set_cookie(
            EDITOR_COOKIE,
            key,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


@router.get("/editor/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse(f"{request.scope.get('root_path', '')}/editor/key", 303)
    response.delete_cookie(EDITOR_COOKIE, path="/", samesite="strict", httponly=True)
    return response


__all__ = ["router"]
