"""ComfyUI's origin check (core.origin.cross_origin), case by case as its server.py decides."""

from __future__ import annotations

import pytest

from comfyrun.core.origin import cross_origin, is_loopback


@pytest.mark.parametrize(
    ("host", "origin", "refused"),
    [
        ("127.0.0.1:8188", "http://evil.example", True),
        ("127.0.0.1:8188", "http://127.0.0.1:8188", False),
        ("127.0.0.1:8188", "http://127.0.0.1:3000", True),  # another port is another origin
        ("127.0.0.1:8188", "http://127.0.0.1", False),  # an origin naming no port: hosts only
        ("127.0.0.1", "http://127.0.0.1:3000", False),  # a host naming no port: the same
        ("localhost:8188", "http://localhost:8188", False),
        ("LOCALHOST:8188", "http://evil.example:8188", True),
        ("app.localhost:8188", "http://evil.example", True),
        ("[::1]:8188", "http://[::1]:8188", False),
        ("[::1]:8188", "http://evil.example", True),
        ("127.1.2.3:8188", "http://evil.example", True),
        ("comfy.example.com", "http://evil.example", False),  # not loopback: not checked
        ("10.0.0.5:8188", "http://evil.example", False),
        ("127.0.0.1:8188", "null", False),  # (ComfyUI: an origin with no host is let through)
        ("127.0.0.1:8188", "", False),
        ("127.0.0.1:8188", "http://evil.example:99999", True),  # a port no host can have
        ("127.0.0.1:bad", "http://evil.example", True),
    ],
)
def test_the_host_and_origin_are_compared_as_comfyui_compares_them(
    host: str, origin: str, refused: bool
) -> None:
    assert cross_origin(host, origin) is refused


def test_loopback_names_and_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "a.localhost."))
    assert not any(is_loopback(h) for h in ("", None, "10.0.0.1", "example.com", "localhost.x"))
