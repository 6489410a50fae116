"""Websocket messages framed straight to the connection (api/ws_frames.py): the frames are the
ones `websockets` itself writes, they keep their order with the plain path, and the plain path
is taken wherever uvicorn's own send would wait or refuse."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from tests.unit.api.test_http_protocol import FakeTransport
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from comfyrun import jsontext
from comfyrun.api.compat.comfy_socket import ClientSession
from comfyrun.api.http_protocol import capped_protocol
from comfyrun.api.ws_frames import (
    FLUSH_FRAMES,
    SEND_FRAME,
    flush_frames_of,
    frame,
    send_frame_of,
)
from comfyrun.dispatch.relay import RelayHub

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
def test_a_frame_is_the_one_websockets_writes(size: int, binary: bool) -> None:
    payload = bytes(i % 251 for i in range(size))
    opcode = Opcode.BINARY if binary else Opcode.TEXT
    assert frame(payload, binary) == Frame(opcode, payload).serialize(mask=False, extensions=[])


App = Callable[[Scope, Receive, Send], Awaitable[None]]


class Transport(FakeTransport):
    """Keeps the protocol it was handed to (the websocket's, once upgraded)."""

    protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


async def connected(
    app: App, extra_headers: bytes = b"", deflate: bool = False, transport: Any = None
) -> tuple[Any, Any]:
    """`app` served by comfyrun's protocol on a fake transport, upgraded to a websocket: the
    websocket's protocol and the transport."""
    config = Config(
        app, log_config=None, access_log=False, lifespan="off", ws_per_message_deflate=deflate
    )
    config.load()
    protocol = capped_protocol(64 * 1024)(config=config, server_state=ServerState(), app_state={})
    transport = transport or Transport()
    protocol.connection_made(transport)
    protocol.data_received(UPGRADE + extra_headers + b"\r\n")
    assert transport.protocol is not None
    return transport.protocol, transport


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_frames_sent_straight_and_through_asgi_are_alike_and_in_order() -> None:
    done = asyncio.Event()
    told: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        fast = send_frame_of(scope)
        told["before accept"] = fast is not None and fast(b"early", False)
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.01)
        assert fast is not None
        told["text"] = fast(b'{"a":1}', False)
        await send({"type": "websocket.send", "text": "plain"})
        told["binary"] = fast(b"\x00\x01", True)
        await asyncio.sleep(0.01)
        await send({"type": "websocket.close", "code": 1000})
        told["after close"] = fast(b"late", False)
        done.set()

    _, transport = await connected(app)
    async with asyncio.timeout(5):
        await done.wait()
    await turn()
    assert told == {"before accept": False, "text": True, "binary": True, "after close": False}
    sent = b"".join(transport.writes)
    head, _, frames = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert frames.startswith(
        frame(b'{"a":1}') + frame(b"plain") + frame(b"\x00\x01", binary=True) + b"\x88"
    )  # then the close frame, and nothing after it
    assert b"late" not in frames and b"early" not in frames


async def test_the_plain_path_is_taken_with_deflate_or_a_full_buffer() -> None:
    results: list[bool] = []
    ready = asyncio.Event()
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        scopes.append(scope)
        ready.set()
        await receive()

    # a client that offers permessage-deflate to a server that accepts it: compressed frames
    # only, so never straight
    await connected(
        app, b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", True
    )
    async with asyncio.timeout(5):
        await ready.wait()
    fast = send_frame_of(scopes[0])
    assert fast is not None
    results.append(fast(b"x", False))

    ready.clear()
    protocol, transport = await connected(app)
    async with asyncio.timeout(5):
        await ready.wait()
    fast = send_frame_of(scopes[1])
    assert fast is not None
    protocol.pause_writing()  # the transport's buffer is full: uvicorn's send would wait
    results.append(fast(b"y", False))
    protocol.resume_writing()
    results.append(fast(b"z", False))
    await turn()
    assert results == [False, False, True]
    assert b"".join(transport.writes).endswith(frame(b"z"))


def test_no_send_frame_where_the_server_made_none() -> None:
    assert send_frame_of({"type": "websocket", "extensions": {}}) is None
    assert send_frame_of({"type": "websocket"}) is None
    assert send_frame_of({"extensions": {SEND_FRAME: "not callable"}}) is None
    assert flush_frames_of({"type": "websocket", "extensions": {}}) is None
    assert flush_frames_of({"extensions": {FLUSH_FRAMES: "not callable"}}) is None


async def test_frames_flushed_go_out_before_the_callbacks_queued_ahead_of_the_turns_end() -> None:
    """The frames of one turn go out in one write at its end; `flush_frames` sends them at
    once, ahead of the callbacks already queued (a job's final commit, whose end is told)."""
    done = asyncio.Event()
    order: list[str] = []
    transport: Any = None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.01)
        fast, flush = send_frame_of(scope), flush_frames_of(scope)
        assert fast is not None and flush is not None
        loop = asyncio.get_running_loop()
        for name in ("held", "flushed"):
            queued = len(transport.writes)
            loop.call_soon(lambda: order.append(f"queued ahead ({len(transport.writes)})"))
            assert fast(name.encode(), False) and fast(b"2", False)
            if name == "flushed":
                flush()
                order.append(f"after flush ({len(transport.writes) - queued})")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        done.set()
        await receive()

    _, transport = await connected(app)
    async with asyncio.timeout(5):
        await done.wait()
    # held: not written when the callback queued ahead ran (1: the handshake's write);
    # flushed: written at once, in one write, before it ran
    assert order == ["queued ahead (1)", "after flush (1)", "queued ahead (3)"], order
    assert transport.writes[-2:] == [
        frame(b"held") + frame(b"2"),
        frame(b"flushed") + frame(b"2"),
    ]


