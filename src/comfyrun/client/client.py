"""comfyrun's own Python client (httpx only): submit, get, wait, follow events with resume,
cancel, list, download outputs; workflow templates and batches. The calls about the server itself
(backends, stats, model cache, API keys) are `ServerCalls` (client.server).

    async with ComfyrunClient("http://127.0.0.1:8189") as client:
        job = await client.submit(workflow)
        async for ev in client.events(job["id"]):
            print(ev.event, ev.data)
        job = await client.get(job["id"])
        paths = await client.download_outputs(job, "out/")
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from comfyrun.client.errors import ComfyrunAPIError, raise_for
from comfyrun.client.server import ServerCalls
from comfyrun.client.sse import ServerEvent, SSEDecoder
from comfyrun.outputs.keys import safe_segment

TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
DEFAULT_URL = "http://127.0.0.1:8189"


class ComfyrunClient(ServerCalls):
    """One comfyrun server. `transport` lets tests pass an httpx transport (e.g. ASGITransport)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> ComfyrunClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self._http.request(method, path, **kwargs)
        raise_for(resp)
        return resp.json() if resp.content else None

    # jobs -------------------------------------------------------------------------------------

    async def submit(
        self,
        workflow: Mapping[str, Any] | None = None,
        *,
        job_type: str = "comfy",
        params: Mapping[str, Any] | None = None,
        then: Sequence[Mapping[str, Any]] | None = None,
        priority: int = 0,
        wait: float | None = None,
        idempotency_key: str | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        output: Mapping[str, Any] | None = None,
        webhook: Mapping[str, Any] | None = None,
        models: Sequence[Mapping[str, Any]] | None = None,
        retry_queue_full: bool = True,
    ) -> dict[str, Any]:
        """POST /api/v2/jobs: a ComfyUI `workflow`, or a job of another `job_type` with its
        `params` (e.g. job_type="image"); `then`: follow-up steps on its outputs. Retries
        409/429 answers that carry Retry-After when asked to; an idempotency key is minted so
        such retries never create a second job."""
        body: dict[str, Any] = {"priority": priority}
        if workflow is not None:
            body["workflow"] = dict(workflow)
        if job_type != "comfy":
            body["type"] = job_type
        for name, value in (
            ("params", dict(params) if params else None),
            ("then", [dict(step) for step in then] if then else None),
            ("inputs", [dict(i) for i in inputs] if inputs else None),
            ("metadata", dict(metadata) if metadata else None),
            ("timeout_s", timeout_s),
            ("max_retries", max_retries),
            ("output", dict(output) if output else None),
            ("webhook", dict(webhook) if webhook else None),
            ("models", [dict(m) for m in models] if models else None),
        ):
            if value is not None:
                body[name] = value
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        params = {"wait": wait} if wait else None
        timeout = None if wait else httpx.USE_CLIENT_DEFAULT
        while True:
            try:
                job: dict[str, Any] = await self._json(
                    "POST",
                    "/api/v2/jobs",
                    json=body,
                    headers=headers,
                    params=params,
                    timeout=timeout,
                )
                return job
            except ComfyrunAPIError as exc:
                if not (retry_queue_full and exc.status in (409, 429) and exc.retry_after):
                    raise
                await asyncio.sleep(exc.retry_after)

    async def get(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = await self._json("GET", f"/api/v2/jobs/{job_id}")
        return job

    async def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = await self._json("POST", f"/api/v2/jobs/{job_id}/cancel")
        return job

    async def delete(self, job_id: str) -> None:
        await self._json("DELETE", f"/api/v2/jobs/{job_id}")

    async def list_jobs(
        self, *, status: Sequence[str] | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page: {"jobs": [...], "next_cursor": ...}, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = ",".join(status)
        if cursor:
            params["cursor"] = cursor
        page: dict[str, Any] = await self._json("GET", "/api/v2/jobs", params=params)
        return page

    async def iter_jobs(
        self, *, status: Sequence[str] | None = None, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = await self.list_jobs(status=status, limit=page_size, cursor=cursor)
            for job in page["jobs"]:
                yield job
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def events(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        reconnect: bool = True,
        give_up_s: float = 60.0,
    ) -> AsyncIterator[ServerEvent]:
        """The job's SSE stream until its terminal status. On a dropped connection it
        reconnects with Last-Event-ID, so no transition is missed; after `give_up_s` with
        nothing from the server (not even its keep-alives), the last failure is raised (it
        tried for ever). An answer that is no event stream raises ComfyrunAPIError."""
        last = last_event_id
        delay = 0.2
        heard = time.monotonic()  # when the server last sent something
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            decoder = SSEDecoder()
            try:
                async with self._http.stream(
                    "GET",
                    f"/api/v2/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=120.0),
                ) as resp:
                    if not resp.is_success:
                        await resp.aread()
                        raise_for(resp)
                    kind = resp.headers.get("content-type", "")
                    if not kind.startswith("text/event-stream"):
                        raise ComfyrunAPIError(
                            resp.status_code,
                            "not_an_event_stream",
                            f"the server answered {kind or 'no content type'}, not events",
                        )
                    async for line in resp.aiter_lines():
                        heard = time.monotonic()
                        for ev in decoder.push(line):
                            if ev.id is not None:
                                last = ev.id
                            yield ev
                            if ev.event == "status" and ev.data.get("status") in TERMINAL:
                                return
                        delay = 0.2
            except (httpx.TransportError, httpx.StreamError):
                if not reconnect or time.monotonic() - heard > give_up_s:
                    raise
            if not reconnect:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job once terminal (follows events; polls as the backstop). TimeoutError after
        `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout

        async def follow() -> dict[str, Any]:
            while True:
                async for ev in self.events(job_id):
                    if ev.event == "status" and ev.data.get("status") in TERMINAL:
                        break
                job = await self.get(job_id)
                if job["status"] in TERMINAL:
                    return job

        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await asyncio.wait_for(follow(), remaining)

    async def webhooks(self, job_id: str) -> list[dict[str, Any]]:
        """The job's webhook deliveries, each with its attempts."""
        body: dict[str, Any] = await self._json("GET", f"/api/v2/jobs/{job_id}/webhooks")
        return list(body["deliveries"])

    # outputs ----------------------------------------------------------------------------------

    async def download(self, output: Mapping[str, Any], dest: str | Path) -> Path:
        """Stream one output (a Job's `outputs[i]`) to the file `dest`."""
        url = str(output.get("url") or f"/api/v2/assets/{output['id']}/content")
        return await self._save(url, Path(dest), follow_redirects=True)

    async def download_outputs(self, job: Mapping[str, Any], folder: str | Path) -> list[Path]:
        """Every output of `job` into `folder/<node_id>/<name>`, each made one safe file name
        (a backend names them: a node id or a name holding "../" wrote outside `folder`)."""
        paths = []
        for out in job.get("outputs", []):
            node = safe_segment(str(out["node_id"]), fallback="node")
            name = safe_segment(str(out["name"]), fallback=safe_segment(str(out["id"])))
            paths.append(await self.download(out, Path(folder) / node / name))
        return paths

    # workflow templates and batches ------------------------------------------------------------

    async def workflows(self) -> list[dict[str, Any]]:
        body: dict[str, Any] = await self._json("GET", "/api/v2/workflows")
        return list(body["workflows"])

    async def workflow(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("GET", f"/api/v2/workflows/{name}")
        return body

    async def run_workflow(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """POST /api/v2/workflows/{name}/jobs; `options` are the usual job options (priority,
        metadata, webhook, timeout_s, max_retries, output)."""
        body = {"params": dict(params or {}), **{k: v for k, v in options.items() if v is not None}}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        job: dict[str, Any] = await self._json(
            "POST",
            f"/api/v2/workflows/{name}/jobs",
            json=body,
            headers=headers,
            params={"wait": wait} if wait else None,
            timeout=None if wait else httpx.USE_CLIENT_DEFAULT,
        )
        return job

    async def create_batch(
        self,
        workflow: str,
        *,
        items: Sequence[Mapping[str, Any]] | None = None,
        matrix: Mapping[str, Sequence[Any]] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """POST /api/v2/batches with `items` ([{"params": {...}}]) or a `matrix`."""
        body: dict[str, Any] = {"workflow": workflow}
        if items is not None:
            body["items"] = [dict(i) for i in items]
        if matrix is not None:
            body["matrix"] = {k: list(v) for k, v in matrix.items()}
        body.update({k: v for k, v in options.items() if v is not None})
        batch: dict[str, Any] = await self._json("POST", "/api/v2/batches", json=body)
        return batch

    async def batch(self, batch_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("GET", f"/api/v2/batches/{batch_id}")
        return body

    async def batch_jobs(
        self, batch_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        body: dict[str, Any] = await self._json(
            "GET", f"/api/v2/batches/{batch_id}/jobs", params=params
        )
        return body

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("POST", f"/api/v2/batches/{batch_id}/cancel")
        return body

    async def download_batch(self, batch_id: str, dest: str | Path) -> Path:
        """Stream the batch's outputs.zip to the file `dest`."""
        return await self._save(f"/api/v2/batches/{batch_id}/outputs.zip", Path(dest), timeout=None)

    async def _save(self, url: str, path: Path, **stream: Any) -> Path:
        """GET `url` streamed into the file `path` (its folder made); an error answer raises."""
        path.parent.mkdir(parents=True, exist_ok=True)
        async with self._http.stream("GET", url, **stream) as resp:
            if not resp.is_success:
                await resp.aread()
                raise_for(resp)
            fh = await asyncio.to_thread(path.open, "wb")
            try:
                async for chunk in resp.aiter_bytes(65536):
                    fh.write(chunk)
            finally:
                fh.close()
        return path


__all__ = ["TERMINAL", "ComfyrunClient"]
