"""The ComfyUI-face sockets of one process (`ComfyClients`: each clientId's newest socket) and
ComfyUI's `status` broadcast to them: the queue's size, counted once per API key, told to
every socket at once (and a stream of changes told at most every `STATUS_SPACING_S`, so that
many open editors cost what one does).

As ComfyUI broadcasts it whenever its queue changes (a prompt queued, started, done), every
socket hears it whenever a job joins the queue, starts or ends, whatever API queued it and
whichever process or node made the change: the store tells the sockets' `ComfyClients` of each
(JobStore.watch_queue; PostgreSQL from its notifications, so every API node hears every node's
changes), while a socket is open. A prompt's own socket hears its start and its end from its
relay, in order with the prompt's messages (comfy_socket): the broadcast of that change alone
leaves it out, so it hears each once, as ComfyUI tells it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from comfyrun import jsontext
from comfyrun.api.compat.comfy_elsewhere import PromptsElsewhere
from comfyrun.api.compat.comfy_events import text
from comfyrun.api.context import AppContext
from comfyrun.api.tenancy import OwnedStore
from comfyrun.core.job import JSON
from comfyrun.store.base import QueueMove

if TYPE_CHECKING:
    from comfyrun.api.compat.comfy_socket import ClientSession

log = logging.getLogger(__name__)

#: How long a `status` broadcast waits on one socket.
BROADCAST_TIMEOUT_S = 1.0
#: The least time from one `status` broadcast's start to the next one's.
STATUS_SPACING_S = 0.05
#: The starts and ends a broadcast keeps to leave out the sockets that tell them themselves;
#: past that many, it tells every socket.
MOVES_KEPT = 64


class ComfyClients:
    """client_id → its newest websocket session (a newer socket takes over, as in ComfyUI)."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str | None, str], ClientSession] = {}
        self.numbers = itertools.count(1)
        self._broadcasting: asyncio.Task[None] | None = None
        self._last_broadcast = -STATUS_SPACING_S  # (the loop's clock) when the last one began
        self._again = False
        # what the next broadcast tells: a change every socket hears (`_everyone`: a job
        # queued), else the jobs that started or ended (`_moves`), not told again to a
        # socket that tells them all itself (ClientSession.tells)
        self._everyone = False
        self._moves: list[tuple[str, QueueMove]] = []

    @property
    def open(self) -> bool:
        """Whether any socket is open here."""
        return bool(self._sessions)

    def following(self, job_id: str) -> bool:
        """Whether a socket here follows the job already."""
        return any(s.follows(job_id) for s in self._sessions.values())

    def attach(self, session: ClientSession) -> None:
        key = (session.owner, session.client_id)
        older = self._sessions.get(key)
        self._sessions[key] = session
        if older is not None and older is not session:
            older.superseded()

    def detach(self, session: ClientSession) -> None:
        if self._sessions.get((session.owner, session.client_id)) is session:
            del self._sessions[(session.owner, session.client_id)]

    def notify(self, client_id: str, job_id: str, owner: str | None = None) -> None:
        session = self._sessions.get((owner, client_id))
        if session is not None:
            session.follow(job_id)

    def queue_changed(self, job_id: str, move: QueueMove) -> None:
        """The store's word of a job that joined the queue, started or ended
        (JobStore.watch_queue): every socket here hears the queue's size soon (none open:
        nothing at all), but the socket whose prompt started or ended, which tells that
        itself."""
        if not self._sessions:
            return
        if move is QueueMove.JOINED or len(self._moves) >= MOVES_KEPT:
            self._everyone = True
            self._moves.clear()
        elif not self._everyone:
            self._moves.append((job_id, move))
        self._soon()

    def broadcast_status_soon(self) -> None:
        """`broadcast_status` in the background, as ComfyUI queues its broadcast after a prompt
        is queued rather than answer later: the request that changed the queue is not held for
        the count and the sends. Changes made while one broadcast is under way, or within
        `STATUS_SPACING_S` of its start, are told by one more (with the count then), not by one
        each: every open socket hears every broadcast, so under a stream of prompts the
        sockets' count, not the prompts', sets the broadcasts' cost."""
        if not self._sessions:
            return
        self._everyone = True
        self._moves.clear()
        self._soon()

    def _soon(self) -> None:
        if self._broadcasting is not None and not self._broadcasting.done():
            self._again = True
            return
        self._broadcasting = asyncio.create_task(self._broadcast_while_changed())

    async def _broadcast_while_changed(self) -> None:
        loop = asyncio.get_running_loop()
        again = True
        while again:
            # within the spacing of the last broadcast's start, this one waits (the changes
            # meanwhile are told with it: the count is taken when it starts)
            await asyncio.sleep(max(0.0, self._last_broadcast + STATUS_SPACING_S - loop.time()))
            self._again = False
            to = self._to_tell()
            if to:  # (none: every change was told by the sockets it concerns)
                self._last_broadcast = loop.time()
                try:
                    await self.broadcast_status(to)
                except Exception:  # the store failed: the next change broadcasts again
                    log.warning("comfy ws: the status broadcast failed", exc_info=True)
            again = self._again

    def _to_tell(self) -> list[ClientSession]:
        """The sockets the next broadcast goes to: all of them, but those that tell every
        change it is for themselves (the starts and ends of their own prompts). The changes
        are taken: those made from now on go to the broadcast after it."""
        everyone, moves = self._everyone, self._moves
        self._everyone, self._moves = False, []
        sessions = list(self._sessions.values())
        if everyone or not moves:
            return sessions
        return [s for s in sessions if not all(s.tells(j, move) for j, move in moves)]

    async def broadcast_status(self, to: Iterable[ClientSession] | None = None) -> None:
        """Tell every socket (or those `to`) its queue's size (ComfyUI's `status` broadcast):
        the jobs of its API key, or every job for a socket without one (counted once per key,
        and not at all for a key none of whose sockets is told)."""
        by_owner: dict[str | None, list[ClientSession]] = {}
        for session in list(self._sessions.values()) if to is None else to:
            by_owner.setdefault(session.owner, []).append(session)
        for sessions in by_owner.values():
            # encoded once, written at once to each socket that can take it (a broadcast goes
            # to every open socket, the editor's in every browser tab: per socket, it was an
            # encoding, a timeout and a coroutine, ~15 us, times every socket, every job)
            payload = jsontext.dumpb(await status_message(sessions[0].ctx, None))
            slow = [s for s in sessions if not s.sent_now(payload, False)]
            if slow:
                # those that cannot take it now are waited for together, each at most
                # BROADCAST_TIMEOUT_S (one after another, N stuck sockets held the broadcast,
                # and every socket after them, N seconds); a task only for such a socket
                await asyncio.gather(*(_send_within(s, payload) for s in slow))


