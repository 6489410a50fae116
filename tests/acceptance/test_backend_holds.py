"""An admin's stop of a managed backend outlives a crash of `comfyrun serve` (kill -9): started
again in the same data dir, it leaves that backend's ComfyUI stopped (emulators start eagerly)
until `start`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.acceptance.conftest import StartServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll another process's state (nothing there to await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def backends(url: str) -> dict[str, dict[str, Any]]:
    listed = httpx.get(f"{url}/api/v2/backends", timeout=10).json()["backends"]
    return {b["name"]: b for b in listed}


def test_a_stopped_backend_stays_stopped_after_serve_is_killed_and_started_again(
    start_server: StartServer, tmp_path: Path
) -> None:
    args = ("--emulator", "2", "--db", f"sqlite:///{tmp_path / 'q.db'}")
    first = start_server("serve", *args)
    until(lambda: all(b["state"] == "ready" for b in backends(first.url).values()))
    r = httpx.post(f"{first.url}/api/v2/backends/emulator-1/stop", timeout=10)
    assert r.status_code == 200 and r.json()["kept_stopped"], r.text
    until(lambda: backends(first.url)["emulator-1"]["state"] == "stopped")
    first.kill()  # kill -9: nothing written on the way out

    second = start_server("serve", *args)
    until(lambda: backends(second.url)["emulator-2"]["state"] == "ready")
    held = backends(second.url)["emulator-1"]
    assert held["kept_stopped"] and held["state"] == "stopped", held
    r = httpx.post(f"{second.url}/api/v2/backends/emulator-1/start", timeout=10)
    assert r.status_code == 200 and not r.json()["kept_stopped"], r.text
    until(lambda: backends(second.url)["emulator-1"]["state"] == "ready")
