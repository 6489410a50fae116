"""`requirements` (backend labels a job needs, core.fit) from the ComfyUI dialect
(`extra_data.requirements` of POST /prompt) and the RunPod dialect (`input.requirements`):
the job runs only on a backend whose labels meet them; none meets them → refused at submission
in the dialect's own error shape (400 in both); a malformed one → 400."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import running_emulator, text_to_image_workflow

from comfyrun.config import BackendConfig
from comfyrun.core.job import JobStatus


async def test_requirements_steer_comfyui_and_runpod_jobs(tmp_path: Path) -> None:
    async with (
        running_emulator(tmp_path / "s") as small,
        running_emulator(tmp_path / "b") as big,
    ):
        backends = [
            BackendConfig(name="small", url=str(small.url), labels={"gpu": "3090", "vram_gb": 12}),
            BackendConfig(name="big", url=str(big.url), labels={"gpu": "4090", "vram_gb": 24}),
        ]
        async with asgi_app(memory_settings(tmp_path, backends=backends)) as (_, http, ctx):
            assert await ctx.pool.wait_ready(10.0)
            assert set(await ctx.catalog.ensure()) == {"small", "big"}
            need = {"vram_gb": {"min": 16}}
            ids = []
            for seed in range(3):  # ComfyUI's dialect
                body = {
                    "prompt": text_to_image_workflow(seed=seed),
                    "extra_data": {"requirements": need},
                }
                answer = await http.post("/prompt", json=body)
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["prompt_id"])
            for seed in range(3, 5):  # RunPod's
                body = {
                    "input": {"workflow": text_to_image_workflow(seed=seed), "requirements": need}
                }
                answer = await http.post("/run", json=body)
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["id"])
            for job_id in ids:
                job = (await ctx.service.wait(job_id, 30)).job
                assert job.status is JobStatus.SUCCEEDED and job.backend == "big", job.error

            nowhere = {"gpu": "a100"}
            comfy = await http.post(
                "/prompt",
                json={
                    "prompt": text_to_image_workflow(seed=9),
                    "extra_data": {"requirements": nowhere},
                },
            )
            assert comfy.status_code == 400, comfy.text
            assert "labels do not meet gpu" in comfy.json()["error"]["message"]
            runpod = await http.post(
                "/run",
                json={"input": {"workflow": text_to_image_workflow(), "requirements": nowhere}},
            )
            assert runpod.status_code == 400, runpod.text
            assert runpod.json()["code"] == "no_backend_fits"
            assert "labels do not meet gpu" in runpod.json()["error"]

            bad = {"gpu": [1]}
            comfy = await http.post(
                "/prompt",
                json={"prompt": text_to_image_workflow(), "extra_data": {"requirements": bad}},
            )
            assert comfy.status_code == 400 and "requirement" in comfy.json()["error"]["message"]
            runpod = await http.post(
                "/run", json={"input": {"workflow": text_to_image_workflow(), "requirements": bad}}
            )
            assert runpod.status_code == 400 and "requirement" in runpod.json()["error"]
