"""The HTTP protocol's writes (api/http_protocol.py), on a fake transport: a response's head goes
out with its body, in one write; a websocket's messages sent in one turn of the loop go out in
one write; and uvicorn's TRACE lines are not built."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.server import ServerState

from comfyrun.api.http_protocol import HeadWithBody, TurnWrites, capped_protocol
from comfyrun.cli.server import quiet_uvicorn_trace


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


async def test_a_head_waits_for_the_body_and_goes_out_with_it() -> None:
    loop = asyncio.get_running_loop()
    transport = FakeTransport()
    writer = HeadWithBody(transport, loop)  # type: ignore[arg-type]
    writer.write(b"HEAD")
    assert transport.writes == []
    writer.write(b"BODY")
    assert transport.writes == [b"HEADBODY"]
    writer.write(b"MORE")  # the rest goes as it comes
    await asyncio.sleep(0)
    assert transport.writes == [b"HEADBODY", b"MORE"]


async def test_a_head_whose_body_is_not_ready_goes_alone_at_the_end_of_the_turn() -> None:
    loop = asyncio.get_running_loop()
    transport = FakeTransport()
    writer = HeadWithBody(transport, loop)  # type: ignore[arg-type]
    writer.write(b"HEAD")
    await asyncio.sleep(0)
    assert transport.writes == [b"HEAD"]
    writer.write(b"BODY")
    assert transport.writes == [b"HEAD", b"BODY"]
    closing = HeadWithBody(FakeTransport(), loop)  # type: ignore[arg-type]
    closing.write(b"HEAD")
    closing.close()  # what is held goes before the close
    assert closing.transport.writes == [b"HEAD"] and closing.transport.closed  # type: ignore[attr-defined]


async def served(app: Any, request: bytes) -> FakeTransport:
    """`request` through the protocol comfyrun serves with, to the end of its response."""
    config = Config(app, log_config=None, access_log=False, lifespan="off")
    config.load()
    protocol = capped_protocol(64 * 1024)(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(request)
    cycle = protocol.cycle
    assert cycle is not None
    async with asyncio.timeout(5):
        while not cycle.response_complete:
            cycle.message_event.clear()
            await cycle.message_event.wait()  # set as the response completes
    await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


async def test_a_response_is_one_write() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("hello")(scope, receive, send)

    transport = await served(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\nhello")


async def test_a_streamed_response_keeps_its_order() -> None:
    async def parts() -> Any:
        yield b"one,"
        await asyncio.sleep(0.01)
        yield b"two"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await StreamingResponse(parts())(scope, receive, send)

    transport = await served(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sent = b"".join(transport.writes)
    head, _, body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
    assert body == b"4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n"
    assert transport.writes[0].endswith(b"one,\r\n")  # the head went with the first part


async def test_writes_in_one_turn_go_out_together_and_before_a_close() -> None:
    loop = asyncio.get_running_loop()
    transport = FakeTransport()
    writer = TurnWrites(transport, loop)  # type: ignore[arg-type]
    writer.write(b"one,")
    writer.write(b"")
    writer.writelines([b"two,", bytearray(b"three")])
    assert transport.writes == []
    assert writer.get_write_buffer_size() == len(b"one,two,three")
    await asyncio.sleep(0)
    assert transport.writes == [b"one,two,three"]
    writer.write(b"four")
    await asyncio.sleep(0)
    assert transport.writes == [b"one,two,three", b"four"]  # a later turn: a write of its own
    writer.write(b"last")
    writer.close()  # what is held goes before the close
    assert transport.writes[-1] == b"last" and transport.closed
    await asyncio.sleep(0)
    assert len(transport.writes) == 3  # and not again
    writer.write(b"after")
    await asyncio.sleep(0)
    assert len(transport.writes) == 3  # a closing transport is not written to


async def test_a_websockets_messages_of_one_turn_are_one_write() -> None:
    """Through the protocol comfyrun serves with, upgraded: the handshake, then the three
    messages an app sends without waiting between them, in one write, in order."""
    sent = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.01)
        for text in ("a", "bb", "ccc"):
            await send({"type": "websocket.send", "text": text})
        sent.set()
        await receive()  # until the test goes away

    config = Config(app, log_config=None, access_log=False, lifespan="off")
    config.load()
    protocol = capped_protocol(64 * 1024)(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    async with asyncio.timeout(5):
        await sent.wait()
    await asyncio.sleep(0)
    assert len(transport.writes) == 2, transport.writes
    assert transport.writes[0].startswith(b"HTTP/1.1 101 ")
    assert transport.writes[1] == b"\x81\x01a\x81\x02bb\x81\x03ccc"  # unmasked text frames


def test_uvicorn_builds_no_trace_lines_under_comfyrun(monkeypatch: Any) -> None:
    """uvicorn formats a TRACE line per connection while its logger's own level is NOTSET:
    serving pins it to the level in effect; a level someone set is left as it is."""
    logger = logging.getLogger("uvicorn.error")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    quiet_uvicorn_trace()
    assert logger.level == logger.getEffectiveLevel() > TRACE_LOG_LEVEL
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    quiet_uvicorn_trace()
    assert logger.level == logging.DEBUG
