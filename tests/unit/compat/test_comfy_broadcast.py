"""ComfyUI's `status` broadcast: each socket is told its own key's queue size (counted once per
key), and a socket that does not take its message in time does not hold up the others. Every
change of the queue the store tells (a job queued, started, ended) is broadcast, but not to
the socket that tells its own prompt's start or end itself, and nothing is counted or sent
while no socket is open."""

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
from comfyrun.store.base import QueueMove


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
    follows: set[str] = field(default_factory=set)  # its prompts under way
    ended: set[str] = field(default_factory=set)  # its prompts whose end it told

    def tells(self, job_id: str, move: QueueMove) -> bool:
        return job_id in self.follows or (move is QueueMove.ENDED and job_id in self.ended)

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


async def told_all(clients: ComfyClients) -> None:
    """Until the broadcasts under way are over."""
    for _ in range(200):
        task = clients._broadcasting
        if task is None or task.done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the broadcast did not end")


async def test_every_move_of_the_queue_is_told_once_to_each_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job queued is told to every socket, its own prompt's socket included (ComfyUI's
    broadcast as a prompt is put in its queue); its start and its end to every other socket,
    not to the one that tells them itself, in order with its prompt's messages (it heard
    each twice); a move of a job no socket tells goes to every socket. A key none of whose
    sockets is told is not counted."""
    monkeypatch.setattr(comfy_clients, "STATUS_SPACING_S", 0.0)
    fleet, key = Service(1), Service(0)
    own = Session(None, "own", Ctx(fleet), follows={"j1"})
    other = Session(None, "other", Ctx(fleet))
    keyed = Session("k", "k1", Ctx(key))
    clients = ComfyClients()
    for session in (own, other, keyed):
        clients.attach(cast(ClientSession, session))

    def heard() -> dict[str, int]:
        counts = {s.client_id: len(s.told) for s in (own, other, keyed)}
        for s in (own, other, keyed):
            s.told.clear()
        return counts

    clients.queue_changed("j1", QueueMove.JOINED)
    await told_all(clients)
    assert heard() == {"own": 1, "other": 1, "k1": 1}
    clients.queue_changed("j1", QueueMove.STARTED)
    await told_all(clients)
    assert heard() == {"own": 0, "other": 1, "k1": 1}
    own.follows.clear()
    own.ended.add("j1")  # told with its prompt's end
    clients.queue_changed("j1", QueueMove.ENDED)
    await told_all(clients)
    assert heard() == {"own": 0, "other": 1, "k1": 1}
    clients.queue_changed("j2", QueueMove.ENDED)  # no socket's own: told to all
    await told_all(clients)
    assert heard() == {"own": 1, "other": 1, "k1": 1}
    # the key's socket tells its prompt's end itself: that key is not even counted
    keyed.follows.add("j3")
    own.follows.add("j3")
    other.follows.add("j3")
    counted = (fleet.counted, key.counted)
    clients.queue_changed("j3", QueueMove.ENDED)
    await told_all(clients)
    assert heard() == {"own": 0, "other": 0, "k1": 0}
    assert (fleet.counted, key.counted) == counted


async def test_the_moves_of_a_broadcast_are_told_to_whoever_missed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The changes made within one spacing go out in one broadcast: a socket is left out
    only if it tells every one of them itself."""
    monkeypatch.setattr(comfy_clients, "STATUS_SPACING_S", 0.2)
    service = Service(2)
    own = Session(None, "own", Ctx(service), follows={"j1"})
    other = Session(None, "other", Ctx(service))
    clients = ComfyClients()
    clients.attach(cast(ClientSession, own))
    clients.attach(cast(ClientSession, other))
    clients.queue_changed("j0", QueueMove.ENDED)  # told at once, to both
    await asyncio.sleep(0.05)
    assert (len(own.told), len(other.told)) == (1, 1)
    clients.queue_changed("j1", QueueMove.STARTED)  # within the spacing: the next one
    clients.queue_changed("j2", QueueMove.ENDED)  # (another's: `own` must hear this one)
    await told_all(clients)
    assert (len(own.told), len(other.told)) == (2, 2)
    clients.queue_changed("j1", QueueMove.ENDED)
    clients.queue_changed("j1", QueueMove.STARTED)
    await told_all(clients)
    assert (len(own.told), len(other.told)) == (2, 3)


async def test_no_socket_open_nothing_counted_nor_sent() -> None:
    service = Service(1)
    clients = ComfyClients()
    for move in QueueMove:
        clients.queue_changed("j1", move)
    clients.broadcast_status_soon()
    assert clients._broadcasting is None
    session = Session(None, "late", Ctx(service))
    clients.attach(cast(ClientSession, session))
    clients.detach(cast(ClientSession, session))
    clients.queue_changed("j1", QueueMove.ENDED)
    assert clients._broadcasting is None and service.counted == 0
