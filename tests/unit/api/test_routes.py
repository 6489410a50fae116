"""The HTTP API over an in-memory store, through ASGI (no sockets): status codes, the error
envelope, idempotency headers, auth, listing, output downloads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api import asgi_app, memory_settings, store_output, tiny_workflow

from comfyrun.core.job import JobStatus, NewJob
from comfyrun.core.state import Event


def assert_envelope(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    err: dict[str, Any] = body["error"]
    return err


async def test_submit_get_and_job_shape(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(), "priority": 2})
        assert r.status_code == 201
        job = r.json()
        assert job["status"] == "queued" and job["queue_position"] == 0
        assert job["urls"] == {
            "self": f"/api/v2/jobs/{job['id']}",
            "events": f"/api/v2/jobs/{job['id']}/events",
            "cancel": f"/api/v2/jobs/{job['id']}/cancel",
        }
        assert job["metrics"]["queue_ms"] is None and job["expires_at"]
        got = (await client.get(job["urls"]["self"])).json()
        assert got["id"] == job["id"] and got["priority"] == 2


async def test_queue_position_counts_up_to_its_cap(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, queue_position_cap=3)) as (_, client, _ctx):
        jobs = []
        for color in range(5):
            r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(color)})
            assert r.status_code == 201
            jobs.append(r.json())
        assert [j["queue_position"] for j in jobs] == [0, 1, 2, 3, 3]
        got = [(await client.get(f"/api/v2/jobs/{j['id']}")).json() for j in jobs]
        assert [g["queue_position"] for g in got] == [0, 1, 2, 3, 3]
        # the front of the queue moves: the last job's count is exact again once within the cap
        for job in jobs[:2]:
            assert (await client.post(f"/api/v2/jobs/{job['id']}/cancel")).status_code == 200
        last = (await client.get(f"/api/v2/jobs/{jobs[-1]['id']}")).json()
        assert last["queue_position"] == 2


async def test_idempotency_headers_and_codes(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        body = {"workflow": tiny_workflow()}
        first = await client.post("/api/v2/jobs", json=body, headers={"Idempotency-Key": "k1"})
        again = await client.post("/api/v2/jobs", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 201
        assert "idempotency-replayed" not in first.headers
        assert again.headers["idempotency-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        other = await client.post(
            "/api/v2/jobs", json={"workflow": tiny_workflow(5)}, headers={"Idempotency-Key": "k1"}
        )
        assert_envelope(other, 422, "idempotency_key_reuse")


async def test_queue_full_is_429_with_retry_after(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, queue_max=1)) as (_, client, _ctx):
        assert (await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})).is_success
        r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(1)})
        assert_envelope(r, 429, "queue_full")
        assert int(r.headers["retry-after"]) > 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"workflow": {"1": {"inputs": {}}}}, "invalid_workflow"),
        ({"workflow": {}}, "invalid_workflow"),
        ({"workflow": "nope"}, "invalid_request"),
        ({"nothing": 1}, "invalid_request"),
        ({"workflow": tiny_workflow(), "priority": "high"}, "invalid_request"),
        ({"workflow": tiny_workflow(), "inputs": [{"name": "a.png"}]}, "invalid_request"),
        ({"workflow": tiny_workflow(), "webhook": {"url": "ftp://x"}}, "invalid_request"),
    ],
)
async def test_bad_submissions_get_422_envelopes(
    tmp_path: Path, body: dict[str, Any], code: str
) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        assert_envelope(await client.post("/api/v2/jobs", json=body), 422, code)


async def test_malformed_json_is_a_4xx_envelope(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.post(
            "/api/v2/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_envelope(r, 422, "invalid_request")


async def test_ui_format_without_converter_input_is_refused_clearly(tmp_path: Path) -> None:
    ui = {"nodes": [], "links": [], "last_node_id": 0}
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.post("/api/v2/jobs", json={"workflow": ui})
        assert r.status_code == 422
        assert r.json()["error"]["code"] in {"workflow_conversion_failed", "workflow_format_ui"}


async def test_not_found_and_unknown_routes(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        assert_envelope(await client.get("/api/v2/jobs/nope"), 404, "not_found")
        assert_envelope(await client.post("/api/v2/jobs/nope/cancel"), 404, "not_found")
        assert_envelope(await client.get("/api/v2/jobs/nope/events"), 404, "not_found")
        assert_envelope(await client.get("/no/such/route"), 404, "not_found")
        assert_envelope(await client.put("/api/v2/jobs"), 405, "method_not_allowed")


async def test_cancel_and_delete(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        job = (await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})).json()
        running = (await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(1)})).json()
        await ctx.store.claim("w", 30)  # the oldest of equal priority: `job`
        r = await client.post(f"/api/v2/jobs/{running['id']}/cancel")
        assert r.json()["status"] == "canceled"
        r = await client.post(f"/api/v2/jobs/{job['id']}/cancel")
        assert r.json()["status"] == "canceling"
        assert_envelope(await client.delete(f"/api/v2/jobs/{job['id']}"), 409, "conflict")
        assert (await client.delete(f"/api/v2/jobs/{running['id']}")).status_code == 204
        assert (await client.get(f"/api/v2/jobs/{running['id']}")).status_code == 404


async def test_list_filters_and_paginates(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        ids = []
        for i in range(5):
            body = {"workflow": tiny_workflow(i), "metadata": {"batch": "a" if i % 2 else "b"}}
            ids.append((await client.post("/api/v2/jobs", json=body)).json()["id"])
        await client.post(f"/api/v2/jobs/{ids[0]}/cancel")
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/api/v2/jobs", params=params)).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        assert seen == list(reversed(ids))
        queued = (await client.get("/api/v2/jobs?status=queued")).json()["jobs"]
        assert {j["id"] for j in queued} == set(ids[1:])
        labelled = (await client.get("/api/v2/jobs?metadata[batch]=a")).json()["jobs"]
        assert {j["id"] for j in labelled} == {ids[1], ids[3]}
        assert_envelope(await client.get("/api/v2/jobs?status=bogus"), 400, "invalid_request")
        assert_envelope(await client.get("/api/v2/jobs?limit=0"), 422, "invalid_request")


async def test_bearer_auth(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, api_keys=["s3cret"])) as (_, client, _ctx):
        r = await client.get("/api/v2/jobs")
        assert_envelope(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        bad = await client.get("/api/v2/jobs", headers={"Authorization": "Bearer nope"})
        assert_envelope(bad, 401, "unauthorized")
        ok = await client.get("/api/v2/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert (await client.get("/api/v2/health")).status_code == 200  # probes stay open


async def test_metrics_name_every_key_so_they_need_an_admin_key(tmp_path: Path) -> None:
    """On a server with API keys, /metrics (which names each key and counts its use) answers
    only an admin key; `metrics_public` opens it and leaves the keys' series out."""
    admin = {"Authorization": "Bearer s3cret"}
    async with asgi_app(memory_settings(tmp_path, api_keys=["s3cret"])) as (_, client, _ctx):
        minted = await client.post(
            "/api/v2/admin/keys", json={"name": "acme", "scopes": ["read"]}, headers=admin
        )
        reader = {"Authorization": f"Bearer {minted.json()['key']}"}
        assert_envelope(await client.get("/metrics"), 401, "unauthorized")
        assert_envelope(await client.get("/metrics", headers=reader), 403, "forbidden")
        ok = await client.get("/metrics", headers=admin)
        assert ok.status_code == 200 and 'key_name="acme"' in ok.text
    settings = memory_settings(tmp_path, api_keys=["s3cret"], metrics_public=True)
    async with asgi_app(settings) as (_, client, _ctx):
        minted = await client.post("/api/v2/admin/keys", json={"name": "acme"}, headers=admin)
        body = {"workflow": tiny_workflow()}
        assert (await client.post("/api/v2/jobs", json=body, headers=admin)).status_code == 201
        open_metrics = await client.get("/metrics")
        assert open_metrics.status_code == 200 and "comfyrun_queue_depth 1.0" in open_metrics.text
        assert "acme" not in open_metrics.text
        # a key's own view counts only its jobs: the public metrics are the fleet's still
        acme = {"Authorization": f"Bearer {minted.json()['key']}"}
        as_acme = await client.get("/metrics", headers=acme)
        assert "comfyrun_queue_depth 1.0" in as_acme.text


