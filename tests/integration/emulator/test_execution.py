"""Execution semantics beyond the transcripts: caching, interrupts, nodes and output kinds."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image
from tests.support.emulator import (
    image_workflow,
    running_emulator,
    text_to_image_workflow,
    wait_history,
    ws_client,
)

from comfyrun.comfy.emulator import Emulator
from comfyrun.comfy.emulator.cli import build_parser, config_from_args

CKPT = "random_sd15_for_protocol_tests.safetensors"


async def _post(
    session: aiohttp.ClientSession,
    emu: Emulator,
    prompt: Mapping[str, object],
    client_id: str | None = None,
) -> str:
    body: dict[str, object] = {"prompt": prompt}
    if client_id is not None:
        body["client_id"] = client_id
    async with session.post(f"{emu.url}/prompt", json=body) as resp:
        assert resp.status == 200, await resp.text()
        prompt_id: str = (await resp.json())["prompt_id"]
        return prompt_id


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


async def test_identical_rerun_is_cached_and_writes_nothing(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    first = await wait_history(
        session, emu.url, await _post(session, emu, image_workflow(color=0x123456))
    )
    files = sorted(emu.config.output_dir.rglob("*"))
    again = await wait_history(
        session, emu.url, await _post(session, emu, image_workflow(color=0x123456))
    )
    assert again["outputs"] == first["outputs"]
    assert sorted(emu.config.output_dir.rglob("*")) == files
    cached = again["status"]["messages"][1]
    assert cached[0] == "execution_cached" and cached[1]["nodes"] == ["1", "2", "3", "4"]
    changed = await wait_history(
        session, emu.url, await _post(session, emu, image_workflow(color=0x654321))
    )
    assert changed["status"]["messages"][1][1]["nodes"] == []
    saved = emu.config.output_dir / changed["outputs"]["3"]["images"][0]["filename"]
    # 255 * float32 then truncation, as ComfyUI's SaveImage: within one level of the exact value
    assert (
        np.abs(_pixels(saved)[0, 0].astype(int) - [255 - 0x65, 255 - 0x43, 255 - 0x21]).max() <= 1
    )


async def _settled(emu: Emulator, count: int) -> None:
    """Until the emulator's worker is through with `count` prompts (their flags read)."""
    assert await asyncio.to_thread(emu.wait_settled, count, 30)


async def test_free_is_taken_after_the_next_prompt_as_comfyui_takes_it(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """POST /free sets flags ComfyUI's worker reads after the prompt it runs next: that prompt
    still meets the cache; the one after it runs anew (new files), its models loaded again."""
    graph = image_workflow(color=0x2468AC)
    settled = emu.settled
    first = await wait_history(session, emu.url, await _post(session, emu, graph))
    # the history shows the prompt before the worker reads the flags after it (as ComfyUI's
    # does): a /free in between was taken after this prompt, not the next (a loaded machine)
    await _settled(emu, settled + 1)
    async with session.post(f"{emu.url}/free", json={"free_memory": True}) as resp:
        assert resp.status == 200 and await resp.text() == ""
    still = await wait_history(session, emu.url, await _post(session, emu, graph))
    assert still["status"]["messages"][1][1]["nodes"] == ["1", "2", "3", "4"]
    assert still["outputs"] == first["outputs"]
    anew = await wait_history(session, emu.url, await _post(session, emu, graph))
    assert anew["status"]["messages"][1][1]["nodes"] == []
    assert anew["outputs"] != first["outputs"]  # SaveImage wrote its file again, numbered on

    await wait_history(
        session, emu.url, await _post(session, emu, text_to_image_workflow(ckpt_name=CKPT))
    )
    assert emu.executor._loaded  # the checkpoint is in memory
    async with session.post(f"{emu.url}/free", json={"unload_models": True}) as resp:
        assert resp.status == 200
    await wait_history(session, emu.url, await _post(session, emu, image_workflow(color=7)))
    assert emu.executor._loaded == []


async def test_an_input_no_node_declares_is_dropped_but_keys_the_cache(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """As ComfyUI's get_input_data: a constant input the node type does not declare is not
    passed to it, while its cache key (every input) changes: that node runs again."""
    graph = image_workflow(color=0x13579B)
    first = await wait_history(session, emu.url, await _post(session, emu, graph))
    graph["3"]["inputs"]["not_declared"] = "x"
    again = await wait_history(session, emu.url, await _post(session, emu, graph))
    assert again["status"]["status_str"] == "success"
    assert again["status"]["messages"][1][1]["nodes"] == ["1", "2", "4"]  # "3" ran again
    assert again["outputs"]["3"] != first["outputs"]["3"]  # and saved a new file


async def test_changing_an_uploaded_file_invalidates_load_image_cache(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "loaded"},
        },
    }
    for color in ((255, 0, 0), (0, 255, 0)):
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
        form = aiohttp.FormData()
        form.add_field("image", buffer.getvalue(), filename="in.png")
        form.add_field("overwrite", "true")
        async with session.post(f"{emu.url}/upload/image", data=form) as resp:
            assert resp.status == 200
        entry = await wait_history(session, emu.url, await _post(session, emu, graph))
        saved = emu.config.output_dir / entry["outputs"]["2"]["images"][0]["filename"]
        assert tuple(_pixels(saved)[1, 1]) == color


