"""ComfyUI's GET /system_stats, served by comfyrun: comfyrun's own system block (with the
frontend and workflow-templates versions it serves to ComfyUI's editor, which checks them) and
the devices of every ready backend."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from typing import Annotated, Any

import httpx
from fastapi import Depends

from comfyrun import __version__
from comfyrun.api.context import AppContext, get_ctx
from comfyrun.api.editor.frontend import package_version

Ctx = Annotated[AppContext, Depends(get_ctx)]


def _memory() -> tuple[int, int]:
    """(total, available) bytes of RAM, or zeros where the platform does not say."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0, 0


async def system_stats(ctx: Ctx) -> dict[str, Any]:
    devices: list[Any] = []
    urls = [
        b.url
        for b in (ctx.pool.snapshot() if ctx.pool is not None else [])
        if b.url and str(b.state) in ("ready", "busy")
    ]
    async with httpx.AsyncClient(timeout=3.0) as client:
        for url in urls:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = (await client.get(f"{url.rstrip('/')}/system_stats")).json()
                devices += answer.get("devices", []) if isinstance(answer, dict) else []
    ram_total, ram_free = _memory()
    frontend = package_version("comfyui-frontend-package")
    templates = package_version("comfyui-workflow-templates")
    system: dict[str, Any] = {
        "os": sys.platform,
        "ram_total": ram_total,
        "ram_free": ram_free,
        "comfyui_version": f"comfyrun {__version__}",
        "python_version": sys.version,
        "pytorch_version": "",
        "embedded_python": False,
        "argv": ["comfyrun"],
        "platform": platform.platform(),
    }
    if frontend is not None:
        system["required_frontend_version"] = frontend
    if templates is not None:
        system["installed_templates_version"] = templates
        system["required_templates_version"] = templates
    return {"system": system, "devices": devices}


__all__ = ["system_stats"]