async def session_served(extras: dict[str, Any] | None = None) -> tuple[ClientSession, Any, Any]:
    """A ComfyUI-face socket's session (its app context a stand-in with `extras`) served by
    comfyrun's protocol on a fake transport: the session, the protocol and the transport."""
    sessions: list[ClientSession] = []
    ready = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        ctx = SimpleNamespace(principal=SimpleNamespace(owner=None), extras=extras or {})
        sessions.append(ClientSession(ctx, websocket, "client"))  # type: ignore[arg-type]
        ready.set()
        await websocket.receive()

    protocol, transport = await connected(app)
    async with asyncio.timeout(5):
        await ready.wait()
    return sessions[0], protocol, transport


async def test_a_message_never_overtakes_one_waiting_on_the_plain_path() -> None:
    """A ComfyUI-face socket whose transport is full: its first message waits in uvicorn's
    send; the next must wait behind it rather than go out straight, and both go out in order
    once the transport drains."""
    session, protocol, transport = await session_served()
    assert session._send_frame is not None  # served by comfyrun's protocol: the fast path is on
    protocol.pause_writing()
    first = asyncio.create_task(session.send({"type": "first"}))
    await turn()
    second = asyncio.create_task(session.send({"type": "second"}))
    await turn()
    assert not first.done() and not second.done()
    protocol.resume_writing()  # the two waiting are woken, but not yet run:
    third = asyncio.create_task(session.send({"type": "third"}))  # must not overtake them
    async with asyncio.timeout(5):
        await asyncio.gather(first, second, third)
    await session.send(b"\x00\x00\x00\x01png")  # and straight again once nothing waits
    await turn()
    frames = b"".join(transport.writes).partition(b"\r\n\r\n")[2]
    assert frames == (
        frame(b'{"type":"first"}')
        + frame(b'{"type":"second"}')
        + frame(b'{"type":"third"}')
        + frame(b"\x00\x00\x00\x01png", binary=True)
    )


async def test_a_burst_of_relayed_messages_goes_out_in_one_write() -> None:
    """The backend's messages that reach a ComfyUI-face socket together (published to the
    relay hub one by one within a turn) go out in one write, not one each: the socket sends
    what its inbox holds before it flushes."""
    hub = RelayHub()
    session, _, transport = await session_served(extras={"relay_hub": hub})
    hub.begin("job")  # a run of this process relays it: its frames come through the hub
    session.follow("job")
    await turn()
    before = len(transport.writes)
    sent = [{"type": "progress", "data": {"value": i, "max": 3}} for i in range(3)]
    for message in sent:
        hub.publish("job", [message])
    await turn()
    assert transport.writes[before:] == [b"".join(frame(jsontext.dumpb(m)) for m in sent)]
    session._following["job"].cancel()
    hub.end("job")


class AbortableTransport(Transport):
    aborted = False

    def abort(self) -> None:
        self.aborted = True
        self.closed = True


async def test_a_client_that_reads_nothing_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes paused (the transport's buffer full) for STALLED_WRITES_S: the connection is
    aborted, its buffer discarded (uvicorn only closed it, on a ping never answered, and
    asyncio's close waits for a buffer that never drains: it stayed, with all that waited to
    be sent to it, as long as the client kept it open). Writes that resume in time keep it."""
    from comfyrun.api.ws_frames import FrameSending

    monkeypatch.setattr(FrameSending, "stalled_writes_s", 0.1)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.Event().wait()

    protocol, transport = await connected(app, transport=AbortableTransport())
    protocol.pause_writing()
    await asyncio.sleep(0.05)
    protocol.resume_writing()  # it drained in time
    await asyncio.sleep(0.15)
    assert not transport.aborted
    protocol.pause_writing()
    protocol.pause_writing()  # (asyncio may say it again: one timer)
    await asyncio.sleep(0.15)
    assert transport.aborted
    protocol.connection_lost(None)  # (the transport's doing, once aborted)


async def test_a_socket_behind_is_not_queued_previews() -> None:
    """While a message waits to be sent to a ComfyUI-face socket (its client reads slower than
    it is sent), the binary frames relayed for it (previews, each superseded by the next) are
    not queued for it: they piled up without bound (hundreds of MB for a client that read
    nothing); its text messages all are."""
    ctx = SimpleNamespace(principal=SimpleNamespace(owner=None))
    websocket = SimpleNamespace(scope={})
    session = ClientSession(ctx, websocket, "client")  # type: ignore[arg-type]
    frames = [{"type": "progress", "data": {}}, {"binary": "AAAAAQ=="}]
    assert session._keepable(frames) == frames
    session._waiting_sends = 1
    assert session.behind
    assert session._keepable(frames) == [{"type": "progress", "data": {}}]


@pytest.mark.parametrize(
    ("extra_headers", "status"),
    [
        (b"Content-Length: 5\r\n", b"400"),  # a body (websockets reads none)
        (b"Transfer-Encoding: chunked\r\n", b"400"),
        (b"Cookie: " + b"c" * 9000 + b"\r\n", b"431"),  # a line past 8 KB
        (b"".join(b"X-%d: x\r\n" % i for i in range(200)), b"431"),  # 128 headers at most
    ],
    ids=["body", "chunked", "long-line", "many-headers"],
)
async def test_an_upgrade_websockets_refuses_is_answered_and_closed(
    extra_headers: bytes, status: bytes
) -> None:
    """uvicorn handed such a request to `websockets`, which refused it, and wrote nothing: the
    client waited for ever on a connection no timeout closed."""
    started: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.append(scope)

    _, transport = await connected(app, extra_headers)
    await turn()
    answer = b"".join(transport.writes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert transport.closed and started == []
