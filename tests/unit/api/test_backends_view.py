"""GET /api/v2/backends shows a backend's URL, log tail and last error to an admin only: any
key saw them (internal addresses, paths, a crash's traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.api import asgi_app, memory_settings

from comfyrun.backends.backend import BackendInfo
from comfyrun.config import BackendConfig
from comfyrun.core.pipeline import MAX_PIPELINE

ADMIN = "admin-key-for-the-backends-view"
URL = "http://10.0.0.7:8188"
INFO = BackendInfo(
    name="gpu0",
    url=URL,
    state="error",
    inflight=0,
    jobs_done=3,
    last_error="exited with 1: Traceback … /srv/comfy/main.py",
    log_tail=["Starting server", "To see the GUI go to: http://10.0.0.7:8188"],
    managed=True,
)


async def test_a_key_not_an_admin_s_sees_backends_without_the_operator_s_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = memory_settings(
        tmp_path, api_keys=[ADMIN], backends=[BackendConfig(name="gpu0", url="127.0.0.1:1")]
    )
    async with asgi_app(settings) as (_, client, ctx):
        assert ctx.pool is not None
        monkeypatch.setattr(ctx.pool, "snapshot", lambda: [INFO])
        admin = {"Authorization": f"Bearer {ADMIN}"}
        minted = await client.post(
            "/api/v2/admin/keys", json={"name": "t", "scopes": ["read"]}, headers=admin
        )
        tenant = {"Authorization": f"Bearer {minted.json()['key']}"}
        [seen] = (await client.get("/api/v2/backends", headers=admin)).json()["backends"]
        assert (seen["url"], seen["last_error"], seen["log_tail"]) == (
            URL,
            INFO.last_error,
            INFO.log_tail,
        )
        [seen] = (await client.get("/api/v2/backends", headers=tenant)).json()["backends"]
        assert seen == {
            "name": "gpu0",
            "url": None,
            "state": "error",
            "inflight": 0,
            "jobs_done": 3,
            "last_error": None,
            "last_error_at": None,
            "managed": True,
            "log_tail": [],
            "draining": False,
            "kept_stopped": False,
            "depth": 2,
        }


async def test_a_backend_s_depth_is_shown_as_its_prompts_pace_sets_it(tmp_path: Path) -> None:
    """core.pipeline: a backend whose prompts run shorter than comfyrun's round trip to the
    next may hold more; GET /api/v2/backends and /metrics say how many it may hold now."""
    settings = memory_settings(tmp_path, backends=[BackendConfig(name="gpu0", url="127.0.0.1:1")])
    async with asgi_app(settings) as (_, client, ctx):
        assert ctx.pool is not None
        [backend] = ctx.pool.backends
        [seen] = (await client.get("/api/v2/backends")).json()["backends"]
        assert seen["depth"] == 2
        backend.pace.run.note(0.004)  # 4 ms prompts, 20 ms to send the next
        backend.pace.refill.note(0.020)
        [seen] = (await client.get("/api/v2/backends")).json()["backends"]
        assert seen["depth"] == MAX_PIPELINE
        metrics = (await client.get("/metrics")).text
        assert f'comfyrun_backend_depth{{backend="gpu0"}} {float(MAX_PIPELINE)}' in metrics
