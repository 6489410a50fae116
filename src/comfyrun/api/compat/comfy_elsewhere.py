"""ComfyUI prompts posted to another API node, for the sockets of this one.

With several `comfyrun api` nodes on one PostgreSQL, a ComfyUI client's `/ws` may be on this
node while its `POST /prompt` went to another (a load balancer without sticky sessions). The
node that took the prompt tells a socket of its own (ComfyClients.notify); this one hears of
the new job through the store's notifications (JobStore.watch_new_work), reads it once while a
socket is open here and none follows it yet, and has the socket of the job's clientId (and
key) follow it: its messages come through the store's events, as for any job a worker
elsewhere runs. (Every socket here hears the queue's new size, ComfyUI's `status` broadcast,
through the store's `watch_queue`, as for any change of the queue: comfy_clients.) A store one
process holds alone (SQLite, memory) calls nothing: every prompt is posted to the one node.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from comfyrun.api.compat import comfy as cc
from comfyrun.core.job import COMFY
from comfyrun.errors import ComfyrunError
from comfyrun.store.base import JobStore

log = logging.getLogger(__name__)


class Sockets(Protocol):
    """What of ComfyClients this needs."""

    @property
    def open(self) -> bool:
        """Whether any socket is open here."""
        ...

    def following(self, job_id: str) -> bool:
        """Whether a socket here follows the job already."""
        ...

    def notify(self, client_id: str, job_id: str, owner: str | None = None) -> None:
        """Have the socket of `client_id` (and `owner`'s key) follow the job, if one is here."""
        ...


class PromptsElsewhere:
    """Watches the store for new ComfyUI prompts on behalf of this node's sockets."""

    def __init__(self, store: JobStore, sockets: Sockets) -> None:
        self._store = store
        self._sockets = sockets
        self._looking: dict[str, asyncio.Task[None]] = {}
        self.stop = store.watch_new_work(self._heard)

    def _heard(self, job_id: str, job_type: str | None) -> None:
        if job_type not in (None, COMFY) or not self._sockets.open:
            return
        if job_id in self._looking or self._sockets.following(job_id):
            return  # (a prompt posted here is followed as it is posted: mostly, no read)
        task = asyncio.get_running_loop().create_task(self._look(job_id))
        self._looking[job_id] = task
        task.add_done_callback(lambda _: self._looking.pop(job_id, None))

    async def _look(self, job_id: str) -> None:
        try:
            job = await self._store.get(job_id)
        except ComfyrunError as exc:
            log.debug("reading new job %s for the sockets here failed: %s", job_id, exc)
            return
        if job is None or job.metadata.get(cc.META_DIALECT) != cc.DIALECT:
            return
        client_id = job.metadata.get(cc.META_CLIENT_ID)
        if isinstance(client_id, str):
            self._sockets.notify(client_id, job_id, job.owner)

    async def close(self) -> None:
        self.stop()
        tasks = list(self._looking.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["PromptsElsewhere", "Sockets"]
