"""Handler jobs keep comfy jobs' guarantees: retries by failure kind, events and webhooks
(through the outbox), and every dialect reads them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.integration.handlers.conftest import png_input
from tests.support.api import asgi_app, memory_settings
from tests.support.store import fail_the_end_once

from comfyrun.core.state import Event
from comfyrun.dispatch import end_commit
from comfyrun.errors import StoreError

HANDLERS = [
    "refuse=tests.support.handlers:failing",
    "flaky=tests.support.handlers:flaky",
    "buggy=tests.support.handlers:buggy",
    "full=tests.support.handlers:disk_full",
]


async def test_failures_are_retried_by_kind(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, handlers=HANDLERS, retry_delay_s=0.01)
    async with asgi_app(settings) as (_, client, ctx):
        final = (
            await client.post("/api/v2/jobs?wait=30", json={"type": "refuse", "max_retries": 2})
        ).json()
        assert (final["status"], final["attempts"]) == ("failed", 1)
        retried = (
            await client.post("/api/v2/jobs", json={"type": "flaky", "max_retries": 2})
        ).json()
        view = await ctx.service.wait(retried["id"], 30)
        assert view.job.status.value == "failed"
        assert view.job.attempts == 3  # retryable: 1 + max_retries attempts
        assert view.job.error is not None and view.job.error.message == "try again (attempt 3)"
        opted = (
            await client.post(
                "/api/v2/jobs", json={"type": "refuse", "max_retries": 1, "retry_on_error": True}
            )
        ).json()
        view = await ctx.service.wait(opted["id"], 30)
        assert view.job.attempts == 2  # the job asked for its errors to be retried
        bug = (await client.post("/api/v2/jobs?wait=30", json={"type": "buggy"})).json()
        assert bug["status"] == "failed"
        assert bug["error"]["code"] == "handler_error"
        assert bug["error"]["message"] == "ZeroDivisionError: division by zero"
        assert "ZeroDivisionError" in bug["error"]["traceback"]
        # a full disk is the machine's state, not the handler's bug: retried
        full = (await client.post("/api/v2/jobs", json={"type": "full", "max_retries": 1})).json()
        first = await ctx.service.wait(full["id"], 30)
        assert (first.job.status.value, first.job.attempts) == ("succeeded", 2), first.job.error
        body = {"type": "full", "max_retries": 0}
        full = (await client.post("/api/v2/jobs?wait=30", json=body)).json()
        assert (full["status"], full["error"]["code"]) == ("failed", "disk_full"), full
        assert full["error"]["message"] == "[Errno 28] No space left on device"


async def test_events_and_other_dialects_read_handler_jobs(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        job = (
            await client.post(
                "/api/v2/jobs?wait=30",
                json={
                    "type": "image",
                    "params": {"format": "webp"},
                    "inputs": [png_input("x.png")],
                },
            )
        ).json()
        assert job["status"] == "succeeded", job
        events = await ctx.store.events_since(job["id"])
        statuses = [e.data["status"] for e in events if e.kind == "status"]
        assert statuses == ["queued", "running", "succeeded"]
        assert [e.data["name"] for e in events if e.kind == "output"] == ["x.webp"]
        runpod = await client.get(f"/status/{job['id']}")
        assert runpod.status_code == 200, runpod.text
        assert runpod.json()["status"] == "COMPLETED"
        history = await client.get(f"/history/{job['id']}")
        assert history.status_code == 200, history.text
        entry = history.json()[job["id"]]
        assert entry["status"]["completed"] is True
        [files] = entry["outputs"].values()
        assert files["images"][0]["filename"] == "x.webp"


async def test_a_handler_job_owes_its_webhook(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, webhook_allow=["127.0.0.0/8"])
    async with asgi_app(settings) as (_, client, ctx):
        job = (
            await client.post(
                "/api/v2/jobs?wait=30",
                json={
                    "type": "image",
                    "inputs": [png_input("x.png")],
                    "webhook": {"url": "http://127.0.0.1:9/hook"},
                },
            )
        ).json()
        assert job["status"] == "succeeded", job
        [delivery] = await ctx.store.deliveries(job["id"])
        assert delivery.url == "http://127.0.0.1:9/hook"
        assert delivery.event.endswith("succeeded")


async def test_a_failed_wait_for_work_does_not_stop_the_lane(tmp_path: Path) -> None:
    """The handler lane's wait for work failing (SQLite locked by another process past its
    busy timeout) is the store failing, as a failed claim is: the lane backs off and claims
    again. (It ended the lane's loop: no handler job was claimed until a restart.)"""
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        store: Any = ctx.store
        wait_for_work = store.wait_for_work
        failed = asyncio.Event()

        async def failing_once(timeout: float, **kwargs: Any) -> Any:
            if "image" in (kwargs.get("types") or ()) and not failed.is_set():
                failed.set()
                raise StoreError("SQLite is busy: database is locked")
            return await wait_for_work(timeout, **kwargs)

        store.wait_for_work = failing_once
        body = {"type": "image", "params": {"format": "webp"}, "inputs": [png_input("x.png")]}
        first = (await client.post("/api/v2/jobs?wait=30", json=body)).json()
        assert first["status"] == "succeeded", first
        async with asyncio.timeout(30):
            await failed.wait()  # the lane's next wait, after the job, failed
        second = (await client.post("/api/v2/jobs?wait=30", json=body)).json()
        assert second["status"] == "succeeded", second


@pytest.mark.parametrize(("committed", "times"), [(False, 1), (True, 1), (False, 12), (True, 12)])
async def test_a_store_failing_a_while_at_the_end_does_not_undo_a_handler_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, committed: bool, times: int
) -> None:
    """As a ComfyUI run's: the end's write failing once, or a while within the lease, is
    written again, or found written (it failed the run, and the job ran again)."""
    monkeypatch.setattr(end_commit, "END_RETRY_DELAYS_S", (0.01, 0.01))
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        failed = fail_the_end_once(ctx.store, committed=committed, times=times)
        body = {"type": "image", "params": {"format": "webp"}, "inputs": [png_input("x.png")]}
        job = (await client.post("/api/v2/jobs?wait=30", json=body)).json()
        assert failed == [Event.SUCCEED] * times
        assert (job["status"], job["attempts"]) == ("succeeded", 1), job
        assert job["outputs"]
