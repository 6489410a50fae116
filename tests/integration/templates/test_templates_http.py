"""Workflow templates and batches over real HTTP, with an in-process emulator backend: the
template list and its schema, jobs from a template (?wait, the version recorded), the task
route's workflow_id, hot reload, a batch from a matrix to its outputs.zip and batch.completed,
cancel, and bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.support.api import memory_settings, wait_until_ready
from tests.support.emulator import image_workflow, text_to_image_workflow

from comfyrun.api.routes import workflows as workflows_routes
from comfyrun.cli.server import running_server
from comfyrun.client import ComfyrunClient

JSON = dict[str, Any]


def write_templates(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t2i = text_to_image_workflow(prefix="tpl")
    t2i["2"]["_meta"] = {"title": "$prompt"}  # a title parameter
    (folder / "t2i.json").write_text(json.dumps(t2i))
    (folder / "t2i.params.json").write_text(
        json.dumps(
            {
                "description": "text to image",
                "seed": {"node": "5", "input": "seed"},
                "steps": {"node": "5", "input": "steps", "default": 2},
                "sampler": {"node": "5", "input": "sampler_name"},
                "size": {"node": "4", "input": "width", "description": "pixels"},
            }
        )
    )
    (folder / "image.json").write_text(json.dumps(image_workflow(prefix="img")))
    (folder / "image.params.json").write_text(
        json.dumps({"color": {"node": "1", "input": "color"}})
    )
    photo = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "ph"}},
    }
    (folder / "photo.json").write_text(json.dumps(photo))
    (folder / "photo.params.json").write_text(
        json.dumps({"photo": {"node": "1", "input": "image"}})
    )
    broken = image_workflow()
    broken["9"] = {"class_type": "NoSuchNode", "inputs": {}}
    (folder / "broken.json").write_text(json.dumps(broken))
    (folder / "garbage.json").write_text("{not json")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    write_templates(tmp_path / "workflows")
    settings = memory_settings(
        tmp_path,
        port=0,
        emulators=1,
        emulator_mode="inprocess",
        emulator_step_time_s=0.01,
        output_url=(tmp_path / "outputs").as_uri(),
        workflows_dir=tmp_path / "workflows",
    )
    async with running_server(settings) as url:
        await wait_until_ready(url)
        yield url


async def test_list_shows_schemas_and_broken_templates(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        listed = {w["name"]: w for w in (await http.get("/api/v2/workflows")).json()["workflows"]}
        detail = (await http.get("/api/v2/workflows/t2i")).json()
    t2i = listed["t2i"]
    assert t2i["valid"] and t2i["description"] == "text to image" and len(t2i["version"]) == 16
    props = t2i["parameters"]["properties"]
    assert props["seed"]["type"] == "integer" and props["seed"]["minimum"] == 0
    assert props["steps"]["default"] == 2 and props["steps"]["maximum"] == 10000
    assert "euler" in props["sampler"]["enum"]
    assert props["prompt"] == {
        **props["prompt"],
        "type": "string",
        "default": "a photo of a cat",
        "x-node": "2",
        "x-input": "text",
    }
    assert props["size"]["description"] == "pixels"
    assert listed["broken"]["valid"] is False and "NoSuchNode" in listed["broken"]["error"]
    assert listed["garbage"]["valid"] is False and "not valid JSON" in listed["garbage"]["error"]
    assert detail["prompt"]["5"]["class_type"] == "KSampler"


async def test_job_from_template_waits_and_records_its_version(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        version = (await http.get("/api/v2/workflows/t2i")).json()["version"]
        r = await http.post(
            "/api/v2/workflows/t2i/jobs",
            params={"wait": 30},
            json={"params": {"prompt": "a fox", "seed": 3}, "metadata": {"k": "v"}},
        )
        assert r.status_code == 201, r.text
        job = r.json()
        wf = (await http.get(f"/api/v2/jobs/{job['id']}/workflow")).json()["workflow"]
    assert job["status"] == "succeeded" and job["outputs"][0]["name"].startswith("tpl")
    assert job["metadata"]["template"] == "t2i" and job["metadata"]["template_version"] == version
    assert job["metadata"]["k"] == "v"
    assert wf["2"]["inputs"]["text"] == "a fox" and wf["5"]["inputs"]["seed"] == 3
    assert wf["5"]["inputs"]["steps"] == 2  # the params file's default


async def test_bad_params_are_422_with_every_pointer(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        r = await http.post(
            "/api/v2/workflows/t2i/jobs",
            json={"params": {"seed": -1, "steps": "many", "sampler": "nope", "colour": 1}},
        )
        missing = await http.post("/api/v2/workflows/nope/jobs", json={"params": {}})
        broken = await http.post("/api/v2/workflows/broken/jobs", json={"params": {}})
    assert r.status_code == 422
    body = r.json()["error"]
    assert body["code"] == "invalid_params"
    pointers = {e["pointer"]: e["type"] for e in body["details"]["errors"]}
    assert pointers == {
        "/params/seed": "minimum",
        "/params/steps": "type",
        "/params/sampler": "enum",
        "/params/colour": "unknown",
    }
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_template"


async def test_file_parameters_take_base64_data(server: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, "PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        schema = (await http.get("/api/v2/workflows/photo")).json()["parameters"]
        r = await http.post(
            "/api/v2/workflows/photo/jobs", params={"wait": 30}, json={"params": {"photo": data}}
        )
        bad = await http.post("/api/v2/workflows/photo/jobs", json={"params": {"photo": 5}})
    assert schema["properties"]["photo"]["x-file"] == "image"
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "succeeded", job.get("error")
    assert job["outputs"][0]["name"].startswith("ph")
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["errors"][0]["pointer"] == "/params/photo"


async def test_tasks_route_runs_the_template_named_by_workflow_id(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        r = await http.post("/api/v1/tasks", json={"workflow_id": "image", "payload": {"color": 7}})
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        job = (await http.get(f"/api/v2/jobs/{task_id}", params={})).json()
        unknown = await http.post("/api/v1/tasks", json={"workflow_id": "nope", "payload": {}})
    assert job["metadata"]["template"] == "image"
    assert unknown.status_code == 404


async def test_templates_reload_when_their_files_change(server: str, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        before = (await http.get("/api/v2/workflows/image")).json()
        params = folder / "image.params.json"
        params.write_text(json.dumps({"tint": {"node": "1", "input": "color"}}))
        st = params.stat()
        os.utime(params, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
        (folder / "fresh.json").write_text(json.dumps(image_workflow(prefix="fresh")))
        after = (await http.get("/api/v2/workflows/image")).json()
        fresh = await http.get("/api/v2/workflows/fresh")
        (folder / "fresh.json").unlink()
        gone = await http.get("/api/v2/workflows/fresh")
    assert list(before["parameters"]["properties"]) == ["color"]
    assert list(after["parameters"]["properties"]) == ["tint"]
    assert after["version"] != before["version"]
    assert fresh.status_code == 200 and gone.status_code == 404


# (the RunPod dialect's routes share operation ids already: FastAPI warns, not our concern here)
@pytest.mark.filterwarnings("ignore:Duplicate Operation ID:UserWarning")
async def test_openapi_shows_each_templates_schema(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        doc = (await http.get("/openapi.json")).json()
    schema = doc["components"]["schemas"]["WorkflowParams_t2i"]
    assert schema["properties"]["seed"]["type"] == "integer"
    op = doc["paths"]["/api/v2/workflows/t2i/jobs"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["params"]["$ref"].endswith("WorkflowParams_t2i")
    assert "/api/v2/workflows/broken/jobs" not in doc["paths"]


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID:UserWarning")
async def test_openapi_is_made_again_only_when_the_templates_change(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[list[str]] = []
    add = workflows_routes.add_templates

    def counted(doc: JSON, templates: list[Any]) -> None:
        made.append(sorted(t.name for t in templates))
        add(doc, templates)

    monkeypatch.setattr(workflows_routes, "add_templates", counted)
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        first = await http.get("/openapi.json")
        second = await http.get("/openapi.json")
        assert len(made) == 1 and second.content == first.content
        assert second.headers["content-type"] == "application/json"
        (tmp_path / "workflows" / "fresh.json").write_text(
            json.dumps(image_workflow(prefix="fresh"))
        )
        third = (await http.get("/openapi.json")).json()
    assert made == [made[0], sorted([*made[0], "fresh"])]
    assert "/api/v2/workflows/fresh/jobs" in third["paths"]
    assert "/api/v2/workflows/fresh/jobs" not in first.json()["paths"]


async def wait_batch(http: httpx.AsyncClient, batch_id: str) -> JSON:
    """Follow each job's event stream to its end; the batch ends with its last job."""
    page = (await http.get(f"/api/v2/batches/{batch_id}/jobs", params={"limit": 500})).json()
    async with ComfyrunClient(str(http.base_url)) as client:
        for job in page["jobs"]:
            await client.wait(job["id"], timeout=60)
    batch: JSON = (await http.get(f"/api/v2/batches/{batch_id}")).json()
    return batch


