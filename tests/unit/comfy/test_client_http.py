"""ComfyClient's HTTP side and its history-polling fallback, over httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.comfy import load

from comfyrun.comfy import (
    ComfyClient,
    ComfyConnectionError,
    ComfyHTTPError,
    ComfyPromptLost,
    ComfyProtocolError,
    ComfyTimeout,
    ComfyValidationError,
    FileRef,
)

JSON = dict[str, Any]


@dataclass
class FakeComfy:
    """Just enough of ComfyUI's HTTP API, with its recorded bodies."""

    history: dict[str, JSON] = field(default_factory=dict)
    running: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    prompt_status: int = 200
    prompt_body: JSON | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    fail_with: Exception | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        path = request.url.path
        if path == "/prompt" and request.method == "POST":
            body = json.loads(request.content)
            if self.prompt_status != 200:
                return httpx.Response(self.prompt_status, json=self.prompt_body)
            self.pending.append(body["prompt_id"])
            queued = {"prompt_id": body["prompt_id"], "number": 7, "node_errors": {}}
            return httpx.Response(200, json=self.prompt_body or queued)
        if path.startswith("/history/"):
            pid = path.removeprefix("/history/")
            return httpx.Response(200, json={pid: self.history[pid]} if pid in self.history else {})
        if path == "/queue" and request.method == "GET":
            return httpx.Response(
                200,
                json={
                    "queue_running": [[1, p, {}, {}, []] for p in self.running],
                    "queue_pending": [[2, p, {}, {}, []] for p in self.pending],
                },
            )
        if path in ("/queue", "/interrupt", "/free"):
            return httpx.Response(200)
        if path == "/object_info":
            return httpx.Response(200, json={"KSampler": {}})
        if path == "/system_stats":
            return httpx.Response(
                200, json={"system": {"comfyui_version": "0.3.64"}, "devices": []}
            )
        if path == "/view":
            data = self.files.get(request.url.params["filename"])
            if data is None:
                return httpx.Response(404)
            return httpx.Response(200, content=data, headers={"Content-Type": "image/png"})
        if path == "/upload/image":
            ctype = request.headers["content-type"]
            raw = b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.read()
            msg = BytesParser(policy=HTTP).parsebytes(raw)
            parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
            image = parts["image"]
            self.uploads.append(
                {
                    "filename": image.get_filename(),
                    "data": image.get_payload(decode=True),
                    "fields": {k: v.get_content() for k, v in parts.items() if k != "image"},
                }
            )
            fields = self.uploads[-1]["fields"]
            return httpx.Response(
                200,
                json={
                    "name": image.get_filename(),
                    "subfolder": fields["subfolder"],
                    "type": fields["type"],
                },
            )
        return httpx.Response(404)

    def finish(self, prompt_id: str, entry: JSON) -> None:
        for queue in (self.running, self.pending):
            if prompt_id in queue:
                queue.remove(prompt_id)
        self.history[prompt_id] = entry


@pytest.fixture
async def fake() -> FakeComfy:
    return FakeComfy()


@pytest.fixture
async def client(fake: FakeComfy) -> AsyncIterator[ComfyClient]:
    c = ComfyClient(
        "http://comfy.test",
        http_transport=httpx.MockTransport(fake.handler),
        websocket=False,
        poll_interval=0.02,
        timeout=5.0,
    )
    await c.start()
    try:
        yield c
    finally:
        await c.close()


def success_entry(shared_dir: Path) -> JSON:
    body = load(shared_dir, "ws_success_run.json")["history"]["body"]
    return dict(next(iter(body.values())))


async def test_submit_sends_prompt_id_and_extra_data(client: ComfyClient, fake: FakeComfy) -> None:
    result = await client.submit(
        {"1": {}}, prompt_id="p1", extra_data={"job": "j"}, front=True, number=-3
    )
    assert (result.prompt_id, result.number, result.node_errors) == ("p1", 7.0, {})
    sent = json.loads(fake.requests[-1].content)
    assert sent == {
        "prompt": {"1": {}},
        "prompt_id": "p1",
        "extra_data": {"job": "j"},
        "front": True,
        "number": -3,
    }
    assert fake.requests[-1].url.path == "/prompt"


async def test_submit_mints_a_prompt_id(client: ComfyClient) -> None:
    result = await client.submit({"1": {}})
    assert len(result.prompt_id) == 36


async def test_validation_error_carries_the_body(
    shared_dir: Path, client: ComfyClient, fake: FakeComfy
) -> None:
    body = load(shared_dir, "post_prompt_errors.json")["value_not_in_list"]["body"]
    fake.prompt_status, fake.prompt_body = 400, body
    watch = client.watch("p2")
    with pytest.raises(ComfyValidationError) as info:
        await client.submit({"1": {}}, prompt_id="p2")
    assert info.value.error == body["error"] and info.value.node_errors == body["node_errors"]
    with pytest.raises(ComfyValidationError):
        await watch.result(timeout=1)


