"""ComfyClient over a real websocket, replaying frames recorded from real ComfyUI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.comfy import ScriptedComfy, load, scripted_comfy

from comfyrun.comfy import ComfyClient, ComfyConnectionError
from comfyrun.comfy import messages as m
from comfyrun.comfy.socket import ComfySocket

RUN = "ws_success_run.json"
RECORDED_ID = "fe609172-6b0b-40da-b9f2-df080c73767d"


@pytest.fixture
async def comfy() -> AsyncIterator[ScriptedComfy]:
    async with scripted_comfy() as server:
        yield server


@pytest.fixture
async def client(comfy: ScriptedComfy) -> AsyncIterator[ComfyClient]:
    c = ComfyClient(
        comfy.url, timeout=10.0, poll_interval=0.05, reconnect_initial=0.01, reconnect_max=0.1
    )
    await c.start()
    try:
        yield c
    finally:
        await c.close()


def entry_of(data: dict[str, Any]) -> dict[str, Any]:
    return dict(data["history"]["body"][RECORDED_ID])


async def test_start_fails_when_nothing_listens() -> None:
    client = ComfyClient("http://127.0.0.1:9", timeout=0.5, reconnect_initial=0.01)
    with pytest.raises(ComfyConnectionError):
        await client.start()


async def test_result_comes_from_the_websocket(
    shared_dir: Path, comfy: ScriptedComfy, client: ComfyClient
) -> None:
    data = load(shared_dir, RUN)
    assert client.connected and client.client_id in comfy.sockets
    with client.watch("p1") as watch:
        await client.submit({"1": {}}, prompt_id="p1")
        assert comfy.client_of["p1"] == client.client_id
        await comfy.replay("p1", data["ws_messages"], recorded_id=RECORDED_ID)
        events = [event async for event in watch]
        result = await watch.result(timeout=5)
    assert result.ok and result.source == "websocket"
    assert {f.filename for f in result.files} == {
        "protocap_00053_.png",
        "ComfyUI_temp_okyrs_00001_.png",
    }
    assert isinstance(events[0], m.ExecutionStart)
    # settled as ComfyUI said so; its `executing` null, after, ended the prompt (prompt_over)
    assert isinstance(events[-1], m.ExecutionSuccess)
    assert all(e.prompt_id == "p1" for e in events)
    over = client.prompt_over("p1")  # (None once that null came)
    if over is not None:
        await asyncio.wait_for(over, 5)


async def test_events_go_to_their_own_watch(
    shared_dir: Path, comfy: ScriptedComfy, client: ComfyClient
) -> None:
    data = load(shared_dir, RUN)
    watches = [client.watch(f"p{i}") for i in range(3)]
    for i in range(3):
        await client.submit({"1": {}}, prompt_id=f"p{i}")
    for i in (2, 0, 1):
        await comfy.replay(f"p{i}", data["ws_messages"], recorded_id=RECORDED_ID)
    results = [await w.result(timeout=5) for w in watches]
    assert [r.prompt_id for r in results] == ["p0", "p1", "p2"]
    assert all(r.ok and r.source == "websocket" for r in results)


async def test_previews_progress_and_text_reach_the_running_watch(
    shared_dir: Path, comfy: ScriptedComfy, client: ComfyClient
) -> None:
    data = load(shared_dir, "ws_sampler_progress_previews_interrupt.json")
    with_meta = data["client_with_supports_preview_metadata"]
    recorded = with_meta["post"]["body"]["prompt_id"]
    with client.watch("s1") as watch:
        await client.submit({"1": {}}, prompt_id="s1")
        await comfy.replay("s1", with_meta["ws_messages"][:-3], recorded_id=recorded)
        events = []
        async for event in watch:
            events.append(event)
            if isinstance(event, m.PreviewImageWithMetadata):
                break
        assert client.previews == {"s1": watch.latest_preview}
        await comfy.replay("s1", with_meta["ws_messages"][-3:], recorded_id=recorded)
        events += [event async for event in watch]
    assert sum(isinstance(e, m.Progress) for e in events) == 6
    assert isinstance(watch.latest_preview, m.PreviewImageWithMetadata)
    assert watch.latest_preview.prompt_id == "s1"
    assert (await watch.result()).ok

    plain = data["client_without_feature_flags"]
    recorded = plain["post"]["body"]["prompt_id"]
    with client.watch("s2") as watch:
        await client.submit({"1": {}}, prompt_id="s2")
        await comfy.replay("s2", plain["ws_messages"], recorded_id=recorded)
        await watch.result(timeout=5)
    assert isinstance(
        watch.latest_preview, m.PreviewImage
    )  # no prompt id: routed to the running one

    text = data["text_frame_GetImageSize"]
    recorded = text["post"]["body"]["prompt_id"]
    with client.watch("s3") as watch:
        await client.submit({"1": {}}, prompt_id="s3")
        await comfy.replay("s3", text["ws_messages"], recorded_id=recorded)
        events = [event async for event in watch]
    assert m.Text(node_id="2", text="width: 48, height: 32\n batch size: 2") in events


async def test_dropped_socket_reconnects_and_settles_from_history(
    shared_dir: Path, comfy: ScriptedComfy, client: ComfyClient
) -> None:
    data = load(shared_dir, RUN)
    states: list[bool] = []
    client.on_state_change(states.append)
    first_id = client.client_id
    with client.watch("d1") as watch:
        await client.submit({"1": {}}, prompt_id="d1")
        await comfy.replay("d1", data["ws_messages"][:6], recorded_id=RECORDED_ID)
        await comfy.drop_all()
        await asyncio.wait_for(comfy.connected.wait(), 10)
        # The rest of the run goes to the old clientId, which nobody holds any more.
        await comfy.replay("d1", data["ws_messages"][6:], recorded_id=RECORDED_ID, to=first_id)
        await asyncio.sleep(0.2)
        assert not watch.done  # still queued as far as the server says
        comfy.finish("d1", entry_of(data), recorded_id=RECORDED_ID)
        result = await watch.result(timeout=10)
    assert result.ok and result.source == "history"
    assert {f.filename for f in result.files} == {
        "protocap_00053_.png",
        "ComfyUI_temp_okyrs_00001_.png",
    }
    assert states[:2] == [False, True]
    assert client.client_id != first_id and len(set(comfy.client_ids)) == 2


async def test_prompt_that_vanished_while_disconnected_is_lost(
    comfy: ScriptedComfy, client: ComfyClient
) -> None:
    with client.watch("l1") as watch:
        await client.submit({"1": {}}, prompt_id="l1")
        comfy.pending.remove("l1")  # e.g. ComfyUI restarted: no queue, no history
        await comfy.drop_all()
        result = await watch.result(timeout=10)
    assert result.status == "lost"


async def test_finished_without_outcome_settles_from_history(
    shared_dir: Path, comfy: ScriptedComfy, client: ComfyClient
) -> None:
    data = load(shared_dir, RUN)
    records = [r for r in data["ws_messages"] if r["type"] != "execution_success"]
    with client.watch("h1") as watch:
        await client.submit({"1": {}}, prompt_id="h1")
        comfy.finish("h1", entry_of(data), recorded_id=RECORDED_ID)
        await comfy.replay("h1", records, recorded_id=RECORDED_ID)
        result = await watch.result(timeout=5)
    assert result.ok and result.source == "history"


async def test_settled_watches_are_forgotten(
    shared_dir: Path, comfy: ScriptedComfy, client: ComfyClient
) -> None:
    data = load(shared_dir, RUN)
    watch = client.watch("f1")  # never closed by the caller
    await client.submit({"1": {}}, prompt_id="f1")
    await comfy.replay("f1", data["ws_messages"], recorded_id=RECORDED_ID)
    assert (await watch.result(timeout=5)).ok
    assert client._watches == {}
    client.watch("f1").close()  # the id can be watched again


async def test_a_failing_handler_does_not_silence_the_socket(comfy: ScriptedComfy) -> None:
    seen: list[m.Message] = []

    def handler(message: m.Message) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise RuntimeError("bug in a handler")

    socket = ComfySocket(comfy.url, on_message=handler, on_state=lambda _: None)
    socket.start()
    try:
        assert await socket.wait_connected(10)
        ws = comfy.sockets[socket.client_id]
        for remaining in (1, 0):
            await ws.send_json(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": remaining}}},
                }
            )
        for _ in range(100):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await socket.close()
    assert [x.queue_remaining for x in seen if isinstance(x, m.Status)][-2:] == [1, 0]
    assert socket.connection == 1


async def test_a_socket_whose_pings_go_unanswered_is_given_up_and_made_again(
    comfy: ScriptedComfy,
) -> None:
    """A ComfyUI that hangs with its socket open (no pong to the client's pings) is found out
    by the heartbeat: the connection is dropped and made again, under a fresh clientId."""
    comfy.answer_pings = False
    states: list[bool] = []
    socket = ComfySocket(
        comfy.url,
        on_message=lambda _: None,
        on_state=states.append,
        ping_interval=0.2,
        reconnect_initial=0.01,
    )
    socket.start()
    try:
        for _ in range(200):
            if socket.connection >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await socket.close()
    assert socket.connection >= 2
    assert states[:3] == [True, False, True]
    assert len(set(comfy.client_ids)) == len(comfy.client_ids) >= 2


async def test_headers_go_with_http_and_websocket(comfy: ScriptedComfy) -> None:
    async with ComfyClient(comfy.url, headers={"Authorization": "Bearer t0k"}) as client:
        await client.queue()
    assert comfy.authorization == ["Bearer t0k", "Bearer t0k"]


async def test_a_server_that_drops_every_socket_is_not_hammered(comfy: ScriptedComfy) -> None:
    comfy.close_on_connect = True
    socket = ComfySocket(
        comfy.url,
        on_message=lambda _: None,
        on_state=lambda _: None,
        reconnect_initial=0.01,
        reconnect_max=0.3,
    )
    socket.start()
    await asyncio.sleep(1.5)
    await socket.close()
    # Backing off from 10 ms to 300 ms gives about 8 attempts in 1.5 s; without backoff
    # (every short-lived connection resetting it) it would be well over a hundred.
    assert 2 <= len(comfy.client_ids) <= 20
    assert len(set(comfy.client_ids)) == len(comfy.client_ids)  # a fresh clientId each time
