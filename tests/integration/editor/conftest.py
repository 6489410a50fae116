"""ComfyUI's own web editor in Debian's Chromium, driven by Playwright (the system browser through
`executable_path`: nothing is downloaded), against comfyrun in front of a fleet of two emulator
backends. Tests skip without Chromium or Playwright.

Every state a test shows is saved as a screenshot in the test's tmp dir and copied to
.shots/editor/ at the top of the checkout (gitignored; emptied once a run, before the pytest processes start).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from tests.support.api import memory_settings, wait_until_ready
from tests.support.emulator import running_emulator

from comfyrun.cli.server import running_server
from comfyrun.config import BackendConfig

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
SHOTS = Path(__file__).resolve().parents[3] / ".shots" / "editor"
#: How often a wait looks at the page (not every frame: that slows the page it waits on).
POLL_MS = 50
#: Seconds per sampler step in the emulators: long enough to watch a run, short for the suite.
STEP_S = 0.05

#: The requests real ComfyUI 0.3.64 also answers with 404 on a fresh user: the user stylesheet
#: (at both places the frontend looks) and userdata that does not exist yet (the workflow and
#: subgraph folders, the saved templates file).
EXPECTED_404 = (
    "/user.css",
    "/api/userdata/user.css",
    "/api/userdata/comfy.templates.json",
    "/api/userdata?dir=workflows&",
    "/api/userdata?dir=subgraphs%2F&",
)

#: Counts the api's events in the page (and the prompt ids they name), for tests to wait on.
WATCH_EVENTS = """
(() => {
  if (window.__seen) return;
  window.__seen = {count: {}, prompts: {}, progress: 0, previews: 0};
  const kinds = ['execution_start', 'executing', 'executed', 'execution_success',
                 'execution_interrupted', 'execution_error', 'progress', 'status'];
  for (const kind of kinds) {
    window.app.api.addEventListener(kind, (e) => {
      const seen = window.__seen;
      seen.count[kind] = (seen.count[kind] || 0) + 1;
      const id = e.detail && e.detail.prompt_id;
      if (id) (seen.prompts[kind] = seen.prompts[kind] || []).push(id);
      if (kind === 'progress') seen.progress = e.detail.value;
    });
  }
  for (const kind of ['b_preview', 'b_preview_with_metadata']) {
    window.app.api.addEventListener(kind, () => { window.__seen.previews += 1; });
  }
})()
"""


def find_chromium() -> str | None:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Fleet:
    url: str
    backends: dict[str, str]  # name -> emulator URL

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def runs_per_backend(self) -> dict[str, int]:
        """How many prompts each emulator ran (its own /history)."""
        async with httpx.AsyncClient(timeout=30) as http:
            return {
                name: len((await http.get(f"{url}/history")).json())
                for name, url in self.backends.items()
            }


@asynccontextmanager
async def running_fleet(tmp_path: Path, *, api_keys: Sequence[str] = ()) -> AsyncIterator[Fleet]:
    """comfyrun with two emulator backends that send latent previews."""
    async with contextlib.AsyncExitStack() as stack:
        backends = {}
        for name in ("gpu-a", "gpu-b"):
            emu = await stack.enter_async_context(
                running_emulator(tmp_path / name, step_time_s=STEP_S, preview_method="latent2rgb")
            )
            backends[name] = str(emu.url).rstrip("/")
        settings = memory_settings(
            tmp_path / "comfyrun",
            port=0,
            api_keys=list(api_keys),
            backends=[BackendConfig(name=n, url=u) for n, u in backends.items()],
            output_url=(tmp_path / "outputs").as_uri(),
        )
        url = await stack.enter_async_context(running_server(settings))
        await wait_until_ready(url)
        yield Fleet(url, backends)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    """One fleet (without API keys) for the module's tests."""
    async with running_fleet(tmp_path_factory.mktemp("fleet")) as running:
        yield running


