"""`comfyrun backends [drain|resume|restart|stop|start NAME]` against a running server (emulated
backends in its process): what each prints, and the one-line errors for a name no backend has
and an operation refused."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.support.api import memory_settings, wait_until_ready
from typer.testing import CliRunner, Result

from comfyrun.cli.main import app
from comfyrun.cli.server import running_server


def text(result: Result) -> str:
    return re.sub(r"\s+", " ", result.output)


async def test_backends_drain_resume_and_their_errors(tmp_path: Path) -> None:
    settings = memory_settings(
        tmp_path, port=0, api_keys=["s3cret"], emulators=2, emulator_mode="inprocess"
    )
    async with running_server(settings) as url:
        await wait_until_ready(url)
        key = ["--server", url, "--api-key", "s3cret"]

        async def cli(*args: str) -> Result:
            return await asyncio.to_thread(CliRunner().invoke, app, ["backends", *args, *key])

        drained = await cli("drain", "emulator-1")
        assert drained.exit_code == 0, drained.output
        assert "backend emulator-1: draining, 0 jobs on it" in text(drained)
        listed = await cli()
        assert listed.exit_code == 0
        rows = {line.split("\t")[0]: line.split("\t") for line in listed.output.splitlines()}
        assert rows["emulator-1"][2] == "draining" and rows["emulator-2"][2] != "draining"
        assert rows["name"][3:5] == ["inflight", "depth"] and rows["emulator-1"][3:5] == ["0", "2"]

        missing = await cli("stop", "nope")
        assert missing.exit_code == 1
        assert "404 not_found: no backend named 'nope'" in text(missing)
        refused = await cli("start", "emulator-1")
        assert refused.exit_code == 1
        assert "409 conflict: backend emulator-1 is not managed by comfyrun" in text(refused)

        resumed = await cli("resume", "emulator-1")
        assert resumed.exit_code == 0 and "backend emulator-1: ready" in text(resumed)
        no_key = await asyncio.to_thread(
            CliRunner().invoke, app, ["backends", "drain", "emulator-2", "--server", url]
        )
        assert no_key.exit_code == 1 and "401 unauthorized" in text(no_key)
