"""Helpers to replay the recorded ComfyUI protocol transcripts (../shared/comfy-protocol).

`scripted_comfy()` runs a scripted ComfyUI: real HTTP and websocket, events sent by the test. It
replays recorded frames to the socket of the clientId a prompt was submitted with, as ComfyUI
does, so the client's routing, reconnect and history fallback are tested over the wire without
an executor.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from comfyrun.comfy.messages import Message, parse_binary, parse_text

JSON = dict[str, Any]

#: Transcripts with one prompt: (file, key path to ws messages, key path to the history body).
SINGLE_PROMPT_RUNS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("ws_success_run.json", ("ws_messages",), ("history", "body")),
    ("ws_success_cached_rerun.json", ("ws_messages",), ("history", "body")),
    ("ws_success_partial_cache.json", ("ws_messages",), ("history", "body")),
    ("ws_loadimage_scale_save.json", ("ws_messages",), ("history", "body")),
    ("ws_runtime_error.json", ("ws_messages",), ("history", "body")),
    ("post_prompt_extra_data_and_prompt_id.json", ("ws_messages",), ("history", "body")),
    (
        "ws_sampler_progress_previews_interrupt.json",
        ("interrupt_mid_ksampler", "ws_messages"),
        ("interrupt_mid_ksampler", "history", "body"),
    ),
]


def load(shared_dir: Path, name: str) -> Any:
    return json.loads((shared_dir / "comfy-protocol" / name).read_text())


def dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def binary_frame(record: JSON) -> bytes:
    """Rebuild a binary frame from its transcript description (the bytes were not stored)."""
    event = int(record["event_type"])
    if event == 1:
        fmt = 2 if record.get("image_format") == "PNG" else 1
        size = int(record.get("image_bytes", record["len"] - 8))
        image = bytes.fromhex(record.get("image_magic", "ffd8ffe0")).ljust(size, b"\0")
        return struct.pack(">II", 1, fmt) + image
    if event == 4:
        meta = json.dumps(record["metadata"]).encode()
        image = b"\xff\xd8\xff\xe0".ljust(int(record["len"]) - 8 - len(meta), b"\0")
        return struct.pack(">II", 4, len(meta)) + meta + image
    if event == 3:
        node = str(record["node_id"]).encode()
        return struct.pack(">II", 3, len(node)) + node + str(record["text"]).encode()
    raise ValueError(f"no rebuild for binary event {event}")


def frames(records: list[JSON]) -> Iterator[str | bytes]:
    """The websocket frames of a transcript, as the server sent them."""
    for record in records:
        if record.get("binary"):
            yield binary_frame(record)
        else:
            yield json.dumps({"type": record["type"], "data": record["data"]})


def messages(records: list[JSON]) -> list[Message]:
    parsed: list[Message] = []
    for frame in frames(records):
        parsed.append(parse_binary(frame) if isinstance(frame, bytes) else parse_text(frame))
    return parsed


def all_ws_records(obj: Any) -> Iterator[JSON]:
    """Every recorded websocket message anywhere in a transcript."""
    if isinstance(obj, dict):
        if "t_ms" in obj and ("type" in obj or obj.get("binary")):
            yield obj
            return
        for value in obj.values():
            yield from all_ws_records(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from all_ws_records(value)


async def until_prompt_ends(ws: Any, prompt_id: str, timeout: float = 30) -> list[JSON]:
    """The text messages a ComfyUI client's websocket (a `websockets` connection) hears until
    `prompt_id`'s closing `executing` with node null, that one included (binary frames
    skipped)."""
    seen: list[JSON] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            message: JSON = json.loads(raw)
            seen.append(message)
            data = message["data"]
            ended = message["type"] == "executing" and data.get("node") is None
            if ended and data.get("prompt_id") == prompt_id:
                return seen


class ScriptedComfy:
    def __init__(self) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.client_ids: list[str] = []
        self.client_of: dict[str, str] = {}
        self.history: dict[str, JSON] = {}
        self.pending: list[str] = []
        self.url = ""
        self.connected = asyncio.Event()
        #: Authorization header of every request, websocket handshakes included.
        self.authorization: list[str | None] = []
        #: Accept websockets and close them at once (a server in trouble).
        self.close_on_connect = False
        #: Answer the client's websocket pings (False: a server that hangs, its socket open).
        self.answer_pings = True

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.authorization.append(request.headers.get("Authorization"))
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[record])
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/history/{prompt_id}", self._history)
        app.router.add_get("/queue", self._queue)
        return app

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=self.answer_pings)
        await ws.prepare(request)
        sid = request.query["clientId"]
        if self.close_on_connect:
            self.client_ids.append(sid)
            await ws.receive()  # the client's feature flags: it counts as connected
            await ws.close()
            return ws
        self.sockets[sid] = ws
        self.client_ids.append(sid)
        await ws.send_json(
            {
                "type": "status",
                "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid},
            }
        )
        self.connected.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if data.get("type") == "feature_flags":
                        await ws.send_json(
                            {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
                        )
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    async def _prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt_id = body["prompt_id"]
        self.client_of[prompt_id] = body.get("client_id", "")
        self.pending.append(prompt_id)
        return web.json_response(
            {"prompt_id": prompt_id, "number": len(self.client_of), "node_errors": {}}
        )

    async def _history(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def _queue(self, request: web.Request) -> web.Response:
        items = [[i, pid, {}, {}, []] for i, pid in enumerate(self.pending)]
        return web.json_response({"queue_running": items[:1], "queue_pending": items[1:]})

    async def replay(
        self, prompt_id: str, records: list[JSON], *, recorded_id: str, to: str | None = None
    ) -> None:
        """Send a recorded run to the prompt's client, with its prompt id swapped in."""
        ws = self.sockets.get(to or self.client_of[prompt_id])
        swapped = json.loads(json.dumps(records).replace(recorded_id, prompt_id))
        for frame in frames(swapped):
            if ws is None or ws.closed:
                return  # like ComfyUI: events for a client that is not connected are dropped
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)

    def finish(self, prompt_id: str, entry: JSON, *, recorded_id: str) -> None:
        if prompt_id in self.pending:
            self.pending.remove(prompt_id)
        self.history[prompt_id] = json.loads(json.dumps(entry).replace(recorded_id, prompt_id))

    async def drop_all(self) -> None:
        self.connected.clear()
        for ws in list(self.sockets.values()):
            await ws.close()


@asynccontextmanager
async def scripted_comfy() -> AsyncIterator[ScriptedComfy]:
    comfy = ScriptedComfy()
    runner = web.AppRunner(comfy.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    comfy.url = f"http://127.0.0.1:{port}"
    try:
        yield comfy
    finally:
        await runner.cleanup()