async def test_server_error_on_submit_is_typed(client: ComfyClient, fake: FakeComfy) -> None:
    fake.prompt_status = 500
    with pytest.raises(ComfyHTTPError) as info:
        await client.submit({"1": {}})
    assert info.value.status == 500


async def test_polling_settles_a_prompt_from_history(
    shared_dir: Path, client: ComfyClient, fake: FakeComfy
) -> None:
    watch = client.watch("p3")
    await client.submit({"1": {}}, prompt_id="p3")
    await asyncio.sleep(0.1)
    assert not watch.done  # still queued: no history yet
    fake.finish("p3", success_entry(shared_dir))
    result = await watch.result(timeout=5)
    assert result.ok and result.source == "history"
    assert {f.filename for f in result.files} == {
        "protocap_00053_.png",
        "ComfyUI_temp_okyrs_00001_.png",
    }


async def test_a_prompt_gone_from_queue_and_history_is_lost(
    client: ComfyClient, fake: FakeComfy
) -> None:
    watch = client.watch("p4")
    await client.submit({"1": {}}, prompt_id="p4")
    fake.pending.remove("p4")  # deleted from the queue: it never reaches history
    result = await watch.result(timeout=5)
    assert result.status == "lost" and isinstance(result.error, ComfyPromptLost)


async def test_attach_follows_an_earlier_prompt(
    shared_dir: Path, client: ComfyClient, fake: FakeComfy
) -> None:
    fake.running.append("old")
    watch = client.watch("old", attach=True)
    await asyncio.sleep(0.1)
    assert not watch.done
    fake.finish("old", success_entry(shared_dir))
    assert (await watch.result(timeout=5)).ok


async def test_result_timeout(client: ComfyClient) -> None:
    watch = client.watch("p5")
    await client.submit({"1": {}}, prompt_id="p5")
    with pytest.raises(ComfyTimeout):
        await watch.result(timeout=0.05)


async def test_watch_twice_is_refused_until_closed(client: ComfyClient) -> None:
    watch = client.watch("p6")
    with pytest.raises(ValueError):
        client.watch("p6")
    watch.close()
    client.watch("p6").close()


async def test_history_queue_and_controls(
    shared_dir: Path, client: ComfyClient, fake: FakeComfy
) -> None:
    assert await client.history("nope") is None
    fake.history["h"] = success_entry(shared_dir)
    entry = await client.history("h")
    assert entry is not None and entry.outcome == "success"
    fake.running.append("r")
    fake.pending.append("q")
    state = await client.queue()
    assert (state.running, state.pending) == (["r"], ["q"])
    await client.interrupt("r")
    assert json.loads(fake.requests[-1].content) == {"prompt_id": "r"}
    await client.interrupt()
    assert json.loads(fake.requests[-1].content) == {}
    await client.delete_queued(["q"])
    assert json.loads(fake.requests[-1].content) == {"delete": ["q"]}
    await client.free(unload_models=True)
    assert json.loads(fake.requests[-1].content) == {"unload_models": True, "free_memory": False}
    stats = await client.system_stats()
    assert stats["system"]["comfyui_version"] == "0.3.64"


async def test_object_info_is_cached(client: ComfyClient, fake: FakeComfy) -> None:
    assert await client.object_info() == {"KSampler": {}}
    await client.object_info()
    assert sum(r.url.path == "/object_info" for r in fake.requests) == 1
    await client.object_info(refresh=True)
    assert sum(r.url.path == "/object_info" for r in fake.requests) == 2


async def test_transport_failures_are_typed(client: ComfyClient, fake: FakeComfy) -> None:
    fake.fail_with = httpx.ConnectError("refused")
    with pytest.raises(ComfyConnectionError):
        await client.queue()
    fake.fail_with = httpx.ReadTimeout("slow")
    with pytest.raises(ComfyTimeout):
        await client.queue()


async def test_connect_failure_on_submit_fails_the_watch(
    client: ComfyClient, fake: FakeComfy
) -> None:
    watch = client.watch("p7")
    fake.fail_with = httpx.ConnectError("refused")
    with pytest.raises(ComfyConnectionError):
        await client.submit({}, prompt_id="p7")
    with pytest.raises(ComfyConnectionError):
        await watch.result(timeout=1)


async def test_read_timeout_on_submit_lets_the_queue_decide(
    shared_dir: Path, client: ComfyClient, fake: FakeComfy
) -> None:
    watch = client.watch("p8")
    fake.fail_with = httpx.ReadTimeout("slow")
    with pytest.raises(ComfyTimeout):
        await client.submit({}, prompt_id="p8")
    fake.fail_with = None
    fake.history["p8"] = success_entry(shared_dir)  # it had been queued after all
    assert (await watch.result(timeout=5)).ok


