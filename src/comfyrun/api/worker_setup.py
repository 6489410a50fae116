"""What the app's lifespan builds a worker from (backend specs, emulators, the pool and the
dispatcher with its input placer and model cache), and the input checks the API applies to
submissions. Used by `create_app` (api.app) for the `serve` and `worker` roles.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from comfyrun.assets import AssetService
from comfyrun.config import BackendConfig, Role, Settings
from comfyrun.dispatch.inputs import make_input_placer
from comfyrun.dispatch.relay import RelayHub
from comfyrun.inputs import check_submission
from comfyrun.store.base import JobStore


async def emulator_folders(settings: Settings) -> list[BackendConfig]:
    """N emulated ComfyUI checkouts run as managed child processes, like a real ComfyUI."""
    from comfyrun.comfy.emulator.folder import make_comfy_folder

    configs = []
    for i in range(settings.emulators):
        name = f"emulator-{i + 1}"
        folder = (settings.data_dir / "emulators" / name).resolve()
        await asyncio.to_thread(make_comfy_folder, folder)
        configs.append(
            BackendConfig(
                name=name,
                comfy_path=folder,
                extra_args=["--step-time", str(settings.emulator_step_time_s)],
                lazy=False,
                ready_timeout_s=60.0,
            )
        )
    return configs


async def start_emulators(settings: Settings, stack: AsyncExitStack) -> list[str]:
    """N emulated ComfyUI servers in this process, each with its own folders."""
    from comfyrun.comfy.emulator import EmulatorConfig, start_emulator

    urls = []
    for i in range(settings.emulators):
        root = (settings.data_dir / "emulators" / f"emulator-{i + 1}").resolve()
        cfg = EmulatorConfig(
            host="127.0.0.1",
            port=0,
            output_dir=root / "output",
            input_dir=root / "input",
            temp_dir=root / "temp",
            step_time_s=settings.emulator_step_time_s,
        )
        for d in (cfg.output_dir, cfg.input_dir, cfg.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        emu = await stack.enter_async_context(start_emulator(cfg))
        urls.append(str(emu.url))
    return urls


def backend_specs(
    cfg: BackendConfig, index: int, settings: Settings, models: Any = None
) -> list[Any]:
    """The pool's specs for one backend table: one, or one per GPU (`gpus = [...]`). Managed
    ones see the model cache through ComfyUI's extra model paths."""
    from comfyrun.backends.pool import BackendSpec

    if cfg.url is not None:
        return [
            BackendSpec.from_url(
                cfg.url,
                name=cfg.base_name(index),
                labels=cfg.labels,
                sees_model_cache=cfg.sees_model_cache,
            )
        ]
    from comfyrun.backends.process import ManagedSpec
    from comfyrun.backends.process.spec import load_prompt_file

    warmup = None if cfg.warmup_prompt is None else load_prompt_file(cfg.warmup_prompt)
    specs = []
    for name, one in cfg.per_gpu(cfg.base_name(index)):
        managed = ManagedSpec(
            name=name,
            log_dir=(settings.data_dir / "logs").resolve(),
            # its own input/output/temp, so processes sharing a ComfyUI folder never mix files
            files_dir=(settings.data_dir / "backends" / name).resolve(),
            comfy_path=one.comfy_path,
            command=tuple(one.command) if one.command else None,
            python=one.python or settings.comfy_python,  # None: discovered
            cwd=one.cwd,
            extra_args=(
                *one.extra_args,
                *(
                    ("--extra-model-paths-config", str(models.extra_paths_file))
                    if models is not None
                    else ()
                ),
            ),
            env=dict(one.env),
            lazy=one.lazy,
            ready_timeout_s=one.ready_timeout_s,
            idle_stop_s=one.idle_stop_s,
            port=one.port,
            warmup_prompt=warmup,
        )
        specs.append(BackendSpec(name=name, managed=managed, labels=dict(cfg.labels)))
    return specs


