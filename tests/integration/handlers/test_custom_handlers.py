"""Custom handlers: one registered by a real entry point (a tiny installed distribution) runs;
one from the config list runs with its lazily created resources; cancel and timeout reach a
running handler, sync or async."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from tests.support import handlers as test_handlers
from tests.support.api import asgi_app, memory_settings

from comfyrun.api.context import AppContext
from comfyrun.handlers import HandlerRegistry

PLUGIN = '''
"""A plug-in package with one handler."""

from comfyrun.handlers import HandlerContext


def shout(ctx: HandlerContext) -> None:
    text = str(ctx.params.get("text", ""))
    ctx.progress.report(0.5, "shouting")
    ctx.outputs.add_text("shout", text.upper() + "!")
    ctx.outputs.write_bytes("shout.txt", text.upper().encode())
'''


def install_plugin(site: Path) -> None:
    """A distribution in `site` (a folder on sys.path) with a `comfyrun.handlers` entry point,
    as pip would install it."""
    (site / "comfyrun_test_plugin").mkdir(parents=True)
    (site / "comfyrun_test_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "comfyrun_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: comfyrun-test-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [comfyrun.handlers]
            shout = comfyrun_test_plugin:shout
            Bad Name = comfyrun_test_plugin:shout
            broken = comfyrun_test_plugin:missing
            """
        )
    )


async def test_a_handler_registered_by_entry_point_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry = HandlerRegistry.load()
    assert {"shout", "image", "ffmpeg"} <= registry.types
    assert "broken" not in registry.types  # a broken entry point is skipped, not fatal
    async with asgi_app(memory_settings(tmp_path / "data")) as (_, client, _ctx):
        r = await client.post(
            "/api/v2/jobs?wait=30", json={"type": "shout", "params": {"text": "hello"}}
        )
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "succeeded", job
        by_name = {o["name"]: o for o in job["outputs"]}
        assert by_name["shout"]["text"] == "HELLO!"
        assert by_name["shout.txt"]["size_bytes"] == len("HELLO")
        assert by_name["shout.txt"]["node_id"] == "shout"


async def test_a_configured_handler_gets_its_resources_once(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, handlers=["count=tests.support.handlers:counting"])
    test_handlers.Counter.made = 0
    async with asgi_app(settings) as (_, client, ctx):
        texts = []
        for _ in range(2):
            r = await client.post("/api/v2/jobs?wait=30", json={"type": "count"})
            job = r.json()
            assert job["status"] == "succeeded", job
            assert len(job["outputs"]) == 1
            assert ctx.storage is not None
            key = (await ctx.store.get(job["id"])).outputs[0].storage_key  # type: ignore[union-attr]
            assert key is not None
            texts.append(b"".join([c async for c in ctx.storage.open(key)]).decode())
        assert texts == ["1 of 1", "2 of 1"]  # one resource, made on first use, shared
    assert test_handlers.closed == ["counter"]  # closed when the worker stopped


async def _running(client: object, body: dict[str, object]) -> str:
    from httpx import AsyncClient

    assert isinstance(client, AsyncClient)
    r = await client.post("/api/v2/jobs", json=body)
    assert r.status_code == 201, r.text
    assert await asyncio.to_thread(test_handlers.started.wait, 20)
    return str(r.json()["id"])


async def first_progress(ctx: AppContext, job_id: str) -> dict[str, object]:
    after = 0
    while True:  # bounded by the test's timeout
        for event in await ctx.store.wait_for_event(job_id, after, 5.0):
            after = max(after, event.id)
            if event.kind == "progress":
                return event.data


