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


async def test_view_metadata_reads_a_safetensors_header_as_comfyui(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """server.py's /view_metadata: the header's `__metadata__` of a .safetensors file in that
    model folder; an empty 404 for anything else. The emulator had no such route."""
    models = tmp_path / "models"

    def write(path: Path, header: dict[str, object], length: int | None = None) -> None:
        raw = json.dumps(header).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw)

    write(models / "loras" / "styles" / "ink.safetensors", {"__metadata__": {"dim": "8"}})
    write(models / "diffusion_models" / "flux.safetensors", {"__metadata__": {"f": "1"}})
    write(models / "checkpoints" / "bare.safetensors", {"w": {"dtype": "F16"}})
    write(models / "checkpoints" / "huge.safetensors", {"__metadata__": {}}, length=2 << 20)
    (models / "checkpoints" / "ink.ckpt").write_bytes(b"\0" * 16)
    async with running_emulator(tmp_path, models_dir=models) as emu:

        async def get(path: str, **params: str) -> tuple[int, object]:
            async with session.get(f"{emu.url}{path}", params=params) as resp:
                body = await resp.read()
                return resp.status, json.loads(body) if body else None

        assert await get("/view_metadata/loras", filename="styles/ink.safetensors") == (
            200,
            {"dim": "8"},
        )
        assert await get("/view_metadata/unet", filename="flux.safetensors") == (200, {"f": "1"})
        for folder, params in (
            ("checkpoints", {"filename": "bare.safetensors"}),
            ("checkpoints", {"filename": "huge.safetensors"}),
            ("checkpoints", {"filename": "ink.ckpt"}),
            ("vae", {"filename": "vae-ft-mse-840000-ema-pruned.safetensors"}),  # listed only
            ("loras", {"filename": "../loras/styles/ink.safetensors"}),  # (taken as loras/…)
            ("checkpoints", {}),
            ("nofolder", {"filename": "x.safetensors"}),
        ):
            assert await get(f"/api/view_metadata/{folder}", **params) == (404, None), params
