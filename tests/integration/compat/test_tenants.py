"""API keys as tenants, through every dialect over real HTTP and websockets: one key's jobs,
outputs and assets answer another key exactly as things that do not exist do (each dialect's
own 404), an admin key sees all, a key without `submit` gets 403 in the dialect's shape, and a
revoked key stops working."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from PIL import Image
from tests.integration.compat.conftest import Server, dialect_settings, serving
from tests.support.comfy import until_prompt_ends
from tests.support.emulator import image_workflow

from comfyrun.client import ComfyrunClient
from comfyrun.core.state import Event

pytestmark = pytest.mark.timeout(180)

ADMIN = "admin-secret"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Tenant:
    def __init__(self, server: Server, key: dict[str, Any]) -> None:
        self.key = key
        self.headers = {"Authorization": f"Bearer {key['key']}"}
        self.http = httpx.AsyncClient(base_url=server.url, headers=self.headers, timeout=30)


def write_templates(folder: Path) -> None:
    """`image` (a parameter `color`) and `photo` (a file parameter `photo`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "image.json").write_text(json.dumps(image_workflow(prefix="tpl", size=8)))
    (folder / "image.params.json").write_text(
        json.dumps({"color": {"node": "1", "input": "color"}})
    )
    photo = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ph"}},
    }
    (folder / "photo.json").write_text(json.dumps(photo))
    (folder / "photo.params.json").write_text(
        json.dumps({"photo": {"node": "1", "input": "image"}})
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    write_templates(tmp_path / "workflows")
    settings = dialect_settings(
        tmp_path, api_keys=[ADMIN], emulators=1, workflows_dir=tmp_path / "workflows"
    )
    async with serving(settings) as srv:
        yield srv
        for tenant in MINTED.pop(srv.url, []):
            await tenant.http.aclose()


MINTED: dict[str, list[Tenant]] = {}


async def mint(server: Server, name: str, scopes: list[str]) -> Tenant:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as admin:
        answer = await admin.post(
            "/api/v2/admin/keys",
            json={"name": name, "scopes": scopes},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["key"].startswith("crk_")
    tenant = Tenant(server, answer.json())
    MINTED.setdefault(server.url, []).append(tenant)
    return tenant


def _picture() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


#: A small PNG the tests upload.
PICTURE = _picture()


async def uploaded(tenant: Tenant) -> dict[str, Any]:
    """PICTURE uploaded as an asset of `tenant` (p.png)."""
    files = {"file": ("p.png", PICTURE, "image/png")}
    answer = await tenant.http.post("/api/v2/assets", files=files)
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


async def finished(tenant: Tenant, job_id: str) -> dict[str, Any]:
    """The job once it ended (followed over its event stream)."""
    async with ComfyrunClient(str(tenant.http.base_url), api_key=tenant.key["key"]) as client:
        return await client.wait(job_id, timeout=60)


async def same_as_missing(
    http: httpx.AsyncClient, method: str, path: str, theirs: str, **kwargs: Any
) -> httpx.Response:
    """`path` with another owner's id answers exactly as with an id that never existed (the
    same shape of id: its UUID part replaced)."""
    missing = UUID.sub(str(uuid.uuid4()), theirs, count=1)
    assert missing != theirs
    mine = await http.request(method, path.format(id=theirs), **kwargs)
    nothing = await http.request(method, path.format(id=missing), **kwargs)
    assert mine.status_code == nothing.status_code, (path, mine.text)
    assert mine.text.replace(theirs, "X") == nothing.text.replace(missing, "X"), path
    return mine


async def test_each_dialect_hides_one_keys_jobs_from_another(server: Server) -> None:
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    wf = image_workflow(prefix="ten", size=8)

    # team A submits through every dialect
    v2 = (await a.http.post("/api/v2/jobs", json={"workflow": wf})).json()["id"]
    comfy = (await a.http.post("/prompt", json={"prompt": wf})).json()["prompt_id"]
    runpod = (await a.http.post("/run", json={"input": {"workflow": wf}})).json()["id"]
    plain = (await a.http.post("/run", json={"workflow": wf})).json()["job_id"]
    task_id = (await a.http.post("/api/v1/tasks", json={"payload": wf})).json()["id"]
    ids = [v2, comfy, runpod, plain, task_id]
    jobs = [await finished(a, i) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 5

    # v2
    for i in ids:
        answer = await same_as_missing(b.http, "GET", "/api/v2/jobs/{id}", i)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        await same_as_missing(b.http, "GET", "/api/v2/jobs/{id}/workflow", i)
        await same_as_missing(b.http, "GET", "/api/v2/jobs/{id}/webhooks", i)
        await same_as_missing(b.http, "GET", "/api/v2/jobs/{id}/events", i)
        await same_as_missing(b.http, "POST", "/api/v2/jobs/{id}/cancel", i)
        await same_as_missing(b.http, "DELETE", "/api/v2/jobs/{id}", i)
    listed = (await b.http.get("/api/v2/jobs")).json()["jobs"]
    assert listed == []
    own = {j["id"] for j in (await a.http.get("/api/v2/jobs")).json()["jobs"]}
    assert own == set(ids)
    output = jobs[0]["outputs"][0]
    await same_as_missing(b.http, "GET", "/api/v2/assets/{id}", output["id"])
    await same_as_missing(b.http, "GET", "/api/v2/assets/{id}/content", output["id"])
    assert (await a.http.get(f"/api/v2/assets/{output['id']}/content")).status_code == 200
    # ... and still not B's once A's download put the job in the server's memory
    await same_as_missing(b.http, "GET", "/api/v2/assets/{id}/content", output["id"])
    stored = await server.ctx.store.get(v2)
    assert stored is not None and stored.outputs[0].storage_key
    by_key = f"/api/v2/files/{stored.outputs[0].storage_key}"
    assert (await a.http.get(by_key)).status_code == 200
    await same_as_missing(b.http, "GET", "/api/v2/files/{id}/9/x.png", v2)
    assert (await b.http.get(by_key)).status_code == 404

    # ComfyUI
    for i in ids:
        answer = await same_as_missing(b.http, "GET", "/history/{id}", i)
        assert answer.json() == {}  # ComfyUI's answer for a prompt it does not know
        await same_as_missing(b.http, "GET", "/api/history/{id}", i)
        answer = await same_as_missing(b.http, "GET", "/api/jobs/{id}", i)
        assert answer.status_code == 404
        await same_as_missing(b.http, "POST", "/api/jobs/{id}/cancel", i)
    assert (await b.http.get("/history")).json() == {}
    assert (await b.http.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
    assert (await b.http.get("/api/jobs")).json()["jobs"] == []
    for path, body in (("/history", {"clear": True}), ("/queue", {"clear": True})):
        assert (await b.http.post(path, json=body)).status_code == 200  # clears B's own only
    assert (await b.http.post("/interrupt", json={})).status_code == 200
    assert (await b.http.post("/purge-queue")).status_code == 200
    assert set(ids) <= set((await a.http.get("/history")).json())
    history = (await a.http.get(f"/history/{comfy}")).json()[comfy]
    [image] = [im for out in history["outputs"].values() for im in out.get("images", [])]
    assert (await a.http.get("/view", params=image)).status_code == 200
    hidden = await b.http.get("/view", params=image)
    nothing = await b.http.get("/view", params={**image, "subfolder": f"{uuid.uuid4()}/9"})
    assert hidden.status_code == nothing.status_code == 404

    # RunPod (and the plain variant on the same routes)
    for i in ids:
        for path in ("/status/{id}", "/v2/ep/status/{id}", "/stream/{id}"):
            answer = await same_as_missing(b.http, "GET", path, i)
            assert answer.status_code == 404
        await same_as_missing(b.http, "POST", "/cancel/{id}", i)
        await same_as_missing(b.http, "POST", "/retry/{id}", i)
        await same_as_missing(b.http, "DELETE", "/admin/job/{id}", i)
    assert (await a.http.get(f"/status/{runpod}")).json()["status"] == "COMPLETED"
    assert (await a.http.get(f"/status/{plain}")).status_code == 200

    # tasks
    for i in ids:
        answer = await same_as_missing(b.http, "GET", "/api/v1/tasks/{id}", i)
        assert answer.status_code == 404
    assert (await a.http.get(f"/api/v1/tasks/{task_id}")).status_code == 200

    # an admin key sees every owner's jobs
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
        assert {j["id"] for j in (await root.get("/api/v2/jobs")).json()["jobs"]} >= set(ids)
        assert (await root.get(f"/history/{comfy}")).json()[comfy]


async def test_assets_and_uploads_are_their_owners(server: Server) -> None:
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    asset = await uploaded(a)
    assert (await a.http.get(f"/api/v2/assets/{asset['id']}")).status_code == 200
    await same_as_missing(b.http, "GET", "/api/v2/assets/{id}", asset["id"])
    await same_as_missing(b.http, "GET", "/api/v2/assets/{id}/content", asset["id"])
    await same_as_missing(b.http, "DELETE", "/api/v2/assets/{id}", asset["id"])
    meta = f"/api/v2/files/assets/meta/{asset['id']}.json"  # storage keys: not a way round
    assert (await b.http.get(meta)).status_code == 404
    load = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "p.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    body = {"workflow": load, "inputs": [{"name": "p.png", "asset_id": asset["id"]}]}
    refused = await b.http.post("/api/v2/jobs", json=body)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "missing_asset"
    assert (await a.http.post("/api/v2/jobs", json=body)).status_code == 201
    files = {"image": ("mine.png", PICTURE, "image/png")}
    assert (await a.http.post("/upload/image", files=files)).status_code == 200
    view = {"filename": "mine.png", "type": "input"}
    assert (await a.http.get("/view", params=view)).status_code == 200
    assert (await b.http.get("/view", params=view)).status_code == 404


async def test_a_prompt_told_ended_before_its_commit_is_only_its_keys_history(
    server: Server,
) -> None:
    """While a prompt's final commit is under way (its end told to its socket early), GET
    /history/{id} answers its own key at once from the job as told, and another key as for a
    prompt that does not exist (the commit is held here until both have asked)."""
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    store: Any = server.ctx.store
    real = store.transition
    released = asyncio.Event()

    async def held(job_id: str, event: Event, *args: Any, **kwargs: Any) -> Any:
        if event is Event.SUCCEED:
            await released.wait()
        return await real(job_id, event, *args, **kwargs)

    store.transition = held
    url = f"ws://{server.url.removeprefix('http://')}/ws?clientId=told"
    try:
        async with websockets.connect(url, additional_headers=a.headers) as ws:
            body = {"prompt": image_workflow(prefix="told", size=8), "client_id": "told"}
            prompt_id = (await a.http.post("/prompt", json=body)).json()["prompt_id"]
            await until_prompt_ends(ws, prompt_id, timeout=60)
            own = (await a.http.get(f"/history/{prompt_id}")).json()
            assert own[prompt_id]["status"]["status_str"] == "success"
            answer = await same_as_missing(b.http, "GET", "/history/{id}", prompt_id)
            assert answer.json() == {}
            assert not released.is_set()
    finally:
        released.set()
        store.transition = real


async def test_comfy_socket_hears_only_its_own_keys_prompts(server: Server) -> None:
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    host = server.url.removeprefix("http://")

    async def until_done(ws: Any, prompt_id: str, seen: list[dict[str, Any]]) -> None:
        seen += await until_prompt_ends(ws, prompt_id, timeout=60)

    url = f"ws://{host}/ws?clientId=shared"
    async with (
        websockets.connect(url, additional_headers=a.headers) as ws_a,
        websockets.connect(url, additional_headers=b.headers) as ws_b,
    ):
        for ws in (ws_a, ws_b):
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "status"
        body = {"prompt": image_workflow(prefix="wa", size=8), "client_id": "shared"}
        prompt_a = (await a.http.post("/prompt", json=body)).json()["prompt_id"]
        heard_a: list[dict[str, Any]] = []
        await until_done(ws_a, prompt_a, heard_a)
        assert "execution_success" in [m["type"] for m in heard_a]
        # B's own prompt on the same clientId reaches B; A's never did
        body = {"prompt": image_workflow(prefix="wb", size=8), "client_id": "shared"}
        prompt_b = (await b.http.post("/prompt", json=body)).json()["prompt_id"]
        heard_b: list[dict[str, Any]] = []
        await until_done(ws_b, prompt_b, heard_b)
        assert all(m["data"].get("prompt_id") != prompt_a for m in heard_b)
        assert "execution_success" in [m["type"] for m in heard_b]


async def test_scopes_and_revocation(server: Server) -> None:
    reader = await mint(server, "reader", ["read"])
    wf = image_workflow(size=8)
    answer = await reader.http.post("/api/v2/jobs", json={"workflow": wf})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    answer = await reader.http.post("/prompt", json={"prompt": wf})
    assert answer.status_code == 403 and answer.json()["error"]["type"] == "forbidden"
    answer = await reader.http.post("/run", json={"input": {"workflow": wf}})
    assert answer.status_code == 403 and answer.json()["code"] == "forbidden"
    answer = await reader.http.post("/api/v1/tasks", json={"payload": wf})
    assert answer.status_code == 403
    assert (await reader.http.get("/api/v2/admin/keys")).status_code == 403
    writer = await mint(server, "writer", ["submit"])
    assert (await writer.http.get("/api/v2/jobs")).status_code == 403  # no read scope
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
        keys = (await root.get("/api/v2/admin/keys")).json()["keys"]
        assert {k["name"] for k in keys} == {"reader", "writer"}
        assert all("key" not in k and "key_hash" not in k for k in keys)
        assert (await root.delete(f"/api/v2/admin/keys/{reader.key['id']}")).status_code == 204
        assert (await root.delete(f"/api/v2/admin/keys/{reader.key['id']}")).status_code == 404
    assert (await reader.http.get("/api/v2/jobs")).status_code == 401


async def test_a_key_over_its_quota_gets_429_in_each_dialect(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as admin:
        answer = await admin.post(
            "/api/v2/admin/keys",
            json={"name": "slow", "quota": {"per_minute": 1}},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
    key = answer.json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    wf = image_workflow(size=8)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        assert (await http.post("/api/v2/jobs", json={"workflow": wf})).status_code == 201
        v2 = await http.post("/api/v2/jobs", json={"workflow": wf})
        comfy = await http.post("/prompt", json={"prompt": wf})
        runpod = await http.post("/run", json={"input": {"workflow": wf}})
        task = await http.post("/api/v1/tasks", json={"payload": wf})
    for answer in (v2, comfy, runpod, task):
        assert answer.status_code == 429, answer.text
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert v2.json()["error"]["code"] == "quota_exceeded"
    assert comfy.json()["error"]["type"] == "quota_exceeded"
    assert runpod.json()["code"] == task.json()["code"] == "quota_exceeded"


async def test_the_counts_a_key_is_told_are_its_own(server: Server) -> None:
    """RunPod's /health, the plain /stats and ComfyUI's queue size (at a socket's greeting and
    in each broadcast) count the caller's own jobs; an admin key's count every job. The
    backends (RunPod's workers) are the fleet's, the same for everyone."""
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    body = {"workflow": image_workflow(prefix="b", size=8)}
    done = (await b.http.post("/api/v2/jobs", params={"wait": 60}, json=body)).json()
    assert done["status"] == "succeeded"
    await server.set_faults({"hang": True})
    try:
        for color in range(3):
            body = {"prompt": image_workflow(color, prefix="a", size=8)}
            assert (await a.http.post("/prompt", json=body)).status_code == 200

        health_a = (await a.http.get("/health")).json()
        health_b = (await b.http.get("/health")).json()
        assert health_a["jobs"]["inQueue"] + health_a["jobs"]["inProgress"] == 3
        assert health_a["jobs"]["completed"] == 0
        assert health_b["jobs"] == {
            "completed": 1,
            "failed": 0,
            "inProgress": 0,
            "inQueue": 0,
            "retried": 0,
        }
        assert health_a["workers"] == health_b["workers"]
        stats_b = (await b.http.get("/stats")).json()
        assert (stats_b["total_jobs"], stats_b["completed_jobs"]) == (1, 1)
        v2_a = (await a.http.get("/api/v2/stats")).json()
        v2_b = (await b.http.get("/api/v2/stats")).json()
        assert v2_a["queue_depth"] + v2_a["running"] == 3 and v2_a["counts"]["succeeded"] == 0
        assert (v2_b["queue_depth"], v2_b["running"], v2_b["counts"]["succeeded"]) == (0, 0, 1)
        assert v2_b["oldest_queued_age_s"] is None  # A's queued prompts are not B's
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
            assert (await root.get("/health")).json()["job_stats"]["total"] == 4
            assert (await root.get("/stats")).json()["total_jobs"] == 4

        host = server.url.removeprefix("http://")

        async def status_of(ws: Any) -> int:
            async with asyncio.timeout(20):
                while True:
                    raw = await ws.recv()
                    message = json.loads(raw) if isinstance(raw, str) else {}
                    if message.get("type") == "status":
                        remaining: int = message["data"]["status"]["exec_info"]["queue_remaining"]
                        return remaining

        async with (
            websockets.connect(f"ws://{host}/ws?clientId=ca", additional_headers=a.headers) as ws_a,
            websockets.connect(f"ws://{host}/ws?clientId=cb", additional_headers=b.headers) as ws_b,
            websockets.connect(f"ws://{host}/ws?clientId=cr", additional_headers=admin) as ws_root,
        ):
            assert [await status_of(ws) for ws in (ws_a, ws_b, ws_root)] == [3, 0, 3]
            # a new prompt of A's: each socket is told its own queue's size
            body = {"prompt": image_workflow(7, prefix="a", size=8), "client_id": "ca"}
            assert (await a.http.post("/prompt", json=body)).status_code == 200
            assert await status_of(ws_a) == 4
            assert await status_of(ws_b) == 0
            assert await status_of(ws_root) == 4
    finally:
        await server.set_faults({"hang": False})


async def test_batches_and_template_jobs_are_their_keys(server: Server) -> None:
    """A batch or a template's job is its key's like any job: another key's answer as ones
    that do not exist (reading, listing, the zip, cancelling), a file parameter is one of
    the key's own assets, a key without `submit` may not make them, and they count against
    the key's quota: a batch fits it whole, or nothing is queued."""
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    batch = await a.http.post(
        "/api/v2/batches", json={"workflow": "image", "matrix": {"color": [1, 2]}}
    )
    assert batch.status_code == 201, batch.text
    batch_id = batch.json()["id"]
    for path in ("/api/v2/batches/{id}", "/api/v2/batches/{id}/jobs"):
        answer = await same_as_missing(b.http, "GET", path, batch_id)
        assert answer.status_code == 404
    await same_as_missing(b.http, "GET", "/api/v2/batches/{id}/outputs.zip", batch_id)
    await same_as_missing(b.http, "POST", "/api/v2/batches/{id}/cancel", batch_id)
    assert (await a.http.get(f"/api/v2/batches/{batch_id}")).json()["status"] != "canceling"
    jobs = (await a.http.get(f"/api/v2/batches/{batch_id}/jobs")).json()["jobs"]
    templated = await a.http.post("/api/v2/workflows/image/jobs", json={"params": {"color": 3}})
    assert templated.status_code == 201, templated.text
    own = {j["id"] for j in (await a.http.get("/api/v2/jobs")).json()["jobs"]}
    assert own == {*(j["id"] for j in jobs), templated.json()["id"]}
    assert (await b.http.get("/api/v2/jobs")).json()["jobs"] == []
    for job in [*jobs, templated.json()]:
        await same_as_missing(b.http, "GET", "/api/v2/jobs/{id}", job["id"])

    asset = await uploaded(a)
    params = {"params": {"photo": asset["id"]}}
    refused = await b.http.post("/api/v2/workflows/photo/jobs", json=params)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "missing_asset"
    items = {"workflow": "photo", "items": [params]}
    refused = await b.http.post("/api/v2/batches", json=items)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "missing_asset"
    assert (await a.http.post("/api/v2/workflows/photo/jobs", json=params)).status_code == 201

    reader = await mint(server, "reader", ["read"])
    answer = await reader.http.post("/api/v2/workflows/image/jobs", json={"params": {}})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    answer = await reader.http.post("/api/v2/batches", json={"workflow": "image", "items": [{}]})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"

    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
        minted = await root.post(
            "/api/v2/admin/keys", json={"name": "small", "quota": {"max_queued": 2}}
        )
        key = minted.json()
        await server.set_faults({"hang": True})
        try:
            small = {"Authorization": f"Bearer {key['key']}"}
            async with httpx.AsyncClient(base_url=server.url, headers=small, timeout=30) as http:
                three = {"workflow": "image", "matrix": {"color": [1, 2, 3]}}
                over = await http.post("/api/v2/batches", json=three)
                assert over.status_code == 429, over.text
                assert over.json()["error"]["code"] == "quota_exceeded"
                assert (await http.get("/api/v2/jobs")).json()["jobs"] == []  # none queued
                two = {"workflow": "image", "matrix": {"color": [1, 2]}}
                assert (await http.post("/api/v2/batches", json=two)).status_code == 201
                one = await http.post("/api/v2/workflows/image/jobs", json={"params": {}})
                assert one.status_code == 429, one.text
            usage = (await root.get(f"/api/v2/admin/keys/{key['id']}")).json()["usage"]
            assert (usage["jobs"], usage["unfinished"]) == (2, 2)
        finally:
            await server.set_faults({"hang": False})


async def test_a_chosen_prompt_id_opens_no_other_namespace(server: Server) -> None:
    """A ComfyUI prompt id is the client's to choose; one that names a folder of the storage
    that is no job's ("assets", the uploads') gives its key no way into it: not by a file's
    name (/api/v2/files, /view, a mask's original_ref), and its outputs land elsewhere."""
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    asset = await uploaded(a)
    files = {"image": ("mine.png", PICTURE, "image/png")}
    assert (await a.http.post("/upload/image", files=files)).status_code == 200
    blob = asset["hash"].split(":")[-1]
    names = [
        f"assets/meta/{asset['id']}.json",
        f"assets/blobs/{blob}",
        f"comfy-inputs-of/{a.key['id']}/mine.png",
    ]
    for prompt_id in ("assets", "comfy-inputs-of", "Assets"):
        body = {"prompt": image_workflow(prefix="ns", size=8), "prompt_id": prompt_id}
        answer = await b.http.post("/prompt", json=body)
        assert answer.status_code == 200, answer.text
        done = await finished(b, prompt_id)
        assert done["status"] == "succeeded"
        stored = await server.ctx.store.get(prompt_id)
        assert stored is not None and stored.outputs[0].storage_key
        assert not stored.outputs[0].storage_key.startswith(f"{prompt_id}/")
    for name in names:
        assert (await b.http.get(f"/api/v2/files/{name}")).status_code == 404, name
        folder, _, filename = name.rpartition("/")
        view = {"filename": filename, "subfolder": folder, "type": "output"}
        assert (await b.http.get("/view", params=view)).status_code == 404, name
        ref = json.dumps(view)
        mask = {"image": ("m.png", PICTURE, "image/png")}
        answer = await b.http.post("/upload/mask", files=mask, data={"original_ref": ref})
        assert answer.status_code == 404, (name, answer.text)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
        assert (await root.get(f"/api/v2/files/{names[1]}")).status_code == 200


def refusal_code(answer: httpx.Response) -> str:
    """The error code of an answer in any dialect's shape."""
    body = answer.json()
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("type") or error.get("code"))
    return str(body.get("code"))


async def test_a_key_without_submit_changes_nothing(server: Server) -> None:
    """`submit` is needed for every write of every dialect, not only for submitting (a read-
    only key cleared, interrupted, purged, uploaded and saved the editor's files); RunPod's
    POST /status and /stream only read, and need `read` (a submit-only key read through them)."""
    reader = await mint(server, "reader", ["read"])
    writer = await mint(server, "writer", ["submit"])
    job_id = str(uuid.uuid4())
    png = PICTURE
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/api/v2/jobs/{job_id}/cancel", {}),
        ("DELETE", f"/api/v2/jobs/{job_id}", {}),
        ("POST", "/api/v2/assets", {"files": {"file": ("p.png", png, "image/png")}}),
        ("POST", "/api/v2/assets/from-hash", {"json": {"hash": "blake3:" + "0" * 64}}),
        ("DELETE", f"/api/v2/assets/{job_id}", {}),
        ("POST", f"/api/v2/batches/{job_id}/cancel", {}),
        (
            "POST",
            "/api/v2/models",
            {"json": {"url": "https://x/y", "folder": "loras", "name": "a"}},
        ),
        ("DELETE", "/api/v2/models/loras/a", {}),
        ("POST", f"/api/jobs/{job_id}/cancel", {}),
        ("POST", "/run", {"json": {"workflow": image_workflow(size=8)}}),
        ("POST", f"/cancel/{job_id}", {}),
        ("POST", f"/retry/{job_id}", {}),
        ("POST", "/purge-queue", {}),
        ("POST", "/v2/ep/purge-queue", {}),
        ("DELETE", f"/admin/job/{job_id}", {}),
        ("POST", "/settings", {"json": {"Comfy.Theme": "dark"}}),
    ]
    for prefix in ("", "/api"):
        writes += [
            ("POST", f"{prefix}/queue", {"json": {"clear": True}}),
            ("POST", f"{prefix}/history", {"json": {"clear": True}}),
            ("POST", f"{prefix}/interrupt", {"json": {}}),
            ("POST", f"{prefix}/upload/image", {"files": {"image": ("i.png", png, "image/png")}}),
            ("POST", f"{prefix}/upload/mask", {"files": {"image": ("m.png", png, "image/png")}}),
            ("POST", f"{prefix}/free", {"json": {"unload_models": True}}),
            ("POST", f"{prefix}/settings/Comfy.Theme", {"json": "dark"}),
            ("POST", f"{prefix}/userdata/workflows%2Fa.json", {"content": b"{}"}),
            ("DELETE", f"{prefix}/userdata/workflows%2Fa.json", {}),
        ]
    for method, path, kwargs in writes:
        answer = await reader.http.request(method, path, **kwargs)
        assert answer.status_code == 403, (method, path, answer.text)
        assert refusal_code(answer) == "forbidden", (method, path, answer.text)
    assert (await reader.http.get("/userdata", params={"dir": "workflows"})).status_code == 404
    assert (await reader.http.get("/settings")).json() == {}
    assert (await reader.http.post(f"/status/{job_id}")).status_code == 404  # a read
    assert (await reader.http.patch("/internal/logs/subscribe", json={})).status_code == 200
    for path in (f"/status/{job_id}", f"/stream/{job_id}", f"/v2/ep/status/{job_id}"):
        answer = await writer.http.post(path)
        assert answer.status_code == 403 and refusal_code(answer) == "forbidden", path


async def test_waiting_on_another_keys_job_is_a_404_at_once(server: Server) -> None:
    """`GET /api/v2/jobs/{id}?wait=` on another key's running job held the request until that
    job ended (or the wait ran out), then answered 404: the time told that it was there."""
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    await server.set_faults({"hang": True})
    try:
        body = {"workflow": image_workflow(prefix="w", size=8)}
        job_id = (await a.http.post("/api/v2/jobs", json=body)).json()["id"]
        async with asyncio.timeout(20):
            while True:
                if (await a.http.get(f"/api/v2/jobs/{job_id}")).json()["status"] == "running":
                    break
                await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await same_as_missing(
            b.http, "GET", "/api/v2/jobs/{id}", job_id, params={"wait": 5}
        )
        assert answer.status_code == 404
        assert loop.time() - started < 2.5
    finally:
        await server.set_faults({"hang": False})


async def test_the_model_cache_is_an_admins(server: Server) -> None:
    """The model cache is the fleet's: a key listed every file's sources, pulled another
    key's asset into it by id (told whether that asset exists) and evicted what others use."""
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    asset = await uploaded(a)
    pull = {"asset_id": asset["id"], "folder": "loras", "name": "taken.safetensors"}
    for method, path, kwargs in (
        ("GET", "/api/v2/models", {}),
        ("POST", "/api/v2/models", {"json": pull}),
        ("DELETE", "/api/v2/models/loras/taken.safetensors", {}),
    ):
        answer = await b.http.request(method, path, **kwargs)
        assert answer.status_code == 403, (method, answer.text)
        assert answer.json()["error"]["code"] == "forbidden"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
        assert (await root.get("/api/v2/models")).json()["models"] == []


async def test_a_key_finds_by_hash_only_bytes_it_had(server: Server) -> None:
    """Another key that knew a hash learned that the bytes were stored (HEAD by-hash) and
    minted an asset over them (from-hash), then downloaded them; it finds by hash only what it
    uploaded itself now (its upload of the same bytes is still stored once)."""
    a = await mint(server, "team-a", ["submit", "read"])
    b = await mint(server, "team-b", ["submit", "read"])
    secret = b"the quarterly figures, as a PNG would hold them " * 20
    files = {"file": ("s.png", secret, "image/png")}
    asset = (await a.http.post("/api/v2/assets", files=files)).json()
    digest = asset["hash"]
    by_hash = f"/api/v2/assets/by-hash/{digest}"
    assert (await a.http.head(by_hash)).status_code == 200
    unknown = "blake3:" + "0" * 64
    assert (
        (await b.http.head(by_hash)).status_code
        == (await b.http.head(f"/api/v2/assets/by-hash/{unknown}")).status_code
        == 404
    )
    minted = await b.http.post("/api/v2/assets/from-hash", json={"hash": digest})
    assert minted.status_code == 404, minted.text
    assert (await a.http.post("/api/v2/assets/from-hash", json={"hash": digest})).status_code == 201
    again = (await b.http.post("/api/v2/assets", files=files)).json()  # B had them too
    assert again["hash"] == digest
    assert (await b.http.head(by_hash)).status_code == 200
    assert (await b.http.post("/api/v2/assets/from-hash", json={"hash": digest})).status_code == 201
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as admin:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        assert (await admin.head(by_hash, headers=headers)).status_code == 200


async def test_a_revoked_key_s_open_streams_are_ended(server: Server) -> None:
    """A revoked key was refused new requests, but its open event stream and /ws went on (for
    as long as the job ran, or for ever). They end within seconds of the revocation now."""
    from tests.support.emulator import text_to_image_workflow

    key = await mint(server, "leaving", ["submit", "read"])
    long = {"workflow": text_to_image_workflow(steps=2000)}  # runs far past the test
    job = (await key.http.post("/api/v2/jobs", json=long)).json()
    ws_url = f"{server.url.replace('http', 'ws')}/ws?clientId=c1&token={key.key['key']}"
    async with (
        key.http.stream("GET", f"/api/v2/jobs/{job['id']}/events") as events,
        websockets.connect(ws_url) as socket,
    ):
        assert events.status_code == 200
        lines = events.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        assert json.loads(await socket.recv())["type"] == "status"
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
            gone = await root.delete(f"/api/v2/admin/keys/{key.key['id']}")
            assert gone.status_code == 204
        async with asyncio.timeout(20):  # the next check (5 s) past the key cache (2 s)
            async for _ in lines:
                pass  # (events of the job meanwhile)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=30) as root:
        await root.post(f"/api/v2/jobs/{job['id']}/cancel")
