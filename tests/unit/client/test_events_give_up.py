"""`ComfyrunClient.events` gives up on a server that is gone: after `give_up_s` with nothing
from it, the last failure is raised (it reconnected for ever: `comfyrun submit --wait` hung
once its server went away)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from comfyrun.client.client import ComfyrunClient


async def test_a_server_gone_for_good_is_given_up() -> None:
    tries = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal tries
        tries += 1
        raise httpx.ConnectError("connection refused", request=request)

    started = time.monotonic()
    async with ComfyrunClient("http://gone", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(httpx.ConnectError):
            async with asyncio.timeout(10):
                async for _ in client.events("j1", give_up_s=0.5):
                    pass
    assert tries >= 2 and time.monotonic() - started < 5  # it tried again, then gave up
