"""A client written for ComfyUI, unchanged, against comfyrun with several emulated backends.

The client is written the way ComfyUI's own websocket example script is: open /ws with a
clientId, POST /prompt with that client_id, read messages until `executing` with node null for
its prompt_id, then GET /history/{id} and GET /view for each image (websockets + httpx).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from PIL import Image
from tests.integration.compat.conftest import Server, dialect_settings, serving
from tests.support.emulator import image_workflow, text_to_image_workflow

from comfyrun.service import TERMINAL_NAMES as ENDS

pytestmark = pytest.mark.timeout(120)


class ComfyExampleClient:
    """ComfyUI's websockets_api_example.py, async: queue a prompt, wait on the socket, fetch."""

    def __init__(self, server: Server, http: httpx.AsyncClient, prefix: str = "") -> None:
        self.server = server
        self.http = http
        self.prefix = prefix
        self.client_id = str(uuid.uuid4())
        self.messages: list[dict[str, Any]] = []
        self.binary: list[bytes] = []
        self.ws: Any = None

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[ComfyExampleClient]:
        host = self.server.url.removeprefix("http://")
        async with websockets.connect(
            f"ws://{host}{self.prefix}/ws?clientId={self.client_id}"
        ) as ws:
            self.ws = ws
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "status"
            assert first["data"]["sid"] == self.client_id
            yield self

    async def queue_prompt(self, prompt: dict[str, Any], **extra: Any) -> httpx.Response:
        body = {"prompt": prompt, "client_id": self.client_id, **extra}
        return await self.http.post(f"{self.prefix}/prompt", json=body)

    async def run_prompt(
        self, prompt: dict[str, Any], **extra: Any
    ) -> tuple[str, list[dict[str, Any]]]:
        """Queue `prompt` (it must be taken) and wait for its end: its id and its messages."""
        answer = await self.queue_prompt(prompt, **extra)
        assert answer.status_code == 200, answer.text
        prompt_id: str = answer.json()["prompt_id"]
        return prompt_id, await self.wait_done(prompt_id)

    async def wait_done(self, prompt_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Messages for this prompt (read so far or next) up to `executing` with node null."""

        def mine() -> list[dict[str, Any]]:
            return [m for m in self.messages if m["data"].get("prompt_id") == prompt_id]

        def done(messages: list[dict[str, Any]]) -> bool:
            return any(m["type"] == "executing" and m["data"]["node"] is None for m in messages)

        async with asyncio.timeout(timeout):
            while not done(mine()):
                raw = await self.ws.recv()
                if isinstance(raw, bytes):
                    self.binary.append(raw)
                else:
                    self.messages.append(json.loads(raw))
        return mine()

    async def history(self, prompt_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"{self.prefix}/history/{prompt_id}")
        assert answer.status_code == 200
        body: dict[str, dict[str, Any]] = answer.json()
        return body[prompt_id]

    async def images(self, prompt_id: str) -> list[tuple[dict[str, Any], bytes]]:
        entry = await self.history(prompt_id)
        found = []
        for node_output in entry["outputs"].values():
            for image in node_output.get("images", []):
                view = await self.http.get(f"{self.prefix}/view", params=image)
                assert view.status_code == 200, view.text
                found.append((image, view.content))
        return found


async def test_example_client_runs_prompts_on_several_backends(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            ids = []
            for color in (10, 20, 30, 40):
                answer = await client.queue_prompt(image_workflow(color, size=32))
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["node_errors"] == {} and isinstance(body["number"], int)
                ids.append(body["prompt_id"])
            for prompt_id in ids:
                mine = await client.wait_done(prompt_id)
                kinds = [m["type"] for m in mine]
                assert kinds[0] == "execution_start"
                assert "executed" in kinds
                assert kinds[-2:] == ["execution_success", "executing"]
            for prompt_id in ids:
                images = await client.images(prompt_id)
                assert len(images) == 1
                ref, data = images[0]
                assert ref["type"] == "output"
                assert ref["subfolder"] == f"{prompt_id}/3"
                with Image.open(io.BytesIO(data)) as img:
                    assert img.size == (32, 32)
            # the history lists them oldest first; max_items keeps the newest, offset counts
            # from the oldest
            assert list((await http.get("/history")).json()) == ids
            newest = await http.get("/history", params={"max_items": 2})
            assert list(newest.json()) == ids[2:]
            window = await http.get("/api/history", params={"max_items": 2, "offset": 1})
            assert list(window.json()) == ids[1:3]
            oldest = await http.get("/history", params={"max_items": 1, "offset": 0})
            assert list(oldest.json()) == ids[:1]  # as ComfyUI: an offset counts from the oldest
        # the work was spread over the pool
        backends = (await http.get("/api/v2/backends")).json()["backends"]
        assert sum(1 for b in backends if b["jobs_done"] > 0) >= 2


async def test_the_history_of_a_prompt_just_told_finished_is_not_read_again(
    server: Server,
) -> None:
    """The socket read the finished job to tell its end; the client's GET /history/{id} that
    follows is answered from it (the service keeps finished jobs a while), not from the store
    again, and answers the same."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            answer = await client.queue_prompt(image_workflow(7, size=32))
            prompt_id = answer.json()["prompt_id"]
            await client.wait_done(prompt_id)
            reads: list[str] = []
            store = server.ctx.store
            real_get = store.get

            async def counting_get(job_id: str) -> Any:
                reads.append(job_id)
                return await real_get(job_id)

            store.get = counting_get  # type: ignore[method-assign]
            try:
                entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
            finally:
                store.get = real_get  # type: ignore[method-assign]
            assert reads == []
            assert entry["status"]["status_str"] == "success"
            assert entry["outputs"]["3"]["images"][0]["subfolder"] == f"{prompt_id}/3"


@contextlib.contextmanager
def event_reads(store: Any, wait_for_event: Any, events_since: Any) -> Iterator[None]:
    """The store's two ways of reading a job's events replaced, for the block."""
    real = store.wait_for_event, store.events_since
    store.wait_for_event, store.events_since = wait_for_event, events_since
    try:
        yield
    finally:
        store.wait_for_event, store.events_since = real


@contextlib.contextmanager
def socket_reads(store: Any, hub: Any) -> Iterator[list[tuple[str, bool]]]:
    """The socket's own reads of a job's events during the block (not the store's inner
    re-reads of one wait), each with whether a run of this process relayed the job then."""
    real_wait, real_since = store.wait_for_event, store.events_since
    reads: list[tuple[str, bool]] = []

    def note(job_id: str) -> None:
        stack = traceback.extract_stack()
        if stack[-3].name == "events" and any(f.name == "_store_events" for f in stack):
            reads.append((job_id, hub.live(job_id)))

    async def wait_for_event(
        job_id: str, after_id: int, timeout: float, *, ending: bool = False, **_: Any
    ) -> list[Any]:
        note(job_id)
        return await real_wait(job_id, after_id, timeout, ending=ending)

    async def events_since(job_id: str, after_id: int = 0) -> list[Any]:
        note(job_id)
        return await real_since(job_id, after_id)

    with event_reads(store, wait_for_event, events_since):
        yield reads


async def one_prompt(
    server: Server, *, seed: int, timeout: float
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """One image prompt through ComfyUI's example client: its id, its messages, and every
    message the socket got."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            answer = await client.queue_prompt(image_workflow(seed, size=32))
            prompt_id = answer.json()["prompt_id"]
            mine = await client.wait_done(prompt_id, timeout=timeout)
            return prompt_id, mine, client.messages


async def test_the_end_of_a_prompt_run_in_this_process_comes_from_the_job_it_committed(
    server: Server,
) -> None:
    """A run of the socket's own process tells it the job it settled: the prompt's end (its
    executed naming comfyrun's stored file, execution_success, executing null) is sent
    without the job's terminal event read back from the store (here the store never hands
    that event to the socket)."""
    store = server.ctx.store
    real_wait, real_since = store.wait_for_event, store.events_since

    def unsettled(events: list[Any]) -> list[Any]:
        return [e for e in events if not (e.kind == "status" and e.data.get("status") in ENDS)]

    async def wait_for_event(
        job_id: str, after_id: int, timeout: float, *, ending: bool = False, **_: Any
    ) -> list[Any]:
        events = unsettled(await real_wait(job_id, after_id, timeout, ending=ending))
        if not events:
            await asyncio.sleep(timeout)
        return events

    async def events_since(job_id: str, after_id: int = 0) -> list[Any]:
        return unsettled(await real_since(job_id, after_id))

    with event_reads(store, wait_for_event, events_since):
        prompt_id, mine, seen = await one_prompt(server, seed=11, timeout=10)
    kinds = [m["type"] for m in mine]
    assert kinds[-3:] == ["executed", "execution_success", "executing"], kinds
    image = mine[-3]["data"]["output"]["images"][0]
    assert image["subfolder"] == f"{prompt_id}/3"
    # the queue's count that comes before the last message is without the prompt
    last_status = [m for m in seen if m["type"] == "status"][-1]
    assert last_status["data"]["status"]["exec_info"]["queue_remaining"] == 0


async def test_a_prompt_relayed_by_a_run_of_this_process_is_followed_without_store_reads(
    server: Server,
) -> None:
    """While a run of the socket's own process relays the prompt (its frames, then the job it
    settled, through the in-process hub), the socket does not read the job's events from the
    store at all (the run itself still watches them for a cancel)."""
    await server.set_faults({"delay_s": 0.3})  # the run is under way when the socket follows
    with socket_reads(server.ctx.store, server.ctx.extras["relay_hub"]) as reads:
        prompt_id, mine, _ = await one_prompt(server, seed=12, timeout=20)
    assert [m["type"] for m in mine][-2:] == ["execution_success", "executing"]
    assert [job_id for job_id, _ in reads if job_id == prompt_id] == []


async def test_a_queued_prompt_is_read_from_the_store_only_until_a_run_here_takes_it(
    server: Server,
) -> None:
    """A prompt that waits in comfyrun's queue (every backend busy) is followed through the
    store's events until a run of the socket's own process takes it up; from then on its
    frames and its end come through the hub, and the socket reads none of its events."""
    await server.set_faults({"delay_s": 0.3})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        # every backend's room taken (one running, one held in ComfyUI's queue each)
        for seed in range(2 * len(server.emulator_urls)):
            busy = await http.post("/prompt", json={"prompt": image_workflow(100 + seed)})
            assert busy.status_code == 200, busy.text
        with socket_reads(server.ctx.store, server.ctx.extras["relay_hub"]) as reads:
            prompt_id, mine, _ = await one_prompt(server, seed=13, timeout=30)
    assert [m["type"] for m in mine][-2:] == ["execution_success", "executing"]
    assert (prompt_id, False) in reads  # followed through the store while queued
    assert (prompt_id, True) not in reads, reads


async def test_progress_and_executing_messages_for_a_sampler(server: Server) -> None:
    await server.set_faults({"delay_s": 0.05})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http, prefix="/api")
        async with client.connected():
            prompt_id, mine = await client.run_prompt(
                text_to_image_workflow(seed=7, steps=6, size=32)
            )
            kinds = [m["type"] for m in mine]
            executing = [m["data"]["node"] for m in mine if m["type"] == "executing"]
            # relayed as the backend sent them: every node, every step (this used to be one
            # progress and only the nodes the throttled store events happened to catch)
            assert sorted(executing[:-1]) == ["1", "2", "3", "4", "5", "6", "7"], kinds
            assert executing[-1] is None
            steps = [m["data"]["value"] for m in mine if m["type"] == "progress"]
            assert steps == [1, 2, 3, 4, 5, 6]
            assert "progress_state" in kinds
            assert kinds.index("execution_start") < kinds.index("executing")
            images = await client.images(prompt_id)
            assert len(images) == 1


async def test_prompt_failing_validation_answers_like_comfyui(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        unknown = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
        answer = await http.post("/prompt", json={"prompt": unknown})
        assert answer.status_code == 400
        body = answer.json()
        assert body["error"]["type"] == "invalid_prompt"
        assert set(body["error"]) == {"type", "message", "details", "extra_info"}
        assert body["node_errors"] == {}

        missing = image_workflow()
        del missing["1"]["inputs"]["width"]
        answer = await http.post("/api/prompt", json={"prompt": missing})
        assert answer.status_code == 400
        body = answer.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert body["node_errors"]["1"]["class_type"] == "EmptyImage"
        assert body["node_errors"]["1"]["errors"][0]["type"] == "required_input_missing"

        answer = await http.post("/prompt", json={"client_id": "x"})
        assert answer.status_code == 400
        assert answer.json()["error"]["type"] == "no_prompt"
        answer = await http.post("/prompt", content=b"{not json")
        assert answer.status_code == 400
        # nothing was queued
        queue = (await http.get("/queue")).json()
        assert queue == {"queue_running": [], "queue_pending": []}


async def test_value_errors_are_the_very_400_a_comfyui_backend_gives(server: Server) -> None:
    """Bad values (a range, a combo list, a wrong link type) are refused at submission with the
    same body the backend itself answers, not accepted and failed later."""
    bad = image_workflow()
    bad["1"]["inputs"]["width"] = 0
    bad["2"]["inputs"]["images"] = ["1", 5]
    models = text_to_image_workflow(ckpt_name="no-such-model.safetensors")
    async with httpx.AsyncClient(timeout=30) as http:
        for prompt in (bad, models):
            ours = await http.post(f"{server.url}/prompt", json={"prompt": prompt})
            theirs = await http.post(f"{server.emulator_urls[0]}/prompt", json={"prompt": prompt})
            assert ours.status_code == theirs.status_code == 400
            assert ours.json() == theirs.json()
        queue = (await http.get(f"{server.url}/queue")).json()
    assert queue == {"queue_running": [], "queue_pending": []}


async def test_runtime_failure_reaches_the_socket_and_history(server: Server) -> None:
    await server.set_faults({"specs": ["fail:ImageInvert:the invert node broke"]})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            prompt_id, mine = await client.run_prompt(image_workflow(1))
            errors = [m["data"] for m in mine if m["type"] == "execution_error"]
            assert len(errors) == 1, [m["type"] for m in mine]
            assert errors[0]["node_id"] == "2"
            assert errors[0]["node_type"] == "ImageInvert"
            assert "the invert node broke" in errors[0]["exception_message"]
            assert "execution_success" not in [m["type"] for m in mine]
            entry = await client.history(prompt_id)
            assert entry["status"]["status_str"] == "error"
            assert entry["status"]["completed"] is False
            assert entry["status"]["messages"][-1][0] == "execution_error"
            job = (await http.get(f"/api/jobs/{prompt_id}")).json()
            assert job["status"] == "failed"
            assert job["execution_error"]["node_id"] == "2"


async def test_client_prompt_id_is_honoured_and_reusable(server: Server) -> None:
    prompt_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            answer = await client.queue_prompt(image_workflow(5), prompt_id=prompt_id)
            assert answer.json()["prompt_id"] == prompt_id
            await client.wait_done(prompt_id)
            first = await client.history(prompt_id)
            # a re-used id with a prompt ComfyUI refuses: refused, the history as it was
            bad = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
            refused = await client.queue_prompt(bad, prompt_id=prompt_id)
            assert refused.status_code == 400, refused.text
            assert await client.history(prompt_id) == first
            # ComfyUI overwrites the history of a re-used id
            client.messages.clear()
            answer = await client.queue_prompt(image_workflow(6), prompt_id=prompt_id)
            assert answer.status_code == 200, answer.text
            await client.wait_done(prompt_id)
            second = await client.history(prompt_id)
            assert first["prompt"][2]["1"]["inputs"]["color"] == 5
            assert second["prompt"][2]["1"]["inputs"]["color"] == 6


async def test_the_editor_s_extra_data_and_targets_reach_the_backend(server: Server) -> None:
    """What ComfyUI's editor sends with a prompt reaches the backend that runs it: the
    workflow in `extra_data.extra_pnginfo`, which SaveImage writes into the PNG (an image
    opens as its workflow again: it was dropped), and `partial_execution_targets` ("run the
    selected outputs": every output node ran); targets that are not a list of node ids, or
    name no output node, are refused as ComfyUI refuses them."""
    workflow = image_workflow(11)
    workflow["5"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "b"},
    }
    editor = {"nodes": [], "links": [], "marker": "from the editor"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            prompt_id, _ = await client.run_prompt(
                workflow,
                extra_data={"extra_pnginfo": {"workflow": editor}},
                partial_execution_targets=["3"],
            )
            entry = await client.history(prompt_id)
        assert sorted(entry["outputs"]) == ["3"]  # the target alone ran
        (image,) = entry["outputs"]["3"]["images"]
        png = (await http.get("/view", params=image)).content
        with Image.open(io.BytesIO(png)) as opened:
            assert json.loads(opened.text["workflow"]) == editor
        for targets, kind in ((5, "invalid_request"), (["1"], "prompt_no_outputs")):
            body = {"prompt": image_workflow(12), "partial_execution_targets": targets}
            refused = await http.post("/prompt", json=body)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["type"] == kind, refused.text


async def test_history_with_max_items_of_zero_or_less_as_comfyui(
    server: Server, tmp_path: Path
) -> None:
    """ComfyUI's loop gives none, or with an offset the one entry there (it was a 400)."""
    from tests.support.emulator import running_emulator

    asked = [{"max_items": 0}, {"max_items": -1}, {"max_items": 0, "offset": 0}]

    async def counts(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            client = ComfyExampleClient(Server(url, server.ctx), http)
            async with client.connected():
                for color in (21, 22):
                    answer = await client.queue_prompt(image_workflow(color))
                    await client.wait_done(answer.json()["prompt_id"])
            found = []
            for params in asked:
                answer = await http.get("/history", params=params)
                assert answer.status_code == 200, answer.text
                found.append(len(answer.json()))
            return found

    async with running_emulator(tmp_path) as emu:
        assert await counts(emu.url) == [0, 0, 1]
    assert await counts(server.url) == [0, 0, 1]


async def test_a_prompt_of_no_node_is_refused_as_comfyui_refuses_it(
    server: Server, tmp_path: Path
) -> None:
    from tests.support.emulator import running_emulator

    async def refusal(url: str) -> Any:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answer = await http.post("/prompt", json={"prompt": {}})
            assert answer.status_code == 400, answer.text
            return answer.json()["error"]["type"]

    async with running_emulator(tmp_path) as emu:
        assert await refusal(emu.url) == "prompt_no_outputs"
    assert await refusal(server.url) == "prompt_no_outputs"


async def test_a_number_json_cannot_echo_is_taken_as_none(server: Server) -> None:
    """`number` NaN or Infinity (which Python's JSON reads, and ComfyUI takes): the prompt is
    queued with a number of its own, as one without; it was a 500 once the job was queued
    (the answer could not be written), so a client retrying ran it twice."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        prompt = json.dumps({"prompt": image_workflow(3)})[:-1]
        for literal in ("NaN", "Infinity", "-Infinity"):
            body = f'{prompt}, "number": {literal}}}'
            headers = {"content-type": "application/json"}
            answer = await http.post("/prompt", content=body, headers=headers)
            assert answer.status_code == 200, (literal, answer.text)
            assert isinstance(answer.json()["number"], int), answer.text


async def test_a_prompt_id_no_path_can_name_is_refused(server: Server) -> None:
    """ComfyUI takes any prompt_id; here it names a durable job, read, cancelled and deleted
    by URL: one no path can name (a slash, empty, control characters, too long) is a 400 in
    ComfyUI's shape and queues nothing (it made a job no request could reach). Any other
    string is honoured, and reached by its percent-encoded path."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        before = (await http.get("/api/v2/jobs")).json()["jobs"]
        for bad in ("a/b", "../x", "", "  ", "x" * 257, "line\nbreak", "."):
            answer = await http.post(
                "/prompt", json={"prompt": image_workflow(1), "prompt_id": bad}
            )
            assert answer.status_code == 400, (bad, answer.text)
            body = answer.json()
            assert body["error"]["type"] == "invalid_request" and body["node_errors"] == {}
            assert "prompt_id" in body["error"]["message"]
        assert (await http.get("/api/v2/jobs")).json()["jobs"] == before
        client = ComfyExampleClient(server, http)
        async with client.connected():
            for odd in ("名前 ?#%", "a\\b"):
                answer = await client.queue_prompt(image_workflow(2), prompt_id=odd)
                assert answer.status_code == 200 and answer.json()["prompt_id"] == odd
                await client.wait_done(odd)
                path = f"/history/{quote(odd, safe='')}"
                assert odd in (await http.get(path)).json()


async def test_a_prompt_comes_back_whole_in_the_history(server: Server) -> None:
    """An input ComfyUI ignores comes back in /history as sent, whatever its name (one that
    begins with "_sa" too, which FastAPI's jsonable_encoder would drop)."""
    prompt = image_workflow(7)
    prompt["1"]["inputs"]["_sampler_note"] = "kept"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            prompt_id, _ = await client.run_prompt(prompt)
            entry = await client.history(prompt_id)
    assert entry["prompt"][2] == prompt


async def test_queue_delete_interrupt_and_history_delete(server: Server) -> None:
    await server.set_faults({"hang": True})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        client = ComfyExampleClient(server, http)
        async with client.connected():
            ids = []
            # more prompts than the 3 backends take at once (each holds one more in its own
            # queue, pending until it starts): the rest stay pending in comfyrun
            for color in range(9):
                answer = await client.queue_prompt(image_workflow(color))
                ids.append(answer.json()["prompt_id"])
            async with asyncio.timeout(30):
                while True:
                    queue = (await http.get("/queue")).json()
                    running_now, pending_now = queue["queue_running"], queue["queue_pending"]
                    if len(running_now) == 3 and len(running_now) + len(pending_now) == 9:
                        backends = (await http.get("/api/v2/backends")).json()["backends"]
                        if all(b["inflight"] == 2 for b in backends):
                            break
                    await asyncio.sleep(0.05)
            assert queue["queue_pending"], queue
            running = [item[1] for item in queue["queue_running"]]
            pending = [item[1] for item in queue["queue_pending"]]
            assert queue["queue_pending"][0][3]["client_id"] == client.client_id
            # delete one pending prompt: it never reaches the history
            assert (await http.post("/queue", json={"delete": [pending[0]]})).status_code == 200
            assert (await http.get(f"/history/{pending[0]}")).json() == {}
            assert (await http.get(f"/api/jobs/{pending[0]}")).status_code == 404
            # interrupt one running prompt: the client hears execution_interrupted
            target = running[0]
            assert (await http.post("/interrupt", json={"prompt_id": target})).status_code == 200
            mine = await client.wait_done(target)
            assert "execution_interrupted" in [m["type"] for m in mine]
            entry = await client.history(target)
            assert entry["status"]["status_str"] == "error"
            assert (await http.get(f"/api/jobs/{target}")).json()["status"] == "cancelled"
            # clear the pending rest, then a global interrupt stops every running prompt
            await http.post("/queue", json={"clear": True})
            still_running = [item[1] for item in (await http.get("/queue")).json()["queue_running"]]
            await http.post("/interrupt")
            for prompt_id in still_running:
                await client.wait_done(prompt_id)
            queue = (await http.get("/queue")).json()
            assert queue == {"queue_running": [], "queue_pending": []}
            history = (await http.get("/history")).json()
            assert target in history and pending[0] not in history
            assert set(still_running) <= set(history)
            for prompt_id in ids:  # each prompt either ran (and was interrupted) or was removed
                known = (await http.get(f"/api/jobs/{prompt_id}")).status_code == 200
                assert known == (prompt_id in history)
            assert all(e["status"]["status_str"] == "error" for e in history.values())
            newest = (await http.get("/history", params={"max_items": 1})).json()
            assert len(newest) == 1
            await http.post("/history", json={"delete": [target]})
            assert (await http.get(f"/history/{target}")).json() == {}
            await http.post("/history", json={"clear": True})
            assert (await http.get("/history")).json() == {}


def load_and_save(image: str, prefix: str) -> dict[str, Any]:
    """A prompt that loads an uploaded input and saves it."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


async def test_files_of_any_name_are_viewed(server: Server) -> None:
    """An input uploaded, and an output saved, under a name in other scripts is served by
    /view with its name in RFC 6266's `filename*` (a header is Latin-1: it was a 500 with the
    connection reset); a plain name keeps ComfyUI's exact header."""
    picture = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(picture, format="PNG")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for name in ("фото 名前.png", "plain.png"):
            files = {"image": (name, picture.getvalue(), "image/png")}
            answer = await http.post("/upload/image", files=files)
            assert answer.status_code == 200 and answer.json()["name"] == name, answer.text
            view = await http.get("/view", params={"filename": name, "type": "input"})
            assert view.status_code == 200 and view.content == picture.getvalue()
            header = view.headers["content-disposition"]
            if name == "plain.png":
                assert header == 'filename="plain.png"'
            else:
                assert header.endswith(f"filename*=UTF-8''{quote(name, safe='')}"), header
        client = ComfyExampleClient(server, http)
        prompt = load_and_save("plain.png", "名前")
        async with client.connected():
            prompt_id, _ = await client.run_prompt(prompt)
            ((_, data),) = await client.images(prompt_id)  # GET /view of the output
            assert data.startswith(b"\x89PNG")


async def test_upload_then_load_image_and_view_input(server: Server) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 10, 10)).save(picture, format="PNG")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        files = {"image": ("photo.png", picture.getvalue(), "image/png")}
        answer = await http.post("/upload/image", files=files, data={"subfolder": "mine"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"name": "photo.png", "subfolder": "mine", "type": "input"}
        view = await http.get(
            "/view", params={"filename": "photo.png", "subfolder": "mine", "type": "input"}
        )
        assert view.status_code == 200 and view.content == picture.getvalue()
        # same name, other bytes: ComfyUI picks a new name
        other = io.BytesIO()
        Image.new("RGB", (4, 4)).save(other, format="PNG")
        files = {"image": ("photo.png", other.getvalue(), "image/png")}
        answer = await http.post("/api/upload/image", files=files, data={"subfolder": "mine"})
        assert answer.json()["name"] == "photo (1).png"
        assert (await http.post("/upload/image", data={"x": "1"})).status_code == 400

        client = ComfyExampleClient(server, http)
        prompt = load_and_save("mine/photo.png", "u")
        async with client.connected():
            prompt_id, mine = await client.run_prompt(prompt)
            assert "execution_success" in [m["type"] for m in mine], mine
            ((_, data),) = await client.images(prompt_id)
            with Image.open(io.BytesIO(data)) as img:
                assert img.size == (24, 16)
        missing = await http.get("/view", params={"filename": "nope.png", "type": "output"})
        assert missing.status_code == 404
        bad = await http.get("/view", params={"filename": "x.png", "subfolder": "../etc"})
        assert bad.status_code == 403
        wrong = await http.get("/view", params={"filename": "x.png", "type": "weird"})
        assert wrong.status_code == 400


async def test_object_info_system_stats_and_jobs_api(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        info = (await http.get("/object_info")).json()
        assert "KSampler" in info and "SaveImage" in info
        one = (await http.get("/api/object_info/KSampler")).json()
        assert list(one) == ["KSampler"]
        assert (await http.get("/object_info/Nope")).json() == {}
        stats = (await http.get("/system_stats")).json()
        assert "comfyrun" in stats["system"]["comfyui_version"]
        assert len(stats["devices"]) >= 3  # every backend's devices
        answer = await http.post(
            "/prompt_sync?timeout=60",
            json={"prompt": image_workflow(9), "return_image_base64": True},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "success" and body["node_errors"] == {}
        (image,) = body["outputs"]["3"]["images"]
        assert image["image_base64"]
        listed = (await http.get("/api/jobs", params={"status": "completed"})).json()
        assert [j["id"] for j in listed["jobs"]] == [body["prompt_id"]]
        assert listed["jobs"][0]["outputs_count"] == 1
        assert listed["pagination"]["has_more"] is False
        detail = (await http.get(f"/api/jobs/{body['prompt_id']}")).json()
        assert detail["outputs"]["3"]["images"][0]["filename"] == image["filename"]
        assert detail["workflow"]["prompt"]["1"]["class_type"] == "EmptyImage"
        assert (await http.get("/api/jobs", params={"status": "bogus"})).status_code == 400
        assert (await http.get("/api/jobs/nope")).status_code == 404
        cancel = await http.post(f"/api/jobs/{body['prompt_id']}/cancel")
        assert cancel.json()["status"] == "completed"
        # the native API is still there beside ComfyUI's /api/jobs
        native = await http.get(f"/api/v2/jobs/{body['prompt_id']}")
        assert native.status_code == 200 and native.json()["status"] == "succeeded"

        failing = await http.post("/prompt_sync", json={"prompt": {"1": {"class_type": "Nope"}}})
        assert failing.status_code == 400
        assert set(failing.json()) == {"error", "detail", "prompt_id", "node_errors", "timestamp"}


async def test_api_keys_guard_the_comfy_routes_and_socket(tmp_path: Path) -> None:
    settings = dialect_settings(tmp_path, api_keys=["secret"], emulators=1)
    async with serving(settings) as srv:
        host = srv.url.removeprefix("http://")
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
            answer = await http.post("/prompt", json={"prompt": image_workflow()})
            assert answer.status_code == 401
            assert (await http.get("/api/jobs")).status_code == 401
            assert (await http.get("/v2/e/health")).status_code == 401
        with pytest.raises(websockets.exceptions.WebSocketException):
            async with websockets.connect(f"ws://{host}/ws?clientId=a") as ws:
                await asyncio.wait_for(ws.recv(), 10)
        headers = {"Authorization": "Bearer secret"}
        async with websockets.connect(
            f"ws://{host}/ws?clientId=a", additional_headers=headers
        ) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "status" and first["data"]["sid"] == "a"
        async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=headers) as http:
            assert (await http.get("/api/jobs")).status_code == 200


async def test_messages_go_only_to_the_prompts_client_even_after_reconnecting(
    server: Server,
) -> None:
    await server.set_faults({"delay_s": 0.4})  # each node takes a while
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        owner = ComfyExampleClient(server, http)
        other = ComfyExampleClient(server, http)
        # queued before its client connects: found among the running jobs on connect
        answer = await owner.queue_prompt(image_workflow(12))
        prompt_id = answer.json()["prompt_id"]
        async with asyncio.timeout(30):
            while True:
                job = (await http.get(f"/api/jobs/{prompt_id}")).json()
                if job["status"] == "in_progress":
                    break
                await asyncio.sleep(0.05)
        async with owner.connected(), other.connected():
            mine = await owner.wait_done(prompt_id)
            assert [m["type"] for m in mine][-2:] == ["execution_success", "executing"]
            await asyncio.sleep(0.2)
            assert other.ws is not None
            with contextlib.suppress(TimeoutError):
                while True:
                    other.messages.append(json.loads(await asyncio.wait_for(other.ws.recv(), 0.3)))
            assert {m["type"] for m in other.messages} <= {"status"}


async def test_every_socket_hears_the_queue_grow_when_a_prompt_is_queued(server: Server) -> None:
    # ComfyUI broadcasts `status` to every socket when a prompt is queued (in the background:
    # POST /prompt is not held for it); the frontend's queue counter follows it
    await server.set_faults({"hang": True})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        observer = ComfyExampleClient(server, http)
        submitter = ComfyExampleClient(server, http)
        async with observer.connected(), submitter.connected():
            for color in range(2):
                answer = await submitter.queue_prompt(image_workflow(color))
                assert answer.status_code == 200, answer.text
            seen: list[int] = []
            async with asyncio.timeout(20):
                while not seen or seen[-1] < 2:
                    message = json.loads(await observer.ws.recv())
                    assert message["type"] == "status"  # nothing of another client's prompts
                    seen.append(message["data"]["status"]["exec_info"]["queue_remaining"])
            assert seen == sorted(seen)
            assert "sid" not in message["data"]  # a broadcast, not the socket's own greeting
