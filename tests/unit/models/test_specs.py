"""A job's `models` entries: what is accepted, and clear refusals."""

from __future__ import annotations

from typing import Any

import pytest

from comfyrun.errors import InvalidRequest
from comfyrun.models import ModelRef, parse_models

HEX = "ab" * 32


def test_entries_are_normalised() -> None:
    (a, b) = parse_models(
        [
            {"url": "https://h/x.safetensors", "folder": "checkpoints", "name": "x.safetensors"},
            {"asset_id": "a1", "folder": "unet", "name": "sub/u.gguf", "hash": f"SHA256:{HEX}"},
        ]
    )
    assert a == ModelRef(folder="checkpoints", name="x.safetensors", url="https://h/x.safetensors")
    assert (b.folder, b.name, b.hash, b.source) == (
        "diffusion_models",  # ComfyUI's legacy name
        "sub/u.gguf",
        f"sha256:{HEX}",
        "asset:a1",
    )
    assert parse_models(None) == () and parse_models([]) == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"folder": "loras", "name": "a"}, "exactly one of url and asset_id"),
        ({"url": "file:///etc/passwd", "folder": "loras", "name": "a"}, "http"),
        ({"url": "https://h/a", "folder": "custom_nodes", "name": "a"}, "not a ComfyUI model"),
        ({"url": "https://h/a", "folder": "loras", "name": "../a"}, "relative file name"),
        ({"url": "https://h/a", "folder": "loras", "name": "/etc/a"}, "relative file name"),
        ({"url": "https://h/a", "folder": "loras", "name": ".hidden"}, "relative file name"),
        ({"url": "https://h/a", "folder": "loras"}, "name is required"),
        ({"url": "https://h/a", "folder": "loras", "name": "a", "hash": "md5:00"}, "hash must"),
        ({"url": "https://h/a", "folder": "loras", "name": "a", "size": 1}, "unknown fields"),
        ("https://h/a", "must be an object"),
    ],
)
def test_bad_entries_are_refused_clearly(entry: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_models([entry])


def test_one_name_with_two_sources_is_refused() -> None:
    same = {"folder": "loras", "name": "a.safetensors"}
    with pytest.raises(InvalidRequest, match="given twice"):
        parse_models([{**same, "url": "https://h/1"}, {**same, "url": "https://h/2"}])
    assert len(parse_models([{**same, "url": "https://h/1"}] * 2)) == 1


def test_not_a_list_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="must be a list"):
        parse_models({"url": "x"})
