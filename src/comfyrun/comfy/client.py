"""`ComfyClient`: the async client of one ComfyUI server (HTTP + one websocket).

    client = ComfyClient("http://127.0.0.1:8188")
    await client.start()
    with client.watch(prompt_id) as watch:       # register before submitting: nothing is missed
        await client.submit(prompt, prompt_id=prompt_id)
        async for event in watch: ...              # optional: progress, previews, ...
        result = await watch.result(timeout=600)   # PromptResult: success | error | interrupted | lost
    await client.close()

Completion is event-driven: the prompt's events arrive on the websocket and `executing` with
node=None settles it. ComfyUI replays nothing and sends a prompt's events only to the clientId
it was submitted with, so a prompt whose events cannot all be seen, because the socket dropped
or was down when it was submitted, is *stale*: a background loop settles stale prompts from
GET /queue and GET /history every `poll_interval` seconds, and at once after each reconnect. A
stale prompt that is not in the queue and has no history is lost (`ComfyPromptLost`).

Every HTTP call has a timeout; failures are typed (`comfyrun.comfy.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import mimetypes
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from comfyrun.comfy.errors import (
    ComfyConnectionError,
    ComfyHTTPError,
    ComfyProtocolError,
    ComfyTimeout,
    ComfyValidationError,
)
from comfyrun.comfy.history import HistoryEntry, QueueState, parse_history, parse_queue
from comfyrun.comfy.messages import (
    Executing,
    ExecutionStart,
    Message,
    PreviewImage,
    Status,
    Text,
)
from comfyrun.comfy.outputs import FileRef
from comfyrun.comfy.result import PromptResult, result_from_history, result_from_tracker
from comfyrun.comfy.socket import ComfySocket
from comfyrun.comfy.watch import PromptWatch

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
UploadData = bytes | AsyncIterable[bytes] | Path

_CHUNK = 64 * 1024
#: Reconcile passes in a row that must find a prompt nowhere before it is declared lost.
LOST_AFTER_MISSES = 2


@dataclass(frozen=True, slots=True)
class SubmitResult:
    prompt_id: str
    number: float
    #: Non-empty on a 200 when some outputs failed validation; the valid ones still run.
    node_errors: JSON = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class UploadResult:
    name: str
    subfolder: str
    type: str

    @property
    def load_image_value(self) -> str:
        """The value LoadImage's `image` input takes for this upload."""
        name = f"{self.subfolder}/{self.name}" if self.subfolder else self.name
        return name if self.type == "input" else f"{name} [{self.type}]"


