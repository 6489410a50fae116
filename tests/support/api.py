"""Helpers for tests of the HTTP API: an app with in-memory store and storage, a client on it
without sockets (ASGI), and small workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from comfyrun.api.app import create_app
from comfyrun.api.context import AppContext
from comfyrun.config import Settings
from comfyrun.outputs.memory import MemoryOutputStorage
from comfyrun.store.memory import MemoryStore

#: The smallest workflow with an output: an empty image, saved.
TINY_WORKFLOW: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def tiny_workflow(color: int = 0) -> dict[str, Any]:
    wf = {
        k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])}
        for k, v in TINY_WORKFLOW.items()
    }
    wf["1"]["inputs"]["color"] = color
    return wf


def memory_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path, "db_url": "memory://", "api_keys": []}
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def asgi_app(
    settings: Settings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, AppContext]]:
    """The app (lifespan run) with a memory store and storage, and an ASGI client on it."""
    app = create_app(settings, store=MemoryStore(), storage=MemoryOutputStorage())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client, app.state.ctx
