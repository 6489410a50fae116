"""`ComfyClient`: the async client of one ComfyUI server (HTTP + one websocket).

    client = ComfyClient("http://127.0.0.1:8188")
    await client.start()
    with client.watch(prompt_id) as watch:       # register before submitting: nothing is missed
        await client.submit(prompt, prompt_id=prompt_id)
        async for event in watch: ...              # optional: progress, previews, ...
        result = await watch.result(timeout=600)   # PromptResult: success | error | interrupted | lost
    await client.close()

Completion is event-driven: the prompt's events arrive on the websocket (`socket`), feed the
prompt's tracker, and `executing` with node=None settles it. Prompts whose events cannot all be
seen (the socket dropped, or was down at submit) are settled from queue and history instead
(`reconcile`). Every HTTP call has a timeout and fails with a typed error (`errors`). What the
client does with its websocket's messages and state is `SocketEvents` (`socket_events`), its
file uploads and downloads `FileTransfers` (`transfers`), both mixed in.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from comfyrun.comfy.errors import ComfyConnectionError, ComfyValidationError
from comfyrun.comfy.files import UploadData, UploadResult, ViewStream
from comfyrun.comfy.history import HistoryEntry, QueueState, parse_history, parse_queue
from comfyrun.comfy.http import ComfyHTTP, maybe_sent
from comfyrun.comfy.reconcile import Reconciler
from comfyrun.comfy.result import PromptResult
from comfyrun.comfy.socket import ComfySocket
from comfyrun.comfy.socket_events import SocketEvents
from comfyrun.comfy.transfers import FileTransfers
from comfyrun.comfy.watch import Preview, PromptWatch

logger = logging.getLogger(__name__)

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    prompt_id: str
    number: float
    #: Non-empty on a 200 when some outputs failed validation; the valid ones still run.
    node_errors: JSON = field(default_factory=dict, hash=False)


class ComfyClient(SocketEvents, FileTransfers):
    """One ComfyUI server: a pooled HTTP client and one websocket.

    `client_id` is a prefix: each websocket connection gets `<prefix>-<uuid>`. `timeout` bounds
    every HTTP call (and the first connect in `start`). Prompts whose events may be missed are
    settled from queue and history every `poll_interval` seconds; every `audit_interval`
    seconds all prompts in flight are checked that way. `websocket=False` runs on polling alone
    (and lets tests drive the HTTP side through `http_transport`). `headers` go with every
    HTTP request and the websocket handshake (e.g. a token for a proxy in front of ComfyUI).
    ComfyUI serves HTTP from
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
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._transport = http_transport
        self._client_id_prefix = client_id or "comfyrun"
        self._use_websocket = websocket
        self._reconnect = (reconnect_initial, reconnect_max)
        self._max_connections = max_connections
        self._headers = dict(headers or {})
        self._http: ComfyHTTP | None = None
        self._socket: ComfySocket | None = None
        self._watches: dict[str, PromptWatch] = {}
        self._state_callbacks: list[Callable[[bool], None]] = []
        self._reconciler = Reconciler(
            name=self.base_url,
            watches=self._watches,
            queue=self.queue,
            history=self.history,
            live_connection=self._live_connection,
            poll_interval=poll_interval,
            audit_interval=audit_interval,
        )
        self._object_info: JSON | None = None
        self._object_info_lock = asyncio.Lock()
        self._running: str | None = None
        self._finishing: dict[str, asyncio.Future[None]] = {}
        self.queue_remaining: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Open the HTTP pool and the websocket; with `wait`, fail unless it connects in time."""
        if self._http is not None:
            return
        self._http = ComfyHTTP(
            self.base_url,
            timeout=self.timeout,
            transport=self._transport,
            max_connections=self._max_connections,
            headers=self._headers,
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
                headers=self._headers,
            )
            self._socket.start()
        self._reconciler.start()
        socket = self._socket
        if wait and socket is not None and not await socket.wait_connected(self.timeout):
            await self.close()
            raise ComfyConnectionError(f"no websocket to {self.base_url} within {self.timeout} s")

    async def close(self) -> None:
        """Close the websocket and the HTTP pool; unfinished watches fail."""
        await self._reconciler.close()
        if self._socket is not None:
            await self._socket.close()
            self._socket = None
        for watch in list(self._watches.values()):
            watch.fail(ComfyConnectionError(f"the client of {self.base_url} was closed"))
        self._watches.clear()
        self._all_over()
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
    def previews(self) -> dict[str, Preview]:
        """The latest preview image of each watched prompt that has one (see `watch`)."""
        return {
            prompt_id: watch.latest_preview
            for prompt_id, watch in self._watches.items()
            if watch.latest_preview is not None
        }

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
            self._reconciler.wake()
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
        partial_execution_targets: Sequence[str] | None = None,
    ) -> SubmitResult:
        """POST /prompt. A 400 raises `ComfyValidationError` with ComfyUI's body unchanged.
        `partial_execution_targets`: the output nodes to run (ComfyUI runs every one without).

        A failure that leaves it unknown whether ComfyUI queued the prompt (a timeout, a
        dropped connection, a cancel) leaves its watch to the queue and history.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        connection = self._live_connection()
        body: JSON = {"prompt": prompt, "prompt_id": prompt_id}
        if self._socket is not None:
            body["client_id"] = self._socket.client_id
        if extra_data:
            body["extra_data"] = dict(extra_data)
        if front:
            body["front"] = True
        if number is not None:
            body["number"] = number
        if partial_execution_targets is not None:
            body["partial_execution_targets"] = list(partial_execution_targets)
        watch = self._watches.get(prompt_id)
        try:
            result = await self._post_prompt(body)
        except BaseException as exc:
            if watch is not None and maybe_sent(exc):
                watch.submitted = True
                self._reconciler.wake()
            elif watch is not None:
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
            # Live only if one connection was up from before the POST until now.
            watch.connection = connection if self._live_connection() == connection else None
            if watch.connection is None:
                self._reconciler.wake()
        return result

    async def _post_prompt(self, body: JSON) -> SubmitResult:
        http = self._require_http()
        response = await http.request("POST", "/prompt", json=body, expect=(200, 400))
        data = http.json(response)
        if response.status_code == 400:
            error = data.get("error")
            raise ComfyValidationError(
                error=error
                if isinstance(error, dict)
                else ({} if error is None else {"message": str(error)}),
                node_errors=_object(data.get("node_errors")),
            )
        # (read as leniently as ComfyUI's own frontend reads them: a field of another type
        # is as good as absent, not a failed run)
        number = data.get("number")
        return SubmitResult(
            prompt_id=str(data.get("prompt_id", body["prompt_id"])),
            number=float(number) if isinstance(number, int | float) else 0.0,
            node_errors=_object(data.get("node_errors")),
        )

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

    async def reconcile(self, watches: Iterable[PromptWatch]) -> None:
        """Settle `watches` from queue and history now (the background loop does this too)."""
        await self._reconciler.reconcile(watches)

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """GET /history/{id}; None while the prompt is pending, running or unknown."""
        path = f"/history/{quote(prompt_id, safe='')}"
        return parse_history(await self._get_json(path), prompt_id)

    async def queue(self) -> QueueState:
        """GET /queue."""
        return parse_queue(await self._get_json("/queue"))

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt: only `prompt_id` if it is running now; None: whatever runs."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        await self._require_http().request("POST", "/interrupt", json=body)

    async def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        """POST /queue delete: removes pending prompts only; running or unknown ids are ignored."""
        ids = list(prompt_ids)
        await self._require_http().request("POST", "/queue", json={"delete": ids})
        # A deleted prompt gets no event and no history: let the queue say it is gone.
        for prompt_id in ids:
            watch = self._watches.get(prompt_id)
            if watch is not None and watch.submitted:
                watch.needs_history = True
                self._reconciler.wake()

    async def cancel(self, prompt_id: str) -> None:
        """Stop `prompt_id` wherever it is: delete it if pending, interrupt it if running.

        Its watch then settles as "lost" (deleted before it ran) or "interrupted".
        """
        await self.delete_queued([prompt_id])
        await self.interrupt(prompt_id)

    async def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """POST /free; ComfyUI applies it after the current prompt."""
        body = {"unload_models": unload_models, "free_memory": free_memory}
        await self._require_http().request("POST", "/free", json=body)

    async def system_stats(self) -> JSON:
        return await self._get_json("/system_stats")

    @property
    def cached_object_info(self) -> JSON | None:
        """The object_info fetched by `object_info()`, or None before the first fetch."""
        return self._object_info

    async def object_info(self, *, refresh: bool = False) -> JSON:
        """GET /object_info, cached after the first call."""
        async with self._object_info_lock:
            if self._object_info is None or refresh:
                self._object_info = await self._get_json("/object_info")
            return self._object_info

    # -- HTTP --------------------------------------------------------------------------------

    def _require_http(self) -> ComfyHTTP:
        if self._http is None:
            raise ComfyConnectionError(f"the client of {self.base_url} is not started")
        return self._http

    async def _get_json(self, path: str) -> JSON:
        http = self._require_http()
        return await http.json_off_loop(await http.request("GET", path))


def _object(value: Any) -> JSON:
    """A JSON object a backend answered, or an empty one for anything else."""
    return dict(value) if isinstance(value, dict) else {}


__all__ = ["ComfyClient", "SubmitResult", "UploadData", "UploadResult", "ViewStream"]
