"""Websocket behaviour replayed from the transcripts: routing, many clients, takeover,
reconnect, runtime errors, upload -> LoadImage -> SaveImage, previews and TEXT frames."""

from __future__ import annotations

import asyncio
import copy
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image
from tests.support.emulator import (
    HISTORY_MAPS,
    Frame,
    assert_same_shape,
    running_emulator,
    ws_client,
)

from comfyrun.comfy.emulator import Emulator


def _types(frames: list[Frame]) -> list[str]:
    return [f.type for f in frames]


def _recorded_types(messages: list[dict[str, Any]]) -> list[str]:
    return ["binary" if m.get("binary") else m["type"] for m in messages]


async def test_prompt_events_reach_only_their_client_and_status_is_broadcast(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("ws_routing_two_clients")
    async with ws_client(session, emu.url, "A") as a, ws_client(session, emu.url, "B") as b:
        request = rec["no_client_id"]["post"]["request"]["json"]
        async with session.post(f"{emu.url}/prompt", json=request) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        for client in (a, b):
            got = [await client.next() for _ in range(len(rec["no_client_id"]["A_msgs"]))]
            assert _types(got) == _recorded_types(rec["no_client_id"]["A_msgs"])
            assert all(f.data["prompt_id"] == prompt_id for f in got if f.type == "progress_state")
        request = dict(rec["with_client_id_A"]["post"]["request"]["json"], client_id="A")
        async with session.post(f"{emu.url}/prompt", json=request) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        got_a = await a.until_idle(prompt_id)
        assert _types(got_a) == _recorded_types(rec["with_client_id_A"]["A_msgs"])
        got_b = await b.quiet(0.3)
        assert _types(got_b) == _recorded_types(rec["with_client_id_A"]["B_msgs"])


async def test_two_hundred_clients_and_a_prompt_for_one_of_them(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("ws_many_clients")
    sockets = await asyncio.gather(
        *(session.ws_connect(f"{emu.url}/ws?clientId=many-{i}") for i in range(200))
    )
    try:
        firsts = await asyncio.gather(*(ws.receive_json(timeout=30) for ws in sockets))
        assert all(
            f["type"] == "status" and f["data"]["sid"] == f"many-{i}" for i, f in enumerate(firsts)
        )
        graph = transcript("ws_success_run")["post_prompt"]["request"]["json"]["prompt"]
        async with session.post(
            f"{emu.url}/prompt", json={"prompt": graph, "client_id": "many-7"}
        ) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        types = []
        while True:
            msg = await sockets[7].receive_json(timeout=30)
            types.append(msg["type"])
            if msg["type"] == "executing" and msg["data"]["node"] is None:
                break
        assert types == rec["many-7_types"]
        assert prompt_id

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
            got = []
            while True:
                try:
                    got.append((await ws.receive_json(timeout=0.3))["type"])
                except TimeoutError:
                    return got

        others = await asyncio.gather(*(drain(ws) for i, ws in enumerate(sockets) if i != 7))
        assert all(o == rec["many-8_types"] for o in others)
        assert sum(len(o) for o in others) == rec["msgs_received_by_others_total"]
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


async def test_duplicate_client_id_takes_over_and_leaves_a_silent_zombie(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("ws_many_clients")["same_clientId_twice"]
    graph = transcript("ws_success_run")["post_prompt"]["request"]["json"]["prompt"]
    async with ws_client(session, emu.url, "dup") as first:
        async with ws_client(session, emu.url, "dup") as second:
            async with session.post(
                f"{emu.url}/prompt", json={"prompt": graph, "client_id": "dup"}
            ) as resp:
                prompt_id = (await resp.json())["prompt_id"]
            assert _types(await second.until_idle(prompt_id)) == rec["second_socket_types"]
            assert await first.quiet(0.3) == []
            assert not first.ws.closed
        async with session.post(
            f"{emu.url}/prompt", json={"prompt": graph, "client_id": "other"}
        ) as resp:
            assert resp.status == 200
        assert await first.quiet(0.3) == []


async def test_reconnect_during_a_run_gets_status_then_legacy_executing(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("ws_reconnect")
    emu.faults.delay_s = 0.5
    graph = copy.deepcopy(transcript("ws_success_run")["post_prompt"]["request"]["json"]["prompt"])
    async with ws_client(session, emu.url, "recon") as first:
        async with session.post(
            f"{emu.url}/prompt", json={"prompt": graph, "client_id": "recon"}
        ) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        executing = await first.until("executing")
    async with session.get(f"{emu.url}/history/{prompt_id}") as resp:
        assert await resp.json() == rec["history_while_running"]["body"]
    ws = await session.ws_connect(f"{emu.url}/ws?clientId=recon")
    try:
        status = await ws.receive_json(timeout=10)
        legacy = await ws.receive_json(timeout=10)
        want = rec["reconnect_same_clientId_during_execution_first_msgs"]
        assert [status["type"], legacy["type"]] == [m["type"] for m in want]
        assert_same_shape(status["data"], want[0]["data"])
        assert list(legacy["data"]) == ["node"]
        assert legacy["data"]["node"] in {executing.data["node"], "1", "2", "3", "4"}
        while True:
            msg = await ws.receive_json(timeout=30)
            if msg["type"] == "executing" and msg["data"]["node"] is None:
                break
    finally:
        await ws.close()
    emu.faults.delay_s = 0.0
    async with session.ws_connect(f"{emu.url}/ws?clientId=recon") as again:
        first_msg = await again.receive_json(timeout=10)
        assert first_msg["type"] == "status"
        assert_same_shape(first_msg["data"], rec["reconnect_after_job_finished_msgs"][0]["data"])
        try:
            extra = await again.receive_json(timeout=0.3)
        except TimeoutError:
            extra = None
        assert extra is None


async def test_runtime_error_matches_the_transcript(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("ws_runtime_error")
    async with ws_client(session, emu.url, "err") as client:
        request = dict(rec["post_prompt"]["request"]["json"], client_id="err")
        async with session.post(f"{emu.url}/prompt", json=request) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        frames = await client.until_idle(prompt_id)
    assert _types(frames) == _recorded_types(rec["ws_messages"])
    for frame, message in zip(frames, rec["ws_messages"], strict=True):
        assert_same_shape(frame.data, message["data"])
    error = next(f for f in frames if f.type == "execution_error").data
    recorded = next(m for m in rec["ws_messages"] if m["type"] == "execution_error")["data"]
    for key in ("node_id", "node_type", "exception_message", "exception_type", "current_inputs"):
        assert error[key] == recorded[key], key
    assert sorted(error["executed"]) == sorted(recorded["executed"])
    async with session.get(f"{emu.url}/history/{prompt_id}") as resp:
        history = await resp.json()
    assert_same_shape(history, rec["history"]["body"], maps=HISTORY_MAPS)
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert list(entry["outputs"]) == ["6"]
    assert entry["status"]["messages"][-1][0] == "execution_error"


async def test_upload_load_scale_save_round_trip(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any], tmp_path: Path
) -> None:
    rec = transcript("ws_loadimage_scale_save")
    source = tmp_path / "sub_in.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(source)
    form = aiohttp.FormData()
    form.add_field("image", source.read_bytes(), filename="sub_in.png", content_type="image/png")
    form.add_field("subfolder", "jobs/abc")
    async with session.post(f"{emu.url}/upload/image", data=form) as resp:
        assert await resp.json() == {"name": "sub_in.png", "subfolder": "jobs/abc", "type": "input"}
    async with ws_client(session, emu.url, "li") as client:
        request = dict(rec["post_prompt"]["request"]["json"], client_id="li")
        async with session.post(f"{emu.url}/prompt", json=request) as resp:
            assert resp.status == 200
            prompt_id = (await resp.json())["prompt_id"]
        frames = await client.until_idle(prompt_id)
    assert _types(frames) == _recorded_types(rec["ws_messages"])
    async with session.get(f"{emu.url}/history/{prompt_id}") as resp:
        history = await resp.json()
    assert_same_shape(history, rec["history"]["body"], maps=HISTORY_MAPS)
    saved = history[prompt_id]["outputs"]["3"]["images"][0]
    assert saved == {"filename": "scaled_00001_.png", "subfolder": "jobs", "type": "output"}
    with Image.open(emu.config.output_dir / "jobs" / "scaled_00001_.png") as img:
        assert img.size == (128, 96)
        pixel = img.convert("RGB").getpixel((64, 48))
        assert isinstance(pixel, tuple) and pixel == (200, 10, 10)
    preview = history[prompt_id]["outputs"]["4"]["images"][0]
    async with session.get(
        f"{emu.url}/view", params={"filename": preview["filename"], "type": "temp", "subfolder": ""}
    ) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
    wrong_folder = {"class_type": "LoadImage", "inputs": {"image": "sub_in.png [input]"}}
    async with session.post(
        f"{emu.url}/prompt", json={"prompt": {**request["prompt"], "1": wrong_folder}}
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"
    annotated = {"class_type": "LoadImage", "inputs": {"image": "jobs/abc/sub_in.png [input]"}}
    async with session.post(
        f"{emu.url}/prompt", json={"prompt": {**request["prompt"], "1": annotated}}
    ) as resp:
        assert resp.status == 200


def _parse_binary(raw: bytes) -> tuple[int, Any]:
    event = struct.unpack(">I", raw[:4])[0]
    if event == 4:
        size = struct.unpack(">I", raw[4:8])[0]
        import json

        return event, (json.loads(raw[8 : 8 + size]), raw[8 + size : 8 + size + 2])
    if event == 1:
        return event, (struct.unpack(">I", raw[4:8])[0], raw[8:10])
    if event == 3:
        size = struct.unpack(">I", raw[4:8])[0]
        return event, (raw[8 : 8 + size].decode(), raw[8 + size :].decode())
    return event, None


async def test_previews_feature_flags_text_frames_and_interrupt_mid_sampler(
    tmp_path: Path, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("ws_sampler_progress_previews_interrupt")
    models = {"checkpoints": ["random_sd15_for_protocol_tests.safetensors"]}
    async with running_emulator(
        tmp_path, models=models, preview_method="latent2rgb", step_time_s=0.01
    ) as emu:
        meta = await session.ws_connect(f"{emu.url}/ws?clientId=meta")
        first = await meta.receive_json(timeout=10)
        await meta.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        flags = await meta.receive_json(timeout=10)
        recorded = rec["feature_flags_handshake_messages"]
        assert [first["type"], flags["type"]] == [m["type"] for m in recorded]
        assert flags["data"] == recorded[1]["data"]
        async with (
            ws_client(session, emu.url, "legacy") as legacy,
            ws_client(session, emu.url, "observer") as observer,
        ):
            from tests.support.emulator import WsClient

            meta_client = WsClient(meta)
            for key, client, cid in (
                ("client_with_supports_preview_metadata", meta_client, "meta"),
                ("client_without_feature_flags", legacy, "legacy"),
            ):
                request = dict(rec[key]["post"]["request"]["json"], client_id=cid)
                async with session.post(f"{emu.url}/prompt", json=request) as resp:
                    prompt_id = (await resp.json())["prompt_id"]
                frames = await client.until_idle(prompt_id)
                want = rec[key]["ws_messages"]
                want_types = _recorded_types(want)
                got_types = _types(frames)
                # The recorded run had nodes 1-4 cached by an earlier prompt: compare from KSampler on.
                ksampler_at = next(
                    i
                    for i, f in enumerate(frames)
                    if f.type == "executing" and f.data["node"] == "5"
                )
                assert got_types[ksampler_at - 1 :] == want_types[4:]
                binaries = [_parse_binary(f.raw) for f in frames if f.type == "binary"]
                want_event = 4 if cid == "meta" else 1
                assert [b[0] for b in binaries] == [want_event] * 6
                for frame_index, frame in enumerate(frames):
                    if frame.type == "binary":
                        neighbour = (
                            frames[frame_index + 1] if want_event == 4 else frames[frame_index - 1]
                        )
                        assert neighbour.type == "progress"
                if want_event == 4:
                    metadata = binaries[0][1][0]
                    assert list(metadata) == list(want[7]["metadata"])
                    assert metadata["prompt_id"] == prompt_id
                    assert binaries[0][1][1] == b"\xff\xd8"
                else:
                    assert binaries[0][1] == (1, b"\xff\xd8")
            await observer.quiet(0.2)
            request = dict(
                rec["text_frame_GetImageSize"]["post"]["request"]["json"], client_id="legacy"
            )
            async with session.post(f"{emu.url}/prompt", json=request) as resp:
                prompt_id = (await resp.json())["prompt_id"]
            frames = await legacy.until_idle(prompt_id)
            assert _types(frames) == _recorded_types(rec["text_frame_GetImageSize"]["ws_messages"])
            text_frames = [_parse_binary(f.raw) for f in frames if f.type == "binary"]
            assert text_frames == [
                (3, ("2", rec["text_frame_GetImageSize"]["ws_messages"][9]["text"]))
            ]
            seen = await observer.quiet(0.3)
            assert _types(seen) == _recorded_types(rec["text_frame_GetImageSize"]["observer_got"])

            request = dict(
                rec["interrupt_mid_ksampler"]["post"]["request"]["json"], client_id="meta"
            )
            request["prompt"] = copy.deepcopy(request["prompt"])
            request["prompt"]["5"]["inputs"]["steps"] = 2000
            async with session.post(f"{emu.url}/prompt", json=request) as resp:
                prompt_id = (await resp.json())["prompt_id"]
            while True:
                frame = await meta_client.next()
                if frame.type == "progress" and frame.data["value"] == 3:
                    break
            async with session.post(f"{emu.url}/interrupt", json={"prompt_id": prompt_id}) as resp:
                assert resp.status == 200
            rest = await meta_client.until_idle(prompt_id)
            assert _types(rest)[-3:] == ["execution_interrupted", "status", "executing"]
            interrupted = next(f for f in rest if f.type == "execution_interrupted")
            assert (
                interrupted.data["node_id"] == "5" and interrupted.data["node_type"] == "KSampler"
            )
            assert_same_shape(
                interrupted.data, rec["interrupt_mid_ksampler"]["ws_messages"][27]["data"]
            )
            steps_after = [f for f in rest if f.type == "progress"]
            assert len(steps_after) < 200
        await meta.close()
