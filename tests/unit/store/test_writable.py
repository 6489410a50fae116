"""WriteHealth: a store's commits answer readiness; a probe write only where none is recent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.api import asgi_app, memory_settings

from comfyrun.store.writable import WriteHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_recent_commit_answers_without_a_probe() -> None:
    clock = Clock()
    health = WriteHealth(fresh_s=5, clock=clock)
    probes: list[None] = []

    async def probe() -> None:
        probes.append(None)

    health.ok()
    clock.now += 4
    assert await health.check(probe) is None and probes == []
    health.failed("disk full")
    assert await health.check(probe) == "disk full" and probes == []
    clock.now += 5  # nothing recent: one probe write, which commits
    assert await health.check(probe) is None and probes == [None]


async def test_checks_meanwhile_share_one_probe_and_a_slow_one_answers_the_last_known() -> None:
    clock = Clock()
    health = WriteHealth(fresh_s=5, wait_s=0.01, clock=clock)
    health.failed("database is locked")
    clock.now += 10
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[None] = []

    async def probe() -> None:
        calls.append(None)
        started.set()
        await release.wait()

    answers = await asyncio.gather(health.check(probe), health.check(probe))
    assert answers == ["database is locked"] * 2 and calls == [None]  # (still waiting)
    release.set()
    await asyncio.wait_for(health._probing or asyncio.sleep(0), 5)
    assert await health.check(probe) is None and calls == [None]


async def test_ready_is_503_while_the_store_cannot_commit(tmp_path: Path) -> None:
    async with asgi_app(memory_settings(tmp_path, role="api")) as (_, client, ctx):
        assert (await client.get("/ready")).status_code == 200
        reason = "database or disk is full"

        async def cannot_commit() -> str | None:
            return reason

        ctx.store.can_commit = cannot_commit  # type: ignore[method-assign]
        r = await client.get("/ready")
        assert r.status_code == 503, r.text
        assert r.json()["store"] is False and r.json()["reason"] == "store cannot commit"
        assert reason not in r.text  # (its detail is logged, not told to anyone who asks)
