"""Batches of a workflow template: many parameter sets, enqueued at once through
JobService.submit_batch, followed, canceled and collected as one.

Every item is checked against the template's schema before anything is queued (a 422 lists
each problem with its JSON pointer, `/items/3/params/seed`), so a batch is all or nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfyrun.core.batch import Batch, NewBatch, expand_matrix, progress
from comfyrun.core.job import Job, JobStatus
from comfyrun.core.params import Problem, apply_values, check_values
from comfyrun.errors import Conflict, InvalidParams, InvalidRequest
from comfyrun.service import JobService, Submission
from comfyrun.store import batches as store_batches
from comfyrun.store.base import JobPage
from comfyrun.templates.service import TemplateService, invalid_params

#: The most jobs one batch may hold.
MAX_ITEMS = 100_000
#: The most problems a refused batch lists (the count says how many there were).
MAX_PROBLEMS = 100

META_BATCH = "batch_id"
META_INDEX = "batch_index"


@dataclass(frozen=True, slots=True)
class BatchView:
    """A batch as callers see it: the record with its jobs counted by status."""

    batch: Batch
    counts: dict[JobStatus, int]

    @property
    def progress(self) -> float:
        return progress(self.batch.total, self.counts)


class BatchService:
    def __init__(self, templates: TemplateService, jobs: JobService) -> None:
        self._templates = templates
        self._jobs = jobs

    async def create(
        self,
        workflow: str,
        *,
        items: Sequence[Any] | None,
        matrix: Mapping[str, Sequence[Any]] | None,
        base: Submission,
        options: Mapping[str, Any] | None = None,
    ) -> BatchView:
        """Check every item, then queue them all as one batch. `base` holds the job options
        each job gets; `options` (e.g. the webhook) belong to the batch."""
        values = item_values(items, matrix)
        template = await self._templates.get(workflow)
        prompt = self._templates.runnable(template)
        problems: list[Problem] = []
        for i, params in enumerate(values):
            problems += check_values(template.params, params, base=f"/items/{i}/params")
            if len(problems) >= MAX_PROBLEMS:
                break
        if problems:
            raise invalid_params(problems[:MAX_PROBLEMS])
        new = NewBatch(
            workflow=template.name,
            version=template.version,
            options=dict(options or {}),
            metadata=dict(base.metadata),
            owner=base.owner,
        )
        subs = []
        for i, params in enumerate(values):
            applied = apply_values(prompt, template.params, params)
            extra = {META_BATCH: new.id, META_INDEX: i}
            subs.append(self._templates.submission(template, applied, base, extra))
        batch = await self._jobs.submit_batch(new, subs)
        return BatchView(batch, {JobStatus.QUEUED: batch.total})

    async def get(self, batch_id: str) -> BatchView:
        store = self._jobs.store
        batch = await store.get_batch(batch_id)
        if batch is None:
            raise store_batches.not_found(batch_id)
        return BatchView(batch, await store.batch_counts(batch_id))

    async def jobs(self, batch_id: str, *, limit: int, cursor: str | None) -> JobPage:
        await self.get(batch_id)  # 404 first
        try:
            page: JobPage = await self._jobs.store.batch_jobs(batch_id, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise InvalidRequest(f"bad cursor: {exc}", details={"cursor": cursor}) from exc
        return page

    async def cancel(self, batch_id: str) -> BatchView:
        """Queued jobs end canceled at once; running ones are interrupted (idempotent)."""
        _, active = await self._jobs.store.cancel_batch(batch_id)
        for job in active:
            try:
                await self._jobs.cancel(job.id)
            except Conflict:
                continue  # it ended meanwhile
        return await self.get(batch_id)

    async def all_jobs(self, batch_id: str) -> AsyncIterator[Job]:
        """Every job of the batch in item order, a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.jobs(batch_id, limit=500, cursor=cursor)
            for job in page.jobs:
                yield job
            cursor = page.next_cursor
            if not cursor:
                return


def item_values(
    items: Sequence[Any] | None, matrix: Mapping[str, Sequence[Any]] | None
) -> list[Any]:
    """The params of each job: `items` ([{"params": {...}}]) or the product of `matrix`."""
    if (items is None) == (matrix is None):
        raise InvalidParams(
            "give exactly one of items or matrix",
            details={"errors": [{"pointer": "", "message": "items or matrix", "type": "shape"}]},
        )
    if matrix is not None:
        bad = [k for k, v in matrix.items() if not isinstance(v, list) or not v]
        if bad:
            raise InvalidParams(
                "every matrix entry must be a non-empty list",
                details={
                    "errors": [
                        {"pointer": f"/matrix/{k}", "message": "a non-empty list", "type": "type"}
                        for k in bad
                    ]
                },
            )
        count = 1
        for v in matrix.values():
            count *= len(v)
        _check_size(count)
        return expand_matrix(matrix)
    assert items is not None
    _check_size(len(items))
    values = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("params", {}), Mapping):
            raise InvalidParams(
                f"items[{i}] must be an object with a params object",
                details={
                    "errors": [
                        {
                            "pointer": f"/items/{i}",
                            "message": "an object with params",
                            "type": "type",
                        }
                    ]
                },
            )
        values.append(item.get("params", {}))
    return values


def _check_size(count: int) -> None:
    if count < 1:
        raise InvalidParams(
            "a batch needs at least one item",
            details={"errors": [{"pointer": "/items", "message": "empty", "type": "minItems"}]},
        )
    if count > MAX_ITEMS:
        raise InvalidParams(
            f"a batch holds at most {MAX_ITEMS} jobs (this one {count})",
            details={"errors": [{"pointer": "/items", "message": "too many", "type": "maxItems"}]},
        )


__all__ = ["MAX_ITEMS", "META_BATCH", "META_INDEX", "BatchService", "BatchView", "item_values"]
