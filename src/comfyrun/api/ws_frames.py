"""A websocket's messages written as frames straight to its connection.

ComfyUI's face relays a dozen messages a job to the client's /ws, each through Starlette's
`WebSocket.send`, the exception middleware's wrapper of `send`, uvicorn's ASGI `send` (an
awaited flow-control event, its state checks) and the `websockets` protocol's frame builder
(a `Frame` object, its checks, its serializer, a list of writes joined): ~40 Python calls a
message, for a frame that is two to ten bytes of header before the JSON.

uvicorn's websocket protocol made here (`frame_sending_protocol`) puts a function in the
connection's ASGI scope, under `SEND_FRAME`: given a message's bytes, it writes them as one
unmasked frame (text or binary) to the transport at once and returns True, where uvicorn would
write the same bytes; or returns False, and writes nothing, whenever the plain path must be
taken: before the handshake is answered, once a close is sent or received, while the
transport's buffer is full (uvicorn's `send` waits for it to drain), or when the connection
negotiated an extension (permessage-deflate: comfyrun does not offer it, see cli/server.py).
A caller falls back to `WebSocket.send_*` then, and must not send on the fast path while an
earlier message still waits on the plain one (its order would change).

The protocol answers an upgrade request that `websockets` refuses to read (a line over 8 KB,
more than 128 headers, a body): with the answer `websockets` made (414, 431), or 400, and
closes the connection. uvicorn wrote neither: the client waited for ever, and the connection
stayed open past the header timeout that closes other slow requests.

The protocol also drops a connection whose client stopped reading: one whose writes stay
paused (the transport's buffer past its high-water mark) for `STALLED_WRITES_S` is aborted,
its buffer discarded. uvicorn only ever closes it (on a ping the client never answered, or a
close it never answered), and asyncio's close waits for the buffer to drain, which it never
does: the connection, its buffer and what the app had waiting to send to it stayed for as long
as the client kept the connection open (hundreds of MB of previews).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

#: The scope's extension key for `SendFrame`.
SEND_FRAME = "comfyrun.websocket.send_frame"
#: The scope's extension key for `FlushFrames`.
FLUSH_FRAMES = "comfyrun.websocket.flush_frames"
#: A connection whose writes stay paused this long (its client reads nothing) is aborted.
STALLED_WRITES_S = 30.0

#: (payload, binary) → written; see the module docstring.
SendFrame = Callable[[bytes, bool], bool]
#: Sends now what the connection holds back until the end of the loop's turn (see below).
FlushFrames = Callable[[], None]

_TEXT, _BINARY = 0x81, 0x82  # FIN and the opcode: one whole message a frame

log = logging.getLogger(__name__)


def frame(payload: bytes, binary: bool = False) -> bytes:
    """`payload` as one unmasked frame (RFC 6455 5.2), as a server sends it."""
    first = _BINARY if binary else _TEXT
    size = len(payload)
    if size < 126:
        head = bytes((first, size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head + payload


def send_frame_of(scope: Any) -> SendFrame | None:
    """The connection's `SendFrame`, if its server made one (not under a test client)."""
    return cast(SendFrame | None, _extension(scope, SEND_FRAME))


def flush_frames_of(scope: Any) -> FlushFrames | None:
    """The connection's `FlushFrames`, if its server made one (not under a test client)."""
    return cast(FlushFrames | None, _extension(scope, FLUSH_FRAMES))


def _extension(scope: Any, key: str) -> Any:
    extensions = scope.get("extensions") if isinstance(scope, dict) else None
    found = extensions.get(key) if isinstance(extensions, dict) else None
    return found if callable(found) else None


class FrameSending(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol with `SEND_FRAME` in its scope, which aborts a connection
    whose client stopped reading."""

    stalled_writes_s = STALLED_WRITES_S
    _stall_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        refused = self.conn.handshake_exc
        if self.handshake_initiated or refused is None or self.transport.is_closing():
            return
        answer = b"".join(self.conn.data_to_send())  # (websockets' 414 or 431, or nothing)
        if not answer.startswith(b"HTTP/"):
            why = f"Failed to open a WebSocket connection: {refused}.\n".encode()
            answer = (
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(why), why)
            )
        self.handshake_complete = self.close_sent = True
        self.transport.write(answer)
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.stalled_writes_s, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_stall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_stall()
        super().connection_lost(exc)

    def _cancel_stall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stalled(self) -> None:
        self._stall_timer = None
        if not self.writable.is_set():
            log.info(
                "%s: websocket client read nothing for %g s: connection dropped",
                "{}:{}".format(*self.client) if self.client else "websocket",
                self.stalled_writes_s,
            )
            self.transport.abort()  # (connection_lost follows: the app hears a disconnect)

    async def run_asgi(self) -> None:
        extensions = cast(dict[str, Any], self.scope.setdefault("extensions", {}))
        extensions[SEND_FRAME] = self.send_frame
        extensions[FLUSH_FRAMES] = self.flush_frames
        await super().run_asgi()

    def send_frame(self, payload: bytes, binary: bool) -> bool:
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.conn.extensions
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame(payload, binary))
        return True

    def flush_frames(self) -> None:
        """Write now what the transport holds back until the end of the loop's turn
        (http_protocol.TurnWrites: the frames sent within one turn go in one write): a caller
        that sent its last message for now need not wait for the callbacks queued before that
        turn's end (a job's end told to its client would wait for the store's statements of
        its final commit, which were queued first)."""
        flush = getattr(self.transport, "flush", None)
        if callable(flush):
            flush()


def frame_sending_protocol(base: type[Any]) -> type[Any]:
    """`base` with `FrameSending` where it is uvicorn's sans-I/O websocket protocol (the one
    uvicorn picks with `websockets` installed); any other protocol as it is. (One class a
    base: each connection asks.)"""
    if issubclass(base, FrameSending) or not issubclass(base, WebSocketsSansIOProtocol):
        return base
    made = _made.get(base)
    if made is None:
        made = _made[base] = type(base.__name__, (FrameSending, base), {})
    return made


_made: dict[type[Any], type[Any]] = {}


__all__ = [
    "FLUSH_FRAMES",
    "SEND_FRAME",
    "STALLED_WRITES_S",
    "FlushFrames",
    "FrameSending",
    "SendFrame",
    "flush_frames_of",
    "frame",
    "frame_sending_protocol",
    "send_frame_of",
]
