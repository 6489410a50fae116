"""The API over real HTTP (uvicorn on a free port) with an in-process emulator backend: the
event stream and its resume, ?wait=, UI-format conversion, inputs and assets, auth."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.support.api import memory_settings, wait_until_ready
from tests.support.emulator import image_workflow, text_to_image_workflow

from comfyrun.cli.server import running_server
from comfyrun.client import ComfyrunAPIError, ComfyrunClient


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    settings = memory_settings(
        tmp_path,
        port=0,
        emulators=1,
        emulator_mode="inprocess",  # fast start; acceptance tests run emulator processes
        emulator_step_time_s=0.02,
        output_url=(tmp_path / "outputs").as_uri(),
    )
    async with running_server(settings) as url:
        await wait_until_ready(url)
        yield url


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


async def test_events_resume_from_last_event_id_without_gaps(server: str) -> None:
    async with ComfyrunClient(server) as client:
        job = await client.submit(text_to_image_workflow(seed=3, steps=10))
        first: list[Any] = []
        async for ev in client.events(job["id"]):
            first.append(ev)
            if ev.event == "progress":
                break  # drop the connection mid-run
        resumed = [ev async for ev in client.events(job["id"], last_event_id=first[-1].id)]
        full = [ev async for ev in client.events(job["id"], last_event_id="0")]
    assert first[0].event == "status"  # the snapshot comes first
    ids = [int(e.id or 0) for e in resumed]
    assert ids == sorted(ids) and ids[0] > int(first[-1].id)
    statuses = [e.data["status"] for e in first + resumed if e.event == "status"]
    assert statuses[-1] == "succeeded"
    logged = [e for e in full if e.event == "status"]
    # every transition logged after the resume point reached the resumed stream
    after = [e.id for e in logged if int(e.id or 0) > int(first[-1].id)]
    assert after == [e.id for e in resumed if e.event == "status"]
    assert any(e.event == "output" and e.data["name"].startswith("t2i_") for e in resumed)


async def test_a_stream_resumed_past_a_finished_job_s_end_ends_at_once(server: str) -> None:
    """Resumed at (or past) the last event of a finished job, the stream tells its end at
    once and closes (it waited the keep-alive, 15 s, first); an id no store can hold is a
    400 (SQLite raised on it: an empty stream and a traceback)."""
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        r = await http.post(
            "/api/v2/jobs", params={"wait": 30}, json={"workflow": image_workflow(prefix="e")}
        )
        job_id = r.json()["id"]
        async with ComfyrunClient(server) as client:
            full = [ev async for ev in client.events(job_id, last_event_id="0")]
            for resume in (full[-1].id, "99999999"):
                async with asyncio.timeout(5):  # (not the 15-s keep-alive)
                    tail = [ev async for ev in client.events(job_id, last_event_id=resume)]
                assert [(e.event, e.data["status"]) for e in tail] == [("status", "succeeded")]
        for bad in ({"headers": {"Last-Event-ID": "9" * 25}}, {"params": {"after": "9" * 25}}):
            answer = await http.get(f"/api/v2/jobs/{job_id}/events", **bad)
            assert answer.status_code in (400, 422), answer.text
            assert answer.json()["error"]["code"] == "invalid_request"


async def test_submit_with_wait_returns_the_finished_job(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        r = await http.post(
            "/api/v2/jobs", params={"wait": 30}, json={"workflow": image_workflow(prefix="w")}
        )
    assert r.status_code == 201
    job = r.json()
    assert job["status"] == "succeeded" and job["outputs"][0]["name"].startswith("w_")
    assert job["metrics"]["execution_ms"] is not None


async def test_invalid_workflow_carries_comfyui_node_errors(server: str) -> None:
    wf = image_workflow()
    del wf["3"]["inputs"]["images"]
    async with ComfyrunClient(server) as client:
        with pytest.raises(ComfyrunAPIError) as err:
            await client.submit(wf)
    assert err.value.status == 422 and err.value.code == "invalid_workflow"
    assert err.value.details["node_errors"]["3"]["errors"][0]["type"] == "required_input_missing"


async def test_ui_format_workflow_is_converted_and_runs(server: str) -> None:
    ui = {
        "last_node_id": 2,
        "last_link_id": 1,
        "nodes": [
            {
                "id": 1,
                "type": "EmptyImage",
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
                "widgets_values": [8, 8, 1, 255],
            },
            {
                "id": 2,
                "type": "SaveImage",
                "mode": 0,
                "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
                "outputs": [],
                "widgets_values": ["from_ui"],
            },
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
        "groups": [],
        "version": 0.4,
    }
    async with ComfyrunClient(server) as client:
        job = await client.submit(ui)
        done = await client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert done["outputs"][0]["name"].startswith("from_ui_")


async def test_base64_input_and_asset_reference(server: str, tmp_path: Path) -> None:
    red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        up = await http.post(
            "/api/v2/assets",
            files={"file": ("blue.png", blue, "image/png")},
            data={"content_type": "image/png", "file_path": "blue.png"},
        )
        assert up.status_code in (200, 201), up.text
        asset_id = up.json()["id"]
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "in"}},
        "3": {
            "class_type": "LoadImage",
            "inputs": {"image": {"__type": "core/ASSET", "info": {"id": asset_id}}},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "as"}},
    }
    inputs = [{"name": "red.png", "data": base64.b64encode(red).decode()}]
    async with ComfyrunClient(server) as client:
        job = await client.submit(wf, inputs=inputs)
        done = await client.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        paths = await client.download_outputs(done, tmp_path / "out")
        missing = {
            **wf,
            "3": {
                "class_type": "LoadImage",
                "inputs": {"image": {"__type": "core/ASSET", "info": {"id": "no-such-asset"}}},
            },
        }
        with pytest.raises(ComfyrunAPIError) as err:
            await client.submit(missing, inputs=inputs)
    assert err.value.code == "missing_asset"
    colors = {p.parent.name: Image.open(p).convert("RGB").getpixel((0, 0)) for p in paths}
    assert colors == {"2": (255, 0, 0), "4": (0, 0, 255)}


async def test_bearer_token_over_http(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, port=0, api_keys=["tok"], role="api")
    async with running_server(settings) as url:
        async with ComfyrunClient(url) as anonymous:
            with pytest.raises(ComfyrunAPIError) as err:
                await anonymous.list_jobs()
            assert err.value.status == 401 and err.value.code == "unauthorized"
        async with ComfyrunClient(url, api_key="tok") as client:
            assert (await client.list_jobs())["jobs"] == []
