"""`comfyrun serve --workflows DIR` with `comfyrun workflows`, `run NAME -p k=v --wait --out`
and `batch NAME items.jsonl --out`, as users run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.acceptance.conftest import StartServer
from tests.acceptance.test_cli import comfyrun
from tests.support.api import wait_until_ready
from tests.support.emulator import image_workflow


@pytest.mark.slow
async def test_run_and_batch_a_template_from_the_cli(
    start_server: StartServer, tmp_path: Path
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "image.json").write_text(json.dumps(image_workflow(prefix="cli")))
    (folder / "image.params.json").write_text(
        json.dumps(
            {"color": {"node": "1", "input": "color"}, "size": {"node": "1", "input": "width"}}
        )
    )
    cfg = tmp_path / "comfyrun.toml"
    cfg.write_text('emulators = 1\nemulator_mode = "inprocess"\n')
    server = start_server("serve", "--config", str(cfg), "--workflows", str(folder))
    await wait_until_ready(server.url)

    listed = await comfyrun("workflows", "--server", server.url)
    assert listed.returncode == 0, listed.stderr
    assert "image" in listed.stdout and "color" in listed.stdout

    out = tmp_path / "out"
    ran = await comfyrun(
        "run", "image", "-p", "color=5", "-p", "size=16", "--wait", "--out", str(out),
        "--server", server.url,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "succeeded" in ran.stdout
    saved = list(out.rglob("cli_*.png"))
    assert saved and saved[0].read_bytes().startswith(b"\x89PNG")

    bad = await comfyrun("run", "image", "-p", "color=x", "--server", server.url)
    assert bad.returncode == 1 and "/params/color" in bad.stderr

    items = tmp_path / "items.jsonl"
    items.write_text('{"color": 1}\n{"params": {"color": 2}}\n\n{"color": 3, "size": 8}\n')
    batch_out = tmp_path / "batch"
    batched = await comfyrun(
        "batch", "image", str(items), "--out", str(batch_out), "--server", server.url
    )
    assert batched.returncode == 0, batched.stdout + batched.stderr
    assert "completed" in batched.stdout
    manifest = [
        json.loads(line) for line in (batch_out / "manifest.jsonl").read_text().splitlines()
    ]
    assert [m["params"]["color"] for m in manifest] == [1, 2, 3]
    assert all((batch_out / f).is_file() for m in manifest for f in m["files"])
