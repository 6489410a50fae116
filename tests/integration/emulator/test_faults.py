"""Fault injection through the `faults` object and through POST /emulator/faults."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from tests.support.emulator import image_workflow, wait_history, ws_client

from comfyrun.comfy.emulator import Emulator, NodeFault


async def _post(
    session: aiohttp.ClientSession, emu: Emulator, color: int, client_id: str | None = None
) -> str:
    body: dict[str, object] = {"prompt": image_workflow(color=color)}
    if client_id:
        body["client_id"] = client_id
    async with session.post(f"{emu.url}/prompt", json=body) as resp:
        assert resp.status == 200
        prompt_id: str = (await resp.json())["prompt_id"]
        return prompt_id


async def test_http_500_for_the_next_requests_on_a_path(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.http_500["/prompt"] = 2
    for _ in range(2):
        async with session.post(f"{emu.url}/prompt", json={"prompt": image_workflow()}) as resp:
            assert resp.status == 500
            assert await resp.text() == "500 Internal Server Error\n\nServer got itself in trouble"
    async with session.post(f"{emu.url}/api/prompt", json={"prompt": image_workflow()}) as resp:
        assert resp.status == 200
    async with session.post(
        f"{emu.url}/emulator/faults", json={"specs": ["http500:/queue:1"]}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["http_500"] == {"/queue": 1}
    async with session.get(f"{emu.url}/api/queue") as resp:
        assert resp.status == 500
    async with session.get(f"{emu.url}/queue") as resp:
        assert resp.status == 200


async def test_oom_and_failing_node_report_execution_error(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.fail_class_types["ImageInvert"] = NodeFault.oom()
    async with ws_client(session, emu.url, "f") as client:
        prompt_id = await _post(session, emu, 1, "f")
        frames = await client.until_idle(prompt_id)
    error = next(f for f in frames if f.type == "execution_error").data
    assert error["node_id"] == "2" and error["exception_type"] == "torch.OutOfMemoryError"
    assert "out of memory" in error["exception_message"]
    assert error["executed"] == ["1", "4"]
    entry = await wait_history(session, emu.url, prompt_id)
    assert entry["status"]["status_str"] == "error" and list(entry["outputs"]) == ["4"]
    async with session.post(
        f"{emu.url}/emulator/faults", json={"clear": True, "specs": ["fail-node:3:disk full"]}
    ) as resp:
        assert resp.status == 200
    entry = await wait_history(session, emu.url, await _post(session, emu, 2))
    failed = entry["status"]["messages"][-1][1]
    assert failed["node_id"] == "3" and failed["exception_message"] == "disk full"
    assert failed["exception_type"] == "RuntimeError"
    emu.faults.clear()
    entry = await wait_history(session, emu.url, await _post(session, emu, 3))
    assert entry["status"]["status_str"] == "success"


async def test_hang_until_interrupted(emu: Emulator, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{emu.url}/emulator/faults", json={"hang": True}) as resp:
        assert resp.status == 200
    async with ws_client(session, emu.url, "h") as client:
        prompt_id = await _post(session, emu, 4, "h")
        await client.until("executing")
        assert await client.quiet(0.5) == []
        async with session.get(f"{emu.url}/history/{prompt_id}") as resp:
            assert await resp.json() == {}
        async with session.post(f"{emu.url}/interrupt") as resp:
            assert resp.status == 200
        frames = await client.until_idle(prompt_id, timeout=10)
    assert [f.type for f in frames][-3:] == ["execution_interrupted", "status", "executing"]


async def test_a_hang_ends_when_the_fault_is_cleared(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.hang = True
    async with ws_client(session, emu.url, "hc") as client:
        prompt_id = await _post(session, emu, 6, "hc")
        await client.until("executing")
        assert await client.quiet(0.3) == []
        async with session.post(f"{emu.url}/emulator/faults", json={"clear": True}) as resp:
            assert resp.status == 200
        await client.until_idle(prompt_id, timeout=10)
    entry = await wait_history(session, emu.url, prompt_id)
    assert entry["status"]["status_str"] == "success"


async def test_a_frozen_emulator_answers_nothing_until_thawed(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    # as a SIGSTOPped ComfyUI: requests wait unanswered, the prompt pauses mid-run; once
    # thawed (over /emulator/faults, which still answers) both go on where they were
    emu.faults.delay_s = 0.2
    async with ws_client(session, emu.url, "fz") as client:
        prompt_id = await _post(session, emu, 8, "fz")
        await client.until("executing")
        async with session.post(f"{emu.url}/emulator/faults", json={"frozen": True}) as resp:
            assert resp.status == 200
        asked = asyncio.ensure_future(session.get(f"{emu.url}/queue"))
        done, _ = await asyncio.wait({asked}, timeout=0.3)
        assert not done  # no answer while frozen
        assert prompt_id in emu.queue.running_ids()  # paused mid-run: 4 nodes take 0.8 s
        async with session.post(f"{emu.url}/emulator/faults", json={"frozen": False}) as resp:
            assert resp.status == 200
        async with await asked as resp:
            assert resp.status == 200
        await client.until_idle(prompt_id, timeout=10)
    entry = await wait_history(session, emu.url, prompt_id)
    assert entry["status"]["status_str"] == "success"


async def test_a_stopped_emulator_says_nothing_more_of_its_prompt(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    # a ComfyUI process that goes away mid-prompt sends no execution_interrupted and keeps no
    # history: its clients see the connection end (comfyrun then counts the backend lost)
    emu.faults.hang = True
    async with ws_client(session, emu.url, "st") as client:
        await _post(session, emu, 7, "st")
        await client.until("executing")
        await emu.stop()
        with contextlib.suppress(ConnectionError, TimeoutError):
            while True:
                await client.next(timeout=10)
    kinds = [f.type for f in client.frames]
    assert "execution_interrupted" not in kinds and "execution_error" not in kinds, kinds


async def test_websocket_drop_mid_job_and_the_job_still_finishes(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.drop_ws_class_types.add("ImageInvert")
    async with ws_client(session, emu.url, "d") as client:
        prompt_id = await _post(session, emu, 5, "d")
        try:
            while True:
                await client.next(timeout=10)
        except ConnectionError:
            pass
        assert client.ws.closed
    entry = await wait_history(session, emu.url, prompt_id)
    assert entry["status"]["status_str"] == "success"
    async with ws_client(session, emu.url, "d") as again:
        async with session.post(
            f"{emu.url}/emulator/faults", json={"drop_websockets": True}
        ) as resp:
            assert resp.status == 200
        msg = await again.ws.receive(timeout=10)
        assert msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        )


async def test_slow_nodes(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.faults.apply_spec("slow:0.1")
    started = time.monotonic()
    await wait_history(session, emu.url, await _post(session, emu, 6))
    assert time.monotonic() - started >= 0.4  # four nodes, each delayed (a lower bound only)


async def test_bad_fault_requests_get_a_clear_400(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    for body in ({"specs": ["nonsense:x"]}, {"specs": ["exit:"]}, [1, 2], {"delay_s": "slow"}):
        async with session.post(f"{emu.url}/emulator/faults", json=body) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error["type"] == "invalid_fault" and error["message"]
    async with session.post(
        f"{emu.url}/emulator/faults", json={"hang": True, "specs": ["slow:0.5", "bogus"]}
    ) as resp:
        assert resp.status == 400
    async with session.get(f"{emu.url}/emulator/faults") as resp:
        assert resp.status == 200
        current = await resp.json()
    assert current["hang"] is False and current["delay_s"] == 0.0
