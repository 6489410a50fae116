"""comfyrun's /ws relays what the backend sent: one prompt run on an emulator directly and
through comfyrun gives the same messages, in the same order, previews included.

Compared message by message with prompt ids, timestamps and file names aside, and with one
documented difference: comfyrun sends `executed` only once it has stored the outputs, just before
`execution_success` (ComfyUI sends it when the node finishes), so that GET /view works when the
client fetches what it names. `status` is the fleet's queue size; it is checked where ComfyUI
sends it (when the prompt starts and before the closing `executing`), not compared. Two setups:
`comfyrun serve` (API and worker in one process, frames relayed in memory) and an API process
plus a worker process on PostgreSQL (frames relayed through the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import struct
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import websockets.sync.client as ws_sync
from PIL import Image
from tests.integration.compat.conftest import Server, dialect_settings, serving, start_nodes
from tests.support.api import ServerProcess, tiny_workflow, wait_until_ready
from tests.support.comfy import until_prompt_ends
from tests.support.emulator import running_emulator, text_to_image_workflow
from tests.support.store import pg_dsn

from comfyrun.comfy.emulator import Emulator
from comfyrun.config import BackendConfig
from comfyrun.core.job import JobStatus
from comfyrun.core.state import Event

pytestmark = [pytest.mark.timeout(120)]

STEPS = 5
Received = dict[str, Any] | bytes


def prompts() -> list[dict[str, Any]]:
    """A first run (everything executes), then one with a new seed: the loaders, the prompts and
    the empty latent come from the cache (execution_cached), the sampler runs its steps."""
    return [
        jsonb_order(text_to_image_workflow(seed=1, steps=STEPS, size=32)),
        jsonb_order(text_to_image_workflow(seed=2, steps=STEPS, size=32)),
    ]


def jsonb_order(workflow: dict[str, Any]) -> dict[str, Any]:
    """The workflow with its keys in the order PostgreSQL's JSONB keeps them (shorter first).
    ComfyUI's execution order follows the order of a node's inputs, and the PostgreSQL store
    gives the worker the workflow back in JSONB's order, so the direct run must use it too."""

    def ordered(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ordered(value[k]) for k in sorted(value, key=lambda k: (len(k), k))}
        return value

    result: dict[str, Any] = ordered(workflow)
    return result


class WsClient:
    """ComfyUI's websockets_api_example.py flow: /ws with a clientId, POST /prompt with it,
    read until `executing` with node null for the prompt, then /history and /view."""

    def __init__(self, base_url: str, *, metadata: bool) -> None:
        self.base_url = base_url
        self.metadata = metadata
        self.client_id = str(uuid.uuid4())
        self.ws: Any = None
        self.backlog: list[Received] = []

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[WsClient]:
        host = self.base_url.removeprefix("http://")
        async with websockets.connect(f"ws://{host}/ws?clientId={self.client_id}") as ws:
            self.ws = ws
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert first["type"] == "status" and first["data"]["sid"] == self.client_id
            if self.metadata:
                flags = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
                await ws.send(json.dumps(flags))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert reply["type"] == "feature_flags"
            yield self

    async def submit(self, http: httpx.AsyncClient, prompt: dict[str, Any]) -> str:
        answer = await http.post("/prompt", json={"prompt": prompt, "client_id": self.client_id})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["prompt_id"])

    async def run(
        self, http: httpx.AsyncClient, prompt: dict[str, Any]
    ) -> tuple[str, list[Received]]:
        prompt_id = await self.submit(http, prompt)
        return prompt_id, await self.read_until_done(prompt_id)

    async def read_until_node(self, prompt_id: str, node: str) -> None:
        """Read until the prompt's `executing` of `node`."""
        async with asyncio.timeout(60):
            while True:
                raw = await self.ws.recv()
                message = None if isinstance(raw, bytes) else json.loads(raw)
                if (
                    isinstance(message, dict)
                    and message["type"] == "executing"
                    and message["data"].get("node") == node
                    and message["data"].get("prompt_id") == prompt_id
                ):
                    return

    async def read_until_done(self, prompt_id: str) -> list[Received]:
        received: list[Received] = []
        async with asyncio.timeout(60):
            while True:
                raw = await self.ws.recv()
                message: Received = raw if isinstance(raw, bytes) else json.loads(raw)
                received.append(message)
                if (
                    isinstance(message, dict)
                    and message["type"] == "executing"
                    and message["data"].get("node") is None
                    and message["data"].get("prompt_id") == prompt_id
                ):
                    return received


