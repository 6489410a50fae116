"""ComfyUI's GET /view_metadata/{folder}?filename= through comfyrun: a model's safetensors
metadata, asked of the backend that has the model (an emulator reading a real file, as
ComfyUI reads it) and relayed; an empty 404 where no backend has it, as ComfyUI answers."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import running_emulator

from comfyrun.config import BackendConfig


def safetensors(path: Path, metadata: dict[str, str] | None) -> None:
    """A safetensors file of no tensors, its header holding `metadata` (if any)."""
    header: dict[str, Any] = {} if metadata is None else {"__metadata__": metadata}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


async def test_a_models_metadata_is_asked_of_the_backend_that_has_it(tmp_path: Path) -> None:
    """comfyrun answered every /view_metadata with an empty 404: the editor's model library
    showed no model's metadata."""
    safetensors(tmp_path / "a" / "checkpoints" / "on_a.safetensors", {"title": "A's"})
    safetensors(tmp_path / "b" / "loras" / "sub" / "on_b.safetensors", {"ss_dim": "16"})
    safetensors(tmp_path / "b" / "checkpoints" / "bare.safetensors", None)
    safetensors(tmp_path / "b" / "diffusion_models" / "unet.safetensors", {"u": "1"})
    async with (
        running_emulator(tmp_path / "emu-a", models_dir=tmp_path / "a") as a,
        running_emulator(tmp_path / "emu-b", models_dir=tmp_path / "b") as b,
    ):
        backends = [BackendConfig(name=n, url=str(e.url)) for n, e in (("a", a), ("b", b))]
        async with asgi_app(memory_settings(tmp_path, backends=backends)) as (_, http, ctx):
            assert await ctx.pool.wait_ready(10.0)
            assert set(await ctx.catalog.ensure()) == {"a", "b"}

            async def metadata(folder: str, **params: str) -> tuple[int, Any]:
                answer = await http.get(f"/api/view_metadata/{folder}", params=params)
                return answer.status_code, answer.json() if answer.content else None

            assert await metadata("checkpoints", filename="on_a.safetensors") == (
                200,
                {"title": "A's"},
            )
            assert await metadata("loras", filename="sub/on_b.safetensors") == (
                200,
                {"ss_dim": "16"},
            )
            assert await metadata("unet", filename="unet.safetensors") == (200, {"u": "1"})
            for folder, params in (
                ("checkpoints", {"filename": "bare.safetensors"}),  # (no __metadata__)
                ("checkpoints", {"filename": "nowhere.safetensors"}),
                ("loras", {"filename": "on_a.safetensors"}),
                ("checkpoints", {"filename": "on_a.ckpt"}),
                ("checkpoints", {}),
                ("nofolder", {"filename": "on_a.safetensors"}),
            ):
                assert await metadata(folder, **params) == (404, None), (folder, params)
