"""The configured waits on backends reach the worker: `backend_timeout_s` each call to a
backend and each read of an answer it streams (the clients waited 30 s whatever it said), and
`output_timeout_s` the copy of a prompt's outputs; the handler lane's settings too, and the
staging set's cap (`max_staging_jobs`)."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import asgi_app, memory_settings
from tests.support.emulator import running_emulator

from comfyrun.config import BackendConfig


async def test_the_configured_waits_reach_the_worker(tmp_path: Path) -> None:
    async with running_emulator(tmp_path / "emu") as emu:
        backends = [BackendConfig(name="gpu0", url=emu.url)]
        cfg = memory_settings(
            tmp_path,
            backends=backends,
            backend_timeout_s=7.0,
            output_timeout_s=90.0,
            handler_concurrency=5,
            handler_stop_grace_s=0.5,
            max_staging_jobs=3,
        )
        async with asgi_app(cfg) as (_, _client, ctx):
            assert await ctx.pool.wait_ready(30.0)
            (backend,) = ctx.pool.backends
            assert backend.client.timeout == 7.0
            assert ctx.dispatcher.settings.submit_timeout_s == 7.0
            assert ctx.dispatcher.settings.output_timeout_s == 90.0
            # (handler_concurrency never reached it: every worker ran 2 at once)
            assert ctx.dispatcher.settings.handler_concurrency == 5
            assert ctx.dispatcher.settings.handler_stop_grace_s == 0.5
            # jobs download their model files with no backend held, at most 3 at once
            assert ctx.dispatcher.settings.max_staging_jobs == 3
            assert ctx.dispatcher.staging is not None and ctx.dispatcher.staging.cap == 3
