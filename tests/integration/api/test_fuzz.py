"""schemathesis over the whole OpenAPI document (every dialect), against a live comfyrun with an
emulated backend: no 5xx, no response that breaks its documented schema.

Bounded (examples per operation; 40 per operation, about a minute on 2 cores for the ~200 operations) and seeded, so `make test` stays short and
repeatable. For a longer hunt, start `comfyrun serve` and run e.g.
`schemathesis run http://127.0.0.1:8189/openapi.json -c not_a_server_error,response_schema_conformance -n 200`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from comfyrun.api.app import create_app
from comfyrun.cli.server import serving_app
from comfyrun.config import Settings

EXAMPLES_PER_OPERATION = 40
SEED = 20261204


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_no_server_errors_and_responses_match_the_schema(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        db_url="memory://",
        api_keys=[],
        emulators=1,
        emulator_mode="inprocess",
        emulator_step_time_s=0.0,
        max_wait_s=2.0,
    )
    app = create_app(settings)
    async with serving_app(app, "127.0.0.1", 0, grace_s=2) as url:
        # an admin's operations on the backends (drain, stop…) last: they take the lone backend
        # out of service (then /ready is an honest 503) for the requests after them
        everything_else = await schemathesis(url, tmp_path, "--exclude-path-regex", BACKEND_OPS)
        backend_ops = await schemathesis(url, tmp_path, "--include-path-regex", BACKEND_OPS)
    for returncode, report in (everything_else, backend_ops):
        assert returncode == 0, report[-12000:]
        assert " passed" in report, report[-4000:]
    assert "POST /api/v2/backends/{name}/drain" in backend_ops[1], backend_ops[1][-4000:]


BACKEND_OPS = "^/api/v2/backends/.+"


async def schemathesis(url: str, tmp_path: Path, *selection: str) -> tuple[int, str]:
    """schemathesis run over the operations `selection` picks: its exit status and report."""
    exe = Path(sys.executable).with_name("schemathesis")
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        *selection,
        # one worker: hypothesis describes lambdas with ast.parse, and CPython 3.11's AST
        # builder is not safe in two threads at once ("AST constructor recursion depth
        # mismatch", a crash in schemathesis, not an answer of ours)
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
        cwd=tmp_path,
        env=dict(os.environ, NO_COLOR="1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    return proc.returncode or 0, output.decode(errors="replace")
