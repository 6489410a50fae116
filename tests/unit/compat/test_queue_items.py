"""The caches of ComfyUI /queue items and /history entries: a queued or finished job is rendered
once, anything that may change is rendered again, and a cache stays within its byte budget."""

from __future__ import annotations

import json

import pytest

from comfyrun.api.compat import comfy as cc
from comfyrun.api.routes import comfy_queue
from comfyrun.api.routes.comfy_queue import HistoryItems, QueueItems
from comfyrun.core.job import Job, JobStatus
from comfyrun.store.base import QueueEntry

WORKFLOW = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}


def entry(
    job_id: str,
    status: JobStatus = JobStatus.QUEUED,
    *,
    waiting: bool = False,
    outputs: tuple[str, ...] = (),
    workflow: dict[str, object] | None = None,
    created_at: float = 1.0,
) -> QueueEntry:
    raw = (json.dumps(workflow or WORKFLOW), '{"extra_data": {"k": 1}}', '{"comfy_number": 7}')
    return QueueEntry(job_id, status, waiting, outputs, created_at, raw)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    render = comfy_queue._render

    def counted(e: QueueEntry) -> bytes:
        seen.append(e.id)
        return render(e)

    monkeypatch.setattr(comfy_queue, "_render", counted)
    return seen


def test_an_item_is_comfyuis_tuple_rendered_once_while_queued(renders: list[str]) -> None:
    items = QueueItems()
    first = items.item(entry("a"))
    assert json.loads(first) == [7, "a", WORKFLOW, {"k": 1}, ["9"]]
    assert json.loads(first) == cc.queue_entry_item(entry("a"))
    assert items.item(entry("a")) is first
    assert renders == ["a"]
    # its outputs changed (an earlier attempt's): rendered again
    assert json.loads(items.item(entry("a", outputs=("3",))))[4] == ["3", "9"]
    assert renders == ["a", "a"] and len(items) == 1
    # another job under the same id (ComfyUI's prompt_id used again): its own item
    other = {"5": {"class_type": "PreviewImage", "inputs": {}}}
    again = items.item(entry("a", outputs=("3",), workflow=other, created_at=2.0))
    assert json.loads(again)[2] == other
    assert renders == ["a", "a", "a"] and len(items) == 1


def test_claimed_jobs_are_rendered_each_time(renders: list[str]) -> None:
    items = QueueItems()
    for _ in range(2):
        items.item(entry("held", JobStatus.RUNNING, waiting=True))
        items.item(entry("run", JobStatus.RUNNING))
    assert renders == ["held", "run", "held", "run"] and len(items) == 0


def test_the_least_recently_listed_go_past_the_budget(renders: list[str]) -> None:
    one = len(comfy_queue._render(entry("a")))
    renders.clear()
    items = QueueItems(max_bytes=2 * one)
    items.item(entry("a"))
    items.item(entry("b"))
    items.item(entry("a"))  # listed again: now the most recent
    items.item(entry("c"))  # over budget: b goes
    assert items.size <= 2 * one and len(items) == 2
    items.item(entry("a"))
    items.item(entry("b"))
    assert renders == ["a", "b", "c", "b"]


def finished(job_id: str, finished_at: float = 5.0, **kw: object) -> Job:
    values: dict[str, object] = {
        "id": job_id,
        "workflow": WORKFLOW,
        "status": JobStatus.SUCCEEDED,
        "created_at": 1.0,
        "started_at": 2.0,
        "finished_at": finished_at,
        "attempts": 1,
        "metadata": {cc.META_NUMBER: 3},
    }
    values.update(kw)
    return Job(**values)  # type: ignore[arg-type]


def test_a_history_entry_is_rendered_once_until_the_job_finishes_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    render = comfy_queue._render_history

    def counted(job: Job) -> bytes:
        seen.append(job.id)
        return render(job)

    monkeypatch.setattr(comfy_queue, "_render_history", counted)
    items = HistoryItems()
    first = items.entry(finished("a"))
    assert json.loads(first) == json.loads(json.dumps(cc.history_entry(finished("a"))))
    assert json.loads(first)["prompt"][:2] == [3, "a"]
    assert items.entry(finished("a")) is first
    assert seen == ["a"]
    # run again under its id (RunPod's /retry) and failed this time: its own entry
    again = items.entry(finished("a", 9.0, status=JobStatus.FAILED, attempts=2))
    assert json.loads(again)["status"]["status_str"] == "error"
    assert seen == ["a", "a"] and len(items) == 1


async def test_a_bare_listing_reads_the_bodies_of_only_the_items_not_kept(
    renders: list[str],
) -> None:
    """`QueueItems.items` over a listing without the queued jobs' bodies: what is kept is
    answered from the listing, only the others' bodies are read (and rendered); the running
    ones come whole and are rendered each time; one gone meanwhile is left out. Kept items
    are taken before anything is rendered, so a full cache dropping them midway cannot
    leave an item without its body."""
    import dataclasses
    from typing import Any, ClassVar

    whole = {i: entry(i) for i in ("a", "b", "c", "gone")}

    class Store:
        asked: ClassVar[list[list[str]]] = []

        async def queue_bodies(self, job_ids: Any, *, owner: Any = None) -> Any:
            self.asked.append(list(job_ids))
            return {i: whole[i].raw for i in job_ids if i != "gone"}

    store: Any = Store()
    running = entry("r", JobStatus.RUNNING)
    bare = [running] + [dataclasses.replace(whole[i], raw=None) for i in ("a", "b")]
    items = QueueItems()
    first = await items.items(store, bare)
    assert [json.loads(data)[1] for _, data in first] == ["r", "a", "b"]
    assert [is_running for is_running, _ in first] == [True, False, False]
    assert store.asked == [["a", "b"]] and renders == ["r", "a", "b"]
    gone = QueueEntry("gone", JobStatus.QUEUED, False, (), 1.0, None)
    again = await items.items(store, [*bare, dataclasses.replace(whole["c"], raw=None), gone])
    assert [json.loads(data)[1] for _, data in again] == ["r", "a", "b", "c"]
    assert store.asked == [["a", "b"], ["c", "gone"]] and renders[3:] == ["r", "c"]
    tiny = QueueItems(max_bytes=1)  # keeps no item: every one read and rendered
    await tiny.items(store, bare[1:2])
    listed = await tiny.items(store, [*bare[1:], dataclasses.replace(whole["c"], raw=None)])
    assert [json.loads(data)[1] for _, data in listed] == ["a", "b", "c"]
