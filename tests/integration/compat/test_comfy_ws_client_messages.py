"""What a client sends on ComfyUI's /ws, handled as ComfyUI 0.3.64 handles it (server.py's
websocket_handler), by the emulator and by comfyrun alike: a binary message is ignored, text
that is not JSON or not a JSON object leaves the feature-flags negotiation open, the first JSON
object closes it (a `feature_flags` one is answered with the server's flags), and none of it
closes the socket: the prompts submitted after it are told on it as usual."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
import websockets
from tests.integration.compat.conftest import Server
from tests.support.api import tiny_workflow
from tests.support.comfy import until_prompt_ends
from tests.support.emulator import running_emulator

pytestmark = [pytest.mark.timeout(60)]

FLAGS = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}


async def check_client_messages(url: str) -> None:
    client_id = uuid.uuid4().hex
    host = url.removeprefix("http://")
    async with (
        websockets.connect(f"ws://{host}/ws?clientId={client_id}", max_size=None) as ws,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "status"
        for junk in (
            b"\x00\x00\x00\x01binary",
            "not json",
            "[1, 2]",
            '"feature_flags"',
            "[" * 5000,
        ):
            await ws.send(junk)
        await ws.send(json.dumps(FLAGS))  # still the first JSON object: negotiated
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "feature_flags", reply
        assert reply["data"]["supports_preview_metadata"] is True
        features = (await http.get("/features")).json()
        assert reply["data"]["max_upload_size"] == features["max_upload_size"]
        await ws.send(json.dumps(FLAGS))  # the negotiation is over: not answered again
        await ws.send(b"\x00\x00\x00\x01binary")

        answer = await http.post(
            "/prompt", json={"prompt": tiny_workflow(7), "client_id": client_id}
        )
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        seen = [message["type"] for message in await until_prompt_ends(ws, prompt_id)]
        assert "feature_flags" not in seen, seen
        assert "execution_success" in seen, seen


async def test_the_emulator_handles_a_clients_messages_as_comfyui(tmp_path: Path) -> None:
    async with running_emulator(tmp_path) as emu:
        await check_client_messages(emu.url)


async def test_comfyrun_handles_a_clients_messages_as_comfyui(server: Server) -> None:
    await check_client_messages(server.url)


async def check_first_client_id(url: str) -> None:
    host = url.removeprefix("http://")
    async with websockets.connect(f"ws://{host}/ws?clientId=first&clientId=second") as ws:
        greeting = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert greeting["data"]["sid"] == "first", greeting


async def test_a_client_id_given_twice_is_the_first_on_both(tmp_path: Path, server: Server) -> None:
    """(ComfyUI's aiohttp reads the first; comfyrun read the last)"""
    async with running_emulator(tmp_path) as emu:
        await check_first_client_id(emu.url)
    await check_first_client_id(server.url)


async def test_a_newer_socket_of_a_client_id_takes_its_running_prompt_over(
    server: Server,
) -> None:
    """As in ComfyUI (its sockets by clientId: the newest one): once a second socket of the
    clientId connects, the first hears nothing more of the prompt under way (it went on
    hearing all of it), and the second hears it to its end."""
    from tests.support.emulator import text_to_image_workflow

    client_id = uuid.uuid4().hex
    url = server.url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    async with websockets.connect(url, max_size=None) as first:
        await first.recv()  # status
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            body = {"prompt": text_to_image_workflow(seed=7, steps=60), "client_id": client_id}
            answer = await http.post("/prompt", json=body)
            assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        while True:  # under way: the first socket hears its progress
            message = await asyncio.wait_for(first.recv(), 10)
            if isinstance(message, str) and json.loads(message)["type"] == "progress":
                break
        async with websockets.connect(url, max_size=None) as second:
            heard = [m["type"] for m in await until_prompt_ends(second, prompt_id)]
            assert heard[-1] == "executing" and "execution_success" in heard, heard
            # what the first has heard since its first progress (some of it sent before the
            # second came): none of the prompt's end, which came later
            ends = []
            while True:
                try:
                    message = await asyncio.wait_for(first.recv(), 0.5)
                except TimeoutError:
                    break
                if isinstance(message, str):
                    parsed = json.loads(message)
                    kind, data = parsed["type"], parsed["data"]
                    if kind in ("executed", "execution_success") or (
                        kind == "executing" and data["node"] is None
                    ):
                        ends.append(kind)
            assert ends == []