def dispatch_settings(settings: Settings) -> Any:
    from comfyrun.dispatch.settings import DispatchSettings

    return DispatchSettings(
        lease_s=settings.lease_s,
        heartbeat_s=settings.heartbeat_s,
        default_timeout_s=settings.default_timeout_s,
        inline_max_bytes=settings.inline_output_max_bytes,
        retention_s=settings.retention_s,
        sweep_interval_s=settings.sweep_interval_s,
        submit_timeout_s=settings.backend_timeout_s,
        output_timeout_s=settings.output_timeout_s,
        handler_concurrency=settings.handler_concurrency,
        max_staging_jobs=settings.max_staging_jobs,
        handler_stop_grace_s=settings.handler_stop_grace_s,
        model_routing=settings.model_routing,
        model_routing_window=settings.model_routing_window,
        model_routing_max_overtake=settings.model_routing_max_overtake,
        clean_backend_outputs=settings.clean_backend_outputs,
    )


async def start_worker(
    settings: Settings,
    stack: AsyncExitStack,
    store: JobStore,
    storage: Any,
    configs: Sequence[BackendConfig],
    assets: Any,
    relay_hub: RelayHub | None,
    models: Any = None,
    *,
    worker: str,
    registry: Any = None,
) -> tuple[Any, Any]:
    from comfyrun.backends.holds import HoldFile
    from comfyrun.backends.pool import BackendPool
    from comfyrun.comfy.client import ComfyClient
    from comfyrun.dispatch.dispatcher import Dispatcher

    (settings.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    specs = [s for i, c in enumerate(configs) for s in backend_specs(c, i, settings, models)]
    # each call to a backend, and each read of an answer streamed, waits backend_timeout_s
    client = functools.partial(ComfyClient, timeout=settings.backend_timeout_s)
    pool = BackendPool.from_specs(specs, client_factory=client)
    # an admin's holds are the worker id's: a restart in this data dir gets both back
    pool.keep_holds(HoldFile.of_worker(settings.data_dir, worker))
    await pool.start()
    stack.push_async_callback(pool.stop)
    dispatcher = Dispatcher(
        store,
        pool,
        storage,
        dispatch_settings(settings),
        worker_id=worker,
        handlers=registry,
        place_inputs=input_placer(assets, settings, store, models),
        models=models,
        relay_hub=relay_hub,
        relay_to_store=settings.role is Role.WORKER,
    )
    await dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
    return pool, dispatcher


def asset_service(storage: Any, max_upload_bytes: int) -> AssetService:
    return AssetService(storage, max_upload_bytes=max_upload_bytes)


def input_limits(settings: Settings) -> Any:
    from comfyrun.inputs import InputLimits

    return InputLimits(
        allow_networks=tuple(settings.fetch_allow),
        fetch_idle_timeout_s=settings.fetch_idle_timeout_s,
    )


def input_checker(assets: AssetService, settings: Settings) -> Any:
    """The submit-time check of `inputs` and asset references."""
    limits = input_limits(settings)

    async def check(
        workflow: dict[str, Any], inputs: list[dict[str, Any]], models: Sequence[Any] = ()
    ) -> dict[str, Any]:
        result: dict[str, Any] = await check_submission(
            workflow, inputs, assets=assets, limits=limits, models=models
        )
        return result

    return check


def input_placer(assets: AssetService, settings: Settings, store: Any, models: Any) -> Any:
    """Places a job's inputs on its backend, resolving asset references through `assets`, after
    fetching the model files it brings into the model cache."""
    placer = make_input_placer(assets=assets, limits=input_limits(settings))
    if models is None:
        return placer
    from comfyrun.dispatch.models import with_models

    return with_models(placer, models, store)


async def open_model_cache(settings: Settings, assets: AssetService) -> Any:
    """The model cache under `<data_dir>/models` (opened: folders, index, extra paths yaml);
    its owner closes it (`close`: its disk work done, its writer thread stopped)."""
    from comfyrun.models import DownloadLimits, ModelCache, make_downloader

    limits = DownloadLimits(
        max_bytes=int(settings.model_max_gb * 1e9),
        timeout_s=settings.model_fetch_timeout_s,
        idle_timeout_s=settings.fetch_idle_timeout_s,
        fetch_allow=tuple(settings.fetch_allow),
        attempts=settings.model_fetch_attempts,
    )
    budget = settings.model_cache_gb
    cache = ModelCache(
        settings.models_dir,
        make_downloader(limits, assets=assets),
        budget_bytes=None if budget is None else int(budget * 1e9),
    )
    await asyncio.to_thread(cache.open)
    return cache


__all__ = [
    "asset_service",
    "backend_specs",
    "dispatch_settings",
    "emulator_folders",
    "input_checker",
    "input_limits",
    "input_placer",
    "open_model_cache",
    "start_emulators",
    "start_worker",
]