async def test_batch_from_a_matrix_runs_and_zips_its_outputs(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        r = await http.post(
            "/api/v2/batches",
            json={"workflow": "image", "matrix": {"color": [1, 2, 3]}, "priority": 1},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["total"] == 3 and created["counts"]["queued"] == 3
        batch = await wait_batch(http, created["id"])
        page = (await http.get(f"/api/v2/batches/{created['id']}/jobs", params={"limit": 2})).json()
        rest = (
            await http.get(
                f"/api/v2/batches/{created['id']}/jobs",
                params={"limit": 2, "cursor": page["next_cursor"]},
            )
        ).json()
        zipped = await http.get(f"/api/v2/batches/{created['id']}/outputs.zip")
        events = await http.get(f"/api/v2/batches/{created['id']}")
    assert batch["status"] == "completed" and batch["counts"]["succeeded"] == 3
    assert batch["progress"] == 1.0 and events.status_code == 200
    jobs = page["jobs"] + rest["jobs"]
    assert [j["metadata"]["template_params"]["color"] for j in jobs] == [1, 2, 3]
    assert rest["next_cursor"] is None
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    names = archive.namelist()
    assert sum(n.startswith("00000/") for n in names) >= 1 and "manifest.jsonl" in names
    manifest = [json.loads(x) for x in archive.read("manifest.jsonl").decode().splitlines()]
    assert [m["params"] for m in manifest] == [{"color": 1}, {"color": 2}, {"color": 3}]
    assert all(f in names for m in manifest for f in m["files"])


async def test_bad_batches_are_refused_before_anything_is_queued(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        bad = await http.post(
            "/api/v2/batches",
            json={
                "workflow": "t2i",
                "items": [{"params": {"seed": 1}}, {"params": {"seed": "x"}}, {"params": {"z": 1}}],
            },
        )
        both = await http.post(
            "/api/v2/batches", json={"workflow": "t2i", "items": [], "matrix": {"seed": [1]}}
        )
        unknown = await http.post("/api/v2/batches", json={"workflow": "nope", "items": [{}]})
        broken = await http.post("/api/v2/batches", json={"workflow": "broken", "items": [{}]})
        missing = await http.get("/api/v2/batches/nope")
        queued = (await http.get("/api/v2/jobs", params={"status": "queued"})).json()["jobs"]
    assert bad.status_code == 422
    pointers = [e["pointer"] for e in bad.json()["error"]["details"]["errors"]]
    assert pointers == ["/items/1/params/seed", "/items/2/params/z"]
    assert both.status_code == 422 and unknown.status_code == 404 and missing.status_code == 404
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_template"
    assert queued == []