async def test_outputs_download_with_ranges(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 40
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        job = (await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})).json()
        await ctx.store.claim("w", 30)
        out = await store_output(ctx, job["id"], "t_00001_.png", payload, "image/png")
        key = out.storage_key
        await ctx.store.transition(job["id"], Event.SUCCEED, expect=JobStatus.RUNNING)
        done = (await client.get(f"/api/v2/jobs/{job['id']}")).json()
        assert done["status"] == "succeeded" and done["completed_at"]
        (o,) = done["outputs"]
        assert o["size_bytes"] == len(payload) and o["hash"].startswith("blake3:")
        assert o["url"] == f"http://testserver/api/v2/assets/{o['id']}/content"
        full = await client.get(o["url"])
        assert full.status_code == 200 and full.content == payload
        assert full.headers["content-type"] == "image/png"
        part = await client.get(o["url"], headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == payload[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(payload)}"
        tail = await client.get(o["url"], headers={"Range": "bytes=-5"})
        assert tail.content == payload[-5:]
        bad = await client.get(o["url"], headers={"Range": f"bytes={len(payload)}-"})
        assert_envelope(bad, 416, "range_not_satisfiable")
        # ranges it may not read, or several: ignored, the whole file (RFC 9110; they were 416)
        for header in ("pages=1-2", "bytes=5-1", "bytes=0-1,5-6", "bytes=abc"):
            whole = await client.get(o["url"], headers={"Range": header})
            assert whole.status_code == 200 and whole.content == payload, header
        meta = (await client.get(f"/api/v2/assets/{o['id']}")).json()
        assert meta["job_id"] == job["id"] and meta["size_bytes"] == len(payload)
        by_key = await client.get(f"/api/v2/files/{key}")
        assert by_key.content == payload
        assert_envelope(
            await client.get(f"/api/v2/assets/o9-{job['id']}/content"), 404, "not_found"
        )


async def test_health_ready_stats_backends_metrics_admin(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, client, _ctx):
        assert (await client.get("/api/v2/health")).json()["status"] == "ok"
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["store"] is True
        await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})
        stats = (await client.get("/api/v2/stats")).json()
        assert stats["queue_depth"] == 1 and stats["counts"]["queued"] == 1
        assert (await client.get("/api/v2/backends")).json() == {"backends": []}
        metrics = (await client.get("/metrics")).text
        assert 'comfyrun_jobs{status="queued"} 1.0' in metrics
        assert "comfyrun_queue_depth 1.0" in metrics
        r = await client.post("/api/v2/admin/cleanup", params={"max_age_hours": 0})
        assert r.json() == {"expired": 0, "deleted": 0, "files_deleted": 0}
        r = await client.post("/api/v2/admin/reset-stuck", params={"max_running_hours": 1})
        assert r.json() == {"requeued": []}
        assert (await client.get("/docs")).status_code == 200


