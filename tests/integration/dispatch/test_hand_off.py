"""`serve`: a job submitted while a backend is idle and nothing is queued is claimed in its
enqueue's transaction and started at once, without the claim loop; otherwise it waits in the
queue as before (comfyrun.dispatch.handoff)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from tests.support.api import asgi_app, memory_settings, sqlite_serve, submit_steps
from tests.support.emulator import running_emulator, text_to_image_workflow

from comfyrun.api.context import AppContext
from comfyrun.config import BackendConfig
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event
from comfyrun.store.sqlite import SQLiteStore


@asynccontextmanager
async def serve(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext, list[str]]]:
    """An app with one emulator backend; yields the ids of the jobs the claim loop claimed."""
    async with running_emulator(tmp_path / "emu", step_time_s=0.05) as emu:
        backends = [BackendConfig(name="gpu0", url=emu.url)]
        cfg = memory_settings(tmp_path, backends=backends, **settings)
        async with asgi_app(cfg) as (_, client, ctx):
            claimed: list[str] = []
            claim = ctx.store.claim

            async def counting_claim(*args: Any, **kwargs: Any) -> Any:
                job = await claim(*args, **kwargs)
                if job is not None:
                    claimed.append(job.id)
                return job

            ctx.store.claim = counting_claim  # type: ignore[method-assign]
            # the hand-off needs an idle backend: on a loaded machine its first health check
            # may still be under way when the app has started
            async with asyncio.timeout(30):
                while (await client.get("/ready")).status_code != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            yield client, ctx, claimed


submit = submit_steps


async def test_a_job_for_an_idle_backend_is_claimed_as_it_is_enqueued(tmp_path: Path) -> None:
    async with serve(tmp_path) as (client, ctx, claimed):
        job = await submit(client, steps=1, wait=30)
        assert job["status"] == "succeeded", job
        assert claimed == []  # the claim loop never took it
        events = await ctx.store.events_since(job["id"])
        statuses = [e.data["status"] for e in events if e.kind == "status"]
        assert statuses[:2] == ["queued", "running"]
        assert events[0].created_at == events[1].created_at  # one transaction


async def test_without_hand_off_the_claim_loop_takes_it(tmp_path: Path) -> None:
    async with serve(tmp_path, hand_off=False) as (client, _ctx, claimed):
        job = await submit(client, steps=1, wait=30)
        assert job["status"] == "succeeded", job
        assert claimed == [job["id"]]


async def test_behind_a_busy_backend_a_job_waits_in_the_queue(tmp_path: Path) -> None:
    async with serve(tmp_path) as (client, ctx, claimed):
        first = await submit(client, steps=20)  # 1 s on the only backend
        second = await submit(client, steps=1)
        assert second["status"] == "queued"
        done = await ctx.service.wait(second["id"], 30)
        assert done.job.status.value == "succeeded"
        assert first["id"] not in claimed  # handed over
        assert claimed == [second["id"]]  # queued behind it: claimed when the backend freed


# --- the start overlaps the enqueue's commit (SQLite: HandOff.decided) ------------------------


class HeldCommit:
    """The SQLite store's connection, whose COMMIT of a batch holding a hand-off waits for
    `go` and then fails if `fail` is set: the enqueue decided, not yet (or never) committed."""

    def __init__(self, store: SQLiteStore) -> None:
        self._conn: Any = store._conn
        self.reached = threading.Event()
        self.go = threading.Event()
        self.fail = False
        self.decided = False  # a hand-off was decided (HandOff.decided said) in this store
        said = store._decided

        def decided(*args: Any) -> None:
            self.decided = True
            said(*args)

        store._decided = decided  # type: ignore[method-assign]

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.decided and not self.reached.is_set():
            self.reached.set()
            self.go.wait(30)
            if self.fail:
                raise sqlite3.OperationalError("disk I/O error (test)")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@asynccontextmanager
async def serve_sqlite(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, SQLiteStore, HeldCommit, str]]:
    async with sqlite_serve(tmp_path) as (client, store, emu_url):
        assert isinstance(store, SQLiteStore)
        held = HeldCommit(store)
        store._conn = held  # type: ignore[assignment]
        try:
            yield client, store, held, emu_url
        finally:
            held.go.set()


async def prompts_of(emu_url: str) -> dict[str, dict[str, Any]]:
    """ComfyUI's prompts, queued, running or done: {comfyrun job id: {prompt_id, state}}."""
    found: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=emu_url) as http:
        queue = (await http.get("/queue")).json()
        history = (await http.get("/history")).json()
    for state in ("queue_running", "queue_pending"):
        for entry in queue[state]:
            found[entry[3]["comfyrun_job_id"]] = {"prompt_id": entry[1], "state": state}
    for prompt_id, entry in history.items():
        messages = [msg[0] for msg in entry["status"]["messages"]]
        found[entry["prompt"][3]["comfyrun_job_id"]] = {
            "prompt_id": prompt_id,
            "state": "interrupted" if "execution_interrupted" in messages else "done",
        }
    return found


