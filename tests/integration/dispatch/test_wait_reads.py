"""`serve`: a `?wait` on a job that waits in the queue (queued by this process, nothing written
here since that may end it) sleeps without reading it, waits for the store to say it may have
ended or for this process's run to take it up, and has the end from that run: no read of the
job, nor of its log at each write (its claim, progress, outputs)."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import sqlite_serve, submit_steps

#: Set in the task of the request that waits: the reads counted are that request's.
WAITING = contextvars.ContextVar("WAITING", default=False)


async def test_a_wait_on_a_queued_job_reads_nothing_and_hears_its_end_from_the_run(
    tmp_path: Path,
) -> None:
    async with sqlite_serve(tmp_path) as (client, store, _):
        reads: collections.Counter[str] = collections.Counter()
        get, events_since = store.get, store.events_since

        async def counted_get(job_id: str) -> Any:
            if WAITING.get():
                reads[job_id] += 1
            return await get(job_id)

        async def counted_events(job_id: str, after_id: int = 0) -> Any:
            if WAITING.get():
                reads[job_id] += 1
            return await events_since(job_id, after_id)

        store.get = counted_get
        store.events_since = counted_events

        # the backend's room (a prompt running, one held behind it): ~0.5 s each
        ahead = [(await submit_steps(client, steps=10))["id"] for _ in range(2)]

        async def waiting() -> Any:
            WAITING.set(True)  # (the request's tasks inherit it; the runs do not)
            return await submit_steps(client, steps=3, wait=30)

        job = await asyncio.wait_for(waiting(), 60)
        assert job["id"] not in ahead and job["status"] == "succeeded", job
        assert len(job["outputs"]) == 1
        started = await store.events_since(job["id"])
        assert [e.data.get("status") for e in started][:2] == ["queued", "running"]
        # it waited in the queue (queued, then claimed by a pass of the worker, not handed
        # off in its enqueue's transaction), and no write of it woke a read of the wait: its
        # end came from the run that took it up
        assert started[1].created_at > started[0].created_at
        assert reads == {}, reads


async def test_a_wait_that_times_out_on_a_job_running_here_answers_it_as_it_is(
    tmp_path: Path,
) -> None:
    async with sqlite_serve(tmp_path) as (client, store, _):
        look = store._job

        async def slow_look(job_id: str) -> Any:
            # as a read over a network would (PostgreSQL): SQLite's reads on the event loop
            # finish in the task's first step, which hid a wait that spun past its timeout
            await asyncio.sleep(0.01)
            return await look(job_id)

        store._job = slow_look
        async with asyncio.timeout(60):
            started = time.monotonic()
            # the backend is idle: this process runs it from (at most) a moment after its
            # submission, ~20 s in all; the wait ends at its timeout, the run holding it (a
            # wait that spun past its timeout would answer at the job's end, or never): the
            # bound is far from both ends, so a loaded machine's slow submission cannot fail it.
            # The timeout leaves ComfyUI time to start the prompt (a job whose prompt waits in
            # its backend's queue is shown queued): under a loaded machine 0.5 s did not
            job = await submit_steps(client, steps=400, wait=3)
            assert job["status"] == "running", job
            assert time.monotonic() - started < 10  # at its timeout, not at the job's end


async def test_a_run_s_cancel_watch_is_closed_before_its_end_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the prompt's result is in, nothing listens for a cancel (the end's write takes a
    job made `canceling` meanwhile as such): the watch is closed then, so the end's own
    notification does not wake it to read the job's log (on PostgreSQL one statement a job)."""
    from comfyrun.core.state import Event
    from comfyrun.dispatch import run_follow as run_module
    from comfyrun.dispatch.cancel import CancelWatch

    watches: list[Watch] = []

    class Watch(CancelWatch):
        closed = False

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            watches.append(self)

        def close(self) -> None:
            self.closed = True
            super().close()

    monkeypatch.setattr(run_module, "CancelWatch", Watch)
    async with sqlite_serve(tmp_path) as (client, store, _):
        ends: list[bool] = []
        transition = store.transition

        async def noted(job_id: str, event: Event, **kw: Any) -> Any:
            if event is Event.SUCCEED:  # (the watch watched: the run outlasted its delay)
                ends.append(all(w.closed for w in watches) and watches[0].task is not None)
            return await transition(job_id, event, **kw)

        store.transition = noted
        job = await asyncio.wait_for(submit_steps(client, steps=4, wait=30), 60)
        assert job["status"] == "succeeded", job
        assert ends == [True]