async def test_serve_role_without_backends_is_not_ready(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        r = await client.get("/ready")
        assert r.status_code == 503 and r.json()["reason"] == "no backends are configured"


async def test_worker_role_serves_only_probes(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, role="worker")) as (_, client, _ctx):
        assert (await client.get("/api/v2/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.post("/api/v2/jobs", json={"workflow": {}})).status_code == 404


async def test_an_oversized_submission_is_413(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, max_request_bytes=2048)) as (_, client, _ctx):
        big = {"workflow": tiny_workflow(), "metadata": {"blob": "x" * 5000}}
        r = await client.post("/api/v2/jobs", json=big)
        assert_envelope(r, 413, "request_too_large")
        assert (await client.post("/api/v2/jobs", json={"workflow": tiny_workflow()})).is_success


def test_a_body_is_fingerprinted_only_for_an_idempotency_key() -> None:
    """The fingerprint (a canonical dump and hash of the whole body, workflow included) only
    serves idempotency: a submission without a key does not pay for it."""
    from comfyrun.api.routes.jobs import submission
    from comfyrun.api.schemas import SubmitJobRequest

    body = SubmitJobRequest(workflow={"1": {"class_type": "X", "inputs": {}}})
    asked: list[int] = []

    def wire() -> dict[str, int]:
        asked.append(1)
        return {"n": 1}

    assert submission(body, body.workflow, wire, None, metadata_max_bytes=99).request_hash is None
    assert asked == []
    keyed = submission(body, body.workflow, wire, "key-1", metadata_max_bytes=99)
    assert keyed.request_hash is not None and len(keyed.request_hash) == 64 and asked == [1]


def histogram_count(metrics: str, status: str) -> float:
    prefix = f'comfyrun_job_duration_seconds_count{{status="{status}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_the_duration_histogram_observes_every_job_that_ended_once(
    tmp_path: Path,
) -> None:
    """Every job that ended between two scrapes is observed, however many ended and however
    long ago each was submitted (a long job submitted before hundreds of short ones too), and
    none twice."""
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, client, ctx):
        store = ctx.store
        for i in range(700):
            r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(color=i)})
            assert r.status_code == 201
        claimed = [await store.claim("w1", 60) for _ in range(700)]
        assert all(job is not None for job in claimed)
        first, *rest = [job for job in claimed if job is not None]
        for job in rest[:-10]:
            await store.transition(job.id, Event.SUCCEED, expect=JobStatus.RUNNING)
        assert histogram_count((await client.get("/metrics")).text, "succeeded") == 689
        for job in rest[-10:]:
            await store.transition(job.id, Event.FAIL, expect=JobStatus.RUNNING)
        ended = time.time()
        await store.transition(first.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=ended)
        metrics = (await client.get("/metrics")).text
        assert histogram_count(metrics, "succeeded") == 690
        assert histogram_count(metrics, "failed") == 10
        again = (await client.get("/metrics")).text
        assert histogram_count(again, "succeeded") == 690  # none observed twice
        # an end committed after a scrape with an earlier time (another worker's clock)
        late, _ = await store.enqueue(NewJob(workflow=tiny_workflow()))
        assert (await store.claim("w2", 60)) is not None
        before = ended - 0.001  # before the newest end the last scrape saw
        await store.transition(late.id, Event.SUCCEED, expect=JobStatus.RUNNING, now=before)
        assert histogram_count((await client.get("/metrics")).text, "succeeded") == 691


async def test_ready_turns_503_at_the_queue_depth_it_is_given(tmp_path: Path) -> None:
    """`ready_queue_max`: a load balancer in front of several comfyrun servers sends new work
    to another while this one's queue is that deep."""
    settings = memory_settings(tmp_path, role="api", ready_queue_max=2)
    async with asgi_app(settings) as (_, client, _ctx):
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["queued"] == 0
        await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(1)})
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["queued"] == 1
        await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(2)})
        deep = await client.get("/ready")
        assert deep.status_code == 503, deep.text
        assert deep.json()["queued"] == 2 and "ready_queue_max 2" in deep.json()["reason"]
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, client, _ctx):
        ready = await client.get("/ready")  # not asked for: not counted
        assert ready.status_code == 200 and ready.json()["queued"] is None
