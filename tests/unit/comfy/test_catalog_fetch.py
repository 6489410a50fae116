"""A backend's /object_info is read into its catalog with the definitions out of ComfyUI's
shape left out (one warning); one that serves none in shape answered no node types."""

from __future__ import annotations

import logging

import httpx
import pytest

from comfyrun.comfy.catalog import fetch_catalog
from comfyrun.comfy.errors import ComfyProtocolError

GOOD = {"input": {"required": {"width": ["INT", {"default": 8}]}}, "output": ["IMAGE"]}


def serving(object_info: object) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/object_info":
            return httpx.Response(200, json=object_info)
        return httpx.Response(404)

    return httpx.MockTransport(answer)


async def test_definitions_out_of_shape_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    info = {"EmptyImage": GOOD, "SaveImage": "x", "Broken": {"input": 5}}
    with caplog.at_level(logging.WARNING):
        catalog = await fetch_catalog("http://b", "b", transport=serving(info))
    assert catalog.object_info == {"EmptyImage": GOOD}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "2 node definitions" in warning.getMessage()
    assert "SaveImage, Broken" in warning.getMessage()


@pytest.mark.parametrize("info", [{"EmptyImage": 5}, {"EmptyImage": {"input": 5}}, [1], {}])
async def test_a_backend_with_no_definition_in_shape_answered_none(info: object) -> None:
    with pytest.raises(ComfyProtocolError, match="no node types"):
        await fetch_catalog("http://b", "b", transport=serving(info))
