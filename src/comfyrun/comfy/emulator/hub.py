"""The websocket side: who is connected under which sid, and delivery in order.

Every outgoing message goes through one asyncio queue drained by one task, so messages from
HTTP handlers and from the worker thread keep the order in which they were produced
(`send_sync` may be called from any thread). A message for a sid that is not connected is
dropped; `sid=None` broadcasts. A second socket with the same clientId takes the sid over;
the older one stays open but gets nothing (ComfyUI's "silent zombie").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
JPEG = 1


@dataclass
class _Outgoing:
    kind: str  # "json" | "text" | "preview_meta" | "preview_legacy" | "drop"
    sid: str | None
    payload: Any


class Hub:
    def __init__(self, queue_remaining: Callable[[], int], max_upload_size: int) -> None:
        self._queue_remaining = queue_remaining
        self._max_upload_size = max_upload_size
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.flags: dict[str, dict[str, Any]] = {}
        self._all: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[_Outgoing | None] | None = None
        self._task: asyncio.Task[None] | None = None
        #: the client and node being executed (for the reconnect "executing" message)
        self.client_id: str | None = None
        self.last_node_id: str | None = None

    # ---- lifecycle ----
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue()
        self._task = asyncio.create_task(self._drain(), name="emulator-ws-drain")

    async def stop(self) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        await self.close_all()

    async def close_all(self) -> None:
        """Close every socket, zombies included (the `drop-ws` fault, and shutdown)."""
        for ws in list(self._all):
            try:
                await ws.close()
            except Exception:  # a socket already gone is fine
                log.debug("closing a websocket failed", exc_info=True)

    # ---- producing (any thread) ----
    def _post(self, message: _Outgoing) -> None:
        if self._loop is None or self._outbox is None:
            return
        outbox = self._outbox
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            self._loop.call_soon_threadsafe(outbox.put_nowait, message)

    def status_payload(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self._queue_remaining()}}

    def send_sync(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self._post(_Outgoing("json", sid, {"type": event, "data": data}))

    def send_status(self, queue_remaining: int) -> None:
        self._post(
            _Outgoing(
                "json",
                None,
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": queue_remaining}}},
                },
            )
        )

    def send_text(self, node_id: str, text: str) -> None:
        node = node_id.encode("utf-8")
        frame = struct.pack(">I", TEXT) + struct.pack(">I", len(node)) + node + text.encode("utf-8")
        self._post(_Outgoing("text", None, frame))

    def send_preview(
        self, image_jpeg: bytes, metadata: dict[str, Any], sid: str | None, *, with_metadata: bool
    ) -> None:
        """Preview for the sockets that negotiated metadata (type 4) or those that did not (1)."""
        if with_metadata:
            meta = json.dumps(metadata).encode("utf-8")
            frame = (
                struct.pack(">I", PREVIEW_IMAGE_WITH_METADATA)
                + struct.pack(">I", len(meta))
                + meta
                + image_jpeg
            )
            self._post(_Outgoing("preview_meta", sid, frame))
        else:
            frame = struct.pack(">I", PREVIEW_IMAGE) + struct.pack(">I", JPEG) + image_jpeg
            self._post(_Outgoing("preview_legacy", sid, frame))

    def drop_all(self) -> None:
        self._post(_Outgoing("drop", None, None))

    # ---- delivering (event loop) ----
    def _targets(self, sid: str | None) -> list[tuple[str, web.WebSocketResponse]]:
        if sid is None:
            return list(self.sockets.items())
        ws = self.sockets.get(sid)
        return [(sid, ws)] if ws is not None else []

    def _wants_metadata(self, sid: str) -> bool:
        return self.flags.get(sid, {}).get("supports_preview_metadata") is True

    async def _drain(self) -> None:
        assert self._outbox is not None
        while True:
            message = await self._outbox.get()
            if message is None:
                return
            if message.kind == "drop":
                await self.close_all()
                continue
            # Previews follow the feature flag of the prompt's client; a prompt without one
            # broadcasts the legacy format to everybody (ComfyUI checks flags of sid None).
            wants_metadata = message.sid is not None and self._wants_metadata(message.sid)
            if message.kind == "preview_meta" and not wants_metadata:
                continue
            if message.kind == "preview_legacy" and wants_metadata:
                continue
            for _, ws in self._targets(message.sid):
                await self._send(ws, message)

    @staticmethod
    async def _send(ws: web.WebSocketResponse, message: _Outgoing) -> None:
        if ws.closed:
            return
        try:
            if message.kind == "json":
                await ws.send_str(json.dumps(message.payload))
            else:
                await ws.send_bytes(message.payload)
        except (ConnectionError, RuntimeError):
            log.debug("websocket send failed", exc_info=True)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws?clientId=..."""
        ws = web.WebSocketResponse(max_msg_size=self._max_upload_size)
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.flags[sid] = {}
        self._all.add(ws)
        try:
            await ws.send_str(
                json.dumps(
                    {"type": "status", "data": {"status": self.status_payload(), "sid": sid}}
                )
            )
            if self.client_id == sid and self.last_node_id is not None:
                await ws.send_str(
                    json.dumps({"type": "executing", "data": {"node": self.last_node_id}})
                )
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and first:
                    try:
                        data = json.loads(msg.data)
                    except (ValueError, RecursionError):
                        continue  # logged by ComfyUI; the negotiation stays open
                    if not isinstance(data, dict):
                        continue  # (ComfyUI's data.get fails: the same)
                    if data.get("type") == "feature_flags":
                        if self.sockets.get(sid) is ws:
                            flags = data.get("data")
                            self.flags[sid] = dict(flags) if isinstance(flags, dict) else {}
                        await ws.send_str(
                            json.dumps(
                                {
                                    "type": "feature_flags",
                                    "data": {
                                        "supports_preview_metadata": True,
                                        "max_upload_size": self._max_upload_size,
                                    },
                                }
                            )
                        )
                    first = False
                elif msg.type == WSMsgType.ERROR:
                    log.debug("websocket closed with exception %s", ws.exception())
        finally:
            self._all.discard(ws)
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
                self.flags.pop(sid, None)
        return ws
