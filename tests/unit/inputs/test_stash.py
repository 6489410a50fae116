"""Inline data moved into the asset store at submission."""

from __future__ import annotations

import base64

import pytest
from tests.support.media import PNG, collect

from comfyrun.assets import AssetService
from comfyrun.errors import InputRejected
from comfyrun.inputs import stash_inline_inputs
from comfyrun.outputs.memory import MemoryOutputStorage


async def test_data_entries_become_asset_ids() -> None:
    assets = AssetService(MemoryOutputStorage())
    raw = [
        {"name": "photo.png", "data": base64.b64encode(PNG).decode()},
        {
            "data": "data:image/png;base64," + base64.b64encode(PNG).decode(),
            "node": "3",
            "input": "image",
        },
        {"url": "https://example.com/a.png", "node": "4"},
    ]
    out = await stash_inline_inputs(raw, assets=assets)
    assert "data" not in out[0] and out[0]["name"] == "photo.png"
    assert out[1]["node"] == "3" and out[1]["input"] == "image" and "data" not in out[1]
    assert out[2] == raw[2]
    first = await assets.get(out[0]["asset_id"])
    second = await assets.get(out[1]["asset_id"])
    assert first.hash == second.hash and first.content_type == "image/png"
    assert first.file_path == "photo.png" and second.file_path is None
    assert await collect(assets.open_content(first)) == PNG
    assert "data" in raw[0]  # the caller's list is not modified


async def test_invalid_inputs_upload_nothing() -> None:
    storage = MemoryOutputStorage()
    raw = [
        {"name": "ok.png", "data": base64.b64encode(PNG).decode()},
        {"name": "bad.png", "data": "@@"},
    ]
    with pytest.raises(InputRejected):
        await stash_inline_inputs(raw, assets=AssetService(storage))
    assert await storage.delete_prefix("assets/") == 0
