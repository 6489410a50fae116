"""The dashboard in a real (headless) Chromium against a live server with an emulator backend
and a bearer token: the page asks for the token, then shows stats, backends and jobs, and
follows a job over its event stream to its image output. Skips without Chromium."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tests.integration.dashboard.conftest import Page
from tests.support.api import memory_settings, wait_until_ready
from tests.support.emulator import image_workflow, text_to_image_workflow

from comfyrun.cli.server import running_server

TOKEN = "dash-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.slow

# Records every status the detail panel shows, so a test can see it change live.
WATCH_DETAIL = """
window.__seen = [];
new MutationObserver(() => {
  const b = document.querySelector('#detail .detail-head .badge');
  const s = b && b.textContent;
  if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
}).observe(document.getElementById('detail'), {subtree: true, childList: true});
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    settings = memory_settings(
        tmp_path,
        port=0,
        emulators=1,
        emulator_mode="inprocess",
        emulator_step_time_s=0.05,
        api_keys=[TOKEN],
        output_url=(tmp_path / "outputs").as_uri(),
    )
    async with running_server(settings) as url:
        await wait_until_ready(url)
        yield url


async def test_token_prompt_then_live_job_with_thumbnail(server: str, browser: Page) -> None:
    await browser.goto(f"{server}/dashboard")
    # no token yet: the API answers 401 and the page asks for one
    await browser.wait_for("document.getElementById('token-dialog').open")
    await browser.wait_for("document.getElementById('conn').textContent.includes('token')")

    await browser.eval(f"localStorage.setItem('comfyrun.token', {json.dumps(TOKEN)})")
    async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as http:
        done = await http.post(
            "/api/v2/jobs", params={"wait": 30}, json={"workflow": image_workflow(prefix="d")}
        )
        assert done.json()["status"] == "succeeded"
        slow = await http.post(
            "/api/v2/jobs", json={"workflow": text_to_image_workflow(steps=30, prefix="live")}
        )
        job_id = slow.json()["id"]

    await browser.goto("about:blank")  # a fresh document, not a same-page hash change
    await browser.goto(f"{server}/dashboard#job={job_id}")
    await browser.eval(WATCH_DETAIL)
    # the polled parts: counts, the backend, both jobs in the list
    await browser.wait_for(
        "document.querySelectorAll('#jobs tbody tr td code').length === 2"
        " && document.querySelector('#backends tbody').textContent.includes('emulator-1')"
    )
    cards = await browser.eval(
        "Object.fromEntries([...document.querySelectorAll('#stats .card')]"
        ".map(c => [c.querySelector('.k').textContent, c.querySelector('.n').textContent]))"
    )
    assert set(cards) >= {"queue depth", "oldest queued", "succeeded", "running", "failed"}
    types = await browser.eval(
        "[...document.querySelectorAll('#jobs tbody td.type')].map(c => c.textContent)"
    )
    assert types == ["comfy", "comfy"]
    assert not await browser.eval("document.getElementById('token-dialog').open")

    # the followed job reaches succeeded through its event stream and shows its image
    await browser.wait_for(
        "document.querySelector('#detail .detail-head .badge')?.textContent === 'succeeded'",
        timeout=60,
    )
    width = await browser.wait_for(
        "document.querySelector('#detail .outputs img')?.naturalWidth", timeout=30
    )
    assert width == 64
    src = await browser.eval("document.querySelector('#detail .outputs img').src")
    assert src.startswith("blob:")  # fetched with the token, not a bare <img src>
    seen = await browser.eval("window.__seen")
    assert seen[-1] == "succeeded" and len(seen) >= 2, seen  # it changed while watched
    assert job_id in await browser.eval("document.getElementById('detail').textContent")
    log = await browser.eval("document.getElementById('detail-log').textContent")
    assert "submitted to backend emulator-1" in log  # the job's log, replayed from its start