async def _send_within(session: ClientSession, payload: bytes) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(BROADCAST_TIMEOUT_S):
            await session.send_payload(payload, False)


def clients(ctx: AppContext) -> ComfyClients:
    hub = ctx.extras.get("comfy_clients")
    if not isinstance(hub, ComfyClients):
        hub = ctx.extras["comfy_clients"] = ComfyClients()
        # prompts posted to another API node (PostgreSQL) for the sockets here, read as the
        # app reads them (ctx may be a key's view: a socket of any key is served)
        store = ctx.store.inner if isinstance(ctx.store, OwnedStore) else ctx.store
        ctx.extras["comfy_elsewhere"] = PromptsElsewhere(store, hub)
        # every change of the queue, whoever made it: its size told to every socket here
        ctx.extras["comfy_queue_watch"] = store.watch_queue(hub.queue_changed)
    return hub


async def status_message(
    ctx: AppContext,
    sid: str | None,
    *,
    fresh: bool = True,
    leaving: asyncio.Future[None] | None = None,
) -> dict[str, Any]:
    """ComfyUI's `status` message: the queue's size (`leaving`: the commit of a job counted
    still, whose end is being told: left out of the count while that commit is under way)."""
    remaining = await ctx.service.queue_remaining(fresh=fresh)
    return _status(remaining, sid, leaving)


def status_message_now(
    ctx: AppContext, sid: str | None, *, leaving: asyncio.Future[None] | None = None
) -> dict[str, Any] | None:
    """`status_message` (a fresh count) where the count needs no wait (SQLite's); else None."""
    remaining = ctx.service.queue_remaining_now(fresh=True)
    return None if remaining is None else _status(remaining, sid, leaving)


def _status(remaining: int, sid: str | None, leaving: asyncio.Future[None] | None) -> JSON:
    if leaving is not None and not leaving.done():
        remaining = max(0, remaining - 1)
    data: JSON = {"status": {"exec_info": {"queue_remaining": remaining}}}
    if sid is not None:
        data["sid"] = sid
    return text("status", data)


__all__ = [
    "BROADCAST_TIMEOUT_S",
    "MOVES_KEPT",
    "STATUS_SPACING_S",
    "ComfyClients",
    "clients",
    "status_message",
    "status_message_now",
]
