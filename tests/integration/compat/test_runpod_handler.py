"""Handler mode: comfyrun's execution core as a RunPod serverless handler, called directly and
through `comfyrun runpod-handler --test_input …` (the runpod SDK's local test mode)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.compat.conftest import dialect_settings
from tests.support.emulator import image_workflow, text_to_image_workflow

from comfyrun.runpod_handler import RunpodHandler

pytestmark = pytest.mark.timeout(120)


async def test_handler_runs_jobs_and_reports_failures(tmp_path: Path) -> None:
    handler = RunpodHandler(dialect_settings(tmp_path, emulators=2))
    try:
        result = await handler({"id": "rp-1", "input": {"workflow": image_workflow(3, size=8)}})
        (image,) = result["images"]
        assert image["type"] == "base64"
        assert base64.b64decode(image["data"]).startswith(b"\x89PNG")
        # the engine is reused by the next job
        again = await handler({"id": "rp-2", "input": {"workflow": image_workflow(4, size=8)}})
        assert again["images"][0]["data"] != image["data"]

        broken = text_to_image_workflow(ckpt_name="broken_for_test.safetensors", steps=1)
        failed = await handler({"id": "rp-3", "input": {"workflow": broken}})
        assert set(failed) >= {"error"}
        assert "CheckpointLoaderSimple" in failed["error"]

        invalid = await handler({"id": "rp-4", "input": {"workflow": {"1": {"class_type": "X"}}}})
        assert "X" in invalid["error"]
        assert "error" in await handler({"id": "rp-5", "input": "not an object"})
    finally:
        await handler.close()


def _run_cli(tmp_path: Path, job: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "comfyrun.cli.main",
            "runpod-handler",
            "--emulator",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
            "--log-level",
            "WARNING",
            "--test_input",
            json.dumps(job),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "COMFYRUN_EMULATOR_MODE": "inprocess"},
        check=False,
    )


@pytest.mark.slow
def test_cli_test_input_runs_one_job_locally(tmp_path: Path) -> None:
    done = _run_cli(tmp_path, {"input": {"workflow": image_workflow(9, size=8)}})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "completed successfully" in output
    assert "'type': 'base64'" in output and ".png" in output

    failed = _run_cli(tmp_path, {"input": {"workflow": {"1": {"class_type": "NoSuchNode"}}}})
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert "NoSuchNode" in output