async def run_all(base_url: str, *, metadata: bool) -> list[tuple[str, list[Received]]]:
    client = WsClient(base_url, metadata=metadata)
    runs = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http, client.connected():
        for prompt in prompts():
            prompt_id, received = await client.run(http, prompt)
            # the rest of the example: history, then every image through /view
            history = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
            assert history["status"]["completed"] is True
            images = [i for out in history["outputs"].values() for i in out.get("images", [])]
            assert images
            for image in images:
                view = await http.get("/view", params=image)
                assert view.status_code == 200 and view.content.startswith(b"\x89PNG")
            runs.append((prompt_id, received))
    return runs


# --- comparing ----------------------------------------------------------------------------
def normalized(prompt_id: str, received: list[Received]) -> list[Any]:
    """The prompt's messages with ids, timestamps and file names aside; `executed` moved to
    just before the prompt's outcome (see the module docstring); status left out."""
    out: list[Any] = []
    for message in received:
        if isinstance(message, bytes):
            out.append(_binary(message))
        elif message["type"] != "status":
            out.append(_text(message, prompt_id))
    executed = [m for m in out if isinstance(m, dict) and m["type"] == "executed"]
    rest = [m for m in out if not (isinstance(m, dict) and m["type"] == "executed")]
    ends = ("execution_success", "execution_error", "execution_interrupted")
    end = next(
        (i for i, m in enumerate(rest) if isinstance(m, dict) and m["type"] in ends), len(rest)
    )
    return rest[:end] + executed + rest[end:]


def _scrub(value: Any, prompt_id: str) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, prompt_id) for k, v in value.items() if k != "timestamp"}
    if isinstance(value, list):
        return [_scrub(v, prompt_id) for v in value]
    return "<prompt>" if value == prompt_id else value


def _text(message: dict[str, Any], prompt_id: str) -> dict[str, Any]:
    message = _scrub(message, prompt_id)
    if message["type"] == "executed":
        output = message["data"]["output"]
        message["data"]["output"] = {
            key: [{"type": ref["type"]} for ref in refs] for key, refs in output.items()
        }
    return message


def _binary(frame: bytes) -> Any:
    (kind,) = struct.unpack_from(">I", frame, 0)
    if kind == 4:
        (size,) = struct.unpack_from(">I", frame, 4)
        meta = json.loads(frame[8 : 8 + size])
        meta.pop("prompt_id")
        return ("preview", meta, frame[8 + size :])
    if kind == 1:
        (image_format,) = struct.unpack_from(">I", frame, 4)
        return ("preview", {"format": image_format}, frame[8:])
    return ("binary", frame)


def check_statuses(prompt_id: str, received: list[Received]) -> None:
    """A `status` just before execution_start and just before the closing `executing`."""
    kinds = [m["type"] if isinstance(m, dict) else "<binary>" for m in received]
    start = kinds.index("execution_start")
    assert kinds[start - 1] == "status", kinds
    assert kinds[-2:] == ["status", "executing"], kinds
    last = received[-2]
    assert isinstance(last, dict)
    assert last["data"]["status"]["exec_info"]["queue_remaining"] == 0


def assert_relayed(
    direct: list[tuple[str, list[Received]]], relayed: list[tuple[str, list[Received]]]
) -> None:
    assert len(direct) == len(relayed)
    for (direct_id, expected), (relayed_id, got) in zip(direct, relayed, strict=True):
        check_statuses(direct_id, expected)
        check_statuses(relayed_id, got)
        want, have = normalized(direct_id, expected), normalized(relayed_id, got)
        assert [_kind(m) for m in have] == [_kind(m) for m in want]
        for i, (a, b) in enumerate(zip(want, have, strict=True)):
            assert a == b, f"message {i}: {a!r} != {b!r}"
    # what the issue saw lost: every step, every node, the cached ids
    second = normalized(*relayed[1])
    kinds = [_kind(m) for m in second]
    assert kinds.count("progress") == STEPS
    assert kinds.count("preview") == STEPS
    cached = next(m for m in second if _kind(m) == "execution_cached")
    assert set(cached["data"]["nodes"]) == {"1", "2", "3", "4"}
    executing = [m["data"]["node"] for m in second if _kind(m) == "executing"]
    assert executing == ["5", "6", "7", None]


