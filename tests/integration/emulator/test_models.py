"""Model lists from a ComfyUI-shaped models folder, and model files that fail to load."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import aiohttp
from tests.support.emulator import running_emulator, text_to_image_workflow, wait_history


def _safetensors(path: Path) -> None:
    header = json.dumps({"__metadata__": {}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header)


async def test_models_dir_fills_object_info_and_broken_files_fail_at_run_time(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    models = tmp_path / "models"
    _safetensors(models / "checkpoints" / "real.safetensors")
    (models / "checkpoints" / "garbage.safetensors").write_bytes(b"\x00" * 64)
    _safetensors(models / "loras" / "styles" / "ink.safetensors")
    (models / "vae").mkdir()
    async with running_emulator(tmp_path, models_dir=models) as emu:
        async with session.get(f"{emu.url}/models/checkpoints") as resp:
            assert await resp.json() == ["garbage.safetensors", "real.safetensors"]
        async with session.get(f"{emu.url}/models/loras") as resp:
            assert await resp.json() == ["styles/ink.safetensors"]
        async with session.get(f"{emu.url}/object_info/VAELoader") as resp:
            vae_names = (await resp.json())["VAELoader"]["input"]["required"]["vae_name"][0]
        assert vae_names == ["pixel_space"]
        async with session.get(f"{emu.url}/object_info/LoraLoader") as resp:
            lora_names = (await resp.json())["LoraLoader"]["input"]["required"]["lora_name"][0]
        assert lora_names == ["styles/ink.safetensors"]
        graph = text_to_image_workflow(ckpt_name="real.safetensors", steps=2)
        graph["8"] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": ["1", 0],
                "clip": ["1", 1],
                "lora_name": "styles/ink.safetensors",
                "strength_model": 1.0,
                "strength_clip": 1.0,
            },
        }
        graph["5"]["inputs"]["model"] = ["8", 0]
        async with session.post(f"{emu.url}/prompt", json={"prompt": graph}) as resp:
            assert resp.status == 200
            entry = await wait_history(session, emu.url, (await resp.json())["prompt_id"])
        assert entry["status"]["status_str"] == "success"
        missing = text_to_image_workflow(ckpt_name="v1-5-pruned-emaonly.safetensors")
        async with session.post(f"{emu.url}/prompt", json={"prompt": missing}) as resp:
            assert resp.status == 400
            assert (await resp.json())["node_errors"]["1"]["errors"][0][
                "type"
            ] == "value_not_in_list"
        async with session.post(
            f"{emu.url}/prompt",
            json={"prompt": text_to_image_workflow(ckpt_name="garbage.safetensors")},
        ) as resp:
            entry = await wait_history(session, emu.url, (await resp.json())["prompt_id"])
        error = entry["status"]["messages"][-1]
        assert error[0] == "execution_error" and error[1]["node_type"] == "CheckpointLoaderSimple"
        assert error[1]["exception_type"] == "safetensors._safetensors_rust.SafetensorError"