@pytest.mark.parametrize("target", ["blocking", "sleepy"])
async def test_cancel_reaches_a_running_handler(tmp_path: Path, target: str) -> None:
    settings = memory_settings(tmp_path, handlers=[f"slow=tests.support.handlers:{target}"])
    async with asgi_app(settings) as (_, client, ctx):
        job_id = await _running(client, {"type": "slow", "max_retries": 3})
        running = (await client.get(f"/api/v2/jobs/{job_id}")).json()
        assert running["status"] == "running"  # a handler job runs from its claim
        progress = await first_progress(ctx, job_id)  # what the handler reported
        assert (progress["value"], progress["message"]) == (0.25, "working")
        r = await client.post(f"/api/v2/jobs/{job_id}/cancel")
        assert r.status_code in (200, 202), r.text
        view = await ctx.service.wait(job_id, 20)
        assert view.job.status.value == "canceled"
        assert view.job.attempts == 1  # not retried
        assert test_handlers.stopped_by == ["canceled"]


@pytest.mark.parametrize("target", ["blocking", "sleepy"])
async def test_timeout_reaches_a_running_handler(tmp_path: Path, target: str) -> None:
    settings = memory_settings(tmp_path, handlers=[f"slow=tests.support.handlers:{target}"])
    async with asgi_app(settings) as (_, client, ctx):
        job_id = await _running(client, {"type": "slow", "timeout_s": 0.3, "max_retries": 0})
        view = await ctx.service.wait(job_id, 20)
        assert view.job.status.value == "failed"
        assert view.job.error is not None and view.job.error.code == "timeout"
        assert test_handlers.stopped_by == ["timeout"]


@pytest.mark.parametrize("target", ["exiting", "interrupted"])
async def test_a_handler_that_would_end_the_process_fails_its_job(
    tmp_path: Path, target: str
) -> None:
    """SystemExit (a library's sys.exit()) or KeyboardInterrupt from a handler is its job's
    error: it stopped the server (and, the job run again after a restart, stopped it again)."""
    handlers = [f"bad=tests.support.handlers:{target}", "count=tests.support.handlers:counting"]
    async with asgi_app(memory_settings(tmp_path, handlers=handlers)) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs?wait=30", json={"type": "bad", "max_retries": 0})
        job = r.json()
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "handler_error"
        assert ("SystemExit" if target == "exiting" else "KeyboardInterrupt") in job["error"][
            "message"
        ]
        after = await client.post("/api/v2/jobs?wait=30", json={"type": "count"})
        assert after.json()["status"] == "succeeded"  # the worker runs on


async def test_sync_handlers_that_never_return_hold_no_one_up(tmp_path: Path) -> None:
    """A sync handler that ignores its cancel token cannot be stopped (a thread cannot be
    killed): past its timeout its job ends and the thread is left. Each held a place of the
    event loop's own thread pool, and a few stopped every file read and write of the server
    (outputs, downloads) for good; each has a thread of its own now."""
    handlers = ["stuck=tests.support.handlers:stuck", "count=tests.support.handlers:counting"]
    settings = memory_settings(tmp_path, handlers=handlers, handler_stop_grace_s=0.1)
    try:
        async with asgi_app(settings) as (_, client, _ctx):
            body = {"type": "stuck", "timeout_s": 0.2, "max_retries": 0}
            for _ in range(8):  # more than the loop's pool holds on these cores
                r = await client.post("/api/v2/jobs?wait=30", json=body)
                assert r.json()["error"]["code"] == "timeout", r.text
            # the loop's pool is free: files are read and written (its output stored)
            async with asyncio.timeout(20):
                r = await client.post("/api/v2/jobs?wait=15", json={"type": "count"})
            assert r.json()["status"] == "succeeded", r.text
    finally:
        test_handlers.unstuck.set()


async def test_a_handler_s_undecodable_text_leaves_the_job_readable(tmp_path: Path) -> None:
    """An error naming a file decoded with surrogateescape (a lone surrogate, no UTF-8 an
    answer can carry) made the job, and every listing of jobs, a 500 until it expired."""
    handlers = ["odd=tests.support.handlers:undecodable"]
    async with asgi_app(memory_settings(tmp_path, handlers=handlers)) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs?wait=30", json={"type": "odd", "max_retries": 0})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "failed" and "caf\ufffd.png" in job["error"]["message"]
        assert (await client.get(f"/api/v2/jobs/{job['id']}")).status_code == 200
        assert (await client.get("/api/v2/jobs")).status_code == 200