def _kind(message: Any) -> str:
    return message["type"] if isinstance(message, dict) else str(message[0])


async def attach_late(base_url: str, emulator: Emulator) -> tuple[str, list[Received]]:
    """A socket that connects again (as after a page reload) while the prompt's sampler runs:
    as ComfyUI tells a client that reconnects, it hears the node that runs, then the rest.
    The page before the reload heard the sampler start: what was relayed to it is what the
    server had when the new socket came (with an api node apart from its worker, the store
    had those messages: read on a job's progress alone, they could still be on their way)."""
    client = WsClient(base_url, metadata=False)
    emulator.faults.delay_s = 0.4  # each node and step: time to connect mid-run
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            workflow = jsonb_order(text_to_image_workflow(seed=3, steps=STEPS, size=32))
            async with client.connected():
                prompt_id = await client.submit(http, workflow)
                await client.read_until_node(prompt_id, "5")
            async with client.connected():
                return prompt_id, await client.read_until_done(prompt_id)
    finally:
        emulator.faults.delay_s = 0.0


def assert_rest_of_run(prompt_id: str, received: list[Received]) -> None:
    """What a socket that connected mid-run (at the sampler) heard: ComfyUI's `executing` of
    the node that runs, in its legacy form (no prompt_id), then the run's rest, none of what
    went before again."""
    messages = normalized(prompt_id, received)
    assert messages[0] == {"type": "executing", "data": {"node": "5"}}, messages[:3]
    kinds = [_kind(m) for m in messages]
    assert "execution_start" not in kinds and "execution_cached" not in kinds, kinds
    steps = [m["data"]["value"] for m in messages if _kind(m) == "progress"]
    assert steps == sorted(steps) and steps[-1:] == [STEPS], steps
    executing = [m["data"]["node"] for m in messages[1:] if _kind(m) == "executing"]
    assert executing == ["6", "7", None]
    assert kinds[-2:] == ["execution_success", "executing"]


def assert_whole_run(prompt_id: str, received: list[Received], *, previews: int) -> None:
    messages = normalized(prompt_id, received)
    kinds = [_kind(m) for m in messages]
    assert kinds[:2] == ["execution_start", "execution_cached"], kinds
    assert kinds.count("progress") == STEPS
    assert kinds.count("preview") >= previews
    executing = [m["data"]["node"] for m in messages if _kind(m) == "executing"]
    assert executing == ["5", "6", "7", None]
    assert kinds[-2:] == ["execution_success", "executing"]


# --- ComfyUI's script_examples/websockets_api_example.py, as it is written -----------------
def example_script(server_address: str, prompt: dict[str, Any]) -> dict[str, list[bytes]]:
    """The example's flow, blocking as it is: a socket with a clientId, POST /prompt with it,
    text frames read (binary previews skipped) until `executing` with node null for the
    prompt, then GET /history/{id} and GET /view for every image it lists."""
    client_id = str(uuid.uuid4())

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"http://{server_address}{path}", timeout=30) as answer:
            body: bytes = answer.read()
            return body

    with ws_sync.connect(f"ws://{server_address}/ws?clientId={client_id}") as ws:
        body = json.dumps({"prompt": prompt, "client_id": client_id}).encode()
        request = urllib.request.Request(f"http://{server_address}/prompt", data=body)
        with urllib.request.urlopen(request, timeout=30) as answer:
            prompt_id = json.loads(answer.read())["prompt_id"]
        while True:
            out = ws.recv(timeout=60)
            if isinstance(out, str):
                message = json.loads(out)
                if message["type"] == "executing":
                    data = message["data"]
                    if data["node"] is None and data["prompt_id"] == prompt_id:
                        break
    history = json.loads(get(f"/history/{prompt_id}"))[prompt_id]
    images: dict[str, list[bytes]] = {}
    for node_id, node_output in history["outputs"].items():
        for image in node_output.get("images", []):
            query = urllib.parse.urlencode(
                {
                    "filename": image["filename"],
                    "subfolder": image["subfolder"],
                    "type": image["type"],
                }
            )
            images.setdefault(node_id, []).append(get(f"/view?{query}"))
    return images