async def test_a_truncated_image_loads_as_comfyui_loads_it(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """ComfyUI's LoadImage opens and decodes through node_helpers.pillow, which retries with
    truncated files allowed: a PNG or JPEG cut short loads (what it lacks comes out black or
    grey) and the prompt succeeds, where a plain Pillow load fails."""
    pixels = np.zeros((128, 128, 3), dtype=np.uint8)
    pixels[:16] = (255, 0, 0)  # the first rows (a JPEG block row) survive the cut
    pixels[16:] = np.random.default_rng(7).integers(0, 255, (112, 128, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        cut = buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10]
        with pytest.raises(OSError, match=r"(?i)truncated"):
            Image.open(io.BytesIO(cut)).load()
        name = f"cut.{fmt.lower()}"
        form = aiohttp.FormData()
        form.add_field("image", cut, filename=name)
        form.add_field("overwrite", "true")
        async with session.post(f"{emu.url}/upload/image", data=form) as resp:
            assert resp.status == 200
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "cut"},
            },
        }
        entry = await wait_history(session, emu.url, await _post(session, emu, graph))
        assert entry["status"]["status_str"] == "success", entry["status"]
        saved = _pixels(emu.config.output_dir / entry["outputs"]["2"]["images"][0]["filename"])
        assert saved.shape == (128, 128, 3)
        assert np.abs(saved[1, 1].astype(int) - [255, 0, 0]).max() <= 8  # JPEG: near


