"""POST /prompt, queue and history replayed from the real-ComfyUI transcripts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import aiohttp
from tests.support.emulator import HISTORY_MAPS, assert_same_shape, wait_history, ws_client

from comfyrun.comfy.emulator import Emulator


def _scrub_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ("<traceback>" if k == "traceback" else _scrub_tracebacks(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub_tracebacks(v) for v in value]
    return value


async def test_every_validation_error_matches_the_transcript(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    cases = transcript("post_prompt_errors")
    for name, case in cases.items():
        if name == "malformed_json_body":
            async with session.post(
                f"{emu.url}/prompt",
                data=b'{"prompt": {"1": ',
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 500, name
                assert resp.headers["Content-Type"] == case["headers"]["Content-Type"]
                assert await resp.text() == case["body_text"]
            continue
        async with session.post(f"{emu.url}/prompt", json=case["request"]["json"]) as resp:
            assert resp.status == case["status"], name
            if case["status"] == 500:
                assert await resp.text() == case["body_text"]
                continue
            assert resp.headers["Content-Type"] == case["headers"]["Content-Type"], name
            body = await resp.json()
        if case["status"] == 400:
            assert _scrub_tracebacks(body) == _scrub_tracebacks(case["body"]), name
            assert_same_shape(body, case["body"])
        else:
            assert body["node_errors"] == case["body"]["node_errors"], name
            assert_same_shape(body, case["body"])


async def test_partially_valid_prompt_runs_only_the_valid_output(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    case = transcript("post_prompt_errors")["one_output_ok_one_bad"]
    async with session.post(f"{emu.url}/prompt", json=case["request"]["json"]) as resp:
        body = await resp.json()
    entry = await wait_history(session, emu.url, body["prompt_id"])
    assert entry["prompt"][4] == ["2"]
    assert list(entry["outputs"]) == ["2"]
    assert entry["outputs"]["2"]["images"][0]["filename"] == "partial_ok_00001_.png"


async def test_partial_execution_targets_run_only_that_output(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    case = transcript("post_prompt_errors")["partial_execution_targets"]
    async with session.post(f"{emu.url}/prompt", json=case["request"]["json"]) as resp:
        body = await resp.json()
    entry = await wait_history(session, emu.url, body["prompt_id"])
    assert entry["prompt"][4] == ["4"]
    assert list(entry["outputs"]) == ["4"]


def _as_client(request_json: dict[str, Any], client_id: str) -> dict[str, Any]:
    body = copy.deepcopy(request_json)
    if "client_id" in body:
        body["client_id"] = client_id
    return body


def _types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


async def _replay_run(
    emu: Emulator, session: aiohttp.ClientSession, recorded: dict[str, Any], client_id: str
) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    async with ws_client(session, emu.url, client_id) as client:
        async with session.post(
            f"{emu.url}/prompt",
            json=_as_client(recorded["post_prompt"]["request"]["json"], client_id),
        ) as resp:
            assert resp.status == recorded["post_prompt"]["status"]
            body = await resp.json()
        frames = await client.until_idle(body["prompt_id"])
    async with session.get(f"{emu.url}/history/{body['prompt_id']}") as resp:
        history = await resp.json()
    assert_same_shape(body, recorded["post_prompt"]["body"])
    want = recorded["ws_messages"]
    assert [f.type for f in frames] == _types(want)
    for frame, message in zip(frames, want, strict=True):
        assert_same_shape(frame.data, message["data"], "$")
    assert_same_shape(history, recorded["history"]["body"], maps=HISTORY_MAPS)
    return body, frames, history


async def test_run_then_cached_rerun_then_partial_cache_match_the_transcripts(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    first, _, history1 = await _replay_run(emu, session, transcript("ws_success_run"), "c1")
    files_before = sorted(p.name for p in emu.config.output_dir.iterdir())
    second, frames2, history2 = await _replay_run(
        emu, session, transcript("ws_success_cached_rerun"), "c1"
    )
    cached = next(f for f in frames2 if f.type == "execution_cached")
    assert cached.data["nodes"] == ["1", "2", "3", "4"]
    assert sorted(p.name for p in emu.config.output_dir.iterdir()) == files_before
    outputs1 = history1[first["prompt_id"]]["outputs"]
    assert history2[second["prompt_id"]]["outputs"] == outputs1
    third, frames3, history3 = await _replay_run(
        emu, session, transcript("ws_success_partial_cache"), "c1"
    )
    assert next(f for f in frames3 if f.type == "execution_cached").data["nodes"] == ["1", "2", "4"]
    outputs3 = history3[third["prompt_id"]]["outputs"]
    assert outputs3["3"]["images"][0]["filename"] == "protocap2_00001_.png"
    assert outputs3["4"] == outputs1["4"]


async def test_extra_data_is_kept_and_secrets_leave_history_only(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    recorded = transcript("post_prompt_extra_data_and_prompt_id")
    body, _, history = await _replay_run(emu, session, recorded, "c2")
    assert body["prompt_id"] == recorded["post_prompt"]["body"]["prompt_id"]
    extra = history[body["prompt_id"]]["prompt"][3]
    assert extra == recorded["history"]["body"][body["prompt_id"]]["prompt"][3] | {
        "client_id": "c2"
    }
    assert "api_key_comfy_org" not in extra


async def test_prompt_id_front_and_number_variants(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    cases = transcript("post_prompt_variants")
    numbers = []
    for name in ("prompt_id_int", "front_true", "number_explicit"):
        async with session.post(f"{emu.url}/prompt", json=cases[name]["request"]["json"]) as resp:
            body = await resp.json()
        assert_same_shape(body, cases[name]["body"])
        numbers.append(body["number"])
    assert body["number"] == -1000.5
    assert numbers[1] == -(numbers[0] + 1)
    ids = [cases["prompt_id_int"]["body"]["prompt_id"]]
    assert ids == ["12345"]
    entry = await wait_history(session, emu.url, "12345")
    assert entry["prompt"][1] == "12345"


async def test_reused_prompt_id_overwrites_history(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    request = transcript("post_prompt_duplicate_prompt_id")["response"]["request"]["json"]
    prompt_id = request["prompt_id"]
    first = copy.deepcopy(request)
    first["prompt"]["3"]["inputs"]["filename_prefix"] = "first"
    async with ws_client(session, emu.url, request["client_id"]) as client:
        for body in (first, request):
            async with session.post(f"{emu.url}/prompt", json=body) as resp:
                assert (await resp.json())["prompt_id"] == prompt_id
            await client.until_idle(prompt_id)
    async with session.get(f"{emu.url}/history") as resp:
        history = await resp.json()
    assert list(history) == [prompt_id]
    assert history[prompt_id]["prompt"][2]["3"]["inputs"]["filename_prefix"] == "protocap"


async def test_queue_delete_clear_and_interrupts_match_the_transcript(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("queue_interrupt")
    emu.faults.delay_s = 0.5
    template = rec["get_queue_1running_3pending"]["body"]["queue_running"][0]
    prompts = []
    async with ws_client(session, emu.url, "qclient") as client:
        for i in range(4):
            graph = copy.deepcopy(template[2])
            graph["1"]["inputs"].update(width=64, height=64, color=100 + i)
            extra = {"api_key_comfy_org": "SECRET"} if i == 0 else {}
            async with session.post(
                f"{emu.url}/prompt",
                json={"prompt": graph, "client_id": "qclient", "extra_data": extra},
            ) as resp:
                prompts.append((await resp.json())["prompt_id"])
        await client.until("executing")
        async with session.get(f"{emu.url}/queue") as resp:
            queue = await resp.json()
        assert_same_shape(queue, rec["get_queue_1running_3pending"]["body"])
        assert [q[1] for q in queue["queue_running"]] == [prompts[0]]
        assert queue["queue_running"][0][3]["api_key_comfy_org"] == "SECRET"
        assert sorted(q[1] for q in queue["queue_pending"]) == sorted(prompts[1:])
        for key, target in (
            ("post_queue_delete_pending_3rd", prompts[2]),
            ("post_queue_delete_running_1st", prompts[0]),
            ("post_queue_delete_unknown", "nope"),
        ):
            async with session.post(f"{emu.url}/queue", json={"delete": [target]}) as resp:
                assert resp.status == rec[key]["status"]
                assert await resp.text() == ""
        async with session.get(f"{emu.url}/queue") as resp:
            queue = await resp.json()
        assert [q[1] for q in queue["queue_running"]] == [prompts[0]]
        assert [q[1] for q in queue["queue_pending"]] == [prompts[1], prompts[3]]
        async with session.post(f"{emu.url}/interrupt", json={"prompt_id": prompts[1]}) as resp:
            assert resp.status == 200 and await resp.text() == ""
        async with session.post(f"{emu.url}/interrupt", json={"prompt_id": prompts[0]}) as resp:
            assert resp.status == 200
        interrupted = await client.until("execution_interrupted")
        assert interrupted.data["prompt_id"] == prompts[0]
        assert_same_shape(
            interrupted.data,
            rec["history_interrupted"]["body"][rec["submitted"][0]]["status"]["messages"][2][1],
        )
        await client.until_idle(prompts[0])
        await client.until("executing")
        async with session.post(f"{emu.url}/interrupt") as resp:
            assert resp.status == 200 and await resp.text() == ""
        await client.until_idle(prompts[1])
        # the worker takes the next prompt off the queue a moment later: clear once it runs
        started = await client.until("execution_start")
        assert started.data["prompt_id"] == prompts[3]
        async with session.post(f"{emu.url}/queue", json={"clear": True}) as resp:
            assert resp.status == 200
        async with session.get(f"{emu.url}/queue") as resp:
            queue = await resp.json()
        assert [q[1] for q in queue["queue_running"]] == [prompts[3]]
        assert queue["queue_pending"] == []
        await client.until_idle(prompts[3])
    async with session.post(f"{emu.url}/interrupt", json={}) as resp:
        assert resp.status == 200
    async with session.get(f"{emu.url}/history/{prompts[0]}") as resp:
        history = await resp.json()
    recorded = rec["history_interrupted"]["body"][rec["submitted"][0]]
    assert_same_shape(history[prompts[0]], recorded)
    assert history[prompts[0]]["outputs"] == {}
    assert history[prompts[0]]["status"]["status_str"] == "error"
    assert "api_key_comfy_org" not in history[prompts[0]]["prompt"][3]
    async with session.get(f"{emu.url}/history/{prompts[2]}") as resp:
        assert await resp.json() == {}
    async with session.post(
        f"{emu.url}/free", json={"unload_models": True, "free_memory": True}
    ) as resp:
        assert resp.status == 200 and await resp.text() == ""
    emu.faults.delay_s = 0.0
    async with ws_client(session, emu.url, "qclient") as client:
        graph = copy.deepcopy(template[2])
        graph["1"]["inputs"].update(width=32, height=32, color=999)
        async with session.post(
            f"{emu.url}/prompt", json={"prompt": graph, "client_id": "qclient"}
        ) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        frames = await client.until_idle(prompt_id)
    assert "execution_success" in [f.type for f in frames]


async def test_history_listing_paging_and_delete(
    emu: Emulator, session: aiohttp.ClientSession, transcript: Callable[[str], Any]
) -> None:
    rec = transcript("history")
    graph = transcript("ws_success_run")["post_prompt"]["request"]["json"]["prompt"]
    ids = []
    for i in range(3):
        body = copy.deepcopy(graph)
        body["1"]["inputs"]["color"] = i
        async with session.post(
            f"{emu.url}/prompt", json={"prompt": body, "client_id": "h"}
        ) as resp:
            ids.append((await resp.json())["prompt_id"])
    for prompt_id in ids:
        await wait_history(session, emu.url, prompt_id)
    async with session.get(f"{emu.url}/history/{ids[0]}") as resp:
        assert_same_shape(await resp.json(), rec["by_id_success"]["body"], maps=HISTORY_MAPS)
    async with session.get(f"{emu.url}/history/not-a-real-id") as resp:
        assert resp.status == 200 and await resp.json() == {}
    async with session.get(f"{emu.url}/history?max_items=2") as resp:
        assert list(await resp.json()) == ids[1:]
    async with session.get(f"{emu.url}/history?max_items=2&offset=1") as resp:
        assert list(await resp.json()) == ids[1:]
    async with session.get(f"{emu.url}/history?max_items=1&offset=0") as resp:
        assert list(await resp.json()) == ids[:1]
    async with session.get(f"{emu.url}/history") as resp:
        assert list(await resp.json()) == ids
    async with session.post(f"{emu.url}/history", json={"delete": [ids[1]]}) as resp:
        assert resp.status == 200 and await resp.text() == ""
    async with session.get(f"{emu.url}/history/{ids[1]}") as resp:
        assert await resp.json() == {}
    async with session.post(f"{emu.url}/history", json={"clear": True}) as resp:
        assert resp.status == 200
    async with session.get(f"{emu.url}/history") as resp:
        assert await resp.json() == {}
