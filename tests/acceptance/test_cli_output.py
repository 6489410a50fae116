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
