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
        where it cannot (then `counts`). A caller that must tell a count in order with what
        it does next (ComfyUI's `status` before a prompt's end) gets it without a turn of the
        event loop, in which the job's own commit would go first."""


__all__ = ["JobCounts"]
