"""Helpers for tests of the HTTP API: an app with in-memory store and storage, a client on it
without sockets (ASGI), and small workflows."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from comfyrun.api.app import create_app
from comfyrun.api.context import AppContext
from comfyrun.config import Settings
from comfyrun.core.job import Output, OutputType
from comfyrun.outputs.base import iterate_bytes
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.store.memory import MemoryStore

#: The smallest workflow with an output: an empty image, saved.
TINY_WORKFLOW: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def tiny_workflow(color: int = 0) -> dict[str, Any]:
    wf = {
        k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])}
        for k, v in TINY_WORKFLOW.items()
    }
    wf["1"]["inputs"]["color"] = color
    return wf


def memory_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path, "db_url": "memory://", "api_keys": []}
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def sqlite_serve(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any, str]]:
    """`serve` as an ASGI app, ready: one emulator backend (50 ms a step), the queue in
    SQLite under `tmp_path`; yields its client, its store and the emulator's URL."""
    from comfyrun.config import BackendConfig
    from tests.support.emulator import running_emulator

    async with running_emulator(tmp_path / "emu", step_time_s=0.05) as emu:
        backends = [BackendConfig(name="gpu0", url=emu.url)]
        cfg = memory_settings(tmp_path, backends=backends, db_url=f"sqlite:///{tmp_path}/q.db")
        app = create_app(cfg, storage=MemoryOutputStorage())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                async with asyncio.timeout(30):
                    while (await client.get("/ready")).status_code != 200:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                yield client, app.state.ctx.store, emu.url


async def submit_steps(client: httpx.AsyncClient, steps: int, wait: float | None = None) -> Any:
    """A v2 job of a text-to-image workflow of `steps` sampler steps (`wait`: ?wait=); its
    201 answer."""
    from tests.support.emulator import text_to_image_workflow

    params = {"wait": wait} if wait else {}
    r = await client.post(
        "/api/v2/jobs", params=params, json={"workflow": text_to_image_workflow(steps=steps)}
    )
    assert r.status_code == 201, r.text
    return r.json()


@asynccontextmanager
async def asgi_app(
    settings: Settings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, AppContext]]:
    """The app (lifespan run) with a memory store and storage, and an ASGI client on it."""
    app = create_app(settings, store=MemoryStore(), storage=MemoryOutputStorage())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client, app.state.ctx


class ServerProcess:
    """`comfyrun <command> …` as a child process; `url` once it printed its address."""

    def __init__(
        self,
        args: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        entry: list[str] | None = None,
        runner: list[str] | None = None,
    ) -> None:
        """`runner`: what runs Python and its arguments (e.g. under valgrind), before
        sys.executable."""
        self.log_path = log_path
        self._log = log_path.open("ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [*(runner or []), sys.executable, *(entry or ["-m", "comfyrun.cli.main"]), *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=full_env,
            start_new_session=True,
        )
        self.url = ""

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Block until the server printed `listening on URL` (a bounded wait on its output)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if "listening on " in line:
                self.url = line.rsplit("listening on ", 1)[1].strip()
                return self.url
        self.kill()
        raise RuntimeError(f"server did not start; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def kill(self, sig: int | None = None) -> None:
        """Signal the whole process group (SIGKILL by default) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig if sig is not None else signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.close()

    def close(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if not self._log.closed:
            self._log.close()

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        self.kill(signal.SIGTERM)
        return int(self.proc.returncode)


async def store_output(
    ctx: AppContext, job_id: str, name: str, data: bytes, content_type: str, node_id: str = "2"
) -> Output:
    """A file `data` stored as the running job's output `name` of node `node_id` (as a run
    collects one), listed on the job."""
    assert ctx.storage is not None
    key = f"{job_id}/{node_id}/{name}"
    stored = await ctx.storage.put(key, iterate_bytes(data), content_type=content_type)
    output = Output(
        node_id=node_id,
        name=name,
        type=OutputType.IMAGE if content_type.startswith("image/") else OutputType.FILE,
        content_type=content_type,
        size_bytes=stored.size_bytes,
        hash=stored.hash,
        storage_key=key,
    )
    await ctx.store.add_output(job_id, output)
    return output


async def wait_until_ready(url: str, timeout: float = 60.0) -> None:
    """Poll GET /ready until 200 (a server's backends start in other processes)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while True:
            try:
                r = await http.get("/ready")
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.TransportError as exc:  # a slow start on a loaded machine: not ready yet
                last = repr(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready: {last}")
            await asyncio.sleep(0.1)
