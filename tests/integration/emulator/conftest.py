"""Fixtures for the emulator's integration tests: a running emulator, an HTTP session and the
captured real-ComfyUI transcripts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.support.emulator import running_emulator

from comfyrun.comfy.emulator import Emulator

#: The checkpoint list of the instance the transcripts were captured on.
TRANSCRIPT_MODELS = {
    "checkpoints": ["broken_for_test.safetensors", "random_sd15_for_protocol_tests.safetensors"]
}


@pytest.fixture
def transcript(shared_dir: Path) -> Callable[[str], Any]:
    """Load /work/shared/comfy-protocol/<name>.json."""

    def load(name: str) -> Any:
        return json.loads((shared_dir / "comfy-protocol" / f"{name}.json").read_text())

    return load


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[Emulator]:
    async with running_emulator(tmp_path, models=TRANSCRIPT_MODELS) as emulator:
        yield emulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:
        yield http
