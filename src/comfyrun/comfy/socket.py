"""The websocket to one ComfyUI server: connect, reconnect with backoff, feed parsed messages.

Every connection uses a fresh clientId. ComfyUI keys sockets by clientId and, when an old
socket with the same id finally closes, it forgets the *new* one, which then silently receives
nothing; a fresh id per connection rules that out. The cost is that prompts submitted under an
earlier id get no more events after a reconnect, so the client settles them through history.

The socket knows nothing of prompts: it hands every parsed message to `on_message` and tells
`on_state` when a connection opens or closes. The callbacks are plain functions called from the
socket's task; they must not block.

It is aiohttp's websocket client (the library comfyrun already sends its HTTP to ComfyUI with),
whose frame reader is compiled: a job brings about fifteen messages (status, execution_start,
progress_state, executing, executed, ...), each arriving on its own, and the `websockets`
library's reader (pure Python) cost ~15 us more of the event loop's CPU for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Callable, Mapping

import aiohttp

from comfyrun.aio import cancel_and_wait
from comfyrun.comfy.errors import ComfyProtocolError
from comfyrun.comfy.messages import Message, parse_binary, parse_text

logger = logging.getLogger(__name__)

#: Ask for previews with metadata (event 4), the only preview frames that name their prompt.
FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


#: A connection that lasted this long resets the backoff; shorter ones keep backing off, so a
#: server that accepts and drops at once is not hammered.
STABLE_AFTER_S = 2.0


def ws_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws"
    return base + "/ws"


class ComfySocket:
    """One logical websocket to a ComfyUI server, reconnected until `close()`.

    `connection` counts connections (1 for the first); `client_id` is the id of the current
    connection, or of the next one while disconnected.
    """

    def __init__(
        self,
        base_url: str,
        *,
        on_message: Callable[[Message], None],
        on_state: Callable[[bool], None],
        client_id_prefix: str = "comfyrun",
        open_timeout: float = 10.0,
        reconnect_initial: float = 0.05,
        reconnect_max: float = 5.0,
        ping_interval: float | None = 20.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = ws_url(base_url)
        self._on_message = on_message
        self._on_state = on_state
        self._prefix = client_id_prefix
        self._open_timeout = open_timeout
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._ping_interval = ping_interval
        self._headers = dict(headers or {})
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closing = False
        self._connected_event = asyncio.Event()
        self.connection = 0
        self.client_id = self._new_client_id()
        self.connected = False

    def _new_client_id(self) -> str:
        return f"{self._prefix}-{uuid.uuid4().hex}"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"comfy-ws {self._url}")

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def drop(self) -> None:
        """Close the current connection (it reconnects); for tests and health checks."""
        if self._ws is not None:
            await self._ws.close()

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        task, self._task = self._task, None
        await cancel_and_wait(task)  # (its loop also ends on `_closing`: see comfyrun.aio)

    async def _run(self) -> None:
        # no proxy from the environment (trust_env), as ComfyHTTP's; one connection at a time
        session = aiohttp.ClientSession(headers=self._headers, trust_env=False)
        try:
            await self._connections(session)
        finally:
            await session.close()

    async def _connections(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            connected_at: float | None = None
            try:
                async with asyncio.timeout(self._open_timeout):
                    ws = await session.ws_connect(
                        f"{self._url}?clientId={self.client_id}",
                        # a ping after 2x ping_interval of silence, its pong awaited half
                        # that (aiohttp's ratio): a ComfyUI whose loop stalls up to
                        # ping_interval (20 s) is not taken for dead, as before
                        heartbeat=None if self._ping_interval is None else 2 * self._ping_interval,
                        max_msg_size=0,  # no limit: a prompt's messages are ComfyUI's to size
                        compress=0,
                        autoclose=True,
                        autoping=True,
                    )
                async with ws:
                    self._ws = ws
                    await ws.send_str(FEATURE_FLAGS)
                    connected_at = loop.time()
                    self._set_connected(True)
                    await self._read(ws)
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                logger.debug(
                    "websocket to %s failed: %r",
                    self._url,
                    exc,
                    extra={"action": "ws_error", "backend": self._url},
                )
            except Exception:
                # Never let a surprise end the reconnect loop: the client would go deaf.
                logger.exception(
                    "websocket to %s failed unexpectedly",
                    self._url,
                    extra={"action": "ws_error", "backend": self._url},
                )
            finally:
                self._ws = None
                self.client_id = self._new_client_id()
                if self.connected:
                    self._set_connected(False)
            if self._closing:
                break
            if connected_at is not None and loop.time() - connected_at >= STABLE_AFTER_S:
                failures = 0  # a connection that held for a while: start over, fast
            failures += 1
            delay = min(self._reconnect_max, self._reconnect_initial * 2 ** (failures - 1))
            await asyncio.sleep(delay / 2 + self._rng.random() * delay / 2)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Until the connection closes (or fails: its error is raised, to be logged)."""
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        while True:
            frame = await ws.receive()
            kind = frame.type
            if kind is not text and kind is not binary:
                if kind is aiohttp.WSMsgType.ERROR:  # (a missed pong, a broken frame)
                    raise ConnectionError(f"the websocket failed: {frame.data!r}")
                return  # closed (pings and pongs are answered and taken by aiohttp)
            try:
                message = parse_text(frame.data) if kind is text else parse_binary(frame.data)
            except ComfyProtocolError as exc:
                logger.warning(
                    "ignoring a bad websocket frame from %s: %s",
                    self._url,
                    exc,
                    extra={"action": "ws_bad_frame", "backend": self._url},
                )
                continue
            try:
                self._on_message(message)
            except Exception:
                logger.exception(
                    "handling a %s message from %s failed",
                    type(message).__name__,
                    self._url,
                    extra={"action": "ws_handler_failed", "backend": self._url},
                )

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self.connection += 1
            self._connected_event.set()
        else:
            self._connected_event.clear()
        logger.info(
            "websocket %s %s",
            self._url,
            "connected" if connected else "disconnected",
            extra={
                "action": "ws_connected" if connected else "ws_disconnected",
                "backend": self._url,
            },
        )
        self._on_state(connected)


__all__ = ["FEATURE_FLAGS", "ComfySocket", "ws_url"]
