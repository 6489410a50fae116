"""The HTTP/1.1 protocol comfyrun serves with: uvicorn's httptools one, with a cap on a request's
head (its line and headers).

httptools (llhttp, in C) parses a request for a fraction of what h11 (pure Python) costs: about
2 ms of CPU per job on the hot path, where a v2 job makes two requests. But it buffers a head
without bound, and uvicorn caps the head only with h11. So this protocol counts the bytes that
arrive while a request's head is still open: once they pass `max_header_bytes` and the head is
still not complete, the request is refused (400) and the connection closed, as h11 does with
`h11_max_incomplete_event_size`. A head that arrives complete goes on to the app, whose limits
middleware (api/limits.py) refuses one over the limit with 431 in the dialect's own shape.

A head must also arrive whole within `header_timeout_s` of its first byte: one that trickles in
(a slow-loris client holding a connection open a byte at a time) is answered 408 and its
connection closed. (A stalled body is the limits middleware's: body_idle_timeout_s.)

A response's head goes out with its body (`HeadWithBody`): uvicorn writes the status line and
headers, then the body, each at once, so every response took two system calls and two TCP
segments (the sockets are TCP_NODELAY), and woke its client twice. The head is now held until
the body's first write, within the same turn of the event loop (a streamed body that is not
ready by then gets its head sent at the end of that turn).

A websocket's messages sent within one turn of the event loop go out together
(`TurnWrites`): ComfyUI's face relays a prompt's messages as its backend sends them, a dozen a
job, most of them in bursts (a prompt's end is four: `executed`, `execution_success`, `status`,
`executing` null), and each was a system call of its own that woke the client. Those messages
are framed without uvicorn's send path where it can be (api/ws_frames.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from comfyrun.api.ws_frames import frame_sending_protocol


class HeadWithBody:
    """The transport a response is written to: its first write (the head) waits for the next
    one (the body's first part) and goes out with it, or alone at the end of the loop's turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._first = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._first:
            self._first = False
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
            return
        if self._head is not None:
            data, self._head = self._head + bytes(data), None
        self.transport.write(data)

    def flush(self) -> None:
        """Send a head still held."""
        if self._head is not None:
            head, self._head = self._head, None
            if not self.transport.is_closing():
                self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class TurnWrites:
    """The transport of a websocket: what is written within one turn of the event loop is sent
    in one write at the end of that turn (or before a close)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is held."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(map(len, self._pending))

    # asked of the transport a dozen times a job: said here rather than found by __getattr__
    # (which runs only after the attribute's normal lookup has failed, an exception made)
    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


_turn_writes: dict[type[asyncio.Protocol], type[asyncio.Protocol]] = {}


def turn_writes_protocol(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """`base` (uvicorn's websocket protocol) writing through `TurnWrites` (one class a base)."""
    made = _turn_writes.get(base)
    if made is None:

        def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
            writes = TurnWrites(cast(asyncio.Transport, transport), asyncio.get_running_loop())
            base.connection_made(self, cast(asyncio.Transport, writes))

        made = _turn_writes[base] = type(
            base.__name__, (base,), {"connection_made": connection_made}
        )
    return made


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; `capped_protocol` makes one with a given limit."""

    max_header_bytes = 64 * 1024
    header_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # between requests, the next head may start any time
        self._head_bytes = 0
        self._heads = 0  # heads completed on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        if self.ws_protocol_class is not None:
            self.ws_protocol_class = turn_writes_protocol(
                frame_sending_protocol(self.ws_protocol_class)
            )

    def data_received(self, data: bytes) -> None:
        counting, heads = self._head_open, self._heads
        super().data_received(data)
        if not counting or not self._head_open or self._heads != heads:
            return  # a body, or a head completed in this data (the next one counts from here)
        self._head_bytes += len(data)
        if self.transport.is_closing():
            return
        if self._head_bytes > self.max_header_bytes:
            self.send_400_response("Request line and headers too large.")
        elif self._head_timer is None and data:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._head_bytes = 0
        self._heads += 1
        self._stop_head_timer()
        cycle = self.cycle
        super().on_headers_complete()
        if self.cycle is not cycle and self.cycle is not None:  # a request to answer (not an
            # upgrade); its task runs from the loop's next turn, after this
            self.cycle.transport = cast(asyncio.Transport, HeadWithBody(self.transport, self.loop))

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._head_open or self.transport.is_closing():
            return
        msg = b"Request head not received in time."
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg
        )
        self.transport.close()

    def on_message_complete(self) -> None:
        self._head_open = True
        super().on_message_complete()


def capped_protocol(
    max_header_bytes: int, header_timeout_s: float = 30.0
) -> type[CappedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting, refusing heads over the limit or
    slower than the timeout."""
    return type(
        "CappedHttpToolsProtocol",
        (CappedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )


__all__ = [
    "CappedHttpToolsProtocol",
    "HeadWithBody",
    "TurnWrites",
    "capped_protocol",
    "turn_writes_protocol",
]