def example_prompt(seed: int) -> dict[str, Any]:
    """The example's graph (its node ids), with a checkpoint the emulator has."""
    workflow = text_to_image_workflow(seed=seed, steps=20, size=64)
    renumber = {"1": "4", "2": "6", "3": "7", "4": "5", "5": "3", "6": "8", "7": "9"}
    text = json.dumps(workflow)
    for old, new in renumber.items():
        text = text.replace(f'"{old}"', f'"@{new}"')
    result: dict[str, Any] = json.loads(text.replace('"@', '"'))
    return result


async def check_example_script(base_url: str, seeds: range) -> None:
    address = base_url.removeprefix("http://")
    runs = [asyncio.to_thread(example_script, address, example_prompt(seed)) for seed in seeds]
    for images in await asyncio.gather(*runs):
        assert list(images) == ["9"]
        (png,) = images["9"]
        with Image.open(io.BytesIO(png)) as image:
            assert image.size == (64, 64)


async def test_comfyuis_websocket_example_runs_on_the_fleet(server: Server) -> None:
    await check_example_script(server.url, range(3))  # three at once, on three backends


# --- the setups ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "metadata",
    [pytest.param(True, marks=pytest.mark.slow), False],  # with metadata: also a late socket
    ids=["preview-metadata", "legacy-previews"],
)
async def test_serve_relays_the_backends_messages(tmp_path: Path, metadata: bool) -> None:
    emulator = {"preview_method": "latent2rgb", "step_time_s": 0.01}
    async with running_emulator(tmp_path / "direct", **emulator) as emu:
        direct = await run_all(emu.url, metadata=metadata)
    async with running_emulator(tmp_path / "backend", **emulator) as emu:
        settings = dialect_settings(
            tmp_path / "comfyrun", emulators=0, backends=[BackendConfig(name="e1", url=emu.url)]
        )
        async with serving(settings) as server:
            await wait_until_ready(server.url)
            relayed = await run_all(server.url, metadata=metadata)
            if metadata:
                assert_rest_of_run(*await attach_late(server.url, emu))
            hub = server.ctx.extras["relay_hub"]
            assert hub.jobs == 0  # nothing kept once the jobs ended
            for prompt_id, _ in relayed:  # in one process: not a single store write for it
                events = await server.ctx.store.events_since(prompt_id)
                assert not [e for e in events if e.kind == "comfy"]
    assert_relayed(direct, relayed)


async def test_a_prompt_ends_for_its_client_while_comfyui_still_unloads_its_models(
    tmp_path: Path,
) -> None:
    """A backend started with --disable-smart-memory unloads every model after a prompt's
    `execution_success`, before its history and its `executing` null: through comfyrun the
    client hears the messages ComfyUI sends directly, its prompt's end included, and hears that
    end while the backend is still unloading; /history and /view then answer it."""
    emulator = {"step_time_s": 0.01, "disable_smart_memory": True, "unload_s": 2.0}
    workflow = prompts()[0]
    async with running_emulator(tmp_path / "direct", **emulator) as emu:
        client = WsClient(emu.url, metadata=False)
        async with httpx.AsyncClient(base_url=emu.url, timeout=30) as http, client.connected():
            direct = await client.run(http, workflow)
    async with running_emulator(tmp_path / "backend", **emulator) as emu:
        settings = dialect_settings(
            tmp_path / "comfyrun", emulators=0, backends=[BackendConfig(name="e1", url=emu.url)]
        )
        async with serving(settings) as server:
            await wait_until_ready(server.url)
            client = WsClient(server.url, metadata=False)
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=30) as http,
                client.connected(),
            ):
                relayed = await client.run(http, workflow)
                assert emu.queue.history == {}  # the backend is still unloading the checkpoint
                entry = (await http.get(f"/history/{relayed[0]}")).json()[relayed[0]]
                assert entry["status"]["status_str"] == "success"
                images = [i for out in entry["outputs"].values() for i in out.get("images", [])]
                assert (await http.get("/view", params=images[0])).status_code == 200
    check_statuses(*direct)
    check_statuses(*relayed)
    want, have = normalized(*direct), normalized(*relayed)
    assert [_kind(m) for m in have] == [_kind(m) for m in want]
    assert have == want


