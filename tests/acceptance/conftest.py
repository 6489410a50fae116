"""Fixtures for acceptance tests: `comfyrun` run as a subprocess, driven over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.api import ServerProcess
from tests.support.store import pg_schema_url

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """`start_server("serve", "--emulator", "2", env=…)` → a started ServerProcess on a free
    port with its own data dir; every process started is killed at the end."""
    started: list[ServerProcess] = []

    def start(command: str, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        n = len(started)
        argv = [command, "--port", "0", *args]
        if "--data-dir" not in args:
            argv += ["--data-dir", str(tmp_path / "data")]
        proc = ServerProcess(argv, log_path=tmp_path / f"server-{n}.log", env=env)
        started.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL in a fresh schema, dropped afterwards."""
    with pg_schema_url() as url:
        yield url
