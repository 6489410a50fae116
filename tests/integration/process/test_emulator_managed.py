"""The emulator run as a managed ComfyUI (in place of ComfyUI's main.py), at the process level."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
from tests.support.emulator import image_workflow, text_to_image_workflow
from tests.support.fake_comfy import pid_running
from tests.support.managed_comfy import emulator_args, make_emulator_folder

from comfyrun.backends.ports import pick_free_port
from comfyrun.backends.process import ManagedProcess, ManagedSpec, ProcessState, group_alive


def emulator_spec(tmp_path: Path, **overrides: Any) -> ManagedSpec:
    fields: dict[str, Any] = {
        "name": "emu",
        "log_dir": tmp_path / "logs",
        "comfy_path": make_emulator_folder(tmp_path / "ComfyUI"),
        "ready_timeout_s": 60.0,
        "ready_interval_s": 0.1,
        "restart_backoff_s": 0.1,
        "stop_grace_s": 5.0,
        "health_interval_s": None,
        "extra_args": tuple(emulator_args()),
    }
    fields.update(overrides)
    return ManagedSpec(**fields)


async def run_prompt(url: str, prompt: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Submit and wait for the history entry (a bounded poll is fine in a test helper)."""
    prompt_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as http:
        response = await http.post("/prompt", json={"prompt": prompt, "prompt_id": prompt_id})
        assert response.status_code == 200, response.text
        async with asyncio.timeout(timeout):
            while True:
                entry = (await http.get(f"/history/{prompt_id}")).json().get(prompt_id)
                if entry:
                    result: dict[str, Any] = entry
                    return result
                await asyncio.sleep(0.05)


async def test_emulator_folder_runs_and_writes_into_the_known_output_folder(
    tmp_path: Path,
) -> None:
    process = ManagedProcess(emulator_spec(tmp_path))
    try:
        url = await process.ensure_started()
        entry = await run_prompt(url, image_workflow(prefix="managed"))
        assert entry["status"]["status_str"] == "success"
        saved = entry["outputs"]["3"]["images"][0]
        # comfyrun reads outputs straight from the folder it knows, without HTTP
        assert (process.output_dir / saved["subfolder"] / saved["filename"]).is_file()
        # and writes inputs straight into the input folder, named as LoadImage expects
        (process.job_input_dir("j1") / "in.png").write_bytes(
            (process.output_dir / saved["subfolder"] / saved["filename"]).read_bytes()
        )
        load = {
            "1": {
                "class_type": "LoadImage",
                "inputs": {"image": process.input_name("j1", "in.png")},
            },
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "x"},
            },
        }
        assert (await run_prompt(url, load))["status"]["status_str"] == "success"
        process.remove_job_inputs("j1")
        assert not (process.input_dir / "comfyrun" / "j1").exists()
    finally:
        await process.stop()


async def test_kill_9_mid_prompt_restarts_and_the_next_prompt_completes(tmp_path: Path) -> None:
    process = ManagedProcess(
        emulator_spec(tmp_path, extra_args=tuple(emulator_args(step_time_s=0.2)))
    )
    crashed = asyncio.Event()
    process.on_state_change(lambda s: crashed.set() if s is ProcessState.CRASHED else None)
    try:
        url = await process.ensure_started()
        first = process.pid
        assert first is not None
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            body = {"prompt": text_to_image_workflow(steps=50)}
            assert (await http.post("/prompt", json=body)).status_code == 200
            async with asyncio.timeout(30):  # wait until the sampler is under way
                while not (await http.get("/queue")).json()["queue_running"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(30):
            await crashed.wait()
        url = await process.ensure_started()
        assert process.pid != first and process.restarts == 1
        entry = await run_prompt(url, text_to_image_workflow(steps=2))
        assert entry["status"]["status_str"] == "success"
    finally:
        await process.stop()
    assert not group_alive(first)


async def test_emulator_on_a_busy_port_is_moved_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        picks = iter([busy])
        process = ManagedProcess(
            emulator_spec(tmp_path), port_picker=lambda: next(picks, None) or pick_free_port()
        )
        try:
            url = await process.ensure_started()
            pid = process.pid
            assert pid is not None
            assert not url.endswith(f":{busy}")
            assert (await run_prompt(url, image_workflow()))["status"]["status_str"] == "success"
        finally:
            await process.stop()
    assert "address already in use" in "\n".join(process.log_tail(200)).lower()
    assert not pid_running(pid)
