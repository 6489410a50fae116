"""A headless Chromium driven over the DevTools protocol (websockets only, no extra package).
Tests that use `browser` skip when no Chromium is installed: CI does not depend on one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


class Page:
    """One browser tab: navigate it and evaluate JavaScript in it."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # events arrive interleaved with answers; only our answer matters
            msg = json.loads(await self._ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg["result"]
                return result

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", timeout=30)

    async def eval(self, expression: str) -> Any:
        answer = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            await asyncio.sleep(0.1)


def _find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


async def _devtools_port(proc: asyncio.subprocess.Process, profile: Path, log: Path) -> int:
    """The port Chromium picked: it writes it to DevToolsActivePort in its profile."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and proc.returncode is None:
        with contextlib.suppress(OSError, ValueError):
            # two lines, the port and the browser's path: a file read while Chromium is still
            # writing it holds less (empty, or part of the port)
            lines = (await asyncio.to_thread(port_file.read_text)).splitlines()
            if len(lines) >= 2:
                return int(lines[0])
        await asyncio.sleep(0.1)
    tail = await asyncio.to_thread(log.read_text, errors="replace")
    raise RuntimeError(f"chromium did not start: {tail[-2000:]}")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Page]:
    exe = _find_browser()
    if exe is None:
        pytest.skip("no chromium installed")
    profile = tmp_path / "chromium-profile"
    log = tmp_path / "chromium.log"
    log_file = log.open("wb")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
        "about:blank",
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        start_new_session=True,
    )
    try:
        port = await _devtools_port(proc, profile, log)
        async with httpx.AsyncClient(timeout=10) as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with connect(page_ws, max_size=None) as ws:
            yield Page(ws)
    finally:
        # its own session: the group holds the renderer and helper processes it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        log_file.close()