async def test_text_to_image_is_deterministic_per_seed(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    a = await wait_history(
        session,
        emu.url,
        await _post(session, emu, text_to_image_workflow(seed=1, prefix="a", ckpt_name=CKPT)),
    )
    b = await wait_history(
        session,
        emu.url,
        await _post(session, emu, text_to_image_workflow(seed=1, prefix="b", ckpt_name=CKPT)),
    )
    c = await wait_history(
        session,
        emu.url,
        await _post(session, emu, text_to_image_workflow(seed=2, prefix="c", ckpt_name=CKPT)),
    )
    images = [
        _pixels(emu.config.output_dir / h["outputs"]["7"]["images"][0]["filename"])
        for h in (a, b, c)
    ]
    assert images[0].shape == (64, 64, 3)
    assert np.array_equal(images[0], images[1])
    assert not np.array_equal(images[0], images[2])


async def test_ksampler_reports_every_step_and_interrupts_within_a_step(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with (
        running_emulator(tmp_path, step_time_s=0.05) as emu,
        ws_client(session, emu.url, "ks") as client,
    ):
        prompt_id = await _post(session, emu, text_to_image_workflow(steps=5), "ks")
        frames = await client.until_idle(prompt_id)
        assert [f.data["value"] for f in frames if f.type == "progress"] == [1, 2, 3, 4, 5]
        assert {f.data["max"] for f in frames if f.type == "progress"} == {5}
        prompt_id = await _post(session, emu, text_to_image_workflow(steps=10000, seed=9), "ks")
        while (await client.next()).type != "progress":
            pass
        asked = time.monotonic()
        async with session.post(f"{emu.url}/interrupt", json={"prompt_id": prompt_id}) as resp:
            assert resp.status == 200
        rest = await client.until_idle(prompt_id)
        latency = time.monotonic() - asked
        assert [f.type for f in rest][-3:] == ["execution_interrupted", "status", "executing"]
        assert len([f for f in rest if f.type == "progress"]) < 100
        assert latency < 20


async def test_other_output_kinds_and_unimplemented_nodes(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    graph: dict[str, Any] = text_to_image_workflow(ckpt_name=CKPT, size=16)
    graph["4"]["inputs"]["batch_size"] = 3
    del graph["7"]
    graph["8"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["6", 0],
            "filename_prefix": "anim",
            "fps": 6.0,
            "lossless": True,
            "quality": 80,
            "method": "default",
        },
    }
    graph["9"] = {"class_type": "GetImageSize", "inputs": {"image": ["6", 0]}}
    graph["10"] = {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}}
    entry = await wait_history(session, emu.url, await _post(session, emu, graph))
    assert entry["outputs"]["8"] == {
        "images": [{"filename": "anim_00001_.webp", "subfolder": "", "type": "output"}],
        "animated": [True],
    }
    with Image.open(emu.config.output_dir / "anim_00001_.webp") as webp:
        assert getattr(webp, "n_frames", 1) == 3
    assert entry["outputs"]["10"] == {"text": ["16"]}
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "ImageSharpen",
            "inputs": {"image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0, "alpha": 1.0},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    entry = await wait_history(session, emu.url, await _post(session, emu, graph))
    error = entry["status"]["messages"][-1]
    assert error[0] == "execution_error"
    assert (
        error[1]["node_type"] == "ImageSharpen"
        and error[1]["exception_type"] == "NotImplementedError"
    )
    assert "ImageSharpen" in error[1]["exception_message"]


async def test_image_nodes_compute_real_pixels(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 20, "height": 10, "batch_size": 2, "color": 0xFF0000},
        },
        "2": {
            "class_type": "ImageCrop",
            "inputs": {"image": ["1", 0], "width": 8, "height": 4, "x": 2, "y": 2},
        },
        "3": {"class_type": "ImageRotate", "inputs": {"image": ["2", 0], "rotation": "90 degrees"}},
        "4": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["3", 0],
                "upscale_method": "nearest-exact",
                "width": 8,
                "height": 16,
                "crop": "center",
            },
        },
        "5": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["4", 0], "blur_radius": 3, "sigma": 1.0},
        },
        "6": {
            "class_type": "SaveImage",
            "inputs": {"images": ["5", 0], "filename_prefix": "px/out"},
        },
    }
    entry = await wait_history(session, emu.url, await _post(session, emu, graph))
    images = entry["outputs"]["6"]["images"]
    assert [i["filename"] for i in images] == ["out_00001_.png", "out_00002_.png"]
    pixels = _pixels(emu.config.output_dir / "px" / "out_00001_.png")
    assert pixels.shape == (16, 8, 3)
    assert tuple(pixels[8, 4]) == (255, 0, 0)


