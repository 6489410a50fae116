"""A /ws client that reconnects (the same clientId) while its prompt runs, side by side with
the emulator (which answers as ComfyUI's server.py: `status`, then `executing` with the node it
runs alone, no prompt_id, then the rest of the run as it comes, its end included)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets
from tests.integration.compat.conftest import Server
from tests.support.emulator import image_workflow, running_emulator

Hang = Callable[[bool], Awaitable[None]]


async def text_messages(ws: Any, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The socket's text messages up to the first that `until` accepts."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while True:
            raw = await ws.recv()
            if isinstance(raw, str):
                got.append(json.loads(raw))
                if until(got[-1]):
                    return got


def executing(node: str | None, prompt_id: str) -> Callable[[dict[str, Any]], bool]:
    def seen(message: dict[str, Any]) -> bool:
        data = message["data"]
        return (
            message["type"] == "executing"
            and data.get("node") == node
            and data.get("prompt_id") == prompt_id
        )

    return seen


async def reconnect_mid_run(base_url: str, hang: Hang) -> list[dict[str, Any]]:
    """A prompt held at its first node; its client connects again with its clientId, then
    the prompt goes on: what the second socket hears (its text messages) to the end."""
    client_id = uuid.uuid4().hex
    url = base_url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    await hang(True)
    try:
        async with websockets.connect(url, max_size=None) as first:
            await first.recv()  # status
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
                body = {"prompt": image_workflow(color=3), "client_id": client_id}
                answer = await http.post("/prompt", json=body)
                assert answer.status_code == 200, answer.text
            prompt_id = answer.json()["prompt_id"]
            await text_messages(first, executing("1", prompt_id))  # held there
            async with websockets.connect(url, max_size=None) as second:
                heard = await text_messages(second, lambda m: m["type"] == "executing")
                await hang(False)
                heard += await text_messages(second, executing(None, prompt_id))
    finally:
        await hang(False)
    for message in heard:
        message["data"].pop("timestamp", None)
        if message["type"] == "status":
            message["data"]["status"]["exec_info"].pop("queue_remaining")
        if message["data"].get("prompt_id") == prompt_id:
            message["data"]["prompt_id"] = "P"
    return heard


@asynccontextmanager
async def emulated(tmp_path: Path) -> AsyncIterator[tuple[str, Hang]]:
    async with running_emulator(tmp_path) as emu:

        async def hang(on: bool) -> None:
            emu.faults.hang = on

        yield str(emu.url), hang


async def test_a_client_that_reconnects_mid_run_hears_the_node_then_the_rest(
    server: Server, tmp_path: Path
) -> None:
    """comfyrun sent the reconnected socket the whole run again from execution_start (its
    executed outputs and progress twice for a script that reconnects after a network blip)."""

    async def hang(on: bool) -> None:
        await server.set_faults({"hang": on})

    ours = await reconnect_mid_run(server.url, hang)
    async with emulated(tmp_path) as (url, emulator_hang):
        theirs = await reconnect_mid_run(url, emulator_hang)
    kinds = [m["type"] for m in ours]
    assert ours[1] == {"type": "executing", "data": {"node": "1"}}, ours
    assert "execution_start" not in kinds and "execution_cached" not in kinds, kinds
    assert kinds[-3:] == ["execution_success", "status", "executing"], kinds
    ran = [m["data"]["node"] for m in ours if m["type"] == "executing"]
    assert ran == [m["data"]["node"] for m in theirs if m["type"] == "executing"]
    # (comfyrun's `status` broadcasts come as its fleet's queue changes, and `executed` once
    # the outputs are stored, before execution_success: the README's one difference)
    assert [k for k in kinds if k not in ("status", "executed")] == [
        m["type"] for m in theirs if m["type"] not in ("status", "executed")
    ]
    assert sorted(m["data"]["node"] for m in ours if m["type"] == "executed") == ["3", "4"]
