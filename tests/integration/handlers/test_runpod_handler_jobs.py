"""Handler jobs through RunPod's dialect: an input without a workflow, sent to an endpoint named
after a job type, is a job of that type whose params are the input (what a RunPod serverless
handler gets as `job["input"]`), its `images` the job's files; any other endpoint keeps
worker-comfyui's body, and a workflow always makes a comfy job."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image
from tests.integration.handlers.conftest import png_bytes
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun.config import Role


def image(name: str) -> dict[str, str]:
    return {"name": name, "image": base64.b64encode(png_bytes()).decode()}


async def test_an_endpoint_named_after_a_type_runs_its_handler_on_the_input(
    tmp_path: Path,
) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, http, ctx):
        body = {"input": {"format": "webp", "width": 8, "images": [image("a.png")]}}
        answer = await http.post("/v2/image/runsync", json=body)
        assert answer.status_code == 200, answer.text
        done = answer.json()
        assert done["status"] == "COMPLETED", done
        job = await ctx.store.get(done["id"])
        assert job is not None and job.type == "image"
        assert job.params == {"format": "webp", "width": 8}
        assert [i["name"] for i in job.inputs] == ["a.png"]
        (out,) = done["output"]["images"]
        with Image.open(io.BytesIO(base64.b64decode(out["data"]))) as picture:
            assert picture.format == "WEBP" and picture.width == 8
        status = (await http.get(f"/v2/image/status/{done['id']}")).json()
        assert status["status"] == "COMPLETED"


async def test_other_endpoints_and_workflows_keep_worker_comfyuis_body(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, role=Role.API)) as (_, http, ctx):
        # no worker serves `image` here, and no endpoint `my-endpoint` names a type
        refused = await http.post("/v2/my-endpoint/run", json={"input": {"format": "webp"}})
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "invalid_workflow"
        await ctx.store.announce_worker("elsewhere", ["image", "comfy"])
        queued = await http.post("/v2/image/run", json={"input": {"format": "webp"}})
        assert queued.status_code == 200, queued.text
        job = await ctx.store.get(queued.json()["id"])
        assert job is not None and job.type == "image" and job.params == {"format": "webp"}
        bad = await http.post("/v2/image/run", json={"input": {"format": "bmpx"}})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_params", bad.text
        comfy = await http.post("/v2/image/run", json={"input": {"workflow": tiny_workflow()}})
        assert comfy.status_code == 200, comfy.text
        job = await ctx.store.get(comfy.json()["id"])
        assert job is not None and job.type == "comfy"
        plain = await http.post("/run", json={"input": {"format": "webp"}})
        assert plain.status_code == 400 and plain.json()["code"] == "invalid_workflow"