async def test_audio_outputs(emu: Emulator, session: aiohttp.ClientSession) -> None:
    graph = {
        "1": {
            "class_type": "EmptyAudio",
            "inputs": {"duration": 0.5, "sample_rate": 8000, "channels": 1},
        },
        "2": {
            "class_type": "SaveAudio",
            "inputs": {"audio": ["1", 0], "filename_prefix": "audio/ComfyUI"},
        },
        "3": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}},
    }
    entry = await wait_history(session, emu.url, await _post(session, emu, graph))
    assert entry["outputs"]["2"] == {
        "audio": [{"filename": "ComfyUI_00001_.wav", "subfolder": "audio", "type": "output"}]
    }
    preview = entry["outputs"]["3"]["audio"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    with wave.open(str(emu.config.output_dir / "audio" / "ComfyUI_00001_.wav")) as clip:
        assert (clip.getnchannels(), clip.getframerate(), clip.getnframes()) == (1, 8000, 4000)
    async with session.get(f"{emu.url}/object_info/SaveAudio") as resp:
        assert (await resp.json())["SaveAudio"]["output_node"] is True


async def test_prompt_without_client_broadcasts_progress_and_legacy_previews(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with running_emulator(tmp_path, preview_method="auto") as emu:
        meta_ws = await session.ws_connect(f"{emu.url}/ws?clientId=meta")
        try:
            await meta_ws.receive_json(timeout=10)
            await meta_ws.send_json(
                {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
            )
            assert (await meta_ws.receive_json(timeout=10))["type"] == "feature_flags"
            async with ws_client(session, emu.url, "plain") as plain:
                prompt_id = await _post(session, emu, text_to_image_workflow(steps=2))
                await wait_history(session, emu.url, prompt_id)
                got_plain = await plain.quiet(0.3)
            got_meta: list[tuple[str, int]] = []
            while True:
                try:
                    msg = await meta_ws.receive(timeout=0.3)
                except TimeoutError:
                    break
                if msg.type == aiohttp.WSMsgType.BINARY:
                    got_meta.append(("binary", int.from_bytes(msg.data[:4], "big")))
                else:
                    got_meta.append((msg.json()["type"], 0))
        finally:
            await meta_ws.close()
    plain_types = [(f.type, f.binary_event if f.type == "binary" else 0) for f in got_plain]
    for got in (plain_types, got_meta):
        assert [t for t in got if t[0] == "binary"] == [("binary", 1), ("binary", 1)]
        assert len([t for t in got if t[0] == "progress"]) == 2
        assert not {t[0] for t in got} & {
            "executing",
            "executed",
            "execution_start",
            "execution_success",
        }


async def test_a_cyclic_prompt_is_rejected_not_run(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    graph = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "cycle"},
        },
    }
    async with session.post(f"{emu.url}/prompt", json={"prompt": graph}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    # ComfyUI's recursive validation overwrites the inner failure on the way up, so a cycle
    # ends as a 400 without node errors; the point is that it never reaches the queue.
    async with session.get(f"{emu.url}/queue") as resp:
        assert await resp.json() == {"queue_running": [], "queue_pending": []}


async def test_a_busy_port_fails_cleanly(emu: Emulator, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        async with running_emulator(tmp_path / "second", port=emu.port):
            pass


async def test_disable_smart_memory_unloads_every_model_before_the_history(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """ComfyUI's --disable-smart-memory: at the end of each prompt, after its
    `execution_success`, every model is unloaded (here `unload_s` a model) before the history
    is written and `executing` null is sent; the prompt's checkpoint too when its loader came
    from the cache (ComfyUI loads it again to sample)."""
    unload_s = 0.4
    async with (
        running_emulator(tmp_path / "emu", disable_smart_memory=True, unload_s=unload_s) as emu,
        ws_client(session, emu.url, "dsm") as ws,
    ):
        for seed in (1, 2):  # the second: its loader cached
            workflow = text_to_image_workflow(seed=seed, ckpt_name=CKPT)
            prompt_id = await _post(session, emu, workflow, "dsm")
            success_at: float | None = None
            while True:
                frame = await ws.next()
                if frame.type == "execution_success" and frame.data["prompt_id"] == prompt_id:
                    success_at = time.monotonic()
                    async with session.get(f"{emu.url}/history/{prompt_id}") as resp:
                        assert await resp.json() == {}  # not written yet: the model unloads
                if frame.type == "executing" and frame.data == {
                    "node": None,
                    "prompt_id": prompt_id,
                }:
                    break
            assert success_at is not None and time.monotonic() - success_at >= unload_s * 0.9
            assert emu.executor._loaded == []
            entry = await wait_history(session, emu.url, prompt_id)
            assert entry["status"]["status_str"] == "success"
            cached = entry["status"]["messages"][1][1]["nodes"]
            assert ("1" in cached) is (seed == 2)


def test_disable_smart_memory_and_unload_s_are_read_from_the_command_line() -> None:
    args = build_parser().parse_args(["--disable-smart-memory", "--unload-s", "1.5"])
    config = config_from_args(args, [])
    assert config.disable_smart_memory and config.unload_s == 1.5
    plain = config_from_args(build_parser().parse_args([]), [])
    assert not plain.disable_smart_memory and plain.unload_s == 0.0
