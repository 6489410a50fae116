"""A managed backend's warm-up prompt (a JSON file in its config) runs after each start, and the
backend counts as ready only once it succeeded."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.acceptance.process.test_managed_server import backends, managed, settings
from tests.support.api import asgi_app
from tests.support.emulator import text_to_image_workflow
from tests.support.managed_comfy import make_emulator_folder

from comfyrun.config import BackendConfig
from comfyrun.errors import BackendError


async def test_ready_only_after_the_warm_up_prompt_succeeded(tmp_path: Path) -> None:
    warmup = tmp_path / "warmup.json"
    warmup.write_text(json.dumps(text_to_image_workflow(prefix="warmup")))
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    cfg = BackendConfig(name="gpu0", comfy_path=folder, warmup_prompt=warmup)
    async with asgi_app(settings(tmp_path, cfg)) as (_app, _client, ctx):
        process = managed(ctx, "gpu0")
        url = await process.ensure_started()
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            history = (await http.get("/history")).json()
        (entry,) = history.values()
        assert entry["status"]["status_str"] == "success"
        assert entry["prompt"][3]["client_id"] == "comfyrun-warmup"
        assert list(process.output_dir.glob("warmup_*.png"))
        first = process.pid
        await process.restart()  # after each start, not only the first
        assert process.pid != first
        async with httpx.AsyncClient(base_url=process.url or "", trust_env=False) as http:
            assert len((await http.get("/history")).json()) == 1  # a new process, warmed again


async def test_a_failing_warm_up_is_an_error_that_says_so(tmp_path: Path) -> None:
    warmup = tmp_path / "warmup.json"
    warmup.write_text(json.dumps(text_to_image_workflow(ckpt_name="broken_for_test.safetensors")))
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    cfg = BackendConfig(name="gpu0", comfy_path=folder, warmup_prompt=warmup)
    async with asgi_app(settings(tmp_path, cfg)) as (_app, client, ctx):
        process = managed(ctx, "gpu0")
        with pytest.raises(BackendError, match="warm-up prompt failed"):
            await process.ensure_started()
        listed = (await backends(client))["gpu0"]
        assert listed["state"] == "error" and "warm-up" in listed["last_error"]
        assert process.pid is None


def test_an_unreadable_warm_up_file_is_a_configuration_error(tmp_path: Path) -> None:
    from comfyrun.api.worker_setup import backend_specs
    from comfyrun.errors import InvalidRequest

    cfg = BackendConfig(comfy_path=tmp_path, warmup_prompt=tmp_path / "missing.json")
    with pytest.raises(InvalidRequest, match="cannot read warmup_prompt"):
        backend_specs(cfg, 0, settings(tmp_path))
