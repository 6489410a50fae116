"""ComfyUI's own editor, in a real Chromium, in front of a fleet of two emulator backends:

- it loads with no failed request except those real ComfyUI also answers with 404;
- an API-format prompt loaded with the editor's `app.loadApiJson` and queued with
  `app.queuePrompt` runs on the fleet: progress and previews arrive live, its image shows;
- 8 prompts queued from the editor run on both backends, and its queue panel shows them;
- a reload mid-run still shows the running job, and the editor's cancel button cancels it;
- with API keys on, the key page lets the editor in as one key, which sees only its own jobs
  and saves its workflows among its own files.

The tests share one browser and one fleet (module scope); screenshots of each state go to
each test's tmp dir and .shots/editor/ (see conftest).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.editor.conftest import Editor, Fleet, editor_for, first_visit, running_fleet
from tests.support.emulator import text_to_image_workflow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),
]

SAVE_NODE = 7  # text_to_image_workflow's SaveImage
SAMPLER_NODE = 5
ADMIN = "editor-admin"


def job_workflow(steps: int, seed: int = 1, size: int = 256) -> dict[str, Any]:
    return text_to_image_workflow(seed=seed, steps=steps, size=size, prefix="editor")


async def wait_http(check: Any, timeout_s: float = 60.0) -> Any:
    """Poll an async `check` until it returns something truthy (the server has no event for
    "both backends are busy")."""
    async with asyncio.timeout(timeout_s):
        while True:
            if value := await check():
                return value
            await asyncio.sleep(0.05)


async def open_queue_panel(editor: Editor) -> None:
    await editor.page.get_by_role("button", name="Queue (q)").click()
    await editor.wait(
        "!!document.querySelector('.queue-sidebar, [class*=queue] .p-virtualscroller, .sidebar-content-container')"
    )


async def test_the_editor_loads_with_only_comfyuis_own_404s(
    fleet: Fleet, editor_page: Any, tmp_path: Path
) -> None:
    await first_visit(fleet, first=True)
    editor = editor_for(editor_page, fleet.url, tmp_path, "test_1_loads")
    await editor.open()
    # a new user: the templates dialog, its thumbnails from comfyui-workflow-templates
    # (fetched from /templates/, shown as blobs)
    await editor.wait(
        "[...document.querySelectorAll('.p-dialog img')].filter(i => i.complete"
        " && i.naturalWidth > 0 && i.src.startsWith('blob:')).length >= 2"
    )
    # node definitions are the fleet's (from the store)
    node_types = await editor.page.evaluate("Object.keys(LiteGraph.registered_node_types)")
    assert {"KSampler", "SaveImage", "CheckpointLoaderSimple"} <= set(node_types)
    await editor.shot("1-first-visit-templates")
    # a template opens from the package's own file; its fp16 checkpoint is on no backend,
    # which the editor says as it would for a ComfyUI without it
    await editor.page.get_by_text("Image Generation", exact=True).first.click()
    await editor.wait("document.body.textContent.includes('Missing Models')")
    types = await editor.page.evaluate("window.app.graph.nodes.map(n => n.type)")
    assert "KSampler" in types
    await editor.shot("2-template-opened-missing-model")
    await editor.page.keyboard.press("Escape")
    await editor.wait("!document.querySelector('.p-dialog')")
    await editor.shot("3-template-graph")
    # the settings the editor saved are on the server, under ComfyUI's default user
    async with fleet.client() as http:

        async def installed_version() -> Any:
            return (await http.get("/api/settings")).json().get("Comfy.InstalledVersion")

        assert await wait_http(installed_version) == "1.27.10"
    assert editor.unexpected_failures() == []
    asked = {f[1].split("&")[0] for f in editor.failures}
    assert {"/api/userdata/user.css", "/api/userdata?dir=workflows"} <= asked


async def test_an_api_prompt_runs_on_the_fleet_and_its_image_shows(
    fleet: Fleet, editor_page: Any, tmp_path: Path
) -> None:
    await first_visit(fleet, first=False)
    before = await fleet.runs_per_backend()
    editor = editor_for(editor_page, fleet.url, tmp_path, "test_2_run")
    await editor.open()
    await editor.load_api_json(job_workflow(steps=30))
    await editor.fit_view()
    await editor.queue()
    # live: sampler steps and latent previews reach the editor while the prompt runs
    await editor.wait("window.__seen.progress >= 10 && window.__seen.previews >= 1")
    await editor.shot("1-running-progress-preview")
    width = await editor.wait(
        f"window.app.graph.getNodeById({SAVE_NODE})?.imgs?.[0]?.naturalWidth", timeout_s=60
    )
    assert width == 256
    src = await editor.page.evaluate(f"window.app.graph.getNodeById({SAVE_NODE}).imgs[0].src")
    assert "/api/view?" in src and "type=output" in src
    await editor.shot("2-image-shown")
    seen = await editor.seen()
    [prompt_id] = set(seen["prompts"]["execution_success"])
    async with fleet.client() as http:
        job = (await http.get(f"/api/v2/jobs/{prompt_id}")).json()
    assert job["status"] == "succeeded"
    after = await fleet.runs_per_backend()
    assert sum(after.values()) - sum(before.values()) == 1
    assert editor.unexpected_failures() == []


async def test_eight_prompts_from_the_editor_spread_over_both_backends(
    fleet: Fleet, editor_page: Any, tmp_path: Path
) -> None:
    await first_visit(fleet, first=False)
    before = await fleet.runs_per_backend()
    editor = editor_for(editor_page, fleet.url, tmp_path, "test_3_eight")
    await editor.open()
    # 3 s a job: the browser has queued the next before one ends, so an idle backend is
    # there to take it (quicker jobs that ran one at a time could all stay on the backend
    # that holds their checkpoint, as model-aware routing wants)
    await editor.load_api_json(job_workflow(steps=60, size=128))
    await editor.fit_view()
    await editor.queue(batch_count=8)  # the seed widget randomizes after each: 8 prompts

    async with fleet.client() as http:

        async def busy() -> bool:
            queue = (await http.get("/api/queue")).json()
            return len(queue["queue_running"]) >= 1

        # for the screenshot only: how many run at once depends on how fast the browser
        # queues (on a loaded machine a job may end before the next one is queued); the spread
        # over both backends is asserted from the backends' own histories below
        await wait_http(busy)
    await open_queue_panel(editor)
    await editor.shot("1-queue-panel-running")
    await editor.wait(
        "new Set(window.__seen.prompts.execution_success || []).size === 8", timeout_s=90
    )
    await editor.wait(f"window.app.graph.getNodeById({SAVE_NODE})?.imgs?.[0]?.naturalWidth")
    await editor.shot("2-queue-panel-eight-done")
    after = await fleet.runs_per_backend()
    ran = {name: after[name] - before[name] for name in after}
    assert sum(ran.values()) == 8 and all(n > 0 for n in ran.values()), ran
    async with fleet.client() as http:
        history = (await http.get("/api/history")).json()
    seen = await editor.seen()
    assert set(seen["prompts"]["execution_success"]) <= set(history)
    assert editor.unexpected_failures() == []


async def test_a_reload_mid_run_shows_the_job_and_cancel_cancels_it(
    fleet: Fleet, editor_page: Any, tmp_path: Path
) -> None:
    await first_visit(fleet, first=False)
    editor = editor_for(editor_page, fleet.url, tmp_path, "test_4_cancel")
    await editor.open()
    await editor.load_api_json(job_workflow(steps=1000))  # 50 s unless canceled
    await editor.fit_view()
    await editor.queue()
    await editor.wait("window.__seen.progress >= 3")
    [prompt_id] = set((await editor.seen())["prompts"]["progress"])
    await editor.shot("1-running")

    await editor.page.reload()
    await editor.ready()
    # the same tab (its clientId) follows the running prompt again: its node and progress
    await editor.wait(
        f"String(window.app.runningNodeId) === '{SAMPLER_NODE}' && window.__seen.progress > 3"
    )
    assert set((await editor.seen())["prompts"]["progress"]) == {prompt_id}
    await editor.fit_view()
    await editor.shot("2-after-reload-still-running")

    await editor.page.get_by_role("button", name="Cancel current run").click()
    await editor.wait("(window.__seen.count.execution_interrupted || 0) >= 1")
    async with fleet.client() as http:
        job = (await http.get(f"/api/v2/jobs/{prompt_id}")).json()
        entry = (await http.get(f"/api/history/{prompt_id}")).json()[prompt_id]
    assert job["status"] == "canceled"
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    await editor.wait("window.app.runningNodeId == null")
    await editor.shot("3-canceled")
    assert editor.unexpected_failures() == []


async def mint(http: httpx.AsyncClient, name: str) -> str:
    answer = await http.post(
        "/api/v2/admin/keys",
        json={"name": name, "scopes": ["read", "submit"]},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


async def test_with_api_keys_the_editor_asks_once_and_shows_only_its_keys_jobs(
    editor_page: Any, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path, api_keys=[ADMIN]) as fleet:
        async with fleet.client() as http:
            alice, bob = await mint(http, "alice"), await mint(http, "bob")
        async with fleet.client(bob) as http:
            theirs = await http.post("/api/prompt", json={"prompt": job_workflow(steps=2)})
            assert theirs.status_code == 200, theirs.text
        await first_visit(fleet, first=False, key=alice)

        editor = editor_for(editor_page, fleet.url, tmp_path, "test_5_keys")
        await editor.page.goto(fleet.url + "/")
        assert editor.page.url == f"{fleet.url}/editor/key"
        await editor.shot("1-key-page")
        await editor.page.fill("#key", "crk_not-a-key")
        await editor.page.click("button[type=submit]")
        await editor.page.get_by_role("alert").wait_for()
        await editor.shot("2-wrong-key")
        assert editor.failures == [("POST", "/editor/key", 401)]
        editor.failures.clear()
        await editor.page.fill("#key", alice)
        await editor.page.click("button[type=submit]")
        await editor.ready()  # its routes and /ws answer through the cookie
        assert editor.page.url == f"{fleet.url}/"

        await editor.load_api_json(job_workflow(steps=10))
        await editor.fit_view()
        await editor.queue()
        await editor.wait(
            f"window.app.graph.getNodeById({SAVE_NODE})?.imgs?.[0]?.naturalWidth", timeout_s=60
        )
        [mine] = set((await editor.seen())["prompts"]["execution_success"])
        # the editor's own view of the history and queue: alice's prompt, never bob's
        history = await editor.page.evaluate("fetch('/api/history').then(r => r.json())")
        assert list(history) == [mine]
        assert theirs.json()["prompt_id"] not in history
        await open_queue_panel(editor)
        await editor.wait("document.querySelectorAll('.task-item').length === 1")
        await editor.shot("3-own-job-only")

        # Ctrl+S saves the workflow among alice's files on the server
        await editor.page.locator("#graph-canvas").click(position={"x": 700, "y": 150})
        await editor.page.keyboard.press("Control+s")
        name_box = editor.page.locator(".p-dialog input")
        await name_box.wait_for()
        await name_box.fill("cat by alice")
        await editor.shot("4-save-workflow")
        await name_box.press("Enter")
        async with fleet.client(alice) as http:

            async def saved() -> list[str]:
                listing = await http.get("/api/userdata", params={"dir": "workflows"})
                return listing.json() if listing.status_code == 200 else []

            assert await wait_http(saved) == ["cat by alice.json"]
        async with fleet.client(bob) as http:
            theirs_listing = await http.get("/api/userdata", params={"dir": "workflows"})
        assert theirs_listing.status_code == 404  # bob has saved nothing
        assert editor.unexpected_failures() == []
