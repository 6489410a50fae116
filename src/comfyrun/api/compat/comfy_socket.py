"""ComfyUI's websocket (/ws?clientId=), served by comfyrun.

Each connection is a `ClientSession` that follows the prompts submitted with its clientId (told
by POST /prompt through the per-process `ComfyClients` registry, and found among the queued and
running jobs when it connects) and sends what their backends sent, relayed by the worker
(dispatch.relay: in memory when the worker shares this process, else as "comfy" store events)
and adapted to the client by `ComfyRelay`.
As in ComfyUI, a newer socket with the same clientId takes over from the older one, `status`
tells every socket the queue size, and messages for a client that is not connected are dropped.
ClientIds are per API key: a socket opened with one key never hears of another key's prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections import OrderedDict
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from comfyrun import errors, jsontext
from comfyrun.aio import retrieved
from comfyrun.api.compat.comfy_clients import clients, status_message, status_message_now
from comfyrun.api.compat.comfy_events import Message, text
from comfyrun.api.compat.comfy_relay import ComfyRelay, StatusSlot
from comfyrun.api.context import KEY_RECHECK_S, AppContext, authenticate, key_still_valid
from comfyrun.api.routes.comfy_catalog import own_features
from comfyrun.api.ws_frames import flush_frames_of, send_frame_of
from comfyrun.core.job import JSON, TERMINAL, Job, JobStatus
from comfyrun.core.tenancy import Principal, Scope
from comfyrun.dispatch.relay import EVENT_KIND, RelayHub
from comfyrun.store.base import JobEvent, QueueMove

log = logging.getLogger(__name__)

#: Statuses in which a prompt is "running" for ComfyUI.
ACTIVE = (JobStatus.RUNNING, JobStatus.CANCELING)
#: How many prompts whose end a socket told it keeps (`ClientSession.tells`): the broadcast
#: of an end comes within milliseconds (the store's word of it, then STATUS_SPACING_S at most).
ENDS_KEPT = 64


class ClientSession:
    """One open /ws connection: follows its client's prompts and sends their messages."""

    def __init__(self, ctx: AppContext, websocket: WebSocket, client_id: str) -> None:
        self.ctx = ctx
        self.websocket = websocket
        self.client_id = client_id
        self.owner = ctx.principal.owner
        self.preview_metadata = False
        self._send_lock = asyncio.Lock()
        self._send_frame = send_frame_of(websocket.scope)
        self._flush_frames = flush_frames_of(websocket.scope)
        self._waiting_sends = 0  # sends on Starlette's path, under way or waiting for the lock
        self._following: dict[str, asyncio.Task[None]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # prompts whose end it told lately
        self.closed = False

    async def send(self, message: Message) -> None:
        binary = isinstance(message, bytes)
        # orjson: a job's dozen messages took ~1.5 % of a face job's CPU with `json`
        payload = message if isinstance(message, bytes) else jsontext.dumpb(message)
        if not self.sent_now(payload, binary):
            await self.send_payload(payload, binary)

    def sent_now(self, payload: bytes, binary: bool) -> bool:
        """Whether `payload` (a text message's JSON, or binary) was written at once: framed
        straight to the connection (api/ws_frames.py) unless an earlier message still waits on
        the plain path (it would be overtaken) or the connection wants that path."""
        fast = self._send_frame if self._waiting_sends == 0 else None
        return fast is not None and fast(payload, binary)

    async def send_payload(self, payload: bytes, binary: bool) -> None:
        """`payload` on Starlette's path (after `sent_now` said no), in order."""
        self._waiting_sends += 1
        try:
            async with self._send_lock:
                if binary:
                    await self.websocket.send_bytes(payload)
                else:
                    await self.websocket.send_text(payload.decode())
        finally:
            self._waiting_sends -= 1

    async def send_status(self) -> None:
        """The greeting of a new socket: the queue's size, as counted within REMAINING_TTL_S
        (a client connecting does not wait on, nor add, a count of its own; the status that
        follows its first prompt is fresh)."""
        await self.send(await status_message(self.ctx, self.client_id, fresh=False))

    def follows(self, job_id: str) -> bool:
        return job_id in self._following

    def tells(self, job_id: str, move: QueueMove) -> bool:
        """Whether this socket tells the job's start or end itself, a `status` in order with
        its prompt's messages (see ComfyRelay: ComfyUI's broadcasts as its worker takes the
        prompt and once it is done): a prompt it follows, or one whose end it told lately. A
        broadcast of that change alone leaves it out (it heard it twice)."""
        return job_id in self._following or (move is QueueMove.ENDED and job_id in self._ended)

    def follow(self, job_id: str, *, reconnected: bool = False) -> None:
        """Send the prompt's messages from now on. `reconnected`: a prompt of the client's
        that was queued or running when it connected; as ComfyUI tells a client that
        reconnects, what its prompt sent before is not sent again, only the node it runs
        (`executing` with that node alone) and what comes next, its end included."""
        if self.closed or job_id in self._following:
            return
        self._following[job_id] = asyncio.create_task(self._follow(job_id, reconnected))

    async def _follow(self, job_id: str, reconnected: bool = False) -> None:
        if self.owner is not None and await self.ctx.store.get(job_id) is None:
            self._release(job_id)  # another key's prompt: not even its relayed frames
            return
        inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        hub = relay_hub(self.ctx)
        told = False
        # the messages of each source (the hub, the store) read before it is caught up are
        # the run so far: fed to the relay, for its state, but not sent (the end excepted)
        behind = {"hub": reconnected and hub is not None, "store": reconnected}
        node_told = False

        def settled(job: Job, committing: asyncio.Future[None] | None) -> None:
            nonlocal told
            if not told:  # (a success is told as its commit begins, then once committed)
                told = True
                inbox.put_nowait(("settled", (job, self._final_count(committing))))

        def relayed(frames: list[JSON]) -> None:
            frames = self._keepable(frames)
            if frames:
                inbox.put_nowait(("frames", frames))

        # the hub first: a run in this process replays its frames so far at once
        unsubscribe = hub.subscribe(job_id, relayed, settled) if hub is not None else None
        if behind["hub"]:
            inbox.put_nowait(("caught_up", "hub"))  # (its frames so far came with subscribe)
        feeder = asyncio.create_task(self._store_events(job_id, inbox, behind["store"]))
        relay = ComfyRelay(job_id, preview_metadata=self.preview_metadata)
        # at the prompt's end the client must see the queue without it: counted from the
        # job's settling on (told by a run in this process, else its terminal event), while
        # its last frames are made and sent
        final_status: asyncio.Future[dict[str, Any]] | None = None
        try:
            while not relay.finished:
                kind, item = await inbox.get()
                if kind == "end":
                    break
                if kind == "caught_up":
                    behind[item] = False
                    node = relay.current_node
                    if not node_told and node is not None and not relay.finished:
                        node_told = True  # ComfyUI's form: the node alone, no prompt_id
                        await self.send(text("executing", {"node": node}))
                    continue
                relay.preview_metadata = self.preview_metadata  # told by the first message
                if kind == "frames":
                    out = relay.feed_frames(item)
                    if behind["hub"]:
                        out = []
                elif kind == "settled":  # settled by a run in this process: no store read
                    job, final_status = item
                    feeder.cancel()
                    out = relay.settle(job)
                else:
                    event: JobEvent = item
                    job = None
                    if event.kind == "status" and event.data.get("status") in TERMINAL:
                        final_status = asyncio.ensure_future(status_message(self.ctx, None))
                        final_status.add_done_callback(retrieved)
                        # kept as finished: the client's GET /history comes next
                        job = await self.ctx.service.job(job_id)
                    out = relay.feed_event(event, job)
                    if behind["store"] and not relay.finished:
                        out = []
                final: dict[str, Any] | None = None
                if relay.finished:
                    self._release(job_id)  # the same prompt_id may be queued again now
                    self._told_end(job_id)  # (with the status of its end, sent below)
                    if final_status is not None:  # counted before the end is sent, so that
                        final = await final_status  # it goes out in one write (TurnWrites)
                for message in out:
                    if isinstance(message, StatusSlot):
                        if final is not None:
                            await self.send(final)
                        else:  # at a prompt's start a count a moment old will do
                            fresh = relay.finished
                            await self.send(await status_message(self.ctx, None, fresh=fresh))
                    else:
                        await self.send(message)
                if out and self._flush_frames is not None and inbox.empty():
                    # out now: the end of a prompt is told as its run's final commit is
                    # made, whose statements were queued on the loop before this turn's end;
                    # frames still in the inbox (a burst of the backend's messages, relayed
                    # in one turn) are sent first, all of them in one write
                    self._flush_frames()
        except (WebSocketDisconnect, RuntimeError, errors.NotFound):
            pass  # the socket closed or the job went away: nothing left to tell this client
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("comfy ws: following %s failed", job_id, exc_info=True)
        finally:
            if final_status is not None and not final_status.done():
                final_status.cancel()
            if unsubscribe is not None:
                unsubscribe()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
            self._release(job_id)
            if not relay.finished and not self.closed:
                # its end not told here (the job went away: deleted from the queue, say),
                # though a broadcast may have left this socket out, counting on it
                clients(self.ctx).broadcast_status_soon()

    def _final_count(self, committing: asyncio.Future[None] | None) -> asyncio.Future[JSON]:
        """The `status` that goes before a prompt's end, counted from the moment its run tells
        the end (see dispatch.relay): a job whose commit is still to come (`committing`) is
        counted without it. Made here, as the run tells the end and before it makes that
        commit's store call: SQLite counts at once (`counts_now`), before that commit can have
        landed, and no task is needed; a store whose count waits for its server (PostgreSQL)
        counts in a task begun here, which may read after the commit landed and tell one job
        fewer, until the client's next status."""
        now = status_message_now(self.ctx, None, leaving=committing)
        if now is not None:
            done: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
            done.set_result(now)
            return done
        counted = asyncio.ensure_future(status_message(self.ctx, None, leaving=committing))
        counted.add_done_callback(retrieved)
        return counted

    async def _store_events(
        self, job_id: str, inbox: asyncio.Queue[tuple[str, Any]], behind: bool = False
    ) -> None:
        """The job's store events, read only while no run of this process relays the job:
        while one does, its frames and its settled job come through the hub (a run that ends
        without settling it leaves it to the store's events, read on from where they were
        left). A queued job is read until a run here takes it up (or another process does).
        `behind`: the events logged so far are followed by a "caught_up" mark."""
        hub = relay_hub(self.ctx)
        if hub is not None:
            await hub.wait_over(job_id)
        after_id = 0
        try:
            if behind:
                for logged in await self.ctx.store.events_since(job_id, 0):
                    inbox.put_nowait(("event", logged))
                    after_id = logged.id
                inbox.put_nowait(("caught_up", "store"))
            async for event in self.ctx.service.events(
                job_id, after_id=after_id, idle_s=15.0, positions=False
            ):
                if event is not None and event.kind == EVENT_KIND and self.behind:
                    frames = event.data.get("messages")
                    kept = self._keepable(frames if isinstance(frames, list) else [])
                    event = dataclasses.replace(event, data={**event.data, "messages": kept})
                if event is not None:
                    inbox.put_nowait(("event", event))
                if hub is not None and hub.live(job_id):
                    await hub.wait_over(job_id)  # claimed here: the hub has it from now on
        except errors.NotFound:
            pass
        finally:
            inbox.put_nowait(("end", None))

    @property
    def behind(self) -> bool:
        """Whether a message waits to be sent (the client reads slower than it is sent)."""
        return self._waiting_sends > 0

    def _keepable(self, frames: list[JSON]) -> list[JSON]:
        """`frames` to queue for this client: all of them, but none of the binary ones
        (previews, ~40 KB each, each superseded by the next) while it is `behind`: what it
        could not take piled up here (a client that read nothing, hundreds of MB)."""
        if not self.behind:
            return frames
        return [frame for frame in frames if "binary" not in frame]

    def _told_end(self, job_id: str) -> None:
        self._ended[job_id] = None
        if len(self._ended) > ENDS_KEPT:
            self._ended.popitem(last=False)

    def _release(self, job_id: str) -> None:
        if self._following.get(job_id) is asyncio.current_task():
            del self._following[job_id]

    def superseded(self) -> None:
        """A newer socket took this one's clientId: as in ComfyUI, this one hears nothing
        more of its prompts (the newer one follows them; it went on hearing them all)."""
        self.closed = True
        for task in self._following.values():
            task.cancel()

    async def close(self) -> None:
        self.closed = True
        tasks = list(self._following.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def relay_hub(ctx: AppContext) -> RelayHub | None:
    """The in-process relay of a worker sharing this process, if any."""
    hub = ctx.extras.get("relay_hub")
    return hub if isinstance(hub, RelayHub) else None


async def comfy_ws(websocket: WebSocket, clientId: str | None = None) -> None:
    principal = await authenticate(websocket, query=True, cookie=True)
    if principal is None:
        await websocket.close(code=4401)
        return
    if not principal.may(Scope.READ):
        await websocket.close(code=4403)
        return
    root: AppContext = websocket.app.state.ctx
    ctx = root.scoped(principal)
    await websocket.accept()
    client_id = clientId or uuid.uuid4().hex
    session = ClientSession(ctx, websocket, client_id)
    hub = clients(ctx)
    hub.attach(session)
    watch = None
    if principal.key_id is not None:  # a key revoked meanwhile closes its sockets
        watch = asyncio.ensure_future(_close_when_revoked(websocket, principal))
    try:
        await session.send_status()
        if clientId:
            for job in await ctx.store.unfinished_for_client(client_id):
                session.follow(job.id, reconnected=True)
        # as ComfyUI: binary messages are ignored; the first text that is a JSON object
        # (whatever its type) ends the feature-flags negotiation, bad JSON or any other value
        # leaves it open
        first = True
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            if first and isinstance(raw, str):
                first = not await _feature_flags(session, raw)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if watch is not None:
            watch.cancel()
        hub.detach(session)
        await session.close()


async def _close_when_revoked(websocket: WebSocket, principal: Principal) -> None:
    while await asyncio.sleep(KEY_RECHECK_S, True):
        if not await key_still_valid(websocket, principal, cookie=True):
            with contextlib.suppress(Exception):
                await websocket.close(code=4401)
            return


async def _feature_flags(session: ClientSession, raw: str) -> bool:
    """A client's message while the negotiation is open: a `feature_flags` one is answered with
    the server's flags. Whether it was a JSON object (which closes the negotiation)."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):  # (ComfyUI logs what it cannot read, and goes on)
        return False
    if not isinstance(message, dict):
        return False
    if message.get("type") == "feature_flags":
        data = message.get("data")
        # ComfyUI's supports_feature: the flag must be true itself, not merely truthy
        flags = data if isinstance(data, dict) else {}
        session.preview_metadata = flags.get("supports_preview_metadata") is True
        await session.send(text("feature_flags", own_features(session.ctx)))
    return True


__all__ = ["ACTIVE", "ClientSession", "comfy_ws", "relay_hub"]
