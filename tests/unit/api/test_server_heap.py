"""`comfyrun serve` (api, worker) once it is serving: what start-up made is left out of the cyclic
garbage collector's scans, and its young generation is collected less often (cli/server.py,
`freeze_startup_heap`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from typing import Any

from comfyrun.cli import server
from comfyrun.config import Role, load_settings


async def test_a_server_leaves_its_start_up_heap_out_of_the_collectors_scans(
    monkeypatch: Any,
) -> None:
    """Once serving, what start-up made is frozen (gc.freeze), so that a full collection under
    load scans only what came since, not every module, route and model of the process."""
    frozen_at_start: list[int] = []

    @contextlib.asynccontextmanager
    async def serving(settings: Any) -> Any:
        frozen_at_start.append(gc.get_freeze_count())
        yield "http://127.0.0.1:1"

    monkeypatch.setattr(server, "running_server", serving)
    gc.unfreeze()
    threshold = gc.get_threshold()
    try:
        serving_task = asyncio.create_task(
            server._serve_forever(load_settings(None, role=Role.API))
        )
        await asyncio.sleep(0.05)
        frozen = gc.get_freeze_count()
        serving_threshold = gc.get_threshold()
        os.kill(os.getpid(), signal.SIGTERM)  # the server's own handler stops it
        async with asyncio.timeout(5):
            await serving_task
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert frozen_at_start == [0]
    assert frozen > 10_000  # the test process's modules, at least
    # the young generation collected every GC_YOUNG allocations, not every 700
    assert serving_threshold == (server.GC_YOUNG, server.GC_OLDER, server.GC_OLDER)
    assert server.GC_YOUNG > 700
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGTERM)  # the server took its handlers back
