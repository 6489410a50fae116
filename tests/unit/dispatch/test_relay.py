"""The worker's side of the relay: frames under the job's prompt id, the end held back, at most
one store write per interval (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

from comfyrun.comfy import messages as m
from comfyrun.core.job import Job, JobStatus, NewJob
from comfyrun.dispatch.relay import CLIENT_ID_KEY, EVENT_KIND, JobRelay, RelayHub, wants_relay
from comfyrun.store.factory import open_store


def prompt(steps: int = 3) -> list[m.Message]:
    return [
        m.ExecutionStart("backend-id", 1),
        m.ExecutionCached("backend-id", ("1",), 1),
        m.Executing("5", "backend-id", "5"),
        *[m.Progress("backend-id", "5", i, steps) for i in range(1, steps + 1)],
        m.Executed("backend-id", "7", {"images": [{"filename": "a.png"}]}, "7"),
        m.ExecutionSuccess("backend-id", 2),
        m.Executing(None, "backend-id"),
    ]


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f.get("type", "<binary>") for f in frames]


async def test_frames_reach_the_hub_at_once_and_the_end_when_the_job_ends() -> None:
    hub = RelayHub()
    got: list[dict[str, Any]] = []
    hub.subscribe("job", got.extend)
    relay = JobRelay("job", hub=hub)
    for message in prompt():
        relay.feed(message)
    assert kinds(got) == ["execution_start", "execution_cached", "executing", *["progress"] * 3]
    assert all(f["data"]["prompt_id"] == "job" for f in got)
    late: list[dict[str, Any]] = []
    hub.subscribe("job", late.extend)  # a socket attaching mid-run gets everything so far
    assert late == got
    previews = [{"binary": "AAAAAQ=="}, {"binary": "AAAAAg=="}]
    hub.publish("job", previews)
    later: list[dict[str, Any]] = []
    hub.subscribe("job", later.extend)  # ... of the previews, the latest
    assert later == [*got[:-2], previews[1]]
    assert got[-2:] == previews
    await relay.finish(release=True)
    assert kinds(got)[-3:] == ["executed", "execution_success", "executing"]
    relay.close()
    assert hub.jobs == 0


async def test_a_job_that_runs_again_drops_the_end_of_its_prompt() -> None:
    hub = RelayHub()
    got: list[dict[str, Any]] = []
    unsubscribe = hub.subscribe("job", got.extend)
    relay = JobRelay("job", hub=hub)
    for message in [*prompt()[:3], m.ExecutionError("b", "5", "KSampler", "E", "boom")]:
        relay.feed(message)
    await relay.finish(release=False)
    relay.close()
    assert kinds(got) == ["execution_start", "execution_cached", "executing"]
    unsubscribe()
    hub.publish("job", [{"type": "x", "data": {}}])
    assert len(got) == 3


async def test_through_the_store_frames_are_batched_in_order() -> None:
    store = open_store("memory://")
    await store.open()
    job, _ = await store.enqueue(NewJob(workflow={}))
    relay = JobRelay(job.id, store=store, interval_s=60.0)
    messages = prompt(steps=50)
    for message in messages:
        relay.feed(message)
    await relay.finish(release=True)
    relay.close()
    batches = [e.data["messages"] for e in await store.events_since(job.id) if e.kind == EVENT_KIND]
    assert 1 <= len(batches) <= 2  # maybe one at once, then the rest with the end
    frames = [f for batch in batches for f in batch]
    assert len(frames) == len(messages)
    assert kinds(frames)[-3:] == ["executed", "execution_success", "executing"]
    assert [f["data"].get("value") for f in frames if f["type"] == "progress"] == list(range(1, 51))
    await store.close()


async def test_a_relay_with_no_channel_does_nothing() -> None:
    relay = JobRelay("job")
    assert not relay.enabled
    relay.feed(prompt()[0])
    await relay.finish(release=True)
    relay.close()


def test_only_jobs_of_a_comfyui_client_are_relayed() -> None:
    assert wants_relay({CLIENT_ID_KEY: "abc"})
    assert not wants_relay({})  # native and RunPod jobs: no socket ever asks for them
    assert not wants_relay({CLIENT_ID_KEY: None})


async def test_the_settled_job_reaches_the_subscribers_that_asked_for_it_until_they_leave() -> None:
    hub = RelayHub()
    frames: list[dict[str, Any]] = []
    settled: list[Job] = []
    unsubscribe = hub.subscribe("job", frames.extend, lambda job, _: settled.append(job))
    hub.subscribe("job", frames.extend)  # frames only
    relay = JobRelay("job", hub=hub)
    for message in prompt():
        relay.feed(message)
    await relay.finish(release=True)
    job = Job(id="job", workflow={}, status=JobStatus.SUCCEEDED)
    relay.settled(job)
    assert settled == [job]
    later: list[Job] = []
    hub.subscribe("job", frames.extend, lambda job, _: later.append(job))
    unsubscribe()
    relay.settled(job)
    assert settled == [job] and later == [job]
    relay.close()
    relay.settled(job)  # a closed relay tells nothing
    assert later == [job]


async def test_a_success_is_told_as_its_commit_begins_and_readers_wait_for_the_commit() -> None:
    hub = RelayHub()
    told: list[tuple[Job, asyncio.Future[None] | None]] = []
    relay = JobRelay("job", hub=hub)
    job = Job(id="job", workflow={}, status=JobStatus.SUCCEEDED)
    hub.subscribe("job", lambda _: None)  # frames only
    assert not relay.end_awaited  # nobody waits for the end
    await asyncio.wait_for(hub.committed("job"), 1)
    hub.subscribe("job", lambda _: None, lambda job, committing: told.append((job, committing)))
    assert relay.end_awaited
    assert hub.told("job") is None
    relay.end_early(job)
    ((seen, committing),) = told
    assert seen is job and committing is not None and not committing.done()
    assert hub.told("job") is job and hub.told("other") is None  # as its commit writes it
    # a reader of that job, or of every job, waits for the commit; of another job, not
    for_it, for_all = (asyncio.ensure_future(hub.committed(j)) for j in ("job", None))
    await asyncio.wait_for(hub.committed("other"), 1)
    await asyncio.sleep(0.05)
    assert not for_it.done() and not for_all.done()
    relay.commit_over()
    await asyncio.wait_for(asyncio.gather(for_it, for_all), 1)
    assert committing.done() and hub.told("job") is None
    relay.settled(job)  # the committed job, told after: without a commit to wait for
    assert told[1] == (job, None)
    # a run that ends (closed) with its commit told and not over lets its readers go
    second = JobRelay("job", hub=hub)
    second.end_early(job)
    waiting = asyncio.ensure_future(hub.committed())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    second.close()
    await asyncio.wait_for(waiting, 1)
    assert hub.told("job") is None  # a run closed with its commit told forgets it
    # a reader waits no longer than it is told to
    third = JobRelay("job", hub=hub)
    third.end_early(job)
    await asyncio.wait_for(hub.committed("job", timeout_s=0.05), 1)
    third.close()
    relay.close()
    assert not relay.end_awaited  # a closed relay tells nothing


async def test_the_hub_knows_while_a_run_of_this_process_relays_a_job() -> None:
    hub = RelayHub()
    await asyncio.wait_for(hub.wait_over("job"), 1)  # none: at once
    first = JobRelay("job", hub=hub)
    second = JobRelay("job", hub=hub)  # a retry's run, begun before the first is closed
    assert hub.live("job") and not hub.live("other")
    waiting = asyncio.ensure_future(hub.wait_over("job"))
    first.close()
    first.close()  # once only
    await asyncio.sleep(0)
    assert hub.live("job") and not waiting.done()
    second.close()
    await asyncio.wait_for(waiting, 1)
    assert not hub.live("job")
    JobRelay("job")  # without a hub: nothing to tell
    assert not hub.live("job")
