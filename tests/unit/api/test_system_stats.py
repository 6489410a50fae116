"""ComfyUI's GET /system_stats on comfyrun: every ready backend is asked at once, through its
own client; one that does not answer costs its devices, not the others'."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from comfyrun.api.routes import comfy_system
from comfyrun.comfy.errors import ComfyConnectionError
from comfyrun.core.tenancy import ADMIN, Principal, Scope


@dataclass
class FakeClient:
    name: str
    waits_for: asyncio.Event | None = None
    fails: bool = False
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def system_stats(self) -> dict[str, Any]:
        self.called.set()
        if self.fails:
            raise ComfyConnectionError(f"{self.name} is down")
        if self.waits_for is not None:
            await self.waits_for.wait()
        return {"devices": [{"name": f"cuda:0 ({self.name})"}]}


def backend(client: FakeClient | None, state: str = "ready") -> Any:
    return SimpleNamespace(client=client, url="http://x", state=SimpleNamespace(value=state))


def ctx_of(*backends: Any, principal: Principal = ADMIN) -> Any:
    return SimpleNamespace(pool=SimpleNamespace(backends=list(backends)), principal=principal)


async def test_backends_are_asked_at_once_and_a_silent_one_costs_only_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(comfy_system, "BACKEND_TIMEOUT_S", 0.5)
    second = FakeClient("b")
    first = FakeClient("a", waits_for=second.called)  # answers once b has been asked
    silent = FakeClient("c", waits_for=asyncio.Event())  # never answers
    down = FakeClient("d", fails=True)
    stopped = FakeClient("e")
    stats = await comfy_system.system_stats(
        ctx_of(backend(first), backend(silent), backend(second), backend(down),
               backend(stopped, state="stopped"), backend(None))
    )  # fmt: skip
    assert [d["name"] for d in stats["devices"]] == ["cuda:0 (a)", "cuda:0 (b)"]
    assert not stopped.called.is_set()
    assert "comfyrun" in stats["system"]["comfyui_version"]
    assert stats["system"]["ram_total"] >= stats["system"]["ram_free"] >= 0


async def test_without_a_pool_there_are_no_devices() -> None:
    stats = await comfy_system.system_stats(SimpleNamespace(pool=None, principal=ADMIN))  # type: ignore[arg-type]
    assert stats["devices"] == [] and list(stats["system"])[:3] == ["os", "ram_total", "ram_free"]


@dataclass
class HostClient:
    """A backend whose devices say more than ComfyUI's do (a fork naming its host)."""

    async def system_stats(self) -> dict[str, Any]:
        device = {"name": "cuda:0 NVIDIA H100", "type": "cuda", "index": 0, "vram_total": 8,
                  "vram_free": 4, "torch_vram_total": 2, "torch_vram_free": 1,
                  "host": "gpu-7.internal", "url": "http://10.0.0.7:8188"}  # fmt: skip
        return {"devices": [device]}


async def test_a_key_not_an_admin_s_sees_what_the_editor_reads_not_the_operator_s() -> None:
    tenant = Principal(name="t", scopes=frozenset({Scope.READ, Scope.SUBMIT}), key_id="k1")
    admin_view = await comfy_system.system_stats(ctx_of(backend(HostClient())))
    assert admin_view["devices"][0]["host"] == "gpu-7.internal" and admin_view["system"]["platform"]
    stats = await comfy_system.system_stats(ctx_of(backend(HostClient()), principal=tenant))
    assert stats["devices"] == [
        {"name": "cuda:0 NVIDIA H100", "type": "cuda", "index": 0, "vram_total": 8,
         "vram_free": 4, "torch_vram_total": 2, "torch_vram_free": 1}
    ]  # fmt: skip
    assert "platform" not in stats["system"]
    for read in ("comfyui_version", "python_version", "pytorch_version", "os", "ram_total",
                 "embedded_python", "argv"):  # fmt: skip
        assert read in stats["system"], read
