"""ComfyUI's `status` broadcast: each socket is told its own key's queue size (counted once per
key), and a socket that does not take its message in time does not hold up the others."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from comfyrun.api.compat import comfy_socket
from comfyrun.api.compat.comfy_socket import ClientSession, ComfyClients


@dataclass
class Service:
    remaining: int
    counted: int = 0

    async def queue_remaining(self, *, fresh: bool = True) -> int:
        self.counted += 1
        return self.remaining


@dataclass
class Ctx:
    service: Service


@dataclass
class Session:
    owner: str | None
    client_id: str
    ctx: Ctx
    stuck: bool = False
    told: list[Any] = field(default_factory=list)

    async def send(self, message: Any) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.told.append(message)


def remaining(message: Any) -> int:
    value: int = message["data"]["status"]["exec_info"]["queue_remaining"]
    return value


async def test_each_key_hears_its_own_count_and_a_stuck_socket_holds_no_one_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(comfy_socket, "BROADCAST_TIMEOUT_S", 0.2)
    fleet, key_a, key_b = Service(7), Service(3), Service(0)
    sessions = [
        Session(None, "admin", Ctx(fleet)),
        Session("a", "stuck", Ctx(key_a), stuck=True),
        Session("a", "a2", Ctx(key_a)),
        Session("b", "b1", Ctx(key_b)),
    ]
    clients = ComfyClients()
    for session in sessions:
        clients.attach(cast(ClientSession, session))
    start = time.monotonic()
    async with asyncio.timeout(5):
        await clients.broadcast_status()
    assert time.monotonic() - start < 2.0  # the stuck socket cost its timeout, once
    told = {s.client_id: [remaining(m) for m in s.told] for s in sessions}
    assert told == {"admin": [7], "stuck": [], "a2": [3], "b1": [0]}
    assert (fleet.counted, key_a.counted, key_b.counted) == (1, 1, 1)  # once per key
