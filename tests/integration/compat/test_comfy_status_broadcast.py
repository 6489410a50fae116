"""ComfyUI's `status` broadcast, over the wire: every open /ws hears the queue's new size
whenever it changes (server.py's queue_updated, from PromptQueue.put, get and task_done), not
only the socket of the prompt that changed it: when a prompt is queued, starts and ends,
whichever dialect queued it, and whichever API node it was posted to or run by. The editor's
queue counter in every browser tab relies on it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from tests.integration.compat.conftest import Server, dialect_settings, serving, start_nodes
from tests.support.api import ServerProcess, wait_until_ready
from tests.support.comfy import until_prompt_ends
from tests.support.emulator import running_emulator, text_to_image_workflow
from tests.support.store import store_url

pytestmark = [pytest.mark.timeout(120)]

JSON = dict[str, Any]


class Tab:
    """An open /ws (an editor's browser tab): the queue sizes it heard, in order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sizes: list[int] = []
        self.messages: list[JSON] = []

    async def hear(self, wanted: int, timeout: float = 10.0) -> None:
        """Read until a `status` with `wanted` as the queue's size."""
        async with asyncio.timeout(timeout):
            while not self.sizes or self.sizes[-1] != wanted:
                raw = await self.ws.recv()
                if isinstance(raw, bytes):
                    continue
                message = json.loads(raw)
                self.messages.append(message)
                if message["type"] == "status":
                    self.sizes.append(message["data"]["status"]["exec_info"]["queue_remaining"])

    async def quiet(self, for_s: float = 0.3) -> list[int]:
        """The sizes heard until nothing came for `for_s`."""
        heard: list[int] = []
        while True:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), for_s)
            except TimeoutError:
                return heard
            if isinstance(raw, str) and (message := json.loads(raw))["type"] == "status":
                heard.append(message["data"]["status"]["exec_info"]["queue_remaining"])


@asynccontextmanager
async def tab(url: str, client_id: str | None = None) -> AsyncIterator[Tab]:
    host = url.removeprefix("http://")
    cid = client_id or uuid.uuid4().hex
    async with websockets.connect(f"ws://{host}/ws?clientId={cid}", max_size=None) as ws:
        opened = Tab(ws)
        await opened.hear(0)  # the greeting: nothing queued
        yield opened


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_another_tab_hears_the_queue_shrink_when_a_prompt_ends(
    tmp_path: Path, kind: str
) -> None:
    """A prompt of one tab (clientId) queued, run and ended: the other tab hears the queue
    grow and then shrink back to 0 (it kept showing "1 in queue" after the job had ended);
    the prompt's own tab hears each change once, as ComfyUI tells it (its queueing, its start
    just before execution_start, its end just before the closing `executing`)."""
    settings = dialect_settings(tmp_path, db_url=store_url(kind, tmp_path))
    async with serving(settings) as server:
        await server.wait_ready()
        await check_another_tab(server)


async def check_another_tab(server: Server) -> None:
    mine = uuid.uuid4().hex
    async with (
        tab(server.url, mine) as own,
        tab(server.url) as other,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
    ):
        body = {"prompt": text_to_image_workflow(seed=5, steps=3), "client_id": mine}
        answer = await http.post("/prompt", json=body)
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        heard = await until_prompt_ends(own.ws, prompt_id)
        await other.hear(1)
        await other.hear(0)  # the end, heard by a socket that did not post the prompt
        assert other.sizes[-1] == 0
        kinds = [m["type"] for m in heard]
        assert kinds[-2:] == ["status", "executing"], kinds
        assert heard[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
        # the own tab: one status when queued, one as it starts, one as it ends (ComfyUI's
        # three), none twice
        assert kinds.count("status") == 3, kinds
        assert kinds[kinds.index("execution_start") - 1] == "status", kinds
        assert await own.quiet() == []


async def test_a_v2_job_queued_and_ended_is_heard_by_an_open_socket(server: Server) -> None:
    """A job submitted through /api/v2/jobs counts in the queue the face reports: an open
    /ws hears it queued and ended (it heard neither)."""
    async with (
        tab(server.url) as editor,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
    ):
        workflow = {"workflow": text_to_image_workflow(seed=2, steps=3)}
        answer = await http.post("/api/v2/jobs", json=workflow)
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["id"]
        await editor.hear(1)
        await editor.hear(0, timeout=30)
        assert (await http.get(f"/api/v2/jobs/{job_id}")).json()["status"] == "succeeded"


async def test_a_prompt_deleted_from_the_queue_is_heard_by_every_socket(tmp_path: Path) -> None:
    """POST /queue {"delete": [id]} of a prompt still queued: every socket hears the queue
    shrink (ComfyUI's delete_queue_item tells them through the next change; here its end)."""
    settings = dialect_settings(tmp_path, emulators=1, emulator_step_time_s=0.2)
    async with serving(settings) as srv:
        await wait_until_ready(srv.url)
        mine = uuid.uuid4().hex
        async with (
            tab(srv.url, mine) as own,
            tab(srv.url) as other,
            httpx.AsyncClient(base_url=srv.url, timeout=30) as http,
        ):
            ids = []
            for seed in range(3):  # one backend: the first runs, the others wait
                body = {"prompt": text_to_image_workflow(seed=seed, steps=20), "client_id": mine}
                answer = await http.post("/prompt", json=body)
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["prompt_id"])
            await other.hear(3)
            answer = await http.post("/queue", json={"delete": [ids[2]]})
            assert answer.status_code == 200
            await other.hear(2)
            await http.post("/queue", json={"clear": True})
            await http.post("/interrupt", json={})
            await other.hear(0)
            await own.hear(0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "nodes",
    [{"a": "api", "b": "api", "w": "worker"}, {"a": "serve", "b": "serve"}],
    ids=["api-nodes", "serve-nodes"],
)
async def test_a_socket_on_one_api_node_hears_a_job_run_through_another_end(
    tmp_path: Path, pg_url: str, nodes: dict[str, str]
) -> None:
    """Two API nodes on PostgreSQL: a prompt posted to node A (and run by its worker, or by a
    worker elsewhere) is heard queued and ended by a socket on node B, through the store's
    notifications (B heard it queued, never ended: its tabs kept it in the queue)."""
    async with running_emulator(tmp_path / "backend", step_time_s=0.01) as emu:
        procs: list[ServerProcess] = []
        try:
            await start_nodes(procs, tmp_path, pg_url, emu.url, nodes)
            a, b = procs[0].url, procs[1].url
            async with tab(b) as editor, httpx.AsyncClient(timeout=30) as http:
                body = {"prompt": text_to_image_workflow(seed=9, steps=20)}
                answer = await http.post(f"{a}/prompt", json=body)
                assert answer.status_code == 200, answer.text
                prompt_id = answer.json()["prompt_id"]
                await editor.hear(1, timeout=30)
                await editor.hear(0, timeout=30)
                history = (await http.get(f"{b}/history/{prompt_id}")).json()
                assert history[prompt_id]["status"]["completed"] is True
                # and a v2 job through A: heard queued and ended on B
                workflow = text_to_image_workflow(seed=10, steps=20)
                answer = await http.post(f"{a}/api/v2/jobs", json={"workflow": workflow})
                assert answer.status_code == 201, answer.text
                await editor.hear(1, timeout=30)
                await editor.hear(0, timeout=30)
        finally:
            for proc in procs:
                proc.kill()
