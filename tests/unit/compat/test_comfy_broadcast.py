"""ComfyUI's `status` broadcast: each socket is told its own key's queue size (counted once per
key), and a socket that does not take its message in time does not hold up the others."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from comfyrun.api.compat import comfy_clients
from comfyrun.api.compat.comfy_clients import ComfyClients
from comfyrun.api.compat.comfy_socket import ClientSession


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
    waits: list[int] = field(default_factory=list)  # (shared) stuck sends under way

    def sent_now(self, payload: bytes, binary: bool) -> bool:
        if self.stuck:
            return False  # its transport's buffer is full: the plain path, which waits
        self.told.append(json.loads(payload))
        return True

    async def send_payload(self, payload: bytes, binary: bool) -> None:
        self.waits.append(1)
        try:
            await asyncio.Event().wait()
        finally:
            self.waits.pop()


def remaining(message: Any) -> int:
    value: int = message["data"]["status"]["exec_info"]["queue_remaining"]
    return value


async def test_each_key_hears_its_own_count_and_a_stuck_socket_holds_no_one_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(comfy_clients, "BROADCAST_TIMEOUT_S", 0.2)
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


async def test_stuck_sockets_are_waited_for_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each at most BROADCAST_TIMEOUT_S, all at once: one after another, N stuck sockets
    held a broadcast (and every socket after them) N times that."""
    monkeypatch.setattr(comfy_clients, "BROADCAST_TIMEOUT_S", 0.2)
    waits: list[int] = []
    most = 0
    stuck = [Session(None, f"stuck{i}", Ctx(Service(1)), stuck=True, waits=waits) for i in range(5)]
    clients = ComfyClients()
    for session in [*stuck, Session(None, "last", Ctx(Service(1)))]:
        clients.attach(cast(ClientSession, session))
    broadcast = asyncio.ensure_future(clients.broadcast_status())
    while not broadcast.done():
        most = max(most, len(waits))
        await asyncio.sleep(0.01)
    await broadcast
    assert most == 5 and waits == []  # all five waited at once, then given up


async def test_a_stream_of_changes_is_told_at_most_once_a_spacing_the_last_count_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every open socket hears every broadcast: under a stream of prompts, one at once, then at
    most one each `STATUS_SPACING_S`, each with the count when it starts (the last one told)."""
    monkeypatch.setattr(comfy_clients, "STATUS_SPACING_S", 0.2)
    service = Service(0)
    session = Session(None, "watcher", Ctx(service))
    clients = ComfyClients()
    clients.attach(cast(ClientSession, session))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for count in range(1, 11):  # ten prompts, 20 ms apart (longer on a loaded machine)
        service.remaining = count
        clients.broadcast_status_soon()
        await asyncio.sleep(0.02)
    async with asyncio.timeout(5):
        while not session.told or remaining(session.told[-1]) != 10:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    took = loop.time() - started
    told = [remaining(m) for m in session.told]
    assert told[0] == 1 and told[-1] == 10  # the first at once, the last count last
    assert len(told) <= took / 0.2 + 1  # not one a prompt: one a spacing at most