async def test_status_filter_and_cancel(server: str, browser: Page) -> None:
    async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as http:
        await http.post(
            "/api/v2/jobs", params={"wait": 30}, json={"workflow": image_workflow(prefix="f")}
        )
        long = await http.post(
            "/api/v2/jobs", json={"workflow": text_to_image_workflow(steps=400, prefix="long")}
        )
        job_id = long.json()["id"]
    await browser.goto(f"{server}/dashboard")
    await browser.eval(f"localStorage.setItem('comfyrun.token', {json.dumps(TOKEN)})")
    await browser.goto("about:blank")
    await browser.goto(f"{server}/dashboard")
    await browser.wait_for("document.querySelectorAll('#jobs tbody tr td code').length === 2")

    # the "succeeded" chip narrows the list to the finished job
    await browser.eval(
        "[...document.querySelectorAll('#filters button')]"
        ".find(b => b.textContent === 'succeeded').click()"
    )
    await browser.wait_for(
        "[...document.querySelectorAll('#jobs tbody .badge')].map(b => b.textContent)"
        ".join() === 'succeeded'"
    )

    # open the long job by id and cancel it from its detail panel
    await browser.eval("window.confirm = () => true")
    await browser.eval(
        f"document.getElementById('open-job-id').value = {json.dumps(job_id)};"
        "document.getElementById('open-job').requestSubmit()"
    )
    await browser.wait_for("!!document.querySelector('#detail button.danger')")
    await browser.eval("document.querySelector('#detail button.danger').click()")
    await browser.wait_for(
        "['canceling', 'canceled'].includes("
        "document.querySelector('#detail .detail-head .badge')?.textContent)"
    )
    async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as http:
        status = (await http.get(f"/api/v2/jobs/{job_id}")).json()["status"]
    assert status in ("canceling", "canceled")


async def test_a_failed_job_shows_its_error(server: str, browser: Page) -> None:
    async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as http:
        bad = text_to_image_workflow(ckpt_name="broken_for_test.safetensors")  # fails at run time
        r = await http.post("/api/v2/jobs", params={"wait": 30}, json={"workflow": bad})
        failed = r.json()
    assert failed["status"] == "failed"
    await browser.goto(f"{server}/dashboard")
    await browser.eval(f"localStorage.setItem('comfyrun.token', {json.dumps(TOKEN)})")
    await browser.goto("about:blank")
    await browser.goto(f"{server}/dashboard#job={failed['id']}")
    box = await browser.wait_for("document.querySelector('#detail .error-box')?.textContent")
    assert failed["error"]["code"] in box and failed["error"]["message"] in box
    assert not await browser.eval("!!document.querySelector('#detail button.danger')")


async def test_a_job_of_another_type_shows_its_type(server: str, browser: Page) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    body = {
        "type": "image",
        "params": {"format": "webp"},
        "inputs": [{"name": "in.png", "data": base64.b64encode(buffer.getvalue()).decode()}],
    }
    async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as http:
        done = (await http.post("/api/v2/jobs", params={"wait": 30}, json=body)).json()
    assert done["status"] == "succeeded", done
    await browser.goto(f"{server}/dashboard")
    await browser.eval(f"localStorage.setItem('comfyrun.token', {json.dumps(TOKEN)})")
    await browser.goto("about:blank")
    await browser.goto(f"{server}/dashboard#job={done['id']}")
    cell = await browser.wait_for("document.querySelector('#jobs tbody td.type')?.textContent")
    assert cell == "image"
    assert await browser.wait_for(  # the detail's facts: "type" then "image"
        "document.getElementById('detail').textContent.replace(/\\s/g, '').includes('typeimage')"
    )


async def test_paging_through_the_job_list(server: str, browser: Page) -> None:
    async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as http:
        ids = [
            (
                await http.post("/api/v2/jobs", json={"workflow": image_workflow(prefix=f"p{i}")})
            ).json()["id"][:12]
            for i in range(27)
        ]
    await browser.goto(f"{server}/dashboard")
    await browser.eval(f"localStorage.setItem('comfyrun.token', {json.dumps(TOKEN)})")
    await browser.goto("about:blank")
    await browser.goto(f"{server}/dashboard")
    shown = "[...document.querySelectorAll('#jobs tbody td code')].map(c => c.textContent)"
    await browser.wait_for(f"{shown}.length === 25")
    first = await browser.eval(shown)
    assert first == ids[::-1][:25]  # newest first
    assert await browser.eval("document.getElementById('prev').disabled")

    await browser.eval("document.getElementById('next').click()")
    await browser.wait_for("document.getElementById('page').textContent === 'page 2'")
    assert await browser.wait_for(f"{shown}.length === 2 && {shown}") == ids[1::-1]
    assert await browser.eval("document.getElementById('next').disabled")

    await browser.eval("document.getElementById('prev').click()")
    await browser.wait_for(f"{shown}.length === 25")
    assert await browser.eval(shown) == first
