"""RunPod's endpoint API, driven by the real `runpod` SDK pointed at comfyrun
(runpod.endpoint_url_base = "http://127.0.0.1:PORT/v2") with several emulated backends, and
the plain /run and task variants driven over HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
import requests
from PIL import Image
from tests.integration.compat.conftest import Server
from tests.support.emulator import image_workflow

if TYPE_CHECKING:
    import runpod

pytestmark = pytest.mark.timeout(120)
#: The server runs in the test's own event loop: a CPU-starved start (two suites on 2 cores)
#: can hold a request past httpx's 5 s default, as it did once for a connect.
CLIENT_TIMEOUT_S = 30.0

T = TypeVar("T")


@pytest.fixture
def endpoint(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[runpod.Endpoint]:
    # imported here: the SDK's import runs py-cpuinfo in a subprocess (~1 s of CPU), which
    # every test process would pay at collection
    import runpod
    from runpod.endpoint.runner import RunPodClient

    monkeypatch.setattr(runpod, "api_key", "test-key")
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{server.url}/v2")
    # the SDK's requests wait 10 s for an answer: our httpx clients' CLIENT_TIMEOUT_S, for
    # the same reason (a request sent while two suites share 2 cores once waited past 10 s)
    request = RunPodClient._request

    def patient(self: Any, method: str, endpoint: str, data: Any = None, timeout: int = 10) -> Any:
        return request(self, method, endpoint, data, max(timeout, int(CLIENT_TIMEOUT_S)))

    monkeypatch.setattr(RunPodClient, "_request", patient)
    yield runpod.Endpoint("my-endpoint")


async def sdk(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The SDK is synchronous: run it off the event loop that serves comfyrun."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def decode_png(item: dict[str, Any]) -> Image.Image:
    assert item["type"] == "base64"
    return Image.open(io.BytesIO(base64.b64decode(item["data"])))


def png_base64(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def wait_status(job: Any, wanted: set[str], timeout: float = 60.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            status: str = await sdk(job.status)
            if status in wanted:
                return status
            await asyncio.sleep(0.1)


async def poll_done(http: httpx.AsyncClient, path: str, timeout: float = 60.0) -> dict[str, Any]:
    """GET `path` until its status is no longer pending or running."""
    async with asyncio.timeout(timeout):
        while True:
            body: dict[str, Any] = (await http.get(path)).json()
            if body["status"] not in ("pending", "running"):
                return body
            await asyncio.sleep(0.1)


async def test_sdk_run_status_output_on_several_backends(
    server: Server, endpoint: runpod.Endpoint
) -> None:
    jobs = [
        await sdk(endpoint.run, {"input": {"workflow": image_workflow(c, size=16)}})
        for c in range(4)
    ]
    for job in jobs:
        assert await wait_status(job, {"COMPLETED", "FAILED"}) == "COMPLETED"
        output = await sdk(job.output)
        (image,) = output["images"]
        assert image["filename"].endswith(".png")
        with decode_png(image) as img:
            assert img.size == (16, 16)
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        raw = (await http.get(f"/v2/my-endpoint/status/{jobs[0].job_id}")).json()
        assert raw["status"] == "COMPLETED"
        assert raw["delayTime"] >= 0 and raw["executionTime"] >= 0
        assert set(raw) == {"id", "status", "delayTime", "executionTime", "output"}
    health = await sdk(endpoint.health)
    assert health["jobs"]["completed"] == 4
    assert health["workers"]["idle"] + health["workers"]["running"] >= 1


async def test_sdk_run_sync_with_input_images(server: Server, endpoint: runpod.Endpoint) -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "r"}},
    }
    request = {
        "input": {
            "workflow": workflow,
            "images": [{"name": "input.png", "image": png_base64((20, 12))}],
        }
    }
    output = await sdk(endpoint.run_sync, request, timeout=60)
    (image,) = output["images"]
    with decode_png(image) as img:
        assert img.size == (20, 12)
    # the stream endpoint gives the same output as one chunk
    job = await sdk(endpoint.run, request)
    assert await wait_status(job, {"COMPLETED"}) == "COMPLETED"
    chunks = await sdk(lambda: list(job.stream()))
    assert chunks and chunks[0]["images"][0]["filename"].endswith(".png")


async def test_sdk_sees_validation_and_runtime_failures(
    server: Server, endpoint: runpod.Endpoint
) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        await sdk(endpoint.run, {"input": {"workflow": {"1": {"class_type": "NoSuchNode"}}}})
    response = caught.value.response
    assert response is not None and response.status_code == 400
    assert "NoSuchNode" in response.json()["error"]

    await server.set_faults({"specs": ["fail:ImageInvert:boom in invert"]})
    job = await sdk(endpoint.run, {"input": {"workflow": image_workflow(3)}})
    assert await wait_status(job, {"COMPLETED", "FAILED"}) == "FAILED"
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        raw = (await http.get(f"/v2/my-endpoint/status/{job.job_id}")).json()
        assert "output" not in raw
        assert "boom in invert" in raw["error"] and "ImageInvert" in raw["error"]
        # retry once the node works again: the same id runs again and completes
        await server.set_faults({"clear": True})
        retried = await http.post(f"/v2/my-endpoint/retry/{job.job_id}")
        assert retried.json() == {"id": job.job_id, "status": "IN_QUEUE"}
    job.job_status = None
    assert await wait_status(job, {"COMPLETED", "FAILED"}) == "COMPLETED"


async def test_sdk_cancel_and_purge_queue(server: Server, endpoint: runpod.Endpoint) -> None:
    await server.set_faults({"hang": True})
    jobs = [await sdk(endpoint.run, {"input": {"workflow": image_workflow(c)}}) for c in range(10)]
    assert await wait_status(jobs[0], {"IN_PROGRESS"}) == "IN_PROGRESS"
    answer = await sdk(jobs[0].cancel)
    assert answer["id"] == jobs[0].job_id
    assert answer["status"] == "CANCELLED"  # at once, as RunPod answers (it said IN_PROGRESS)
    assert await wait_status(jobs[0], {"CANCELLED"}) == "CANCELLED"
    purged = await sdk(endpoint.purge_queue)
    assert purged["removed"] >= 1
    statuses = [await sdk(j.status) for j in jobs[1:]]
    assert "IN_QUEUE" not in statuses
    assert statuses.count("CANCELLED") >= purged["removed"]


JSON_TYPE = {"content-type": "application/json"}


async def test_runpod_request_errors_are_clear(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        for body in (
            {"input": "nope"},
            {"input": {"workflow": image_workflow(), "images": [{"name": "x.png"}]}},
            {"input": {"workflow": image_workflow()}, "policy": {"executionTimeout": -1}},
            # past a float's range (a 500), or past a week
            {"input": {"workflow": image_workflow()}, "policy": {"executionTimeout": 10**400}},
            {"input": {"workflow": image_workflow()}, "policy": {"ttl": 10**400}},
            {"input": {"workflow": image_workflow()}, "policy": {"ttl": 8 * 24 * 3600 * 1000}},
            {"input": {"workflow": image_workflow()}, "webhook": "ftp://x"},
            # past the v2 API's 2,048 characters (it stopped every webhook of the node)
            {"input": {"workflow": image_workflow()}, "webhook": "http://h.example/" + "a" * 70000},
            # refused now, as by the v2 API, rather than accepted and dropped at delivery:
            *(
                {"input": {"workflow": image_workflow()}, "webhook": url}
                for url in (
                    "http://",  # no host
                    "http://[::1",  # malformed
                    "http://hooks.example:99999/",  # port out of range
                    "http://hooks example/",  # not a host name
                    "http://127.0.0.1:9/hook",  # a private address webhook_allow does not open
                )
            ),
        ):
            answer = await http.post("/run", json=body)
            assert answer.status_code == 400, (str(body)[:200], answer.text)
            assert answer.json()["error"]
        prompt = json.dumps({"input": {"workflow": image_workflow()}})[:-1]
        for literal in ("NaN", "Infinity"):  # (Python's JSON reads them: they meant no limit)
            body = f'{prompt}, "policy": {{"executionTimeout": {literal}, "ttl": {literal}}}}}'
            answer = await http.post("/run", content=body, headers=JSON_TYPE)
            assert answer.status_code == 400, (literal, answer.text)
        assert (await http.post("/run", content=b"[1, 2")).status_code == 400
        assert (await http.get("/status/unknown-id")).status_code == 404
        policy = {"executionTimeout": 60_000, "ttl": 3_600_000}
        answer = await http.post(
            "/runsync?wait=30000", json={"input": {"workflow": image_workflow(8)}, "policy": policy}
        )
        assert answer.json()["status"] == "COMPLETED"


async def test_plain_variant_run_status_stats_delete(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        answer = await http.post("/run", json={"workflow": image_workflow(4, size=8), "images": []})
        assert answer.status_code == 200
        body = answer.json()
        assert body["status"] == "pending" and set(body) == {"job_id", "status"}
        job_id = body["job_id"]
        status = await poll_done(http, f"/status/{job_id}")
        assert status["status"] == "completed", status
        assert status["error"] is None
        assert status["created_at"] <= status["started_at"] <= status["completed_at"]
        (image,) = status["result"]["images"]
        with decode_png(image) as img:
            assert img.size == (8, 8)
        stats = (await http.get("/stats", params={"include_recent": "true"})).json()
        assert stats["completed_jobs"] == 1 and stats["total_jobs"] == 1
        assert stats["recent_jobs"][0]["id"] == job_id
        assert "recent_jobs" not in (await http.get("/stats")).json()
        health = (await http.get("/health")).json()
        assert health["status"] == "healthy" and health["job_stats"]["completed"] == 1
        assert (await http.delete(f"/admin/job/{job_id}")).status_code == 200
        assert (await http.get(f"/status/{job_id}")).status_code == 404
        assert (await http.delete(f"/admin/job/{job_id}")).status_code == 404

        await server.set_faults({"specs": ["fail:ImageInvert"]})
        failed_id = (await http.post("/run", json={"workflow": image_workflow(5)})).json()["job_id"]
        status = await poll_done(http, f"/status/{failed_id}")
        assert status["status"] == "failed" and status["result"] is None
        assert "ImageInvert" in status["error"]
        bad = await http.post("/run", json={"workflow": {"1": {"class_type": "Nope"}}})
        assert bad.status_code == 400 and bad.json()["error"]


async def test_task_variant(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        body = {"workflow_id": "text_to_image_v1", "priority": 5, "payload": image_workflow(2)}
        answer = await http.post("/api/v1/tasks", json=body)
        assert answer.status_code == 201, answer.text
        created = answer.json()
        assert created["status"] == "pending" and created["workflow_id"] == "text_to_image_v1"
        task_id = created["id"]
        task = await poll_done(http, f"/api/v1/tasks/{task_id}")
        assert task["status"] == "completed", task
        assert task["workflow_id"] == "text_to_image_v1" and task["priority"] == 5
        assert task["retry_count"] == 0 and task["max_retries"] == 0
        assert task["worker_id"].startswith("emulator-")
        (image,) = task["result"]["outputs"]["3"]["images"]
        view = await http.get("/view", params=image)
        assert view.status_code == 200 and view.content.startswith(b"\x89PNG")
        assert (await http.get("/api/v1/tasks/nope")).status_code == 404
        assert (await http.post("/api/v1/tasks", json={"workflow_id": "x"})).status_code == 422
        invalid = await http.post("/api/v1/tasks", json={"payload": {"1": {"class_type": "Nope"}}})
        assert invalid.status_code == 400


async def test_execution_timeout_policy_ends_timed_out(
    server: Server, endpoint: runpod.Endpoint
) -> None:
    await server.set_faults({"hang": True})
    request = {"input": {"workflow": image_workflow(1)}, "policy": {"executionTimeout": 1000}}
    job = await sdk(endpoint.run, request)
    assert await wait_status(job, {"TIMED_OUT", "FAILED", "COMPLETED"}) == "TIMED_OUT"
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        raw = (await http.get(f"/status/{job.job_id}")).json()
        assert "timeout" in raw["error"]


async def test_task_variant_takes_a_video_by_url_for_a_node(tmp_path: Any) -> None:
    from tests.integration.compat.conftest import dialect_settings, serving
    from tests.support.model_server import model_server

    png = base64.b64decode(png_base64((4, 4)))
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v"}},
    }
    settings = dialect_settings(tmp_path, fetch_allow=["127.0.0.1"])
    async with model_server({"clip.png": png}) as files, serving(settings) as srv:
        await srv.wait_ready()
        async with httpx.AsyncClient(base_url=srv.url, timeout=CLIENT_TIMEOUT_S) as http:
            body = {
                "payload": workflow,
                "video_url": f"{files.url}/clip.png",
                "video_node_id": "1",
                "video_input_field": "image",  # any node input; default "video" (VHS_LoadVideo)
            }
            answer = await http.post("/api/v1/tasks", json=body)
            assert answer.status_code == 201, answer.text
            task = await poll_done(http, f"/api/v1/tasks/{answer.json()['id']}")
            assert task["status"] == "completed", task
            assert files.hits["clip.png"] == 1
            missing = await http.post(
                "/api/v1/tasks", json={"payload": workflow, "video_url": f"{files.url}/clip.png"}
            )
            assert missing.status_code == 400 and "video_node_id" in missing.text
