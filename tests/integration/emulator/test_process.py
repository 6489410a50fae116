"""The emulator as a process: ComfyUI's command line, the exit fault, --make-comfy-folder."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from tests.support.emulator import image_workflow, text_to_image_workflow, wait_history

SRC = str(Path(__file__).resolve().parents[3] / "src")


@asynccontextmanager
async def _process(*args: str, cwd: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    lines: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(60):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    raise AssertionError("the emulator exited early:\n" + "".join(lines))
                line = raw.decode()
                lines.append(line)
                if line.startswith("To see the GUI go to: "):
                    url = line.removeprefix("To see the GUI go to: ").strip()
                    break
        drain = asyncio.create_task(proc.stdout.read())
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain


@pytest.mark.slow
async def test_exit_fault_kills_the_process_mid_job(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "comfyrun.comfy.emulator", "--listen", "127.0.0.1", "--port", "0"]
    args += [
        "--cpu",
        "--disable-auto-launch",
        "--base-directory",
        str(tmp_path),
        "--fault",
        "exit:ImageInvert:3",
    ]
    async with _process(*args, cwd=tmp_path) as (proc, url), aiohttp.ClientSession() as session:
        async with session.get(f"{url}/system_stats") as resp:
            stats = await resp.json()
        assert "--fault" in stats["system"]["argv"]
        async with session.post(f"{url}/prompt", json={"prompt": image_workflow()}) as resp:
            assert resp.status == 200
        assert await asyncio.wait_for(proc.wait(), 30) == 3


@pytest.mark.slow
async def test_comfy_folder_runs_like_a_comfyui_checkout(tmp_path: Path) -> None:
    folder = tmp_path / "ComfyUI"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    made = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "comfyrun.cli.main",
        "emulator",
        "--make-comfy-folder",
        str(folder),
        env=env,
    )
    assert await made.wait() == 0
    assert (folder / "main.py").is_file() and (folder / "models" / "checkpoints").is_dir()
    args = [
        sys.executable,
        str(folder / "main.py"),
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
        "--cpu",
    ]
    args += [
        "--disable-auto-launch",
        "--disable-all-custom-nodes",
        "--extra-model-paths-config",
        "x.yaml",
    ]
    args += ["--step-time", "0"]
    # relative to the working directory, as ComfyUI opens it; its paths relative to the yaml
    (tmp_path / "x.yaml").write_text("shared:\n  base_path: shared-models\n  unet: my-unets\n")
    (tmp_path / "shared-models" / "my-unets").mkdir(parents=True)
    (tmp_path / "shared-models" / "my-unets" / "extra_unet.safetensors").write_bytes(b"x")
    async with _process(*args, cwd=tmp_path) as (_, url), aiohttp.ClientSession() as session:
        async with session.get(f"{url}/models/checkpoints") as resp:
            checkpoints = await resp.json()
        assert "v1-5-pruned-emaonly.safetensors" in checkpoints
        async with session.get(f"{url}/models/diffusion_models") as resp:
            assert "extra_unet.safetensors" in await resp.json()  # `unet` is the legacy name
        async with session.post(
            f"{url}/prompt", json={"prompt": text_to_image_workflow(prefix="folder")}
        ) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        entry = await wait_history(session, url, prompt_id)
        assert entry["status"]["status_str"] == "success"
        assert (folder / "output" / "folder_00001_.png").is_file()
        broken = text_to_image_workflow(ckpt_name="broken_for_test.safetensors", prefix="never")
        async with session.post(f"{url}/prompt", json={"prompt": broken}) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        entry = await wait_history(session, url, prompt_id)
        assert (
            entry["status"]["messages"][-1][1]["exception_type"]
            == "safetensors._safetensors_rust.SafetensorError"
        )
