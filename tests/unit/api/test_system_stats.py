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


def ctx_of(*backends: Any) -> Any:
    return SimpleNamespace(pool=SimpleNamespace(backends=list(backends)))


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
    stats = await comfy_system.system_stats(SimpleNamespace(pool=None))  # type: ignore[arg-type]
    assert stats["devices"] == [] and list(stats["system"])[:3] == ["os", "ram_total", "ram_free"]
