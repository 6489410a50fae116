"""CLI polish: a busy port is one line, not a traceback; ids and URLs are never cut or wrapped
when stdout is not a terminal; `convert` asks the running comfyrun, with --api-key."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.api import tiny_workflow
from tests.support.workflow import txt2img

from comfyrun.api.app import create_app
from comfyrun.cli.server import serving_app
from comfyrun.config import Settings

KEY = "k-cli"


async def comfyrun(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # a pipe, not a terminal, and a narrow "screen": nothing may be cut to fit it
    env = dict(os.environ, COLUMNS="20", COMFYRUN_API_KEY=KEY)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "comfyrun.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


async def test_a_busy_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await comfyrun(
            "serve", "--port", str(port), "--data-dir", str(tmp_path), "--log-level", "WARNING"
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


@pytest.mark.slow
async def test_ids_and_urls_are_whole_lines_when_piped(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        db_url="memory://",
        api_keys=[KEY],
        emulators=1,
        emulator_mode="inprocess",
    )
    app = create_app(settings)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(tiny_workflow()))
    async with serving_app(app, "127.0.0.1", 0, grace_s=2) as url:
        submitted = await comfyrun("submit", str(workflow), "--wait", "--server", url)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        job_id = submitted.stdout.split("submitted job ", 1)[1].split()[0]
        job = app.state.ctx.store
        stored = await job.get(job_id)
        assert stored is not None, submitted.stdout  # the whole id, not a cut one
        output_lines = [ln for ln in submitted.stdout.splitlines() if "output " in ln]
        assert output_lines
        for line in output_lines:  # each output's URL whole, on its own line
            assert line.rstrip().endswith("/content"), submitted.stdout
            assert f"{url}/api/v2/assets/" in line

        listed = await comfyrun("jobs", "list", "--server", url)
        assert listed.returncode == 0, listed.stderr
        rows = [line.split("\t") for line in listed.stdout.splitlines()]
        assert rows[0][0] == "id"
        assert [job_id, "succeeded"] == rows[1][:2], listed.stdout

        # no --object-info: the node definitions come from this server (COMFYRUN_API_KEY set)
        ui_file = tmp_path / "ui.json"
        ui_file.write_text(json.dumps(txt2img()))
        converted = await comfyrun("convert", str(ui_file), "--server", url)
        assert converted.returncode == 0, converted.stderr
        prompt = json.loads(converted.stdout)
        assert "KSampler" in {n["class_type"] for n in prompt.values()}


@pytest.mark.slow
async def test_submit_runs_a_job_of_another_type_with_its_params_and_files(
    tmp_path: Path,
) -> None:
    """`comfyrun submit --type image --params … --input FILE`: a handler job, its file sent with
    it, followed to its end and its output downloaded; a comfy job without its workflow (or a
    handler job with one) is a usage error, not a request."""
    from PIL import Image

    settings = Settings(data_dir=tmp_path / "data", db_url="memory://", api_keys=[KEY])
    app = create_app(settings)
    picture = tmp_path / "in.png"
    Image.new("RGB", (40, 20), (0, 128, 255)).save(picture)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"format": "webp", "width": 20}))
    out_dir = tmp_path / "out"
    async with serving_app(app, "127.0.0.1", 0, grace_s=2) as url:
        done = await comfyrun(
            "submit", "--type", "image", "--params", f"@{params}", "--input", str(picture),
            "--out", str(out_dir), "--server", url,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "succeeded" in done.stdout
        (saved,) = list(out_dir.rglob("*.webp"))
        with Image.open(saved) as image:
            assert image.format == "WEBP" and image.size == (20, 10)
        inline = await comfyrun(
            "submit", "-t", "image", "--params", '{"format": "png"}', "-i", str(picture),
            "--wait", "--server", url,
        )  # fmt: skip
        assert inline.returncode == 0 and "succeeded" in inline.stdout, inline.stderr
        bare = await comfyrun("submit", "--server", url)
        assert bare.returncode == 2 and "WORKFLOW" in bare.stderr
        both = await comfyrun("submit", str(picture), "--type", "image", "--server", url)
        assert both.returncode == 2
        bad = await comfyrun("submit", "-t", "image", "--params", "[1]", "--server", url)
        assert bad.returncode == 2 and "JSON object" in bad.stderr