async def test_the_end_is_told_as_its_commit_begins_and_history_answers_it_at_once(
    server: Server,
) -> None:
    """In one process, a /ws client is told a prompt's end while its job's final commit is
    under way (dispatch.relay.end_early), with the queue counted without the job; a GET
    /history/{id} of the prompt (what the client asks next) is answered at once, from the job
    as that commit writes it, its outputs there to fetch, and says what the store says once
    the commit is over; the queue's listing waits for the commit (it would show the job still
    running). The commit is held here until the client has been told."""
    await server.wait_ready()
    store: Any = server.ctx.store
    real = store.transition
    committing, released = asyncio.Event(), asyncio.Event()

    async def held(job_id: str, event: Event, *args: Any, **kwargs: Any) -> Any:
        if event is Event.SUCCEED:
            committing.set()
            await released.wait()
        return await real(job_id, event, *args, **kwargs)

    store.transition = held
    client = WsClient(server.url, metadata=False)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http, client.connected():
            prompt_id = await client.submit(http, tiny_workflow(7))
            received = await client.read_until_done(prompt_id)
            assert committing.is_set() and not released.is_set()  # told before the commit
            statuses = [m for m in received if isinstance(m, dict) and m["type"] == "status"]
            assert statuses[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0
            assert received[-2] is statuses[-1]  # ComfyUI's order: the queue, then the end
            entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
            assert not released.is_set()  # answered while the commit is held
            assert entry["status"]["status_str"] == "success"
            images = [i for out in entry["outputs"].values() for i in out.get("images", [])]
            assert (await http.get("/view", params=images[0])).status_code == 200
            queue = asyncio.ensure_future(http.get("/queue"))
            await asyncio.sleep(0.3)
            assert not queue.done()  # the listing waits for the commit
            released.set()
            assert (await queue).json() == {"queue_running": [], "queue_pending": []}
            job = await server.ctx.store.get(prompt_id)
            assert job is not None and job.status is JobStatus.SUCCEEDED
            server.ctx.service.finished.forget(prompt_id)  # read back from the store
            committed = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
            assert committed == entry  # what was told is what was committed
    finally:
        released.set()
        store.transition = real


async def interrupted_run(base_url: str, emulator: Emulator) -> tuple[str, list[Received]]:
    """A prompt interrupted (POST /interrupt) at its sampler's first step."""
    client = WsClient(base_url, metadata=True)
    emulator.faults.delay_s = 0.2
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http, client.connected():
            workflow = jsonb_order(text_to_image_workflow(seed=4, steps=50, size=32))
            prompt_id = await client.submit(http, workflow)
            received: list[Received] = []
            async with asyncio.timeout(60):
                while not any(isinstance(m, dict) and m["type"] == "progress" for m in received):
                    raw = await client.ws.recv()
                    received.append(raw if isinstance(raw, bytes) else json.loads(raw))
            answer = await http.post("/interrupt", json={"prompt_id": prompt_id})
            assert answer.status_code == 200
            return prompt_id, received + await client.read_until_done(prompt_id)
    finally:
        emulator.faults.delay_s = 0.0


async def test_an_interrupt_relays_the_backends_execution_interrupted(tmp_path: Path) -> None:
    emulator = {"preview_method": "latent2rgb", "step_time_s": 0.01}
    async with running_emulator(tmp_path / "direct", **emulator) as emu:
        direct = await interrupted_run(emu.url, emu)
    async with running_emulator(tmp_path / "backend", **emulator) as emu:
        settings = dialect_settings(
            tmp_path / "comfyrun", emulators=0, backends=[BackendConfig(name="e1", url=emu.url)]
        )
        async with serving(settings) as server:
            await wait_until_ready(server.url)
            relayed = await interrupted_run(server.url, emu)
    for _, received in (direct, relayed):
        kinds = [m["type"] if isinstance(m, dict) else "<binary>" for m in received]
        assert kinds[-3:] == ["execution_interrupted", "status", "executing"], kinds
    want, have = normalized(*direct), normalized(*relayed)
    # the same start and the same end (how many steps ran before the interrupt may differ)
    assert have[:6] == want[:6]
    assert have[-1] == want[-1]
    assert have[-2] == want[-2]  # ComfyUI's payload: the node, its class, the nodes executed
    assert sorted(have[-2]["data"]["executed"]) == ["1", "2", "3", "4"]


def relay_batches(pg_url: str, job_id: str) -> list[tuple[float, list[Any]]]:
    """(written at, frames) of each relay event of the job, from the database."""
    import psycopg

    schema = pg_url.rsplit("schema=", 1)[1]
    with psycopg.connect(pg_dsn()) as conn:
        rows = conn.execute(
            f'SELECT created_at, data FROM "{schema}".job_events '
            "WHERE job_id = %s AND kind = 'comfy' ORDER BY id",
            (job_id,),
        ).fetchall()
    return [(float(at), data["messages"]) for at, data in rows]


@pytest.mark.slow
async def test_api_and_worker_on_postgres_relay_the_backends_messages(
    tmp_path: Path, pg_url: str
) -> None:
    emulator = {"preview_method": "latent2rgb", "step_time_s": 0.01}
    async with running_emulator(tmp_path / "direct", **emulator) as emu:
        direct = await run_all(emu.url, metadata=True)
    async with running_emulator(tmp_path / "backend", **emulator) as emu:
        procs: list[ServerProcess] = []
        try:
            nodes = {"api": "api", "worker": "worker"}
            await start_nodes(procs, tmp_path, pg_url, emu.url, nodes)
            relayed = await run_all(procs[0].url, metadata=True)
            late = await attach_late(procs[0].url, emu)
            assert_rest_of_run(*late)
            batches = await asyncio.to_thread(relay_batches, pg_url, late[0])
            # every message in order, in few writes: at most one per progress interval (0.5 s)
            # before the last one (the end, written just before the final state); the late
            # socket heard their tail
            written = sum(len(batch) for _, batch in batches)
            assert written > len(normalized(*late))
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(batches[:-1])]
            assert all(gap >= 0.45 for gap in gaps), gaps
            assert len(batches) < written / 3
            await check_example_script(procs[0].url, range(2))
        finally:
            for proc in procs:
                proc.kill()
    assert_relayed(direct, relayed)


