"""Jobs per status, as a store counts them (a part of the JobStore protocol, store.base)."""

from __future__ import annotations

from typing import Protocol

from comfyrun.core.job import JobStatus


class JobCounts(Protocol):
    async def counts(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int]:
        """Jobs per status. With `unfinished`, only queued, running and canceling jobs are
        counted (the others read 0): a look at the queue that costs what the queue holds,
        not what the history holds. With `owner`, only that API key's jobs (what a key's
        view of the store counts: api.tenancy.OwnedStore)."""

    def counts_now(
        self, *, unfinished: bool = False, owner: str | None = None
    ) -> dict[JobStatus, int] | None:
        """`counts` at once, without waiting for anything, where this store can tell them so
        (SQLite's kept counts, read on the event loop's own thread; the memory store's); None
        where it cannot (then `counts`). A caller that must count before what it does next
        (ComfyUI's `status`, counted before the commit of the prompt's end is asked for) gets
        it without a task and without a turn of the event loop."""


__all__ = ["JobCounts"]
