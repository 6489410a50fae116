"""A store or output storage failing (SQLite locked past its busy timeout, PostgreSQL
unreachable) is answered 503 with a Retry-After, in each dialect's shape: a moment's outage
the client may retry, not its error nor a server bug."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun import errors
from comfyrun.api.errors import UNAVAILABLE_RETRY_AFTER_S


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/api/v2/jobs", {"workflow": tiny_workflow()}, lambda b: b["error"]["code"]),
        ("/prompt", {"prompt": tiny_workflow()}, lambda b: b["error"]["type"]),
        ("/run", {"input": {"workflow": tiny_workflow()}}, lambda b: b["code"]),
        ("/run", {"workflow": tiny_workflow()}, lambda b: b["code"]),  # the plain variant
    ],
)
async def test_a_failing_store_is_a_503_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, body: Any, shape: Any
) -> None:
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise errors.StoreError("SQLite is busy: database is locked")

    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        monkeypatch.setattr(ctx.store, "enqueue", failing)
        monkeypatch.setattr(ctx.store, "enqueue_counted", failing)
        answer = await client.post(path, json=body)
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_S)
        assert shape(answer.json()) == "store_error"
