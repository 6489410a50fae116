"""`comfyrun models list|pull|rm` against a running server, and /api/v2/models' refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from tests.acceptance.conftest import StartServer
from tests.acceptance.test_cli import comfyrun
from tests.support.model_server import model_server

DATA = b"\0" * 2048


@pytest.mark.slow
async def test_models_pull_list_rm(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server("serve", env={"COMFYRUN_FETCH_ALLOW": "127.0.0.1"})
    at = ("--server", server.url)
    async with model_server({"v.safetensors": DATA}) as files:
        url = f"{files.url}/v.safetensors"
        sha = "sha256:" + hashlib.sha256(DATA).hexdigest()
        pulled = await comfyrun(
            "models", "pull", url, "-f", "vae", "-n", "v.safetensors", "--hash", sha, *at
        )
        assert pulled.returncode == 0, pulled.stderr
        assert "cached vae/v.safetensors" in pulled.stdout
        listed = await comfyrun("models", "list", *at)
        assert listed.returncode == 0 and "vae/v.safetensors" in listed.stdout, listed.stderr
        assert (
            tmp_path / "data" / "models" / "folders" / "vae" / "v.safetensors"
        ).read_bytes() == DATA

        async with httpx.AsyncClient(base_url=server.url) as http:
            bad = await http.post(
                "/api/v2/models", json={"url": url, "folder": "nope", "name": "x"}
            )
            assert bad.status_code == 400 and "not a ComfyUI model folder" in bad.text
            wrong = await http.post(
                "/api/v2/models",
                json={"url": url, "folder": "vae", "name": "w", "hash": "blake3:" + "1" * 64},
            )
            assert wrong.status_code == 409 and "hash_mismatch" in wrong.text

        # a URL without a hash: served from the cache until refreshed, then replaced
        plain = await comfyrun("models", "pull", url, "-f", "loras", "-n", "p.safetensors", *at)
        assert plain.returncode == 0, plain.stderr
        files.put("v.safetensors", b"\1" * 2048)
        unchanged = await comfyrun("models", "pull", url, "-f", "loras", "-n", "p.safetensors", *at)
        assert unchanged.returncode == 0 and files.hits["v.safetensors"] == 2
        refreshed = await comfyrun(
            "models", "pull", url, "-f", "loras", "-n", "p.safetensors", "--refresh", *at
        )
        assert refreshed.returncode == 0 and "replaced" in refreshed.stdout, refreshed.stderr
        assert (
            tmp_path / "data" / "models" / "folders" / "loras" / "p.safetensors"
        ).read_bytes() == b"\1" * 2048
        again_fresh = await comfyrun(
            "models", "pull", url, "-f", "loras", "-n", "p.safetensors", "--refresh", *at
        )
        assert "not modified" in again_fresh.stdout, again_fresh.stderr

        removed = await comfyrun("models", "rm", "vae/v.safetensors", *at)
        assert removed.returncode == 0 and "evicted blake3:" in removed.stdout, removed.stderr
        again = await comfyrun("models", "rm", "vae/v.safetensors", *at)
        assert again.returncode == 1 and "not_found" in again.stderr
        # the hashed pull, the refused wrong-hash one, two refreshes (the plain pull found the
        # URL cached by the hashed one)
        assert files.hits["v.safetensors"] == 4
