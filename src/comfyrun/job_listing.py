"""Listing jobs with filters the store does not index (metadata, a job's shown status): pages
are filled by reading on through the store's pages, and a metadata value given in a URL (a
string) is matched against the JSON value a job holds. Used by JobService.list_jobs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from comfyrun.core.job import Job, JobStatus
from comfyrun.store.base import JobPage, JobStore
from comfyrun.store.codec import encode_cursor

#: At most this many jobs (besides a page's own) are read to fill one page of a filtered
#: listing; past them the page comes back short, with the cursor to read on from.
SCAN_BUDGET = 1000

#: Jobs read at a time once the first read left the page short.
SCAN_CHUNK = 200

_INTEGER = re.compile(r"[+-]?[0-9]+")


def metadata_matches(value: Any, wanted: str) -> bool:
    """Whether a job's metadata `value` is what `?metadata[key]=wanted` asks for: a string
    equal to it; a number equal to the number it spells (`1` finds 1, 1.0 and "1"; `1.5` finds
    1.5); a boolean or null as JSON writes it (`true`, `false`, `null`). Objects and lists
    match nothing."""
    if isinstance(value, str):
        return value == wanted
    if isinstance(value, bool):
        return wanted == ("true" if value else "false")
    if value is None:
        return wanted == "null"
    if isinstance(value, int | float):
        text = wanted.strip()
        if isinstance(value, int) and _INTEGER.fullmatch(text):
            return int(text) == value  # exact, however large
        try:
            number = float(text)
        except ValueError:
            return False
        return math.isfinite(number) and number == value
    return False


def metadata_filter(metadata: Mapping[str, str]) -> Callable[[Job], bool]:
    """A job holds every key of `metadata` with a matching value."""
    wanted = list(metadata.items())
    return lambda job: all(
        key in job.metadata and metadata_matches(job.metadata[key], value) for key, value in wanted
    )


async def filtered_page(
    store: JobStore,
    *,
    statuses: Sequence[JobStatus] | None,
    owner: str | None,
    limit: int,
    cursor: str | None,
    where: Callable[[Job], bool],
) -> JobPage:
    """Up to `limit` jobs for which `where` holds, newest first, read through the store's pages
    until the page is full, the jobs run out, or `SCAN_BUDGET` more jobs were read (a page that
    comes back short then still has a cursor: every job is on some page, none on two)."""
    limit = max(1, limit)
    found: list[Job] = []
    scanned = 0
    read = limit  # the first read as many as the page holds; then more at a time
    while True:
        page = await store.list(statuses=statuses, owner=owner, limit=read, cursor=cursor)
        for index, job in enumerate(page.jobs):
            if not where(job):
                continue
            found.append(job)
            if len(found) == limit:
                more = index + 1 < len(page.jobs) or page.next_cursor is not None
                return JobPage(
                    jobs=found, next_cursor=encode_cursor(job.created_at, job.id) if more else None
                )
        scanned += len(page.jobs)
        if page.next_cursor is None or scanned >= limit + SCAN_BUDGET:
            return JobPage(jobs=found, next_cursor=page.next_cursor)
        cursor = page.next_cursor
        read = max(limit, SCAN_CHUNK)


__all__ = ["SCAN_BUDGET", "SCAN_CHUNK", "filtered_page", "metadata_filter", "metadata_matches"]
