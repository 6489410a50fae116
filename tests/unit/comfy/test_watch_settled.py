"""PromptWatch.settled: the prompt's result as a future a run may wait on and cancel."""

from __future__ import annotations

import asyncio

import pytest

from comfyrun.comfy.result import PromptResult
from comfyrun.comfy.watch import PromptWatch
from comfyrun.errors import BackendError


async def test_cancelling_the_future_leaves_the_result_to_come() -> None:
    watch = PromptWatch("p1")
    first = watch.settled()
    first.cancel()  # a run that stopped following (a cancel, its backend down)
    await asyncio.sleep(0)
    assert not watch.done
    again = watch.settled()
    result = PromptResult(prompt_id="p1", status="success", outputs={})
    watch.settle(result)
    assert await asyncio.wait_for(again, 1) is result
    assert await watch.result() is result
    assert watch.settled().result() is result  # settled already: done at once


async def test_a_failure_comes_through_it() -> None:
    watch = PromptWatch("p2")
    settled = watch.settled()
    watch.fail(BackendError("the websocket closed"))
    with pytest.raises(BackendError, match="websocket closed"):
        await asyncio.wait_for(settled, 1)
