"""ComfyClient against the ComfyUI emulator over real HTTP and websocket."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.support.emulator import image_workflow, running_emulator, text_to_image_workflow

from comfyrun.comfy import (
    ComfyClient,
    ComfyExecutionError,
    ComfyHTTPError,
    ComfyInterrupted,
    ComfyValidationError,
    FileRef,
    ValueOutput,
)
from comfyrun.comfy import messages as m
from comfyrun.comfy.emulator import Emulator, NodeFault


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[Emulator]:
    async with running_emulator(tmp_path) as server:
        yield server


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[ComfyClient]:
    c = ComfyClient(
        emu.url,
        timeout=30.0,
        poll_interval=0.1,
        audit_interval=600,
        reconnect_initial=0.02,
        reconnect_max=0.2,
    )
    await c.start()
    try:
        yield c
    finally:
        await c.close()


async def read(client: ComfyClient, ref: FileRef) -> bytes:
    async with client.view(ref) as stream:
        return b"".join([chunk async for chunk in stream])


def save_workflow(color: int, prefix: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


async def test_success(client: ComfyClient) -> None:
    result = await client.run(image_workflow(color=123, prefix="ok"), timeout=30)
    assert result.ok and result.source == "websocket"
    saved = [f for f in result.files if f.node_id == "3"]
    assert len(saved) == 1 and saved[0].type == "output" and saved[0].filename.startswith("ok")
    assert [f.type for f in result.files if f.node_id == "4"] == ["temp"]
    data = await read(client, saved[0])
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    entry = await client.history(result.prompt_id)
    assert entry is not None and entry.outputs == result.outputs


async def test_validation_error(client: ComfyClient) -> None:
    bad = image_workflow()
    del bad["3"]["inputs"]["images"]
    bad["4"]["inputs"]["images"] = ["1", 0]
    bad["4"]["class_type"] = "NoSuchNode"
    with pytest.raises(ComfyValidationError) as info:
        await client.submit(bad)
    assert info.value.error["type"] == "invalid_prompt"

    missing = image_workflow()
    del missing["3"]["inputs"]["images"]
    del missing["4"]
    with pytest.raises(ComfyValidationError) as info:
        await client.submit(missing)
    assert info.value.error_type == "prompt_outputs_failed_validation"
    assert info.value.node_errors["3"]["errors"][0]["type"] == "required_input_missing"


async def test_runtime_error(emu: Emulator, client: ComfyClient) -> None:
    emu.faults.fail_class_types["ImageInvert"] = NodeFault("ValueError", "boom")
    result = await client.run(image_workflow(color=5), timeout=30)
    assert result.status == "error"
    assert isinstance(result.error, ComfyExecutionError)
    assert (result.error.node_id, result.error.node_type) == ("2", "ImageInvert")
    assert result.error.exception_type == "ValueError" and "boom" in result.error.message
    assert not result.error.out_of_memory
    with pytest.raises(ComfyExecutionError):
        result.raise_for_status()


async def test_out_of_memory_is_recognised(emu: Emulator, client: ComfyClient) -> None:
    emu.faults.fail_class_types["ImageInvert"] = NodeFault.oom()
    result = await client.run(image_workflow(color=6), timeout=30)
    assert isinstance(result.error, ComfyExecutionError) and result.error.out_of_memory


async def test_interrupt(emu: Emulator, client: ComfyClient) -> None:
    emu.faults.hang = True
    with client.watch("int-1") as watch:
        await client.submit(image_workflow(color=7), prompt_id="int-1")
        async for event in watch:
            if isinstance(event, m.ExecutionStart):
                break
        assert (await client.queue()).running == ["int-1"]
        await client.interrupt("int-1")
        result = await watch.result(timeout=30)
    assert result.status == "interrupted" and isinstance(result.error, ComfyInterrupted)
    emu.faults.hang = False
    entry = await client.history("int-1")
    assert entry is not None and entry.outcome == "interrupted"


async def test_deleted_pending_prompt_is_lost(emu: Emulator, client: ComfyClient) -> None:
    emu.faults.hang = True
    first, second = client.watch("del-1"), client.watch("del-2")
    await client.submit(image_workflow(color=8), prompt_id="del-1")
    # ComfyUI takes a prompt off its queue a moment after /prompt answers (on a loaded machine,
    # after the next /prompt): del-2 is pending behind del-1 once del-1 runs (hung)
    await client.submit(image_workflow(color=9), prompt_id="del-2")
    async with asyncio.timeout(30):
        while (queue := await client.queue()).running != ["del-1"]:  # noqa: ASYNC110 (/queue is what is checked)
            await asyncio.sleep(0.02)
    assert queue.pending == ["del-2"]
    await client.delete_queued(["del-2"])
    assert (await second.result(timeout=30)).status == "lost"
    await client.cancel("del-1")
    assert (await first.result(timeout=30)).status == "interrupted"


async def test_socket_dropped_mid_prompt_recovers_through_history(
    emu: Emulator, client: ComfyClient
) -> None:
    states: list[bool] = []
    client.on_state_change(states.append)
    emu.faults.drop_ws_class_types.add("ImageInvert")
    emu.faults.delay_s = 0.2
    result = await client.run(image_workflow(color=10, prefix="drop"), timeout=30)
    assert result.ok and result.source == "history"
    assert [f.filename[:4] for f in result.files if f.node_id == "3"] == ["drop"]
    assert False in states and states[-1] is True
    emu.faults.drop_ws_class_types.clear()
    emu.faults.delay_s = 0.0
    again = await client.run(image_workflow(color=11), timeout=30)
    assert again.ok and again.source == "websocket"


async def test_upload_then_load_image(tmp_path: Path, client: ComfyClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (255, 0, 0)).save(buffer, format="PNG")
    up = await client.upload_image(buffer.getvalue(), "red.png", subfolder="jobs/x")
    assert (up.name, up.subfolder, up.type) == ("red.png", "jobs/x", "input")
    path = tmp_path / "blue.png"
    Image.new("RGB", (6, 6), (0, 0, 255)).save(path)
    up2 = await client.upload_image(path, "blue.png")
    assert up2.name == "blue.png"
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": up.load_image_value}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "nearest-exact",
                "width": 40,
                "height": 20,
                "crop": "disabled",
            },
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "up"}},
    }
    result = await client.run(workflow, timeout=30)
    assert result.ok, result.error
    (ref,) = result.files
    image = Image.open(io.BytesIO(await read(client, ref)))
    assert image.size == (40, 20)
    assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


async def test_view_of_a_missing_file_is_404(client: ComfyClient) -> None:
    with pytest.raises(ComfyHTTPError) as info:
        await read(client, FileRef("1", "images", "nope.png"))
    assert info.value.status == 404


async def test_several_outputs_of_several_kinds(client: ComfyClient) -> None:
    workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 77},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "many"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "4": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "anim",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },
        "5": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }
    result = await client.run(workflow, timeout=30)
    assert result.ok, result.error
    assert set(result.outputs) == {"2", "3", "4", "6"}
    assert len([f for f in result.files if f.node_id == "2"]) == 2
    assert {f.type for f in result.files if f.node_id == "3"} == {"temp"}
    (webp,) = [f for f in result.files if f.node_id == "4"]
    assert webp.content_type == "image/webp"
    assert ValueOutput("4", "animated", [True]) in result.outputs["4"]
    assert result.outputs["6"] == [ValueOutput("6", "text", ["hello"])]
    for ref in result.files:
        assert len(await read(client, ref)) > 0


async def test_progress_and_previews(tmp_path: Path) -> None:
    workflow = text_to_image_workflow(steps=5)
    async with (
        running_emulator(tmp_path, preview_method="latent2rgb", step_time_s=0.01) as emu,
        ComfyClient(emu.url, timeout=30.0) as client,
    ):
        with client.watch("t2i", node_ids=workflow) as watch:
            await client.submit(workflow, prompt_id="t2i")
            steps = [e async for e in watch if isinstance(e, m.Progress)]
            result = await watch.result(timeout=30)
    assert result.ok
    assert [s.value for s in steps] == [1, 2, 3, 4, 5]
    assert isinstance(watch.latest_preview, m.PreviewImageWithMetadata)
    assert watch.latest_preview.prompt_id == "t2i"
    assert watch.tracker.fraction == 1.0


@pytest.mark.slow
async def test_200_prompts_in_flight_over_one_websocket(client: ComfyClient) -> None:
    count = 200
    ids = [f"many-{i}" for i in range(count)]
    watches = [client.watch(pid) for pid in ids]
    await asyncio.gather(
        *(client.submit(save_workflow(i, f"n{i}_"), prompt_id=pid) for i, pid in enumerate(ids))
    )
    results = await asyncio.gather(*(w.result(timeout=110) for w in watches))
    assert all(r.ok and r.source == "websocket" for r in results)
    for i, result in enumerate(results):
        (ref,) = result.files
        assert ref.filename.startswith(f"n{i}_")
    assert len({r.files[0].filename for r in results}) == count
    assert client._socket is not None and client._socket.connection == 1


async def test_mask_upload_and_upload_errors(client: ComfyClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 255, 0, 255)).save(buffer, format="PNG")
    up = await client.upload_image(buffer.getvalue(), "base.png")
    mask = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(mask, format="PNG")
    original = FileRef("", "images", up.name, up.subfolder, up.type)
    masked = await client.upload_image(
        mask.getvalue(), "masked.png", mask=True, original_ref=original
    )
    data = await read(client, FileRef("", "images", masked.name, masked.subfolder, masked.type))
    assert Image.open(io.BytesIO(data)).size == (4, 4)
    with pytest.raises(ValueError):
        await client.upload_image(b"x", "m.png", mask=True)
    with pytest.raises(ComfyHTTPError) as info:
        await client.upload_image(b"x", "evil.png", subfolder="../../etc")
    assert info.value.status == 400


async def test_object_info_and_system_stats(client: ComfyClient) -> None:
    info = await client.object_info()
    assert "KSampler" in info and "SaveImage" in info
    assert await client.object_info() is info  # cached
    stats = await client.system_stats()
    assert "system" in stats and isinstance(stats["devices"], list)


async def test_audit_notices_a_prompt_deleted_by_someone_else(emu: Emulator) -> None:
    emu.faults.hang = True
    async with ComfyClient(emu.url, poll_interval=0.05, audit_interval=0.2) as client:
        first, second = client.watch("a-1"), client.watch("a-2")
        await client.submit(image_workflow(color=12), prompt_id="a-1")
        await client.submit(image_workflow(color=13), prompt_id="a-2")
        async with httpx.AsyncClient(base_url=emu.url) as other:
            (await other.post("/queue", json={"delete": ["a-2"]})).raise_for_status()
        assert (await second.result(timeout=30)).status == "lost"
        assert not first.done  # still running, and still followed live
        await client.interrupt()
        assert (await first.result(timeout=30)).source == "websocket"