@pytest.mark.slow
@pytest.mark.parametrize(
    "nodes",
    [{"a": "api", "b": "api", "w": "worker"}, {"a": "serve", "b": "serve"}],
    ids=["api-nodes", "serve-nodes"],
)
async def test_a_socket_hears_its_prompt_posted_to_another_api_node(
    tmp_path: Path, pg_url: str, nodes: dict[str, str]
) -> None:
    """Two API nodes behind a load balancer without sticky sessions: a ComfyUI client's /ws
    lands on one, its POST /prompt on the other. The socket hears the prompt's run to its end
    (it heard nothing: only the node that took the prompt told its sockets; and a `serve` node
    that handed the prompt to its idle backend at once told no other node of it)."""
    async with running_emulator(tmp_path / "backend", step_time_s=0.01) as emu:
        procs: list[ServerProcess] = []
        try:
            await start_nodes(procs, tmp_path, pg_url, emu.url, nodes)
            a, b = procs[0].url, procs[1].url
            client_id = uuid.uuid4().hex
            on_a = f"{a.replace('http', 'ws')}/ws?clientId="
            async with (
                websockets.connect(on_a + client_id) as ws,
                websockets.connect(on_a + uuid.uuid4().hex) as editor,  # another client's
            ):
                assert json.loads(await ws.recv())["type"] == "status"
                assert json.loads(await editor.recv())["type"] == "status"
                async with httpx.AsyncClient(timeout=30) as http:
                    body = {"prompt": tiny_workflow(), "client_id": client_id}
                    answer = await http.post(f"{b}/prompt", json=body)
                    assert answer.status_code == 200, answer.text
                prompt_id = answer.json()["prompt_id"]
                heard = [m["type"] for m in await until_prompt_ends(ws, prompt_id)]
                assert heard.index("execution_start") < heard.index("execution_success"), heard
                # the queue grew: every socket on the other node hears it, as ComfyUI's do
                told = json.loads(await asyncio.wait_for(editor.recv(), 10))
                assert told["type"] == "status", told
                assert "queue_remaining" in told["data"]["status"]["exec_info"]
        finally:
            for proc in procs:
                proc.kill()
