"""A request whose parameters do not validate is answered in the shape of the dialect it asked
(ComfyUI's, RunPod's and the plain /run API's: 400, as their errors are; the v2 API: its
envelope, 422), by the lean request handler and by FastAPI's own alike."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.support.api import memory_settings

from comfyrun.api.app import create_app
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.store.memory import MemoryStore


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "fastapi"])
async def test_each_dialect_answers_in_its_own_shape(tmp_path: Path, lean: bool) -> None:
    settings = memory_settings(tmp_path, role="api")
    app = create_app(settings, store=MemoryStore(), storage=MemoryOutputStorage(), lean=lean)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for path in ("/history?max_items=abc", "/api/history?offset=x", "/api/jobs?limit=0"):
                answer = await http.get(path)
                assert answer.status_code == 400, (path, answer.text)
                body = answer.json()
                assert set(body) == {"error", "node_errors"} and body["node_errors"] == {}
                assert set(body["error"]) == {"type", "message", "details", "extra_info"}
                assert body["error"]["type"] == "invalid_request"
                assert "query." in body["error"]["message"]
            for path in ("/ws", "/api/ws?clientId=x"):  # a websocket asked without its upgrade
                answer = await http.get(path)
                assert answer.status_code == 400, (path, answer.text)
                assert answer.json()["error"]["type"] == "invalid_request"
                assert "websocket" in answer.json()["error"]["message"]
            for method, path in (("POST", "/ws"), ("PUT", "/api/ws"), ("PUT", "/prompt")):
                answer = await http.request(method, path)  # a method the route does not take
                assert answer.status_code == 405, (path, answer.text)
                assert answer.json()["error"]["type"] == "method_not_allowed", (path, answer.text)
            for path in ("/run", "/v2/ep/run"):
                answer = await http.put(path)
                assert answer.status_code == 405, (path, answer.text)
                assert answer.json()["code"] == "method_not_allowed", (path, answer.text)

            for path in ("/runsync?wait=5", "/v2/ep/runsync?wait=abc"):
                answer = await http.post(path, json={"input": {}})
                assert answer.status_code == 400, (path, answer.text)
                body = answer.json()
                assert body["code"] == "invalid_request" and "query.wait" in body["error"]

            answer = await http.get("/stats", params={"include_recent": "maybe"})  # plain /run's
            assert answer.status_code == 400, answer.text
            body = answer.json()
            assert body["code"] == "invalid_request" and "query.include_recent" in body["error"]

            answer = await http.get("/api/v2/jobs", params={"limit": "abc"})
            assert answer.status_code == 422
            assert answer.json()["error"]["code"] == "invalid_request"
            assert answer.json()["error"]["details"]["errors"][0]["loc"] == ["query", "limit"]


async def test_a_submission_holding_nul_is_refused_in_each_dialect(tmp_path: Path) -> None:
    """A NUL character (\\u0000) in a job's workflow, metadata or options: PostgreSQL can hold
    none (it was a 503 store_error there, and accepted on SQLite), so every store refuses it
    alike, as the request's fault, in the dialect's shape; nothing is queued."""
    settings = memory_settings(tmp_path, role="api")
    app = create_app(settings, store=MemoryStore(), storage=MemoryOutputStorage())
    workflow = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "a\u0000b"}}}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answer = await http.post("/prompt", json={"prompt": workflow})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["type"] == "invalid_request"
            assert "NUL" in answer.json()["error"]["message"]
            answer = await http.post("/run", json={"input": {"workflow": workflow}})
            assert answer.status_code == 400 and answer.json()["code"] == "invalid_request"
            body = {
                "workflow": {"1": {"class_type": "X", "inputs": {}}},
                "metadata": {"k\u0000": 1},
            }
            answer = await http.post("/api/v2/jobs", json=body)
            assert answer.status_code in (400, 422), answer.text
            error = answer.json()["error"]
            assert error["code"] == "invalid_request" and error["details"] == {"field": "metadata"}
            assert (await http.get("/api/v2/jobs")).json()["jobs"] == []
