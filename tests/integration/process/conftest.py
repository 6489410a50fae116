"""Fixtures for the process supervisor's integration tests: a fake ComfyUI folder and specs."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.fake_comfy import make_comfy_folder

from comfyrun.backends.process import ManagedProcess, ManagedSpec

SpecFactory = Callable[..., ManagedSpec]


@pytest.fixture
def comfy_folder(tmp_path: Path) -> Path:
    return make_comfy_folder(tmp_path / "ComfyUI")


@pytest.fixture
def make_spec(tmp_path: Path, comfy_folder: Path) -> SpecFactory:
    """A spec for the fake ComfyUI folder, with fast timings; keyword overrides win."""

    def make(**overrides: Any) -> ManagedSpec:
        fields: dict[str, Any] = {
            "name": "gpu0",
            "log_dir": tmp_path / "logs",
            "comfy_path": comfy_folder,
            "python": sys.executable,  # the fake needs no torch; discovery has its own tests
            "ready_timeout_s": 60.0,
            "ready_interval_s": 0.1,
            "restart_backoff_s": 0.1,
            "stop_grace_s": 5.0,
            "health_interval_s": None,
        }
        fields.update(overrides)
        return ManagedSpec(**fields)

    return make


@pytest.fixture
async def processes() -> AsyncIterator[list[ManagedProcess]]:
    """Collects supervisors made by a test and stops them all at the end, whatever happened."""
    made: list[ManagedProcess] = []
    yield made
    for process in made:
        await process.stop()
