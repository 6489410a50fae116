"""GET /metrics: Prometheus text. Gauges are read from the store and the pool at scrape time;
the histograms observe each job that ended since the previous scrape (JobStore.finished_since),
once, however many ended meanwhile."""

from __future__ import annotations

import time
from collections import deque
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from comfyrun.api.context import AppContext, get_ctx, require_admin
from comfyrun.core.job import JobStatus
from comfyrun.store.base import JobEnd

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(tags=["metrics"])

BACKEND_STATES = (
    "starting",
    "ready",
    "busy",
    "unhealthy",
    "draining",
    "stopped",
    "crashed",
    "restarting",
    "error",
)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
SEEN_MAX = 20_000
#: The ends a scrape reads again before the newest it saw (seconds), and how it reads them.
OVERLAP_S = 10.0
PAGE = 1000
MAX_PAGES = 50
#: The endings the histograms observe.
OBSERVED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class JobMetrics:
    """One app's metrics (its own registry: no process-global state). The histograms observe
    the jobs that ended since the app started (`since`), each once."""

    def __init__(self, since: float | None = None) -> None:
        self._since = time.time() if since is None else since
        #: the newest end observed so far; each scrape reads from a little before it on
        self._after = self._since
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Gauge("comfyrun_jobs", "Jobs by status", ["status"], registry=self.registry)
        self.queue_depth = Gauge(
            "comfyrun_queue_depth", "Jobs waiting to run", registry=self.registry
        )
        self.oldest = Gauge(
            "comfyrun_oldest_queued_age_seconds",
            "Age of the oldest queued job",
            registry=self.registry,
        )
        self.backends = Gauge(
            "comfyrun_backends", "Backends by state", ["state"], registry=self.registry
        )
        self.backend_up = Gauge(
            "comfyrun_backend_state",
            "1 for the state each backend is in",
            ["backend", "state"],
            registry=self.registry,
        )
        self.inflight = Gauge(
            "comfyrun_backend_inflight", "Jobs on each backend", ["backend"], registry=self.registry
        )
        self.depth = Gauge(
            "comfyrun_backend_depth",
            "Prompts each backend may hold now: one running, the rest in ComfyUI's queue",
            ["backend"],
            registry=self.registry,
        )
        self.held = Gauge(
            "comfyrun_backend_held",
            "1 for each admin's hold on a backend: draining (takes no new job), kept_stopped "
            "(a managed one stopped until started or resumed)",
            ["backend", "hold"],
            registry=self.registry,
        )
        self.stale_stopped = Counter(
            "comfyrun_backend_stale_prompts_stopped",
            "Prompts of jobs that had moved on, stopped on a backend as it came back "
            "(deleted from its queue or interrupted)",
            ["backend"],
            registry=self.registry,
        )
        self._stale_seen: dict[str, int] = {}
        self.duration = Histogram(
            "comfyrun_job_duration_seconds",
            "Execution time of finished jobs",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "comfyrun_job_queue_seconds",
            "Time finished jobs waited in the queue",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.key_jobs = Gauge(
            "comfyrun_key_jobs_submitted",
            "Jobs submitted with each API key",
            ["key_id", "key_name"],
            registry=self.registry,
        )
        self.key_gpu = Gauge(
            "comfyrun_key_gpu_seconds",
            "Seconds each API key's jobs held a backend",
            ["key_id", "key_name"],
            registry=self.registry,
        )
        self.webhook_deliveries = Gauge(
            "comfyrun_webhook_deliveries",
            "Webhook deliveries in the outbox by state (pending, delivered, failed)",
            ["state"],
            registry=self.registry,
        )
        self.webhook_attempts = Gauge(
            "comfyrun_webhook_attempts",
            "Webhook attempts this node made since it started, by result",
            ["result"],
            registry=self.registry,
        )
        self.staging = Gauge(
            "comfyrun_model_staging_jobs",
            "Jobs of this node downloading their model files with no backend held (staging)",
            registry=self.registry,
        )
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    async def collect(self, ctx: AppContext, *, keys: bool = True) -> bytes:
        stats = await ctx.service.stats()
        for status, n in stats.counts.items():
            self.jobs.labels(status=status).set(n)
        self.queue_depth.set(stats.queue_depth)
        self.oldest.set(stats.oldest_queued_age_s or 0.0)
        await self._observe_finished(ctx)
        await self._tenancy(ctx, keys=keys)
        self.observe_staging(ctx.dispatcher)
        if ctx.pool is not None:
            counts = dict.fromkeys(BACKEND_STATES, 0)
            for b in ctx.pool.snapshot():
                state = str(b.state)
                counts[state] = counts.get(state, 0) + 1
                for s in BACKEND_STATES:
                    self.backend_up.labels(backend=b.name, state=s).set(1 if s == state else 0)
                self.inflight.labels(backend=b.name).set(b.inflight)
                self.depth.labels(backend=b.name).set(b.depth)
                for hold in ("draining", "kept_stopped"):
                    held = 1 if getattr(b, hold, False) else 0
                    self.held.labels(backend=b.name, hold=hold).set(held)
            for state, n in counts.items():
                self.backends.labels(state=state).set(n)
            for backend in ctx.pool.backends:
                stopped = backend.stale_prompts_stopped
                seen = self._stale_seen.get(backend.name, 0)
                self.stale_stopped.labels(backend=backend.name).inc(max(0, stopped - seen))
                self._stale_seen[backend.name] = stopped
        return generate_latest(self.registry)

    def observe_staging(self, dispatcher: Any) -> None:
        """The size of `dispatcher`'s staging set (none without a dispatcher or model cache)."""
        staging = getattr(dispatcher, "staging", None)
        self.staging.set(0 if staging is None else len(staging))

    async def _observe_finished(self, ctx: AppContext) -> None:
        """Observe each job that ended since the last scrape, in the order they ended (however
        many, however long ago each was submitted), reading from OVERLAP_S before the newest
        end seen: an end committed late with an earlier time (another worker's clock, a slow
        commit) is still seen, and one seen already is skipped."""
        after = max(self._since, self._after - OVERLAP_S)
        for _ in range(MAX_PAGES):
            ends = await ctx.store.finished_since(after, limit=PAGE)
            for end in ends:
                self._after = max(self._after, end.finished_at)
                if end.status in OBSERVED and end.id not in self._seen:
                    self._remember(end.id)
                    self._observe(end)
            if len(ends) < PAGE or ends[-1].finished_at == after:
                break  # all read (or a page of ends at one instant: the next scrape goes on)
            after = ends[-1].finished_at

    def _observe(self, end: JobEnd) -> None:
        if end.started_at is None:
            return  # never ran (canceled while queued)
        self.duration.labels(status=end.status.value).observe(
            max(0.0, end.finished_at - end.started_at)
        )
        self.queue_wait.observe(max(0.0, end.started_at - end.created_at))

    async def _tenancy(self, ctx: AppContext, *, keys: bool) -> None:
        for key in await ctx.store.list_api_keys() if keys else ():
            self.key_jobs.labels(key_id=key.id, key_name=key.name).set(key.jobs_submitted)
            self.key_gpu.labels(key_id=key.id, key_name=key.name).set(key.gpu_seconds)
        counts = await ctx.store.delivery_counts()
        for state in ("pending", "delivered", "failed"):
            self.webhook_deliveries.labels(state=state).set(counts.get(state, 0))
        attempts = getattr(ctx.webhooks, "attempts", None)
        if isinstance(attempts, dict):
            for result, n in attempts.items():
                self.webhook_attempts.labels(result=result).set(n)

    def _remember(self, job_id: str) -> None:
        self._seen.add(job_id)
        self._order.append(job_id)
        while len(self._order) > SEEN_MAX:
            self._seen.discard(self._order.popleft())


@router.get("/metrics")
async def metrics(request: Request, ctx: Ctx) -> Response:
    """Prometheus text. On a server with API keys it names every key and counts its use, so
    it needs an admin key, unless `metrics_public` (which leaves the keys' series out)."""
    public = ctx.settings.metrics_public
    if not public:
        await require_admin(request)
    root: AppContext = request.app.state.ctx  # the fleet's, whoever asks (public metrics)
    collector = root.extras.get("metrics")
    if not isinstance(collector, JobMetrics):
        collector = root.extras["metrics"] = JobMetrics(since=root.started_at)
    body = await collector.collect(root, keys=not public)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


__all__ = ["JobMetrics", "router"]