class ViewStream:
    """The body of GET /view, streamed: ``async for chunk in stream``."""

    def __init__(self, response: httpx.Response, chunk_size: int) -> None:
        self._response = response
        self._chunk_size = chunk_size
        self.content_type: str | None = response.headers.get("content-type")
        length = response.headers.get("content-length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes(self._chunk_size):
                yield chunk
        except httpx.TimeoutException as exc:
            raise ComfyTimeout(f"reading /view timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise ComfyConnectionError(f"reading /view failed: {exc!r}") from exc


class ComfyClient:
    """One ComfyUI server: a pooled HTTP client and one websocket.

    `client_id` is a prefix: each websocket connection gets `<prefix>-<uuid>`. `timeout` bounds
    every HTTP call (and the first connect in `start`). Prompts whose events may be missed are
    settled from queue and history every `poll_interval` seconds; every `audit_interval`
    seconds all prompts in flight are checked that way. `websocket=False` runs on polling alone
    (and lets tests drive the HTTP side through `http_transport`). ComfyUI serves HTTP from
    one event loop, so a few pooled connections (`max_connections`) are faster than many: with
    200 prompts submitted at once, httpcore's pool bookkeeping grows with the connection count.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
        client_id: str | None = None,
        websocket: bool = True,
        poll_interval: float = 1.0,
        audit_interval: float = 30.0,
        reconnect_initial: float = 0.05,
        reconnect_max: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.audit_interval = audit_interval
        self._transport = http_transport
        self._client_id_prefix = client_id or "comfyrun"
        self._use_websocket = websocket
        self._reconnect = (reconnect_initial, reconnect_max)
        self._max_connections = max_connections
        self._http: httpx.AsyncClient | None = None
        self._socket: ComfySocket | None = None
        self._watches: dict[str, PromptWatch] = {}
        self._state_callbacks: list[Callable[[bool], None]] = []
        self._poll_task: asyncio.Task[None] | None = None
        self._poll_wakeup = asyncio.Event()
        self._object_info: JSON | None = None
        self._object_info_lock = asyncio.Lock()
        self._running: str | None = None
        #: Last `queue_remaining` the server broadcast.
        self.queue_remaining: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Open the HTTP pool and the websocket; with `wait`, fail unless it connects in time."""
        if self._http is not None:
            return
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout),
            transport=self._transport,
            limits=httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            ),
            trust_env=False,
        )
        if self._use_websocket:
            self._socket = ComfySocket(
                self.base_url,
                on_message=self._on_message,
                on_state=self._on_socket_state,
                client_id_prefix=self._client_id_prefix,
                open_timeout=self.timeout,
                reconnect_initial=self._reconnect[0],
                reconnect_max=self._reconnect[1],
            )
            self._socket.start()
        self._poll_task = asyncio.create_task(self._poll_loop(), name=f"comfy-poll {self.base_url}")
        if (
            wait
            and self._socket is not None
            and not await self._socket.wait_connected(self.timeout)
        ):
            await self.close()
            raise ComfyConnectionError(f"no websocket to {self.base_url} within {self.timeout} s")

    async def close(self) -> None:
        """Close the websocket and the HTTP pool; unfinished watches fail."""
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        if self._socket is not None:
            await self._socket.close()
            self._socket = None
        for watch in list(self._watches.values()):
            watch.fail(ComfyConnectionError(f"the client of {self.base_url} was closed"))
        self._watches.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> ComfyClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether the websocket is up now."""
        return self._socket is not None and self._socket.connected

    @property
    def client_id(self) -> str | None:
        """The clientId of the current websocket connection (or of the next one)."""
        return self._socket.client_id if self._socket is not None else None

    def on_state_change(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        """Call `callback(connected)` whenever the websocket connects or drops.

        Returns a function that unsubscribes.
        """
        self._state_callbacks.append(callback)
        return lambda: self._state_callbacks.remove(callback)

    # -- prompts -----------------------------------------------------------------------------

    def watch(
        self, prompt_id: str, *, node_ids: Iterable[str] | None = None, attach: bool = False
    ) -> PromptWatch:
        """Follow `prompt_id`. Call before `submit`, or with `attach=True` for a prompt that
        was submitted earlier (e.g. by a previous process): it is then settled from history.
        """
        existing = self._watches.get(prompt_id)
        if existing is not None and not existing.closed:
            raise ValueError(f"prompt {prompt_id} is already watched")
        watch = PromptWatch(prompt_id, node_ids=node_ids, on_close=self._forget)
        if attach:
            watch.submitted = True
            self._poll_wakeup.set()
        self._watches[prompt_id] = watch
        return watch

    def _forget(self, watch: PromptWatch) -> None:
        if self._watches.get(watch.prompt_id) is watch:
            del self._watches[watch.prompt_id]

    async def submit(
        self,
        prompt: Mapping[str, Any],
        prompt_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        front: bool = False,
        number: float | None = None,
    ) -> SubmitResult:
        """POST /prompt. A 400 raises `ComfyValidationError` with ComfyUI's body unchanged."""
        prompt_id = prompt_id or str(uuid.uuid4())
        socket = self._socket
        connection = socket.connection if socket is not None and socket.connected else None
        body: JSON = {"prompt": prompt, "prompt_id": prompt_id}
        if socket is not None:
            body["client_id"] = socket.client_id
        if extra_data:
            body["extra_data"] = dict(extra_data)
        if front:
            body["front"] = True
        if number is not None:
            body["number"] = number
        watch = self._watches.get(prompt_id)
        try:
            response = await self._request("POST", "/prompt", json=body, expect=(200, 400))
            data = self._json(response)
            if response.status_code == 400:
                raise ComfyValidationError(
                    error=data.get("error") if isinstance(data.get("error"), dict) else {},
                    node_errors=data.get("node_errors") or {},
                )
            result = SubmitResult(
                prompt_id=str(data.get("prompt_id", prompt_id)),
                number=float(data.get("number", 0)),
                node_errors=dict(data.get("node_errors") or {}),
            )
        except BaseException as exc:
            if watch is not None:
                if _maybe_sent(exc):
                    # The prompt may be queued all the same: let queue and history decide.
                    watch.submitted = True
                    self._poll_wakeup.set()
                else:
                    watch.fail(exc)
            raise
        if result.node_errors:
            logger.warning(
                "prompt %s queued with node errors on %s: %s",
                prompt_id,
                self.base_url,
                list(result.node_errors),
                extra={"action": "prompt_node_errors", "backend": self.base_url},
            )
        if watch is not None:
            watch.submitted = True
            still_same = socket is not None and socket.connected and socket.connection == connection
            watch.connection = connection if still_same else None
            if watch.connection is None:
                self._poll_wakeup.set()
        return result

    async def run(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> PromptResult:
        """Submit and wait: the result whatever its status (validation errors raise)."""
        prompt_id = prompt_id or str(uuid.uuid4())
        with self.watch(prompt_id) as watch:
            await self.submit(prompt, prompt_id=prompt_id, extra_data=extra_data)
            return await watch.result(timeout)

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """GET /history/{id}; None while the prompt is pending, running or unknown."""
        response = await self._request("GET", f"/history/{prompt_id}")
        return parse_history(self._json(response), prompt_id)

    async def queue(self) -> QueueState:
        """GET /queue."""
        response = await self._request("GET", "/queue")
        return parse_queue(self._json(response))

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt: only `prompt_id` if it is running now; None: whatever runs."""
        await self._request(
            "POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {}
        )

    async def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        """POST /queue delete: removes pending prompts only; running or unknown ids are ignored."""
        ids = list(prompt_ids)
        await self._request("POST", "/queue", json={"delete": ids})
        # A deleted prompt gets no event and no history: let the queue say it is gone.
        for prompt_id in ids:
            watch = self._watches.get(prompt_id)
            if watch is not None and watch.submitted:
                watch.needs_history = True
                self._poll_wakeup.set()

    async def cancel(self, prompt_id: str) -> None:
        """Stop `prompt_id` wherever it is: delete it if pending, interrupt it if running.

        Its watch then settles as "lost" (deleted before it ran) or "interrupted".
        """
        await self.delete_queued([prompt_id])
        await self.interrupt(prompt_id)

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """POST /free; ComfyUI applies it after the current prompt."""
        await self._request(
            "POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory}
        )

    async def system_stats(self) -> JSON:
        response = await self._request("GET", "/system_stats")
        return self._json(response)

    async def object_info(self, *, refresh: bool = False) -> JSON:
        """GET /object_info, cached after the first call."""
        async with self._object_info_lock:
            if self._object_info is None or refresh:
                response = await self._request("GET", "/object_info")
                self._object_info = self._json(response)
            return self._object_info

    # -- files -------------------------------------------------------------------------------

    async def upload_image(
        self,
        data: UploadData,
        filename: str,
        *,
        subfolder: str = "",
        type: str = "input",
        overwrite: bool = False,
        mask: bool = False,
        original_ref: FileRef | Mapping[str, Any] | None = None,
    ) -> UploadResult:
        """POST /upload/image (or /upload/mask with `mask`), streaming the file.

        The multipart body is generated as it is sent, so a large file or stream is never
        held whole in memory. ComfyUI may rename the file (`name (1).png`): use the result.
        """
        fields = {
            "overwrite": "true" if overwrite else "false",
            "subfolder": subfolder,
            "type": type,
        }
        if mask:
            if original_ref is None:
                raise ValueError("a mask upload needs original_ref (the image it applies to)")
            ref = original_ref.view_params if isinstance(original_ref, FileRef) else original_ref
            fields["original_ref"] = jsonlib.dumps(dict(ref))
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        body = _multipart(boundary, fields, filename, content_type, _chunks(data))
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if isinstance(data, bytes):
            content: bytes | AsyncIterable[bytes] = b"".join(
                [part async for part in body]  # small: the bytes are already in memory
            )
        else:
            content = body
        path = "/upload/mask" if mask else "/upload/image"
        response = await self._request("POST", path, content=content, headers=headers)
        result = self._json(response)
        try:
            return UploadResult(
                name=str(result["name"]),
                subfolder=str(result.get("subfolder") or ""),
                type=str(result.get("type") or type),
            )
        except KeyError as exc:
            raise ComfyProtocolError(f"upload answer without 'name': {result!r}") from exc

    @contextlib.asynccontextmanager
    async def view(self, ref: FileRef, *, chunk_size: int = _CHUNK) -> AsyncIterator[ViewStream]:
        """GET /view, streamed: ``async with client.view(ref) as s: async for chunk in s``."""
        http = self._require_http()
        request = http.build_request("GET", "/view", params=ref.view_params)
        try:
            response = await http.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise ComfyTimeout(f"GET /view on {self.base_url} timed out") from exc
        except httpx.TransportError as exc:
            raise ComfyConnectionError(f"GET /view on {self.base_url} failed: {exc!r}") from exc
        try:
            if response.status_code != 200:
                raise ComfyHTTPError(
                    f"GET /view {ref.filename!r} ({ref.type}) answered {response.status_code}",
                    status=response.status_code,
                    method="GET",
                    path="/view",
                )
            yield ViewStream(response, chunk_size)
        finally:
            await response.aclose()

    # -- websocket events --------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if isinstance(message, Status):
            self.queue_remaining = message.queue_remaining
            return
        if isinstance(message, ExecutionStart):
            self._running = message.prompt_id
        prompt_id = message.prompt_id
        if prompt_id is None and isinstance(message, Executing | PreviewImage | Text):
            # Legacy `executing`, plain previews and TEXT frames do not name their prompt;
            # ComfyUI runs one prompt at a time, so they belong to the one running.
            prompt_id = self._running
        if prompt_id is None:
            return
        if isinstance(message, Executing) and message.node is None and prompt_id == self._running:
            self._running = None
        watch = self._watches.get(prompt_id)
        if watch is None or watch.done:
            return
        watch.feed(message)
        tracker = watch.tracker
        if tracker.finished:
            if tracker.terminal:
                watch.settle(result_from_tracker(tracker))
            else:
                # Finished but the outcome event was missed: history has it by now.
                watch.needs_history = True
                self._poll_wakeup.set()

    def _on_socket_state(self, connected: bool) -> None:
        if connected:
            # Events for prompts submitted on earlier connections are gone: settle them now.
            self._poll_wakeup.set()
        else:
            self._running = None
        for callback in list(self._state_callbacks):
            try:
                callback(connected)
            except Exception:
                logger.exception(
                    "state callback failed",
                    extra={"action": "state_callback_failed", "backend": self.base_url},
                )

    # -- settling stale prompts --------------------------------------------------------------

    def _stale(self) -> list[PromptWatch]:
        socket = self._socket
        live_connection = socket.connection if socket is not None and socket.connected else None
        return [
            w
            for w in self._watches.values()
            if w.submitted
            and not w.done
            and (w.needs_history or w.connection is None or w.connection != live_connection)
        ]

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_audit = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_wakeup.wait(), self.poll_interval)
            self._poll_wakeup.clear()
            if loop.time() - last_audit >= self.audit_interval:
                # Live prompts too: one deleted from the queue by someone else sends no event.
                last_audit = loop.time()
                stale = [w for w in self._watches.values() if w.submitted and not w.done]
            else:
                stale = self._stale()
            if not stale:
                continue
            try:
                await self.reconcile(stale)
            except (ComfyConnectionError, ComfyTimeout, ComfyHTTPError, ComfyProtocolError) as exc:
                logger.debug(
                    "reconcile on %s failed: %s",
                    self.base_url,
                    exc,
                    extra={"action": "reconcile_failed", "backend": self.base_url},
                )
            except Exception:
                logger.exception(
                    "reconcile on %s failed unexpectedly",
                    self.base_url,
                    extra={"action": "reconcile_failed", "backend": self.base_url},
                )

    async def reconcile(self, watches: Iterable[PromptWatch]) -> None:
        """Settle watches from the server's queue and history.

        The queue is read first: a prompt only ever moves queue → history, so one that is not
        in the queue at that moment and not in history afterwards is gone. It is declared lost
        only when that is seen on `LOST_AFTER_MISSES` passes in a row, which covers a POST
        that timed out on our side but is still being handled by the server.
        """
        pending = [w for w in watches if not w.done]
        if not pending:
            return
        queue = await self.queue()
        off_queue = []
        for watch in pending:
            if watch.prompt_id in queue:
                watch.misses = 0
            else:
                off_queue.append(watch)
        semaphore = asyncio.Semaphore(8)

        async def settle(watch: PromptWatch) -> None:
            async with semaphore:
                entry = await self.history(watch.prompt_id)
            if watch.done:
                return
            if entry is not None:
                watch.tracker.apply_history(entry)
                watch.settle(result_from_history(entry))
                return
            watch.misses += 1
            if watch.misses < LOST_AFTER_MISSES:
                watch.needs_history = True  # look again on the next poll
            else:
                watch.tracker.mark_lost()
                logger.warning(
                    "prompt %s is lost on %s",
                    watch.prompt_id,
                    self.base_url,
                    extra={"action": "prompt_lost", "backend": self.base_url},
                )
                watch.settle(result_from_tracker(watch.tracker, source="history"))

        await asyncio.gather(*(settle(w) for w in off_queue))

    # -- HTTP --------------------------------------------------------------------------------

    def _require_http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise ComfyConnectionError(f"the client of {self.base_url} is not started")
        return self._http

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        http = self._require_http()
        try:
            response = await http.request(
                method, path, json=json, content=content, headers=headers, params=params
            )
        except httpx.TimeoutException as exc:
            raise ComfyTimeout(f"{method} {path} on {self.base_url} timed out") from exc
        except httpx.TransportError as exc:
            raise ComfyConnectionError(
                f"{method} {path} on {self.base_url} failed: {exc!r}"
            ) from exc
        if response.status_code not in expect:
            raise ComfyHTTPError(
                f"{method} {path} on {self.base_url} answered {response.status_code}: "
                f"{response.text[:200]!r}",
                status=response.status_code,
                method=method,
                path=path,
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> JSON:
        try:
            data = response.json()
        except ValueError as exc:
            raise ComfyProtocolError(
                f"{response.request.method} {response.request.url.path} answered non-JSON"
            ) from exc
        if not isinstance(data, dict):
            raise ComfyProtocolError(
                f"{response.request.method} {response.request.url.path} answered a non-object"
            )
        return data


def _maybe_sent(exc: BaseException) -> bool:
    """Whether a failed POST may still have reached ComfyUI."""
    if isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return False
    return isinstance(exc, ComfyTimeout | ComfyConnectionError | asyncio.CancelledError)


async def _chunks(data: UploadData) -> AsyncIterator[bytes]:
    if isinstance(data, bytes):
        yield data
    elif isinstance(data, Path):
        with data.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                yield chunk
    else:
        async for chunk in data:
            yield chunk


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


async def _multipart(
    boundary: str,
    fields: Mapping[str, str],
    filename: str,
    content_type: str,
    chunks: AsyncIterator[bytes],
) -> AsyncIterator[bytes]:
    for name, value in fields.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{_quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    async for chunk in chunks:
        if chunk:
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


__all__ = ["ComfyClient", "SubmitResult", "UploadData", "UploadResult", "ViewStream"]
