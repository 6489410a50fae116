"""GET /api/v2/jobs as a client pages through it: an empty `?status=` filters nothing, metadata
values given in the URL match the numbers and booleans jobs hold, filtered pages are full,
cursors continue only their own listing, and `?wait` holds a GET of one job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun import job_listing
from comfyrun.job_listing import metadata_matches


async def submit(client: httpx.AsyncClient, i: int, metadata: dict[str, Any]) -> str:
    r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(i), "metadata": metadata})
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


async def every_page(client: httpx.AsyncClient, params: dict[str, Any]) -> list[list[str]]:
    """The ids on each page of a listing, followed to its end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        r = await client.get(
            "/api/v2/jobs", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert r.status_code == 200, r.text
        pages.append([j["id"] for j in r.json()["jobs"]])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return pages


async def test_an_empty_status_filters_nothing(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        ids = [await submit(client, i, {}) for i in range(3)]
        for query in ("status=", "status=,", "status=%20", "status=&status="):
            r = await client.get(f"/api/v2/jobs?{query}")
            assert r.status_code == 200, r.text
            assert [j["id"] for j in r.json()["jobs"]] == ids[::-1], query


async def test_metadata_values_in_the_url_match_numbers_booleans_and_strings(
    tmp_path: Path,
) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        one = await submit(client, 0, {"n": 1, "ok": True})
        one_text = await submit(client, 1, {"n": "1", "ok": "true"})
        one_float = await submit(client, 2, {"n": 1.0, "ok": False})
        other = await submit(client, 3, {"n": 2, "ok": None, "obj": {"a": 1}})

        async def found(query: str) -> set[str]:
            r = await client.get(f"/api/v2/jobs?{query}")
            assert r.status_code == 200, r.text
            return {j["id"] for j in r.json()["jobs"]}

        assert await found("metadata[n]=1") == {one, one_text, one_float}
        assert await found("metadata[n]=1.0") == {one, one_float}
        assert await found("metadata[n]=2") == {other}
        assert await found("metadata[ok]=true") == {one, one_text}
        assert await found("metadata[ok]=false") == {one_float}
        assert await found("metadata[ok]=null") == {other}
        assert await found("metadata[n]=1&metadata[ok]=true") == {one, one_text}
        assert await found("metadata[obj]=%7B%22a%22%3A1%7D") == set()
        assert await found("metadata[missing]=null") == set()


@pytest.mark.parametrize(
    ("value", "wanted", "matches"),
    [
        (1, "1", True),
        (1, "01", True),
        (1, "1e0", True),
        (1, "x", False),
        (2**70, str(2**70), True),
        (2**70 + 1, str(2**70), False),
        (1.5, "1.5", True),
        (float("nan"), "nan", False),
        (True, "1", False),
        (True, "true", True),
        ("1", "1.0", False),
        (None, "null", True),
        ([1], "[1]", False),
    ],
)
def test_metadata_matches(value: Any, wanted: str, matches: bool) -> None:
    assert metadata_matches(value, wanted) is matches


async def test_filtered_pages_are_full_and_every_job_is_on_one_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_listing, "SCAN_CHUNK", 3)
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        wanted = []
        for i in range(24):
            job_id = await submit(client, i, {"team": "a" if i % 4 == 0 else "b"})
            if i % 4 == 0:
                wanted.append(job_id)
        pages = await every_page(client, {"metadata[team]": "a", "limit": 2})
        assert [len(p) for p in pages] == [2, 2, 2]
        assert [i for p in pages for i in p] == wanted[::-1]


async def test_a_short_page_past_the_scan_budget_keeps_its_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_listing, "SCAN_BUDGET", 4)
    monkeypatch.setattr(job_listing, "SCAN_CHUNK", 2)
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        first = await submit(client, 0, {"team": "a"})
        for i in range(1, 20):
            await submit(client, i, {"team": "b"})
        pages = await every_page(client, {"metadata[team]": "a", "limit": 1})
        assert len(pages) > 1 and pages[-1] == [first]
        assert [i for p in pages for i in p] == [first]


async def test_a_queued_filter_shows_full_pages_of_queued_jobs(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        ids = [await submit(client, i, {}) for i in range(6)]
        for _ in ids:
            await ctx.store.claim("w", 30)
        for i in (1, 3, 4, 5):  # started by ComfyUI: running; 0 and 2 held in its queue
            placed = await ctx.store.record_placement(
                ids[i], "w", backend="b", prompt_id=f"p{i}", execution_started_at=time.time()
            )
            assert placed
        ids.append(await submit(client, 6, {}))
        pages = await every_page(client, {"status": "queued", "limit": 2})
        assert pages == [[ids[6], ids[2]], [ids[0]]]


async def test_a_cursor_continues_only_its_own_listing(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        for i in range(4):
            await submit(client, i, {"team": "a"})
        r = await client.get("/api/v2/jobs", params={"status": "queued", "limit": 1})
        cursor = r.json()["next_cursor"]
        assert cursor
        same = await client.get(
            "/api/v2/jobs", params={"status": "queued", "limit": 1, "cursor": cursor}
        )
        assert same.status_code == 200
        # the same filters written otherwise: the same listing
        again = await client.get(f"/api/v2/jobs?status=queued,queued&limit=3&cursor={cursor}")
        assert again.status_code == 200, again.text
        for other in (
            {},
            {"status": "succeeded"},
            {"status": "queued,running"},
            {"status": "queued", "metadata[team]": "a"},
        ):
            r = await client.get("/api/v2/jobs", params={**other, "cursor": cursor})
            assert r.status_code == 400, (other, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_request"
            assert error["details"]["reason"] == "cursor_filters_differ"
        plain = (await client.get("/api/v2/jobs", params={"limit": 1})).json()["next_cursor"]
        r = await client.get("/api/v2/jobs", params={"status": "queued", "cursor": plain})
        assert r.status_code == 400


async def test_a_batch_cursor_and_a_jobs_cursor_do_not_cross(tmp_path: Path) -> None:
    from comfyrun.api.cursors import bind, unbind
    from comfyrun.errors import InvalidRequest

    assert unbind(bind("abc", "batch:1"), "batch:1") == "abc"
    for scope in ("batch:2", '{"status":null,"metadata":[]}'):
        with pytest.raises(InvalidRequest):
            unbind(bind("abc", "batch:1"), scope)
    with pytest.raises(InvalidRequest):
        unbind("abc", "batch:1")  # no tag at all


async def test_get_with_wait_holds_until_the_job_ends(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        job_id = await submit(client, 0, {})

        async def end_soon() -> None:
            await asyncio.sleep(0.3)
            await ctx.service.cancel(job_id)

        ending = asyncio.create_task(end_soon())
        started = time.monotonic()
        r = await client.get(f"/api/v2/jobs/{job_id}", params={"wait": 10})
        await ending
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "canceled"
        assert 0.2 < time.monotonic() - started < 5
        # past its wait, the job as it is; a job never there: 404 at once
        other = await submit(client, 1, {})
        started = time.monotonic()
        r = await client.get(f"/api/v2/jobs/{other}", params={"wait": 0.2})
        assert r.status_code == 200 and r.json()["status"] == "queued"
        assert r.json()["queue_position"] == 0
        r = await client.get("/api/v2/jobs/nope", params={"wait": 5})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert time.monotonic() - started < 3
        r = await client.get(f"/api/v2/jobs/{other}", params={"wait": -1})
        assert r.status_code == 422
