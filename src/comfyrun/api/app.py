"""The app factory. `create_app(settings)` builds the FastAPI app; its lifespan opens (and on
shutdown closes, in reverse) the store, the output storage, local emulator backends, the
backend pool and the dispatcher, according to the process's role:

    serve   the HTTP API and a worker (dispatcher + pool) in one process
    api     the HTTP API only (workers elsewhere share the store)
    worker  a dispatcher only; HTTP serves /api/v2/health, /ready, /metrics and /api/v2/backends
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request

from comfyrun import __version__
from comfyrun.api import worker_types
from comfyrun.api.auth import Authenticator
from comfyrun.api.context import AppContext, app_ctx, public_base_url, require_auth
from comfyrun.api.docs import install_docs
from comfyrun.api.editor import install_editor
from comfyrun.api.errors import install_error_handlers
from comfyrun.api.lean import leanify
from comfyrun.api.limits import BodyLimit, BodyLimits
from comfyrun.api.origin import OriginGuard
from comfyrun.api.routes import (
    admin,
    backends,
    batches,
    comfy_compat,
    files,
    health,
    job_webhooks,
    jobs,
    keys,
    metrics,
    plain_compat,
    runpod_compat,
    stats,
    tasks,
    workflows,
)
from comfyrun.api.routes import models as models_routes
from comfyrun.api.routes.assets import MULTIPART_SLACK, assets_router
from comfyrun.api.routing import answer_head, include, index_by_segment, reject_by_prefix
from comfyrun.api.webhooks import DeliveryPolicy, Render, WebhookDeliverer
from comfyrun.api.wire import job_to_wire
from comfyrun.api.worker_setup import (
    asset_service,
    dispatch_settings,
    emulator_folders,
    input_checker,
    input_limits,
    open_model_cache,
    start_emulators,
    start_worker,
)
from comfyrun.assets import AssetService
from comfyrun.backends.catalog import BackendCatalog
from comfyrun.config import BackendConfig, Role, Settings
from comfyrun.core.fit import BackendOffer
from comfyrun.core.job import JSON
from comfyrun.dashboard.routes import router as dashboard_router
from comfyrun.dispatch.relay import RelayHub
from comfyrun.handlers.admission import JobTypes
from comfyrun.inputs.netguard import AddressPolicy
from comfyrun.service import JobService
from comfyrun.store.base import JobStore
from comfyrun.templates import TemplateFolder, TemplateService
from comfyrun.templates.batches import BatchService

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, store: JobStore | None = None, storage: Any = None, lean: bool = True
) -> FastAPI:
    """The comfyrun HTTP app. `store` and `storage` replace the ones the settings name (tests
    pass in-memory ones); the app opens and closes them either way. `lean`: plain routes get
    the lean request handler (api/lean.py; off: FastAPI's own, as bench/request_cpu.py
    compares)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.ctx = await _open(settings, stack, store, storage)
            log.info(
                "comfyrun started",
                extra={"action": "started", "role": settings.role.value},
            )
            yield
            log.info("comfyrun stopping", extra={"action": "stopping"})

    app = FastAPI(
        title="comfyrun",
        version=__version__,
        description="A durable job server for ComfyUI workflows (Comfy API v2).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limits=body_limits(settings))
    # (outermost) the origin public_url names is the server's own, as a proxy in front sees it
    origins = [*settings.allowed_origins, *public_origin(settings.public_url)]
    app.add_middleware(OriginGuard, allowed_origins=origins)
    include(app, health.router)
    include(app, metrics.router)
    # the backends are operated where they run: a worker's HTTP port serves these too
    include(app, backends.router)
    include(app, backends.admin_router)
    if settings.role is not Role.WORKER:
        include(app, jobs.router)
        include(app, workflows.router)
        include(app, batches.router)
        workflows.install_openapi(app)
        include(app, job_webhooks.router)
        include(app, files.router)  # before the assets router: it claims output ids
        _include_assets(app)
        include(app, stats.router)
        include(app, admin.router)
        include(app, models_routes.router)
        include(app, keys.router)
        # the other APIs comfyrun speaks: ComfyUI's, RunPod's, the plain /run and task variants
        for router in (*comfy_compat.build_routers(), *runpod_compat.build_routers()):
            include(app, router)
        include(app, plain_compat.router)
        include(app, tasks.router)
        include(app, dashboard_router)
        install_editor(app, settings)  # last: the editor's files claim their paths at /
    answer_head(app)
    if lean:
        leanify(app)  # after the routes: the plain ones get a leaner handler
    reject_by_prefix(app)
    index_by_segment(app)
    return app


def public_origin(public_url: str | None) -> list[str]:
    """The browser origin (scheme://host[:port]) of `public_url`, if one is set."""
    if not public_url:
        return []
    parts = urlsplit(public_url)
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []


def body_limits(settings: Settings) -> BodyLimits:
    """The request-body limits of `settings`; uploads get room for their multipart framing."""
    return BodyLimits(
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes + MULTIPART_SLACK,
        idle_timeout_s=settings.body_idle_timeout_s,
        total_timeout_s=settings.body_timeout_s,
        max_header_bytes=settings.max_header_bytes,
    )


def _include_assets(app: FastAPI) -> None:
    def get_assets(request: Request) -> AssetService:
        service: AssetService | None = app_ctx(request).assets  # the caller's own
        if service is None:
            raise HTTPException(503, "the assets service is not available")
        return service

    include(
        app,
        assets_router(get_assets, base_url=public_base_url, dependencies=[Depends(require_auth)]),
    )


async def _open(
    settings: Settings, stack: AsyncExitStack, store: JobStore | None, storage: Any
) -> AppContext:
    from comfyrun.outputs import open_output_storage
    from comfyrun.store.factory import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if store is None:
        store = open_store(settings.database_url)
    await store.open()
    stack.push_async_callback(store.close)

    if storage is None:
        storage = open_output_storage(settings.outputs_url)
    closer = getattr(storage, "close", None)
    if closer is not None:
        stack.push_async_callback(closer)

    backend_configs = list(settings.backends)
    emulator_urls: list[str] = []
    if settings.role is not Role.API and settings.emulators:
        if settings.emulator_mode == "process":
            backend_configs += await emulator_folders(settings)
        else:
            emulator_urls = await start_emulators(settings, stack)
            backend_configs += [
                BackendConfig(name=f"emulator-{i + 1}", url=url)
                for i, url in enumerate(emulator_urls)
            ]
    assets = asset_service(storage, settings.max_upload_bytes)
    models = None
    if settings.role is not Role.API:
        models = await open_model_cache(settings, assets)
        # closed after the dispatcher stops (the stack unwinds in reverse): the disk work of
        # the leases released as it stops is done before the process ends
        stack.push_async_callback(models.close)
    pool: Any = None
    dispatcher: Any = None
    if settings.role is not Role.API and not backend_configs:
        log.warning(
            "no ComfyUI backends are configured: jobs will wait in the queue "
            "(give --backend URL, --comfy PATH or --emulator N)",
            extra={"action": "no_backends"},
        )
    # ComfyUI messages reach this process's /ws clients in memory; a lone worker writes them to
    # the store for the API nodes
    relay_hub = RelayHub() if settings.role is Role.SERVE else None
    registry = worker_types.handler_registry(settings)
    lane: Any = None
    if settings.role is not Role.API:
        plan = worker_types.type_plan(settings, registry, has_backends=bool(backend_configs))
        worker = worker_types.worker_id(settings, stack)
        if plan.dispatcher:
            pool, dispatcher = await start_worker(
                settings,
                stack,
                store,
                storage,
                backend_configs,
                assets,
                relay_hub,
                models,
                worker=worker,
                registry=registry,
            )
        lane = await worker_types.start_lane(
            settings,
            stack,
            store=store,
            storage=storage,
            registry=registry,
            plan=plan,
            worker=worker,
            assets=assets,
            limits=input_limits(settings),
            alone=dispatcher is None,
        )

    catalog = await _start_catalog(settings, stack, store, pool, backend_configs)
    if models is not None:  # files delivered to the cache: the backends seeing it list them
        models.on_names_changed(catalog.models_changed)
    service = JobService(
        store,
        settings,
        files=storage,
        object_info=_object_info_source(catalog),
        recheck_object_info=_object_info_source(catalog, recheck=True),
        check_inputs=input_checker(assets, settings),
        catalogs=_offer_source(catalog, pool, backend_configs),
        job_types=JobTypes(
            registry,
            queue_unserved=settings.queue_unserved_types,
            heartbeat_s=settings.heartbeat_s,
        ),
        hand_off=dispatcher.offer if dispatcher is not None and settings.hand_off else None,
        runs_here=dispatcher.running if dispatcher is not None else None,
    )
    # a job queued anew by another node (a finished one replaced: RunPod's /retry, a ComfyUI
    # prompt_id used again) is not answered as the finished job this node kept (FINISHED_TTL_S)
    stack.callback(store.watch_new_work(lambda job_id, _: service.finished.forget(job_id)))
    if dispatcher is not None:
        dispatcher.fit.use_catalog(catalog)
        dispatcher.ctx.finished.append(service.remember)
        dispatcher.ctx.run_over.append(service.run_over)
        dispatcher.ctx.run_started.append(service.run_started)
    templates = TemplateService(
        TemplateFolder(settings.workflows_dir), service, object_info=_object_info_source(catalog)
    )
    batch_service = BatchService(templates, service)
    webhooks = await _start_webhooks(settings, stack, store, batches.render_batch(batch_service))
    return AppContext(
        auth=Authenticator(store, settings.api_keys),
        webhooks=webhooks,
        templates=templates,
        batches=batch_service,
        settings=settings,
        store=store,
        service=service,
        storage=storage,
        pool=pool,
        dispatcher=dispatcher,
        assets=assets,
        emulator_urls=emulator_urls,
        catalog=catalog,
        extras={
            "relay_hub": relay_hub,
            "models": models,
            "input_checker": lambda owned_assets: input_checker(owned_assets, settings),
            "lane": lane,
        },
    )


async def _start_webhooks(
    settings: Settings, stack: AsyncExitStack, store: JobStore, render_batch: Render
) -> WebhookDeliverer:
    """Every role sends what the outbox owes, so webhooks go out while any node runs."""
    base_url = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")

    async def render(job_id: str) -> JSON | None:
        job = await store.get(job_id)
        if job is None:
            return None
        wire = job_to_wire(
            job,
            queue_position=None,
            base_url=base_url,
            retention_s=settings.retention_s,
            now=time.time(),
        )
        data: JSON = wire.model_dump(mode="json")
        return data

    policy = DeliveryPolicy(
        base_delay_s=settings.webhook_retry_base_s,
        max_delay_s=settings.webhook_retry_max_delay_s,
        max_age_s=settings.webhook_max_age_hours * 3600.0,
        timeout_s=settings.webhook_timeout_s,
        lease_s=settings.webhook_timeout_s * 2 + 5.0,
        poll_s=settings.webhook_poll_s,
        prune_after_s=max(settings.retention_s, settings.webhook_max_age_hours * 3600.0),
    )
    deliverer = WebhookDeliverer(
        store,
        render,
        render_batch=render_batch,
        secret=settings.webhook_secret,
        policy=policy,
        targets=AddressPolicy.from_entries(settings.webhook_allow),
    )
    stack.push_async_callback(deliverer.close)
    deliverer.start()
    return deliverer


async def _start_catalog(
    settings: Settings,
    stack: AsyncExitStack,
    store: JobStore,
    pool: Any,
    configs: Sequence[BackendConfig],
) -> BackendCatalog:
    """The backends' node catalogs: from the store at once, refreshed as backends come up.
    Without a pool (the api role), configured URL backends are asked directly."""
    urls = {} if pool is not None else {c.name or c.url: c.url for c in configs if c.url}
    catalog = BackendCatalog(store, pool, urls=urls, ttl_s=settings.object_info_ttl_s)
    await catalog.start()
    stack.push_async_callback(catalog.stop)
    return catalog


def _object_info_source(catalog: BackendCatalog, *, recheck: bool = False) -> Any:
    """Submission checks use the fleet's union, as known (stored, or from backends that are up):
    a valid submission never waits for a backend to start. With `recheck`, the backends are
    asked again first (a refusal must not rest on definitions stored before they changed)."""

    async def object_info() -> dict[str, Any] | None:
        union = await (catalog.recheck() if recheck else catalog.current(wake=False))
        return union.object_info if union is not None else None

    return object_info


def _offer_source(
    catalog: BackendCatalog, pool: Any, configs: Sequence[BackendConfig]
) -> Callable[[bool], Awaitable[list[BackendOffer]]]:
    """What each backend offers, for refusing at submission a job none can run: its node
    definitions from the fleet's catalog and its labels (the pool's; in the api role the
    configured ones, unknown for a backend not configured here)."""

    async def offers(recheck: bool) -> list[BackendOffer]:
        await (catalog.recheck() if recheck else catalog.current(wake=False))
        if pool is not None:
            return [
                BackendOffer(
                    b.name,
                    dict(b.spec.labels),
                    catalog.object_info(b.name) or getattr(b.client, "cached_object_info", None),
                )
                for b in pool.backends
            ]
        labels = {c.name or c.url: dict(c.labels) for c in configs}
        return [
            BackendOffer(name, labels.get(name), catalog.object_info(name))
            for name in catalog.names()
        ]

    return offers


__all__ = ["body_limits", "create_app", "dispatch_settings"]