async def until_prompted(emu_url: str, timeout: float = 20) -> dict[str, dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while not (found := await prompts_of(emu_url)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return found


async def test_the_prompt_goes_to_comfyui_while_the_enqueue_commits(tmp_path: Path) -> None:
    async with serve_sqlite(tmp_path) as (client, _store, held, emu_url):
        body = {"workflow": text_to_image_workflow(steps=1)}
        submitting = asyncio.ensure_future(
            client.post("/api/v2/jobs", params={"wait": 30}, json=body)
        )
        assert await asyncio.to_thread(held.reached.wait, 20)
        found = await until_prompted(emu_url)  # ComfyUI has it; the commit still waits
        assert not submitting.done()  # nobody is told of the job before its commit
        (job_id,) = found
        held.go.set()
        r = await submitting
        assert r.status_code == 201, r.text
        assert r.json()["id"] == job_id and r.json()["status"] == "succeeded"
        assert (await prompts_of(emu_url))[job_id]["state"] == "done"  # run once


async def test_when_the_enqueue_fails_to_commit_its_started_prompt_is_stopped(
    tmp_path: Path,
) -> None:
    async with serve_sqlite(tmp_path) as (client, store, held, emu_url):
        body = {"workflow": text_to_image_workflow(steps=400)}  # 20 s unless stopped
        submitting = asyncio.ensure_future(client.post("/api/v2/jobs", json=body))
        assert await asyncio.to_thread(held.reached.wait, 20)
        (job_id,) = await until_prompted(emu_url)
        held.fail = True
        held.go.set()
        r = await submitting
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_error"
        assert await store.get(job_id) is None  # nothing stored
        async with asyncio.timeout(10):  # interrupted (or deleted unstarted), not left to run
            while (await prompts_of(emu_url)).get(job_id, {}).get("state") not in (  # noqa: ASYNC110
                "interrupted",
                None,
            ):
                await asyncio.sleep(0.05)
        # the backend is free again: the next job is handed to it and runs
        r = await client.post(
            "/api/v2/jobs",
            params={"wait": 30},
            json={"workflow": text_to_image_workflow(steps=1)},
        )
        assert r.status_code == 201 and r.json()["status"] == "succeeded", r.text


async def test_a_wait_ends_on_the_job_its_worker_committed_without_reading_it(
    tmp_path: Path,
) -> None:
    """`serve`: the run tells the API of this process the job it just finished
    (RunContext.finished), so a `?wait` that wakes at the end answers with it, and a GET that
    follows does not read it from the store again either."""
    async with serve(tmp_path) as (client, ctx, _claimed):
        reads: list[str] = []
        real_get = ctx.store.get

        async def counting_get(job_id: str) -> Any:
            reads.append(job_id)
            return await real_get(job_id)

        ctx.store.get = counting_get  # type: ignore[method-assign]
        job = await submit(client, steps=1, wait=30)
        assert job["status"] == "succeeded" and job["outputs"], job
        again = (await client.get(f"/api/v2/jobs/{job['id']}")).json()
        assert again["outputs"] == job["outputs"]
        assert job["id"] not in reads


async def test_a_wait_on_a_job_run_in_this_process_reads_none_of_its_events(
    tmp_path: Path,
) -> None:
    """`serve`: while a worker of this process runs the job, a `?wait` on it waits for that
    run's word (it settled the job, or gave it back) instead of following the job's events in
    the store: none is read, for a job handed off or claimed after waiting its turn."""
    async with serve(tmp_path) as (client, ctx, _claimed):
        reads: list[str] = []
        real_since, real_wait = ctx.store.events_since, ctx.store.wait_for_event

        def note(job_id: str) -> None:
            if any(frame.name == "wait" for frame in traceback.extract_stack()):
                reads.append(job_id)  # the ?wait's (the run watches them for a cancel)

        async def events_since(job_id: str, after_id: int = 0) -> Any:
            note(job_id)
            return await real_since(job_id, after_id)

        async def wait_for_event(
            job_id: str, after_id: int, timeout: float, *, ending: bool = False, **_: Any
        ) -> Any:
            note(job_id)
            return await real_wait(job_id, after_id, timeout, ending=ending)

        ctx.store.events_since = events_since  # type: ignore[method-assign]
        ctx.store.wait_for_event = wait_for_event  # type: ignore[method-assign]
        job = await submit(client, steps=1, wait=30)
        assert job["status"] == "succeeded" and job["outputs"], job
        assert reads == []
        # a job queued behind another: the wait follows the store's events until its claim
        # here, then the run's word
        first = asyncio.ensure_future(submit(client, steps=40, wait=30))
        second = await submit(client, steps=1, wait=30)
        assert second["status"] == "succeeded", second
        assert (await first)["status"] == "succeeded"


async def test_a_wait_on_a_job_its_run_here_gave_back_follows_it_to_its_end(
    tmp_path: Path,
) -> None:
    """A run here that puts the job back in the queue (out of memory: a retry, due in 15 s or
    more) tells its `?wait`, which then follows the job in the store: canceled elsewhere while
    it waits for its retry, the job's end answers the wait at once."""
    async with (
        serve(tmp_path, retry_delay_s=30.0) as (client, ctx, _claimed),
        httpx.AsyncClient() as emu,
    ):
        (backend,) = ctx.pool.backends
        faults = f"{backend.url}/emulator/faults"
        (await emu.post(faults, json={"specs": ["oom:KSampler"]})).raise_for_status()
        body = {"workflow": text_to_image_workflow(steps=1), "max_retries": 1}
        waiting = asyncio.ensure_future(client.post("/api/v2/jobs", params={"wait": 60}, json=body))
        async with asyncio.timeout(20):
            while True:
                jobs = (await client.get("/api/v2/jobs")).json()["jobs"]
                job = await ctx.store.get(jobs[0]["id"]) if jobs else None
                if job is not None and job.error is not None and job.status is JobStatus.QUEUED:
                    break  # given back: it waits for its retry
                await asyncio.sleep(0.02)
        assert job.error.code == "out_of_memory" and job.next_run_at > time.time() + 5
        # canceled by another process (straight in the store: this one's API hears nothing)
        await ctx.store.transition(job.id, Event.CANCEL, expect=JobStatus.QUEUED)
        async with asyncio.timeout(10):
            r = await waiting
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "canceled"
