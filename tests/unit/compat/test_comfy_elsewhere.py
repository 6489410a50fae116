"""PromptsElsewhere: a new job heard of through the store is read only while a socket is open
here and none follows it, and goes to the socket of its clientId and key (the queue's size is
broadcast to the sockets here through the store's `watch_queue`: test_comfy_broadcast)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from comfyrun.api.compat import comfy as cc
from comfyrun.api.compat.comfy_elsewhere import PromptsElsewhere
from comfyrun.core.job import Job, NewJob
from comfyrun.store.memory import MemoryStore

Heard = Callable[[str, str | None], None]


class Store(MemoryStore):
    """A memory store whose new work is told by the test (as PostgreSQL's listener tells)."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[Heard] = []
        self.reads = 0

    def watch_new_work(self, heard: Heard) -> Callable[[], None]:
        self.heard.append(heard)
        return lambda: self.heard.remove(heard)

    async def get(self, job_id: str) -> Job | None:
        self.reads += 1
        return await super().get(job_id)


class Sockets:
    def __init__(self) -> None:
        self.open = True
        self.followed: set[str] = set()
        self.told: list[tuple[str, str, str | None]] = []

    def following(self, job_id: str) -> bool:
        return job_id in self.followed

    def notify(self, client_id: str, job_id: str, owner: str | None = None) -> None:
        self.told.append((client_id, job_id, owner))


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_prompt_posted_elsewhere_goes_to_its_socket() -> None:
    store, sockets = Store(), Sockets()
    watch = PromptsElsewhere(store, sockets)
    meta = {cc.META_DIALECT: cc.DIALECT, cc.META_CLIENT_ID: "c1"}
    prompt, _ = await store.enqueue(NewJob(workflow={}, metadata=meta, owner="team"))
    v2, _ = await store.enqueue(NewJob(workflow={}))
    (heard,) = store.heard
    heard(prompt.id, "comfy")
    heard(v2.id, "comfy")  # not a ComfyUI prompt: read, told to no socket
    heard(prompt.id, "ffmpeg")  # another type: not even read
    await _settled()
    assert sockets.told == [("c1", prompt.id, "team")]
    assert store.reads == 2
    sockets.followed.add(prompt.id)  # followed here already (posted here): no read
    heard(prompt.id, "comfy")
    sockets.open = False  # no socket open: no read
    heard(v2.id, None)
    await _settled()
    assert store.reads == 2
    await watch.close()
    assert store.heard == []
