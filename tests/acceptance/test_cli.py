"""The CLI as users run it: `comfyrun demo`, `serve --config`, `backends`, `jobs` with a token."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import StartServer
from tests.support.api import wait_until_ready


async def comfyrun(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "comfyrun.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


def test_demo_saves_the_default_workflows_image(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "comfyrun.cli.main", "demo", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "output image saved to" in ln)
    image = Path(line.rsplit(" ", 1)[1])
    assert image.is_file() and image.read_bytes().startswith(b"\x89PNG")
    assert image.parent.name == "9"  # SaveImage's node id in ComfyUI's default graph


async def test_serve_with_a_config_file_and_a_token(
    start_server: StartServer, tmp_path: Path
) -> None:
    cfg = tmp_path / "comfyrun.toml"
    cfg.write_text('api_keys = ["s3cret"]\nemulators = 1\nemulator_mode = "inprocess"\n')
    server = start_server("serve", "--config", str(cfg))
    await wait_until_ready(server.url)
    denied = await comfyrun("jobs", "list", "--server", server.url)
    assert denied.returncode == 1 and "unauthorized" in denied.stderr
    listed = await comfyrun("backends", "--server", server.url, "--api-key", "s3cret")
    assert listed.returncode == 0, listed.stderr
    assert "emulator-1" in listed.stdout and "ready" in listed.stdout
    missing = await comfyrun("jobs", "show", "nope", "--server", server.url, "--api-key", "s3cret")
    assert missing.returncode == 1 and "not_found" in missing.stderr


async def test_errors_no_command_describes_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A file that is no text, a server answering what comfyrun does not expect (HTML to every
    request): one line and status 1 (they were tracebacks); `submit --wait` against a server
    whose event stream is no event stream ends with an error (it waited for ever)."""
    from aiohttp import web

    async def html(request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.json_response({"id": "j1", "status": "queued"}, status=201)
        return web.Response(text="<html>not comfyrun</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", html)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    workflow = tmp_path / "wf.json"
    workflow.write_text('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
    try:
        for args in (
            ("convert", str(binary)),
            ("jobs", "list", "--server", url),
            ("backends", "--server", url),
            ("submit", str(workflow), "--wait", "--server", url),
        ):
            proc = await comfyrun(*args)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr, (args, proc.stderr)
            told = "error:" in proc.stderr or "not_an_event_stream" in proc.stderr
            assert told and len(proc.stderr.strip().splitlines()) <= 4, (args, proc.stderr)
    finally:
        await runner.cleanup()


async def test_a_start_up_that_fails_says_why_in_a_line(tmp_path: Path) -> None:
    """A worker whose PostgreSQL cannot be reached: its start-up fails with what went wrong in
    one line, and a status that is not 0 (uvicorn logged the lifespan's whole traceback)."""
    proc = await comfyrun(
        "worker",
        "--db",
        "postgresql://nobody@127.0.0.1:1/x",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    failed = [ln for ln in proc.stderr.splitlines() if "start-up failed:" in ln]
    assert len(failed) == 1 and "PostgreSQL" in failed[0], proc.stderr
