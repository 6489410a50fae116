"""public_base_url: the origin a response's links are built on, kept per request origin."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from comfyrun.api import context
from comfyrun.api.context import public_base_url


def request(
    host: str | None, *, scheme: str = "http", root_path: str = "", public_url: str | None = None
) -> Request:
    headers = [] if host is None else [(b"host", host.encode())]
    app: Any = SimpleNamespace(
        state=SimpleNamespace(ctx=SimpleNamespace(settings=SimpleNamespace(public_url=public_url)))
    )
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "path": "/api/v2/jobs",
            "root_path": root_path,
            "query_string": b"",
            "headers": headers,
            "server": ("10.0.0.1", 8188),
            "app": app,
        }
    )


def test_each_origin_gets_its_own_links() -> None:
    assert public_base_url(request("a.example:8188")) == "http://a.example:8188"
    assert public_base_url(request("b.example")) == "http://b.example"
    assert public_base_url(request("a.example:8188", scheme="https")) == "https://a.example:8188"
    assert public_base_url(request("a.example", root_path="/comfy")) == "http://a.example/comfy"
    assert public_base_url(request(None)) == "http://10.0.0.1:8188"
    # asked again: the same answers (kept, not mixed up)
    assert public_base_url(request("b.example")) == "http://b.example"
    assert public_base_url(request("a.example:8188")) == "http://a.example:8188"


def test_a_configured_public_url_wins() -> None:
    configured = request("a.example", public_url="https://comfy.example/base/")
    assert public_base_url(configured) == "https://comfy.example/base"


def test_the_origins_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "BASE_URLS_KEPT", 4)
    monkeypatch.setattr(context, "_BASE_URLS", {})
    for i in range(50):  # a client sending a new Host header each time
        assert public_base_url(request(f"h{i}.example")) == f"http://h{i}.example"
        assert len(context._BASE_URLS) <= 4
