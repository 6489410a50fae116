"""ComfyUI's GET /system_stats, served by comfyrun: comfyrun's own system block (with the
frontend and workflow-templates versions it serves to ComfyUI's editor, which checks them) and
the devices of every ready backend, asked of all of them at once through their own clients
(their addresses, headers and connections). What cannot change while comfyrun runs (its
platform, the packages' versions) is worked out once: ComfyUI's editor asks at every load, and
monitors poll it.

A key that is not an admin's sees what ComfyUI's editor reads (the versions, the OS, the RAM,
each device's name, type, index and VRAM) and not what is the operator's: the host's platform
string, or any other field a backend puts in its devices."""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import sys
from typing import Annotated, Any

from fastapi import Depends

from comfyrun import __version__
from comfyrun.api.context import AppContext, get_ctx
from comfyrun.api.editor.frontend import package_version
from comfyrun.errors import ComfyrunError

Ctx = Annotated[AppContext, Depends(get_ctx)]

#: How long one backend's answer is waited for (the others are asked meanwhile).
BACKEND_TIMEOUT_S = 3.0
#: A device's fields as ComfyUI gives them (all a key that is not an admin's sees of one).
DEVICE_FIELDS = (
    "name",
    "type",
    "index",
    "vram_total",
    "vram_free",
    "torch_vram_total",
    "torch_vram_free",
)
#: The system block's fields only an admin sees (the host's kernel and distribution).
OPERATOR_SYSTEM_FIELDS = ("platform",)


def _memory() -> tuple[int, int]:
    """(total, available) bytes of RAM, or zeros where the platform does not say."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0, 0


@functools.cache
def _fixed() -> dict[str, Any]:
    """The system block's parts that stay as they are while the process runs (the packages'
    versions are read from their metadata on disk: ~1 ms each)."""
    fixed: dict[str, Any] = {
        "comfyui_version": f"comfyrun {__version__}",
        "python_version": sys.version,
        "pytorch_version": "",
        "embedded_python": False,
        "argv": ["comfyrun"],
        "platform": platform.platform(),
    }
    frontend = package_version("comfyui-frontend-package")
    templates = package_version("comfyui-workflow-templates")
    if frontend is not None:
        fixed["required_frontend_version"] = frontend
    if templates is not None:
        fixed["installed_templates_version"] = templates
        fixed["required_templates_version"] = templates
    return fixed


async def _devices_of(client: Any) -> list[Any]:
    """One backend's devices, or none where it does not answer in time or as ComfyUI does."""
    try:
        async with asyncio.timeout(BACKEND_TIMEOUT_S):
            answer = await client.system_stats()
    except (ComfyrunError, OSError, TimeoutError, ValueError):
        return []
    devices = answer.get("devices") if isinstance(answer, dict) else None
    return devices if isinstance(devices, list) else []


async def system_stats(ctx: Ctx) -> dict[str, Any]:
    clients = [
        b.client
        for b in (ctx.pool.backends if ctx.pool is not None else [])
        if b.client is not None and b.url and b.state.value in ("ready", "busy")
    ]
    answers = await asyncio.gather(*(_devices_of(c) for c in clients))
    ram_total, ram_free = _memory()
    system = {"os": sys.platform, "ram_total": ram_total, "ram_free": ram_free, **_fixed()}
    devices = [d for found in answers for d in found]
    if not ctx.principal.admin:
        system = {k: v for k, v in system.items() if k not in OPERATOR_SYSTEM_FIELDS}
        devices = [
            {k: d[k] for k in DEVICE_FIELDS if k in d} for d in devices if isinstance(d, dict)
        ]
    return {"system": system, "devices": devices}


__all__ = ["BACKEND_TIMEOUT_S", "DEVICE_FIELDS", "system_stats"]