async def test_non_json_answer_is_a_protocol_error() -> None:
    def text(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>")

    async with ComfyClient(
        "http://x", http_transport=httpx.MockTransport(text), websocket=False
    ) as c:
        with pytest.raises(ComfyProtocolError):
            await c.queue()


async def test_view_streams_and_maps_404(client: ComfyClient, fake: FakeComfy) -> None:
    fake.files["a.png"] = b"\x89PNG" + bytes(200_000)
    chunks = []
    async with client.view(FileRef("1", "images", "a.png"), chunk_size=65536) as stream:
        assert stream.content_type == "image/png"
        async for chunk in stream:
            chunks.append(chunk)
    assert b"".join(chunks) == fake.files["a.png"]
    assert fake.requests[-1].url.params["type"] == "output"
    with pytest.raises(ComfyHTTPError) as info:
        async with client.view(FileRef("1", "images", "missing.png")):
            pass
    assert info.value.status == 404


async def test_upload_bytes_and_stream(client: ComfyClient, fake: FakeComfy) -> None:
    res = await client.upload_image(b"abc", "a.png", subfolder="jobs/x", overwrite=True)
    assert (res.name, res.subfolder, res.type) == ("a.png", "jobs/x", "input")
    assert res.load_image_value == "jobs/x/a.png"
    assert fake.uploads[-1]["data"] == b"abc"
    assert fake.uploads[-1]["fields"] == {
        "overwrite": "true",
        "subfolder": "jobs/x",
        "type": "input",
    }

    async def gen() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 1000

    await client.upload_image(gen(), "b.png", type="temp")
    assert fake.uploads[-1]["data"] == b"".join(bytes([i]) * 1000 for i in range(5))
    assert fake.requests[-1].headers.get("transfer-encoding") == "chunked"


async def test_calls_before_start_fail_clearly() -> None:
    c = ComfyClient("http://x", websocket=False)
    with pytest.raises(ComfyConnectionError):
        await c.queue()


async def test_lost_needs_two_misses_in_a_row(shared_dir: Path, fake: FakeComfy) -> None:
    async with ComfyClient(
        "http://comfy.test",
        http_transport=httpx.MockTransport(fake.handler),
        websocket=False,
        poll_interval=3600,
    ) as c:
        # submitted earlier and reconciled here by hand, step by step (attach=True would also
        # wake the client's own loop, whose pass would race these)
        watch = c.watch("late")
        watch.submitted = True
        await c.reconcile([watch])
        assert not watch.done and watch.misses == 1
        fake.pending.append("late")  # the POST that timed out on our side got through
        await c.reconcile([watch])
        assert not watch.done and watch.misses == 0
        fake.pending.remove("late")
        await c.reconcile([watch])
        await c.reconcile([watch])
        assert (await watch.result(timeout=1)).status == "lost"


async def test_cancel_deletes_and_interrupts(client: ComfyClient, fake: FakeComfy) -> None:
    await client.cancel("x")
    assert [(r.url.path, json.loads(r.content)) for r in fake.requests[-2:]] == [
        ("/queue", {"delete": ["x"]}),
        ("/interrupt", {"prompt_id": "x"}),
    ]


async def test_history_quotes_the_prompt_id(client: ComfyClient, fake: FakeComfy) -> None:
    assert await client.history("a/b c") is None
    assert fake.requests[-1].url.raw_path == b"/history/a%2Fb%20c"


@pytest.mark.parametrize(
    "answer",
    [
        {"prompt_id": "p9", "number": "x", "node_errors": []},
        {"prompt_id": "p9", "number": [1], "node_errors": "oops"},
        {"prompt_id": "p9", "number": None},
    ],
)
async def test_an_answer_s_fields_of_another_type_are_as_good_as_absent(
    client: ComfyClient, fake: FakeComfy, answer: JSON
) -> None:
    """(a `number` ComfyUI never sends as text was a ValueError: a failed run, a traceback)"""
    fake.prompt_body = answer
    result = await client.submit({"1": {}}, prompt_id="p9")
    assert (result.prompt_id, result.number, result.node_errors) == ("p9", 0.0, {})


async def test_a_refusal_s_node_errors_of_another_type_are_none(
    client: ComfyClient, fake: FakeComfy
) -> None:
    fake.prompt_status, fake.prompt_body = 400, {"error": "bad", "node_errors": ["x"]}
    with pytest.raises(ComfyValidationError) as info:
        await client.submit({"1": {}}, prompt_id="p10")
    assert info.value.node_errors == {} and info.value.error == {"message": "bad"}
