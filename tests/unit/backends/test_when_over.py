"""`when_over`: a run's backend given back once ComfyUI has finished the run's prompt, or
after a while at the latest (backends.slot)."""

from __future__ import annotations

import asyncio

from comfyrun.backends.slot import when_over


async def test_at_once_without_an_end_to_wait_for() -> None:
    calls: list[str] = []
    when_over(None, lambda: calls.append("now"))
    over = asyncio.get_running_loop().create_future()
    over.set_result(None)
    when_over(over, lambda: calls.append("over already"))
    assert calls == ["now", "over already"]


async def test_once_the_end_comes_and_not_before() -> None:
    calls: list[int] = []
    over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    when_over(over, lambda: calls.append(1), within_s=60)
    await asyncio.sleep(0.01)
    assert calls == []
    over.set_result(None)
    await asyncio.sleep(0)
    assert calls == [1]


async def test_at_the_latest_within_s_when_the_end_never_comes() -> None:
    done = asyncio.Event()
    over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    when_over(over, done.set, within_s=0.01)
    await asyncio.wait_for(done.wait(), 5)
    assert not over.done()
