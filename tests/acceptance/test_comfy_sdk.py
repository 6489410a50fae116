"""The official `comfy-sdk` client, unchanged, against `comfyrun serve`: it submits a workflow,
follows its progress on the event stream, downloads the outputs and lists the job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from comfy_sdk import Comfy, InvalidWorkflow, OutputReady, Progress, StatusChange
from tests.acceptance.conftest import StartServer
from tests.support.emulator import text_to_image_workflow


def drive_sdk(tmp_path: Path) -> dict[str, Any]:
    """What a user of the SDK writes (synchronous client, in a worker thread)."""
    seen: dict[str, Any] = {"progress": [], "statuses": [], "outputs": []}
    with Comfy() as client:
        wf = client.workflows.from_json(text_to_image_workflow(seed=7, steps=8, prefix="sdk"))
        job = client.submit(wf, metadata={"suite": "acceptance"})
        for event in job.events():
            match event:
                case Progress() as p:
                    seen["progress"].append(p.value)
                case StatusChange() as s:
                    seen["statuses"].append(s.status)
                case OutputReady() as o:
                    seen["outputs"].append(o.output.name)
        job.result()
        images = job.get_outputs("7")
        seen["job_outputs"] = [o.name for o in job.outputs]
        path = images[0].to_file(tmp_path / "sdk.png")
        seen["bytes"] = path.read_bytes()
        seen["head"] = images[0].to_bytes(range=(0, 7))
        seen["download_url"] = images[0].get_download_url().url
        seen["listed"] = [s.id for s in client.list_jobs(metadata={"suite": "acceptance"})]
        seen["job_id"] = job.id
        seen["status"] = job.status
        again = client.jobs.get(job.id)
        seen["rehydrated"] = again.status
        try:
            client.submit(client.workflows.from_json({"1": {"class_type": "Nope", "inputs": {}}}))
        except InvalidWorkflow as exc:
            seen["invalid"] = exc.code
    return seen


@pytest.mark.slow
async def test_comfy_sdk_runs_a_workflow_unchanged(
    start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server("serve", "--emulator", "1", env={"COMFYRUN_EMULATOR_STEP_TIME_S": "0.05"})
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    seen = await asyncio.to_thread(drive_sdk, tmp_path)

    assert seen["status"] == "succeeded" and seen["rehydrated"] == "succeeded"
    assert seen["statuses"][-1] == "succeeded"
    assert seen["progress"], "progress events reach the SDK"
    assert seen["progress"] == sorted(seen["progress"])
    assert seen["outputs"] == seen["job_outputs"] and seen["outputs"][0].startswith("sdk_")
    assert seen["bytes"].startswith(b"\x89PNG") and seen["head"] == seen["bytes"][:8]
    assert seen["download_url"].startswith(server.url)
    assert seen["listed"] == [seen["job_id"]]
    assert seen["invalid"] == "invalid_workflow"


def drive_sdk_with_an_input(tmp_path: Path, picture: Path) -> dict[str, Any]:
    """The SDK uploads a local picture as an asset and runs a LoadImage workflow on it."""
    with Comfy() as client:
        asset = client.assets.from_file(picture)
        wf = client.workflows.from_json(
            {
                "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["2", 0], "filename_prefix": "sdk_in"},
                },
            }
        )
        wf.set_input("1", "image", asset)
        job = client.submit(wf)
        job.result()
        out = job.get_outputs("3")[0].to_file(tmp_path / "inverted.png")
        return {"status": job.status, "asset_hash": asset.hash, "out": out}


@pytest.mark.slow
async def test_comfy_sdk_uploads_an_input_and_runs_load_image_on_it(
    start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    picture = tmp_path / "photo.png"
    Image.new("RGB", (24, 16), (10, 200, 30)).save(picture)
    server = start_server("serve", "--emulator", "2")
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    seen = await asyncio.to_thread(drive_sdk_with_an_input, tmp_path, picture)

    assert seen["status"] == "succeeded"
    assert str(seen["asset_hash"]).startswith("blake3:")
    with Image.open(seen["out"]) as img:
        assert img.size == (24, 16)
        # ImageInvert ran on the uploaded bytes, not on some other file (ComfyUI truncates
        # float pixels to uint8, so allow one unit)
        pixel = img.convert("RGB").getpixel((5, 5))
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) <= 1 for a, b in zip(pixel, (245, 55, 225), strict=True))
