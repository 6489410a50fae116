"""Helpers for tests that need a running ComfyUI emulator (importable by every test area).

from tests.support.emulator import running_emulator, image_workflow

async with running_emulator(tmp_path, step_time_s=0.05) as emu:
    ... emu.url, emu.faults ...
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from comfyrun.comfy.emulator import Emulator, EmulatorConfig, start_emulator

#: Paths (see `assert_same_shape`) of ComfyUI JSON objects keyed by ids rather than names.
ID_MAPS = (
    "$.*.outputs",
    "$.*.meta",
    "$.node_errors",
    "$.nodes",
)
#: Paths holding the client's own prompt graph, echoed back: only their JSON type is compared.
ECHOED = ("*.prompt[2]", "$.queue_running[*][2]", "$.queue_pending[*][2]", "$.prompt")
#: ID_MAPS plus the root: GET /history bodies are keyed by prompt id.
HISTORY_MAPS = (*ID_MAPS, "$")


def emulator_config(tmp_path: Path, **overrides: Any) -> EmulatorConfig:
    """A config with output/, input/ and temp/ under tmp_path, a free port and no step time."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "output_dir": tmp_path / "output",
        "input_dir": tmp_path / "input",
        "temp_dir": tmp_path / "temp",
        "step_time_s": 0.0,
    }
    values.update(overrides)
    return EmulatorConfig(**values)


@asynccontextmanager
async def running_emulator(tmp_path: Path, **overrides: Any) -> AsyncIterator[Emulator]:
    """Start an emulator on a free port for the `async with` block (overrides: EmulatorConfig fields)."""
    async with start_emulator(emulator_config(tmp_path, **overrides)) as emu:
        yield emu


def image_workflow(color: int = 0, prefix: str = "test", size: int = 64) -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage, plus a PreviewImage (the transcripts' graph)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


def text_to_image_workflow(
    seed: int = 1,
    steps: int = 4,
    text: str = "a photo of a cat",
    ckpt_name: str = "v1-5-pruned-emaonly.safetensors",
    size: int = 64,
    prefix: str = "t2i",
) -> dict[str, Any]:
    """ComfyUI's default text-to-image graph (simulated models)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _matches(path: str, pattern: str) -> bool:
    """`*` matches anything; everything else (brackets included) is literal."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), path) is not None


def assert_same_shape(
    actual: Any, expected: Any, path: str = "$", maps: Collection[str] = ID_MAPS
) -> None:
    """Assert `actual` has `expected`'s shape: same keys in the same order, same JSON types,
    same nesting. Values are ignored (ids, timestamps, numbers, file names). Objects at a path
    matching `maps` are id-keyed: their keys are free, each value must match an expected value.
    Lists compare element by element when the lengths agree, else against the first element."""
    assert _kind(actual) == _kind(expected), (
        f"{path}: {_kind(actual)} != {_kind(expected)} ({actual!r:.200})"
    )
    if any(_matches(path, pattern) for pattern in ECHOED):
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        if any(_matches(path, pattern) for pattern in maps):
            if actual and expected:
                template = next(iter(expected.values()))
                for key, value in actual.items():
                    assert_same_shape(value, expected.get(key, template), f"{path}.*", maps)
            return
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_same_shape(actual[key], expected[key], f"{path}.{key}", maps)
    elif isinstance(expected, list):
        assert isinstance(actual, list)
        if not actual or not expected:
            return
        if len(actual) == len(expected):
            for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
                assert_same_shape(a, e, f"{path}[{i}]", maps)
        else:
            for i, a in enumerate(actual):
                assert_same_shape(a, expected[0], f"{path}[{i}]", maps)


@dataclass
class Frame:
    """One websocket message: JSON (`type`, `data`) or binary (`event`, `payload`)."""

    type: str
    data: Any = None
    raw: bytes = b""

    @property
    def binary_event(self) -> int:
        return int.from_bytes(self.raw[:4], "big")


@dataclass
class WsClient:
    """A websocket client that records everything it receives."""

    ws: aiohttp.ClientWebSocketResponse
    frames: list[Frame] = field(default_factory=list)

    async def next(self, timeout: float = 30.0) -> Frame:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            body = json.loads(msg.data)
            frame = Frame(body["type"], body["data"])
        elif msg.type == aiohttp.WSMsgType.BINARY:
            frame = Frame("binary", None, bytes(msg.data))
        else:
            raise ConnectionError(f"websocket closed ({msg.type})")
        self.frames.append(frame)
        return frame

    async def until_idle(self, prompt_id: str, timeout: float = 30.0) -> list[Frame]:
        """Frames up to and including `executing` with node None for `prompt_id`."""
        start = len(self.frames)
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if (
                    frame.type == "executing"
                    and frame.data.get("node") is None
                    and frame.data.get("prompt_id") == prompt_id
                ):
                    return self.frames[start:]

    async def until(self, kind: str, timeout: float = 30.0) -> Frame:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame.type == kind:
                    return frame

    async def quiet(self, seconds: float = 0.2) -> list[Frame]:
        """Whatever arrives within `seconds` of silence."""
        got: list[Frame] = []
        while True:
            try:
                got.append(await self.next(seconds))
            except TimeoutError:
                return got


@asynccontextmanager
async def ws_client(
    session: aiohttp.ClientSession, url: str, client_id: str | None, path: str = "/ws"
) -> AsyncIterator[WsClient]:
    """Connect to the emulator's websocket; the initial `status` is already consumed."""
    query = f"?clientId={client_id}" if client_id is not None else ""
    ws = await session.ws_connect(f"{url}{path}{query}")
    client = WsClient(ws)
    try:
        first = await client.next()
        assert first.type == "status"
        yield client
    finally:
        await ws.close()


async def wait_history(
    session: aiohttp.ClientSession, url: str, prompt_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll GET /history/{id} until the entry exists; return it."""
    async with asyncio.timeout(timeout):
        while True:
            async with session.get(f"{url}/history/{prompt_id}") as resp:
                body: dict[str, Any] = await resp.json()
            if prompt_id in body:
                entry: dict[str, Any] = body[prompt_id]
                return entry
            await asyncio.sleep(0.02)
