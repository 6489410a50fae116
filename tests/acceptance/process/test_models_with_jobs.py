"""Jobs that bring their model files (`models`), run on managed emulator folders: the files land
once in comfyrun's model cache, ComfyUI sees them through the extra model paths comfyrun passes,
and the ComfyUI folder itself is never written to."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
from pathlib import Path
from typing import Any

import httpx
from tests.acceptance.process.test_managed_server import managed, settings, submit, wait_job
from tests.support.api import asgi_app
from tests.support.emulator import text_to_image_workflow
from tests.support.managed_comfy import make_emulator_folder
from tests.support.model_server import model_server

from comfyrun.config import BackendConfig


def safetensors(tag: str) -> bytes:
    header = json.dumps({"__metadata__": {"tag": tag}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


CKPT = safetensors("fetched checkpoint")
LORA = safetensors("fetched lora")


def lora_workflow(prefix: str) -> dict[str, Any]:
    workflow = text_to_image_workflow(ckpt_name="fetched.safetensors", prefix=prefix)
    workflow["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["1", 0],
            "clip": ["1", 1],
            "lora_name": "styles/fetched_lora.safetensors",
            "strength_model": 1.0,
            "strength_clip": 1.0,
        },
    }
    for node in workflow.values():  # the sampler and the encoders use the LoRA's outputs
        for key, value in node["inputs"].items():
            if value == ["1", 0] and node is not workflow["20"]:
                node["inputs"][key] = ["20", 0]
    return workflow


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


async def test_models_by_url_are_fetched_once_and_the_comfyui_folder_is_untouched(
    tmp_path: Path,
) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    before = tree(folder)
    async with model_server({"ckpt": CKPT, "lora": LORA}) as server:
        models = [
            {"url": f"{server.url}/ckpt", "folder": "checkpoints", "name": "fetched.safetensors"},
            {
                "url": f"{server.url}/lora",
                "folder": "loras",
                "name": "styles/fetched_lora.safetensors",
                "hash": "sha256:" + hashlib.sha256(LORA).hexdigest(),
            },
        ]
        cfg = BackendConfig(name="gpu0", comfy_path=folder)
        app_settings = settings(tmp_path, cfg, fetch_allow=["127.0.0.1"])
        async with asgi_app(app_settings) as (_app, client, ctx):
            first = await wait_job(client, await submit(client, lora_workflow("a"), models=models))
            assert first["status"] == "succeeded", first
            events = await ctx.store.events_since(first["id"])
            downloads = [e.data for e in events if e.kind == "model_download"]
            assert downloads and any(d["finished"] for d in downloads), events

            second = await wait_job(client, await submit(client, lora_workflow("b"), models=models))
            assert second["status"] == "succeeded", second
            assert server.hits == {"ckpt": 1, "lora": 1}  # the second job downloaded nothing

            # concurrent jobs needing one new file share one download
            server.files["ckpt2"] = safetensors("another")
            more = [{**models[0], "url": f"{server.url}/ckpt2", "name": "other.safetensors"}]
            wf = text_to_image_workflow(ckpt_name="other.safetensors")
            ids = await asyncio.gather(*(submit(client, wf, models=more) for _ in range(3)))
            jobs = await asyncio.gather(*(wait_job(client, i) for i in ids))
            assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs
            assert server.hits["ckpt2"] == 1

            url = managed(ctx, "gpu0").url
            async with httpx.AsyncClient(base_url=url or "", trust_env=False) as http:
                listed = (await http.get("/models/loras")).json()
            assert "styles/fetched_lora.safetensors" in listed
            cached = (await client.get("/api/v2/models")).json()["models"]
            assert {n for m in cached for n in m["names"]} >= {
                "checkpoints/fetched.safetensors",
                "loras/styles/fetched_lora.safetensors",
            }
    assert tree(folder) == before


async def test_a_wrong_hash_fails_the_job_clearly_and_keeps_nothing(tmp_path: Path) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    async with model_server({"ckpt": CKPT}) as server:
        bad = [
            {
                "url": f"{server.url}/ckpt",
                "folder": "checkpoints",
                "name": "fetched.safetensors",
                "hash": "blake3:" + "0" * 64,
            }
        ]
        cfg = BackendConfig(name="gpu0", comfy_path=folder)
        app_settings = settings(tmp_path, cfg, fetch_allow=["127.0.0.1"])
        async with asgi_app(app_settings) as (_app, client, _ctx):
            wf = text_to_image_workflow(ckpt_name="fetched.safetensors")
            job = await wait_job(client, await submit(client, wf, models=bad, max_retries=0))
            assert job["status"] == "failed", job
            assert job["error"]["code"] == "hash_mismatch", job["error"]
            assert "not the declared blake3:0000" in job["error"]["message"]
            assert (await client.get("/api/v2/models")).json()["models"] == []


async def test_private_model_urls_are_refused_without_fetch_allow(tmp_path: Path) -> None:
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    async with model_server({"ckpt": CKPT}) as server:
        models = [{"url": f"{server.url}/ckpt", "folder": "checkpoints", "name": "f.safetensors"}]
        cfg = BackendConfig(name="gpu0", comfy_path=folder)
        async with asgi_app(settings(tmp_path, cfg)) as (_app, client, _ctx):
            wf = text_to_image_workflow(ckpt_name="f.safetensors")
            body = {"workflow": wf, "models": models, "max_retries": 0}
            answer = await client.post("/api/v2/jobs", json=body)
            assert answer.status_code == 422, answer.text  # at submission, as a URL input
            assert "not a public address" in answer.json()["error"]["message"]
            assert server.hits["ckpt"] == 0


async def test_a_comfyui_beside_the_worker_that_reads_the_cache_gets_the_models(
    tmp_path: Path,
) -> None:
    """An unmanaged ComfyUI on this machine started with comfyrun's extra_model_paths.yaml and
    configured `sees_model_cache`: jobs bringing models run there, fetched into the cache."""
    from tests.support.emulator_process import emulator_process

    with socket.socket() as s:  # a port for the ComfyUI started below
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = BackendConfig(name="beside", url=f"http://127.0.0.1:{port}", sees_model_cache=True)
    async with model_server({"ckpt": CKPT}) as server:
        models = [
            {"url": f"{server.url}/ckpt", "folder": "checkpoints", "name": "fetched.safetensors"}
        ]
        app_settings = settings(tmp_path, cfg, fetch_allow=["127.0.0.1"])
        async with asgi_app(app_settings) as (_app, client, ctx):
            yaml = ctx.extras["models"].extra_paths_file
            args = ["--extra-model-paths-config", str(yaml)]
            with emulator_process(tmp_path / "beside", port=port, extra_args=args):
                workflow = text_to_image_workflow(ckpt_name="fetched.safetensors")
                done = await wait_job(client, await submit(client, workflow, models=models))
                assert done["status"] == "succeeded", done
                assert done["backend"] == "beside"
            assert server.hits == {"ckpt": 1}


async def test_a_delivered_model_is_listed_and_described_by_the_comfyui_face(
    tmp_path: Path,
) -> None:
    """The fleet's model lists (ComfyUI's /models, the editor's file choices, model-aware
    routing) were fetched before a job brought its file; once it is in the cache, the
    backends that see the cache are asked again: the file is listed, /view_metadata answers."""
    folder = make_emulator_folder(tmp_path / "ComfyUI")
    async with model_server({"ckpt": CKPT}) as server:
        models = [
            {"url": f"{server.url}/ckpt", "folder": "checkpoints", "name": "fetched.safetensors"}
        ]
        cfg = BackendConfig(name="gpu0", comfy_path=folder)
        app_settings = settings(tmp_path, cfg, fetch_allow=["127.0.0.1"])
        async with asgi_app(app_settings) as (_app, client, ctx):
            assert "fetched.safetensors" not in (await client.get("/models/checkpoints")).json()
            workflow = text_to_image_workflow(ckpt_name="fetched.safetensors")
            job = await wait_job(client, await submit(client, workflow, models=models))
            assert job["status"] == "succeeded", job
            assert ctx.catalog is not None
            await ctx.catalog.settled()
            assert "fetched.safetensors" in (await client.get("/models/checkpoints")).json()
            meta = await client.get(
                "/view_metadata/checkpoints", params={"filename": "fetched.safetensors"}
            )
            assert (meta.status_code, meta.json()) == (200, {"tag": "fetched checkpoint"})
