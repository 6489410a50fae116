"""Values a submission may hold: objects and lists nested past what an answer can render are
refused before anything is queued, in every field and dialect, and never break the listings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.api import asgi_app, memory_settings, tiny_workflow

from comfyrun import jsontext
from comfyrun.prompt_checks import MAX_VALUE_DEPTH


def nested(levels: int) -> Any:
    """`levels` objects, one in the other."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("levels", [MAX_VALUE_DEPTH + 1, 300, 900])
@pytest.mark.parametrize("field", ["metadata", "extra_data", "workflow"])
async def test_values_nested_too_deep_are_refused_and_nothing_is_queued(
    tmp_path: Path, levels: int, field: str
) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        body: dict[str, Any] = {"workflow": tiny_workflow()}
        if field == "workflow":  # an input ComfyUI would ignore
            body["workflow"]["1"]["inputs"]["x"] = nested(levels)
        else:
            body[field] = {"x": nested(levels)}
        r = await client.post("/api/v2/jobs", json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert str(MAX_VALUE_DEPTH) in error["message"]
        assert (await ctx.store.list()).jobs == []
        listing = await client.get("/api/v2/jobs")
        assert listing.status_code == 200 and listing.json()["jobs"] == []


async def test_values_nested_up_to_the_limit_are_taken_and_listed(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        deep = nested(MAX_VALUE_DEPTH - 1)  # the metadata object is one level more
        r = await client.post("/api/v2/jobs", json={"workflow": tiny_workflow(), "metadata": deep})
        assert r.status_code == 201, r.text
        assert r.json()["metadata"] == deep
        listing = await client.get("/api/v2/jobs")
        assert listing.status_code == 200 and listing.json()["jobs"][0]["metadata"] == deep


async def test_a_comfyui_prompt_nested_too_deep_is_a_400_in_its_dialect(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, ctx):
        extra = {"extra_pnginfo": nested(MAX_VALUE_DEPTH + 5)}
        r = await client.post("/prompt", json={"prompt": tiny_workflow(), "extra_data": extra})
        assert r.status_code == 400, r.text
        assert (await ctx.store.list()).jobs == []


@pytest.mark.parametrize(
    "value",
    [nested(3), [[[[1]]]], {"a": [1, 2**70, {"b": [[]]}]}, {"a": "\ud800", "b": [[1]]}, 5, "x"],
)
def test_dumpb_within_encodes_as_dumpb_or_tells_the_value_too_deep(value: Any) -> None:
    for limit in range(1, 7):
        encoded = jsontext.dumpb_within(value, limit)
        if jsontext.nested_deeper(value, limit):
            assert encoded is None
        else:
            assert encoded == jsontext.dumpb(value)


def test_nested_deeper_counts_objects_and_lists() -> None:
    assert not jsontext.nested_deeper({"a": [1]}, 2)
    assert jsontext.nested_deeper({"a": [1]}, 1)
    assert not jsontext.nested_deeper(1, 0)
    assert jsontext.nested_deeper([], 0)
    assert jsontext.nested_deeper(nested(5000), 64)  # walked, not recursed