@pytest.fixture(scope="session")
def shots_dir() -> Path:
    """.shots/editor: the last run's screenshots (emptied once a run, by tests/conftest.py)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@dataclass
class Editor:
    """One tab on the editor, with what it asked the server and what failed."""

    page: Any  # playwright Page
    base_url: str
    shots: Path
    copies: Path
    prefix: str
    failures: list[tuple[str, str, Any]] = field(default_factory=list)

    def _path(self, url: str) -> str | None:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.base_url:
            return None
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def watch(self) -> None:
        answered: set[int] = set()

        def on_response(response: Any) -> None:
            answered.add(id(response.request))
            path = self._path(response.url)
            if path is not None and response.status >= 400:
                self.failures.append((response.request.method, path, response.status))

        def on_failed(request: Any) -> None:
            # Chromium reports an unread empty 200 body as aborted: it did get its answer
            path = self._path(request.url)
            if path is not None and id(request) not in answered:
                self.failures.append((request.method, path, request.failure))

        self.page.on("response", on_response)
        self.page.on("requestfailed", on_failed)

    def unexpected_failures(self) -> list[tuple[str, str, Any]]:
        return [
            f
            for f in self.failures
            if not (f[0] == "GET" and f[2] == 404 and f[1].startswith(EXPECTED_404))
        ]

    async def open(self, path: str = "/") -> None:
        await self.page.goto(self.base_url + path)
        await self.ready()

    async def ready(self) -> None:
        """The app is set up, its node definitions loaded and its socket open."""
        await self.page.wait_for_function(
            "window.app?.graph && window.app.canvas && window.LiteGraph?.registered_node_types"
            "?.KSampler && window.app.api.socket?.readyState === 1",
            timeout=60_000,
            polling=POLL_MS,
        )
        await self.page.evaluate(WATCH_EVENTS)

    async def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path))
        # (made again: another pytest run in this checkout empties .shots as it starts)
        self.copies.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.copies / f"{self.prefix}-{name}.png")
        return path

    async def load_api_json(self, workflow: dict[str, Any], name: str = "api.json") -> None:
        """Through the editor's own loader, as dropping an API-format file does."""
        await self.page.evaluate(
            "([wf, name]) => window.app.loadApiJson(wf, name)", [workflow, name]
        )

    async def queue(self, batch_count: int = 1) -> None:
        """The editor's Run: `app.queuePrompt`, `batch_count` prompts."""
        await self.page.evaluate("n => window.app.queuePrompt(0, n)", batch_count)

    async def seen(self) -> dict[str, Any]:
        value: dict[str, Any] = await self.page.evaluate("window.__seen")
        return value

    async def wait(self, expression: str, timeout_s: float = 60.0) -> Any:
        handle = await self.page.wait_for_function(
            expression, timeout=timeout_s * 1000, polling=POLL_MS
        )
        return await handle.json_value()

    async def fit_view(self) -> None:
        await self.page.get_by_role("button", name="Fit View (.)").click()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser_context() -> AsyncIterator[Any]:
    """One Chromium for the module, its HTTP cache shared by the tests' pages (the editor is
    some 400 files); other hosts do not resolve (the editor asks comfy.org for release notes,
    and these tests reach only this machine)."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=exe,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            yield await browser.new_context(viewport={"width": 1400, "height": 900})
        finally:
            await browser.close()


#: A new tab starts as a new browser would: the editor's local storage (open workflows) is
#: cleared on its first load, not on a reload.
FRESH_TAB = """
if (!sessionStorage.getItem('__fresh')) { localStorage.clear(); sessionStorage.setItem('__fresh', '1'); }
"""


@pytest_asyncio.fixture(loop_scope="module")
async def editor_page(browser_context: Any, shots_dir: Path) -> AsyncIterator[Any]:
    page = await browser_context.new_page()
    await page.add_init_script(FRESH_TAB)
    try:
        yield page
    finally:
        await page.close()


def editor_for(page: Any, url: str, tmp_path: Path, test_name: str) -> Editor:
    shots = tmp_path / "shots"
    shots.mkdir(exist_ok=True)
    editor = Editor(page, url, shots, SHOTS, test_name.removeprefix("test_"))
    editor.watch()
    return editor


async def first_visit(fleet: Fleet, first: bool, key: str | None = None) -> None:
    """Settings saved on the server: a new user (the editor opens its templates) or a
    returning one (no dialog)."""
    async with fleet.client(key) as http:
        answer = await http.post(
            "/api/settings", content=json.dumps({"Comfy.TutorialCompleted": not first})
        )
        assert answer.status_code == 200, answer.text


__all__ = [
    "EXPECTED_404",
    "Editor",
    "Fleet",
    "editor_for",
    "find_chromium",
    "first_visit",
    "running_fleet",
]
